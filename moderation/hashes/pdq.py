"""PDQ perceptual hashes of images, as 64 hex digits, and the Hamming distances between them.

PDQ (Meta's open perceptual hash, the format industry hash-sharing programmes exchange) gives a 256-bit hash that
survives resizing and re-encoding; two images match when the Hamming distance between their hashes is at most a
threshold (31 of 256 is PDQ's usual one). Hashes are written as 64 hex digits in ThreatExchange's order (bit 0 of
`pdqhash`'s vector is the most significant), so lists exchanged with other PDQ tools compare as they do there.

A query image is hashed in its 8 dihedral orientations (rotations and mirror images), each from the transposed
pixels, so a mirrored or rotated re-upload still matches. (PDQ's own shortcut, `pdqhash.compute_dihedral`,
permutes the DCT of one hash; it is 8x cheaper but inexact on non-square images: mirrored MultiOFF memes, mostly
portrait, matched 0.957 with it against 1.000, their distance up to 42 against 0. The 8 hashes cost ~4 ms at
320 px and ~43 ms at 512 px, in the image threads, only when lists are in use.)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pdqhash
from PIL import Image

#: PDQ's usual match threshold: Hamming distance <= 31 of 256 bits.
PDQ_MATCH_THRESHOLD = 31
#: PDQ's quality (0-100) below which a hash says little about the image (flat or featureless pictures):
#: such an image is not added to a list unless asked.
PDQ_MIN_QUALITY = 50
#: Images are hashed at most this large (longer side, pixels): PDQ reduces every image to 64x64 anyway, and a
#: 40-Mpixel photo would otherwise cost seconds for its 8 orientations. A 3000x2000 photo hashed at 512 px is
#: 6 bits from its hash at 1024 px (of the 31 a match allows).
HASH_MAX_SIDE = 512
_ORIENTATIONS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90,
                 Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE,
                 Image.Transpose.TRANSVERSE)
_HEX64 = re.compile(r"[0-9a-f]{64}")


class HashListError(ValueError):
    """A hash, a hash list file or one of its entries is invalid (says which and why)."""


# --- hashing ---------------------------------------------------------------------------------------------

def _bounded(image: Image.Image) -> Image.Image:
    img = image if image.mode == "RGB" else image.convert("RGB")
    if max(img.size) > HASH_MAX_SIDE:
        img = img.copy()
        img.thumbnail((HASH_MAX_SIDE, HASH_MAX_SIDE), Image.BOX)
    return img


def _pixels(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq_hash(image: Image.Image) -> tuple[str, int]:
    """PDQ hash of an image as 64 hex digits, and its quality (0-100)."""
    bits, quality = pdqhash.compute(_pixels(_bounded(image)))
    return _bits_to_hex(bits), int(quality)


def pdq_dihedral(image: Image.Image) -> tuple[np.ndarray, int]:
    """The PDQ hashes of the image's 8 dihedral orientations (identity first), packed as an (8, 4) uint64
    array, and the quality of the identity. Each is hashed from transposed pixels (see the module docstring)."""
    img = _bounded(image)
    bits = []
    quality = 0
    for i, t in enumerate(_ORIENTATIONS):
        b, q = pdqhash.compute(_pixels(img if t is None else img.transpose(t)))
        bits.append(np.asarray(b, dtype=np.uint8))
        quality = int(q) if i == 0 else quality
    packed = np.packbits(np.stack(bits), axis=1)  # (8, 32) bytes, big-endian bits
    return packed.view(">u8").astype(np.uint64), quality


# --- hex hashes and their distances ----------------------------------------------------------------------

def check_hex(value: str) -> str:
    """Normalise a PDQ hash given as hex (64 digits, case-insensitive). Raises HashListError."""
    h = str(value).strip().lower()
    if not _HEX64.fullmatch(h):
        raise HashListError(f"a PDQ hash is 64 hex digits; got {str(value)[:80]!r}")
    return h


def popcount(hash_hex: str) -> int:
    """How many of the hash's 256 bits are set. Raises HashListError for a malformed hash."""
    return int(check_hex(hash_hex), 16).bit_count()


def degenerate(hash_hex: str) -> bool:
    """Whether a PDQ hash says nothing about its image: PDQ sets the bits above the median of 256 coefficients,
    so an image with structure has about 128 bits set; a flat image's hash is all (or nearly all) zeros.
    Malformed hashes are left to check_hex."""
    try:
        return not 64 <= popcount(hash_hex) <= 192
    except HashListError:
        return False


def hex_to_words(hexes: Sequence[str]) -> np.ndarray:
    """Pack hex hashes as an (N, 4) uint64 array for vectorised Hamming distances."""
    if not hexes:
        return np.zeros((0, 4), dtype=np.uint64)
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), dtype=">u8")
    return raw.reshape(-1, 4).astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes: (Q, 4) x (N, 4) uint64 -> (Q, N) int."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).sum(axis=-1).astype(np.int64)
    return np.unpackbits(x.view(np.uint8), axis=-1).sum(axis=-1).astype(np.int64)


def hex_distance(a: str, b: str) -> int:
    """Hamming distance between two hex PDQ hashes."""
    return int(hamming(hex_to_words([check_hex(a)]), hex_to_words([check_hex(b)]))[0, 0])
