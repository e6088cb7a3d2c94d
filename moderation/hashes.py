"""Perceptual hashes (PDQ) of images, and lists of known violating images whose re-uploads are blocked.

Platforms keep lists of images they have already judged violating (their own, or shared through industry
hash-sharing programmes) and block re-uploads before any model runs. PDQ (Meta's open perceptual hash, the
format those programmes share) gives a 256-bit hash that survives resizing and re-encoding; two images match
when the Hamming distance between their hashes is at most a threshold (31 of 256 is PDQ's usual one).
Hashes are written as 64 hex digits in ThreatExchange's order (bit 0 of `pdqhash`'s vector is the most
significant), so lists exchanged with other PDQ tools compare as they do there.

A hash list is a small versioned JSON file (never a pickle):

    {"format": "moderation-hash-list", "format_version": 1, "hash_type": "pdq", "name": "known-bad",
     "threshold": 31, "version": "pdq-3f0c2d9a8e5b4c6f",
     "entries": [{"id": "a1b2c3d4e5f60718", "hash": "<64 hex>", "category": "hate", "quality": 100,
                  "source": "meme.jpg", "added": "2026-11-28"}]}

`version` is derived from the content (entries and threshold), so it changes whenever the list does; a
result that was blocked names the list version that blocked it. A query image is compared in its 8
dihedral orientations (rotations and mirror images), each hashed from the transposed pixels, so a mirrored
or rotated re-upload still matches. (PDQ's own shortcut, `pdqhash.compute_dihedral`, permutes the DCT of one
hash; it is 8x cheaper but inexact on non-square images: mirrored MultiOFF memes, mostly portrait, matched
0.957 with it against 1.000, their distance up to 42 against 0. The 8 hashes cost ~4 ms at 320 px and ~43 ms
at 512 px, in the image threads, only when lists are in use.)

    matcher = HashMatcher.from_files(["known-bad.json"])
    matcher.match_image(pil_image)          # -> [HashMatch(list=..., id=..., category=..., distance=12, ...)]
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gc
import functools
import hashlib
import io
import tempfile
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from moderation.filelock import file_lock, holder
from moderation.schema import HashMatch, normalize_category

FORMAT = "moderation-hash-list"
FORMAT_VERSION = 1
HASH_TYPE = "pdq"
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
    """A hash list file or entry is invalid (says which and why)."""


#: A hash list file larger than this is refused (about 3 million entries; 1M entries are 174 MB).
MAX_LIST_BYTES = 512 * 1024 * 1024


def read_list_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a list file: a regular file of at most `max_bytes`. Raises FileNotFoundError, or
    HashListError for a directory, a device (/dev/zero would be read until memory ran out), a FIFO (would
    hang), an unreadable or an oversized file. Opened non-blocking and checked on the open descriptor, so a
    file swapped for a FIFO after a check cannot hang the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise HashListError(f"{path}: is a directory; give the {what} file") from None
    except OSError as exc:
        raise HashListError(f"{path}: cannot open the {what} ({exc.strerror})") from None
    info = os.fstat(fd)
    problem = ("is a directory" if stat.S_ISDIR(info.st_mode) else
               "not a regular file (a device, FIFO or socket)" if not stat.S_ISREG(info.st_mode) else
               f"{info.st_size} bytes, over the {what} limit of {max_bytes}" if info.st_size > max_bytes else None)
    if problem is not None:
        os.close(fd)
        raise HashListError(f"{path}: {problem}; give the {what} file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HashListError(f"{path}: over the {what} limit of {max_bytes} bytes")
    return data


@contextlib.contextmanager
def _bulk() -> Iterator[None]:
    """No cyclic garbage collection while a million small objects are made (they hold no cycles; the collector's
    passes over the growing heap doubled the time of loading a list)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# A list names few categories: fold each name once, not once per entry.
_category = functools.lru_cache(maxsize=256)(normalize_category)


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
    import pdqhash

    bits, quality = pdqhash.compute(_pixels(_bounded(image)))
    return _bits_to_hex(bits), int(quality)


def pdq_dihedral(image: Image.Image) -> tuple[np.ndarray, int]:
    """The PDQ hashes of the image's 8 dihedral orientations (identity first), packed as an (8, 4) uint64
    array, and the quality of the identity. Each is hashed from transposed pixels (see the module docstring)."""
    import pdqhash

    img = _bounded(image)
    bits = []
    quality = 0
    for i, t in enumerate(_ORIENTATIONS):
        b, q = pdqhash.compute(_pixels(img if t is None else img.transpose(t)))
        bits.append(np.asarray(b, dtype=np.uint8))
        quality = int(q) if i == 0 else quality
    packed = np.packbits(np.stack(bits), axis=1)  # (8, 32) bytes, big-endian bits
    return packed.view(">u8").astype(np.uint64), quality


def check_hex(value: str) -> str:
    """Normalise a PDQ hash given as hex (64 digits, case-insensitive). Raises HashListError."""
    h = str(value).strip().lower()
    if not _HEX64.fullmatch(h):
        raise HashListError(f"a PDQ hash is 64 hex digits; got {str(value)[:80]!r}")
    return h


def _popcount(hash_hex: str) -> int:
    return int(check_hex(hash_hex), 16).bit_count()


def degenerate(hash_hex: str) -> bool:
    """Whether a PDQ hash says nothing about its image: PDQ sets the bits above the median of 256 coefficients,
    so an image with structure has about 128 bits set; a flat image's hash is all (or nearly all) zeros.
    Malformed hashes are left to check_hex."""
    try:
        return not 64 <= _popcount(hash_hex) <= 192
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


# --- the list file ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HashEntry:
    """One listed hash: its id, the 64-hex PDQ hash, the category it violates, and where it came from."""

    id: str
    hash: str
    category: str
    quality: int | None = None
    source: str | None = None
    added: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "category": self.category, "quality": self.quality,
                "source": self.source, "added": self.added}


@dataclass
class HashList:
    """A named list of PDQ hashes with categories and a match threshold; loads from and saves to JSON."""

    name: str
    entries: list[HashEntry] = field(default_factory=list)
    threshold: int = PDQ_MATCH_THRESHOLD
    path: Path | None = None
    # (hash, category) pairs and ids of `entries`, kept up to date by add(): loading is linear, not quadratic.
    _pairs: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)
    _ids: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _indexed: tuple[int, int] = field(default=(0, 0), init=False, repr=False, compare=False)
    _version: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    def _index(self) -> tuple[set[tuple[str, str]], set[str]]:
        """The pairs and ids of the entries, rebuilt only when `entries` was replaced or changed size elsewhere."""
        if self._indexed != (id(self.entries), len(self.entries)):
            self._pairs = {(e.hash, e.category) for e in self.entries}
            self._ids = {e.id for e in self.entries}
            self._indexed = (id(self.entries), len(self.entries))
        return self._pairs, self._ids

    @property
    def version(self) -> str:
        """Derived from the content (threshold and entries): changes whenever the list does."""
        key = (self._index() and self._indexed, self.threshold)
        if self._version is None or self._version[0] != key:
            self._version = (key, self._compute_version())
        return self._version[1]

    def _compute_version(self) -> str:
        content = json.dumps({"hash_type": HASH_TYPE, "threshold": self.threshold,
                              "entries": [[e.id, e.hash, e.category] for e in self.entries]}, sort_keys=True)
        return f"{HASH_TYPE}-{hashlib.sha256(content.encode('utf-8')).hexdigest()[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "hash_type": HASH_TYPE, "name": self.name,
                "threshold": self.threshold, "version": self.version,
                "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "HashList":
        """Validate a parsed list file. Raises HashListError naming the problem."""
        where = f"{path}: " if path else ""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HashListError(f"{where}not a hash list (expected a JSON object with \"format\": \"{FORMAT}\")")
        if data.get("format_version") != FORMAT_VERSION:
            raise HashListError(f"{where}hash list format_version {data.get('format_version')!r} is not supported "
                                f"(this version reads {FORMAT_VERSION})")
        if data.get("hash_type", HASH_TYPE) != HASH_TYPE:
            raise HashListError(f"{where}hash_type {data.get('hash_type')!r} is not supported (only {HASH_TYPE!r})")
        threshold = data.get("threshold", PDQ_MATCH_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= 256:
            raise HashListError(f"{where}threshold must be an integer from 0 to 256, got {threshold!r}")
        raw_entries = data.get("entries", [])
        if not isinstance(raw_entries, list):
            raise HashListError(f"{where}'entries' must be a list")
        out = cls(name=str(data.get("name") or (path.stem if path else "hash-list")), threshold=threshold, path=path)
        for i, raw in enumerate(raw_entries):
            if not isinstance(raw, dict):
                raise HashListError(f"{where}entry {i} is not an object")
            try:
                out.add(raw.get("hash", ""), raw.get("category", ""), id=raw.get("id"), quality=raw.get("quality"),
                        source=raw.get("source"), added=raw.get("added"))
            except HashListError as exc:
                raise HashListError(f"{where}entry {i}: {exc}") from None
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HashList":
        """Read a list file. Raises FileNotFoundError, or HashListError for anything else wrong with it."""
        path = Path(path)
        raw = read_list_file(path, MAX_LIST_BYTES, "hash list")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HashListError(f"{path}: not UTF-8 text ({exc})") from None
        with _bulk():
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HashListError(f"{path}: not valid JSON ({exc})") from None
            return cls.from_dict(data, path)

    @classmethod
    def load_or_new(cls, path: str | os.PathLike, name: str | None = None) -> "HashList":
        """The list at `path`, or a new empty one (named after the file) when the file does not exist."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        return cls(name=name or path.stem, path=path)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the list as JSON (temporary file, then rename: readers never see half a list)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this hash list has no path; give one")
        # A temporary name of its own: two writers never share (and truncate) one.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.path = target
        return target

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: str | os.PathLike, wait_s: float = 60.0) -> Iterator["HashList"]:
        """Load (or start) the list at `path` under an exclusive lock (`<path>.lock`) and save it when the block
        ends without an error: concurrent `hashes add / import / remove` on one list each see the other's entries
        (two imports of 300 kept 300 before, not 600). Raises HashListError when the lock is held past `wait_s`."""
        path = Path(path)

        def busy(lock: Path) -> Exception:
            return HashListError(f"{path} is being changed by another process{holder(lock)} (it holds {lock}); "
                                 "try again when it has finished")

        with file_lock(path.with_name(path.name + ".lock"), wait_s=wait_s, busy=busy):
            hl = cls.load_or_new(path)
            yield hl
            hl.save()

    def add(self, hash_hex: str, category: str, *, id: str | None = None, quality: int | None = None,
            source: str | None = None, added: str | None = None) -> HashEntry | None:
        """Add a hash; returns the entry, or None when the same hash is already listed for that category.

        The id defaults to the first 16 hex digits of the hash (plus the category when the same hash is listed
        for another one). Raises HashListError for a bad hash, an empty category or an id already used.
        """
        h = check_hex(hash_hex)
        try:
            cat = _category(category) if isinstance(category, str) else normalize_category(category)
        except ValueError:
            raise HashListError("the category is empty") from None
        pairs, ids = self._index()
        if (h, cat) in pairs:
            return None
        if id is None or str(id).strip() == "":
            id = h[:16] if h[:16] not in ids else f"{h[:16]}-{cat}"
        id = str(id).strip()
        if id in ids:
            raise HashListError(f"id {id!r} is already in the list")
        if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int)):
            raise HashListError(f"quality must be an integer, got {quality!r}")
        entry = HashEntry(id=id, hash=h, category=cat, quality=quality, source=source,
                          added=added or _dt.date.today().isoformat())
        self.entries.append(entry)
        pairs.add((h, cat))
        ids.add(id)
        self._indexed = (self._indexed[0], len(self.entries))
        return entry

    def remove(self, keys: Iterable[str]) -> list[HashEntry]:
        """Remove entries whose id or hash is in `keys`; returns the removed entries."""
        wanted = {str(k).strip().lower() for k in keys}
        removed = [e for e in self.entries if e.id.lower() in wanted or e.hash in wanted]
        self.entries = [e for e in self.entries if e not in removed]
        self._indexed = (0, 0)
        return removed

    def import_csv(self, path: str | os.PathLike, min_quality: int = PDQ_MIN_QUALITY) -> tuple[list[HashEntry], int]:
        """Add the rows of a CSV with a header naming `hash` and `category` (optional: `id`, `source`, `quality`).

        All or nothing: every row is checked first and any bad row raises HashListError naming its line, with
        nothing added. A row whose `quality` is below `min_quality`, or whose hash is degenerate (see
        `degenerate`: an all-zero hash matched every black image), is a bad row unless `min_quality` is 0.
        Returns (entries added, rows already listed).
        """
        path = Path(path)
        raw = read_list_file(path, MAX_LIST_BYTES, "CSV of hashes")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HashListError(f"{path}: not UTF-8 text ({exc})") from None
        with io.StringIO(text, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "hash" not in fields or "category" not in fields:
                raise HashListError(f"{path}: the header must name 'hash' and 'category' columns (got {fields})")
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
        trial = HashList(name=self.name, entries=list(self.entries), threshold=self.threshold)
        added: list[HashEntry] = []
        already = 0
        errors = []
        for lineno, row in enumerate(rows, start=2):
            try:
                quality = int(row["quality"]) if row.get("quality") else None
                if min_quality > 0:
                    if quality is not None and quality < min_quality:
                        raise HashListError(f"PDQ quality {quality} is below {min_quality} (a flat or featureless "
                                            "image's hash matches unrelated images)")
                    if degenerate(row.get("hash", "")):
                        raise HashListError(f"the hash {row.get('hash', '')[:16]}... has {_popcount(row['hash'])} of "
                                            "256 bits set: the hash of a flat image, which would match every flat image")
                entry = trial.add(row.get("hash", ""), row.get("category", ""), id=row.get("id") or None,
                                  quality=quality, source=row.get("source") or path.name)
            except (HashListError, ValueError) as exc:
                errors.append(f"line {lineno}: {exc}")
                continue
            if entry is None:
                already += 1
            else:
                added.append(entry)
        if errors:
            shown = "; ".join(errors[:10]) + (f"; ... ({len(errors)} bad rows)" if len(errors) > 10 else "")
            raise HashListError(f"{path}: nothing imported: {shown}")
        self.entries = trial.entries
        return added, already


# --- matching --------------------------------------------------------------------------------------------

class HashMatcher:
    """Every entry of one or more lists, packed for vectorised matching (brute force: 21 ms per image against
    100,000 listed hashes; a multi-index hash would be the next step for industry-sized lists)."""

    def __init__(self, lists: Sequence[HashList]) -> None:
        self.lists = list(lists)
        names = [hl.name for hl in self.lists]
        if len(set(names)) != len(names):
            raise HashListError(f"two hash lists have the same name ({', '.join(sorted(names))}); rename one")
        with _bulk():
            self._entries: list[tuple[HashList, HashEntry]] = [(hl, e) for hl in self.lists for e in hl.entries]
            self._words = hex_to_words([e.hash for _, e in self._entries])
            self._versions = {hl.name: hl.version for hl in self.lists}
        self._thresholds = np.concatenate([np.full(len(hl.entries), hl.threshold, dtype=np.int64)
                                           for hl in self.lists] or [np.zeros(0, dtype=np.int64)])

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike]) -> "HashMatcher":
        """Load list files. Raises FileNotFoundError / HashListError."""
        return cls([HashList.load(p) for p in paths])

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> list[dict[str, Any]]:
        """Name, path, version, threshold and size of each list."""
        return [{"name": hl.name, "path": str(hl.path) if hl.path else None, "version": self._versions[hl.name],
                 "threshold": hl.threshold, "entries": len(hl.entries)} for hl in self.lists]

    def versions(self) -> dict[str, str]:
        """List name -> version."""
        return dict(self._versions)

    def _distances(self, query: np.ndarray) -> np.ndarray:
        """(N,) the smallest distance from any of the (Q, 4) query hashes to each listed hash. One query row at a
        time: the temporary is (N, 4) words, not (Q, N, 4) (256 MB per image against a million hashes)."""
        dist = hamming(query[:1], self._words)[0]
        for row in query[1:]:
            np.minimum(dist, hamming(row[None, :], self._words)[0], out=dist)
        return dist

    def match_words(self, query: np.ndarray) -> list[HashMatch]:
        """Entries within their list's threshold of any of the query hashes ((Q, 4) uint64), nearest first."""
        if not self._entries:
            return []
        dist = self._distances(np.asarray(query, dtype=np.uint64).reshape(-1, 4))
        hits = np.nonzero(dist <= self._thresholds)[0]
        out = []
        for i in hits[np.argsort(dist[hits], kind="stable")]:
            hl, e = self._entries[int(i)]
            out.append(HashMatch(list=hl.name, list_version=self._versions[hl.name], id=e.id, category=e.category,
                                 distance=int(dist[i]), threshold=hl.threshold))
        return out

    def match_image(self, image: Image.Image) -> list[HashMatch]:
        """Hash the image in its 8 orientations and return the listed entries it matches, nearest first. An image
        whose PDQ quality is below PDQ_MIN_QUALITY matches nothing (a flat black picture would otherwise match
        any flat entry a list holds)."""
        if not self._entries:
            return []
        words, quality = pdq_dihedral(image)
        if quality < PDQ_MIN_QUALITY:
            return []
        return self.match_words(words)

    def nearest(self, image: Image.Image) -> tuple[int, HashEntry | None]:
        """The smallest distance from the image (any orientation) to a listed hash, and that entry."""
        if not self._entries:
            return 257, None
        words, _ = pdq_dihedral(image)
        dist = self._distances(words)
        i = int(np.argmin(dist))
        return int(dist[i]), self._entries[i][1]
