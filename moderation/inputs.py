"""Reading a post's content safely: text checks and image decoding with limits.

Every failure raises `InputError` with a stable code, so that the caller can put a per-item error on the
post's result instead of dropping it or scoring it as safe. Shared by batch scoring, evaluation,
training and the endpoint, so a limit means the same thing everywhere.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from moderation.schema import ErrorCode, InputError


@dataclass(frozen=True)
class InputLimits:
    """Limits applied to every post. Units: characters, bytes, pixels (width x height)."""

    #: Text longer than this is cut to it and marked `text_truncated` (the encoder reads far fewer tokens anyway).
    max_text_chars: int = 20_000
    #: Encoded image size limit, bytes.
    max_image_bytes: int = 20 * 1024 * 1024
    #: Decoded image size limit; a larger header is refused as a decompression bomb before decoding.
    max_image_pixels: int = 40_000_000
    #: Longer side / shorter side limit; a more elongated header is refused before decoding. Preprocessing
    #: scales the shorter side up or down to a fixed size (256 px for the default encoder), so a tiny 1x12000
    #: image would become 256 x 3,072,000 pixels (3 GB): the work must be bounded by the shape, not the area.
    max_image_aspect_ratio: float = 100.0
    #: Image formats decoded (PIL format names).
    image_formats: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


DEFAULT_LIMITS = InputLimits()


def check_text(text: str | None, limits: InputLimits = DEFAULT_LIMITS) -> tuple[str | None, bool]:
    """Validate a post's text; return (text or None when blank, truncated?).

    Raises InputError(TEXT_NOT_UTF8) for text that holds unpaired surrogates (what invalid UTF-8 becomes
    after a lenient decode with `surrogateescape`).
    """
    if text is None:
        return None, False
    if not isinstance(text, str):
        raise InputError(ErrorCode.INVALID_FIELD, f"text must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(ErrorCode.TEXT_NOT_UTF8, f"text is not valid UTF-8 (bad character at position {exc.start})") from None
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.strip():
        return None, False
    if len(text) > limits.max_text_chars:
        return text[: limits.max_text_chars], True
    return text, False


def resolve_image_path(path: str, image_root: str | os.PathLike | None) -> Path:
    """Resolve an image path under `image_root` (default: the current directory).

    Raises InputError(IMAGE_URL_REFUSED) for URLs (never fetched here) and IMAGE_PATH_REFUSED for a path
    that escapes the root (absolute elsewhere, `..`, or a symlink pointing outside) or that is no path at all
    (a NUL byte, a name that cannot be resolved).
    """
    lowered = path[:16].lower()
    if "://" in lowered:
        raise InputError(ErrorCode.IMAGE_URL_REFUSED,
                         "image URLs are not fetched; give a path under the image root or the image bytes")
    if "\x00" in path:  # no file name holds one; os calls would raise ValueError
        raise InputError(ErrorCode.IMAGE_PATH_REFUSED, f"image path {path!r} contains a NUL byte")
    root = Path(image_root if image_root is not None else ".").resolve()
    candidate = Path(path)
    try:
        full = (candidate if candidate.is_absolute() else root / candidate).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. a symlink loop (RuntimeError), a name too long
        raise InputError(ErrorCode.IMAGE_PATH_REFUSED, f"image path {path!r} cannot be resolved ({exc})") from None
    if full != root and root not in full.parents:
        raise InputError(ErrorCode.IMAGE_PATH_REFUSED, f"image path {path!r} escapes the image root {str(root)!r}")
    return full


def read_image_bytes(image: str | bytes, image_root: str | os.PathLike | None = None,
                     limits: InputLimits = DEFAULT_LIMITS) -> bytes:
    """Return the encoded bytes of a post's image: raw bytes as given, a `data:` URL decoded, or a file read.

    Raises InputError for bad base64, refused paths, missing files and files over the byte limit.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif image.startswith("data:"):
        data = decode_data_url(image)
    else:
        full = resolve_image_path(image, image_root)
        try:
            size = full.stat().st_size
        except FileNotFoundError:
            raise InputError(ErrorCode.IMAGE_NOT_FOUND, f"image file not found: {image}") from None
        except OSError as exc:
            raise InputError(ErrorCode.IMAGE_NOT_FOUND, f"image file cannot be read: {image} ({exc.strerror})") from None
        if not full.is_file():
            raise InputError(ErrorCode.IMAGE_NOT_FOUND, f"image path is not a file: {image}")
        if size > limits.max_image_bytes:
            raise InputError(ErrorCode.IMAGE_TOO_LARGE, f"image file is {size} bytes, over the limit of {limits.max_image_bytes}")
        data = full.read_bytes()
    if len(data) > limits.max_image_bytes:
        raise InputError(ErrorCode.IMAGE_TOO_LARGE, f"image is {len(data)} bytes, over the limit of {limits.max_image_bytes}")
    if not data:
        raise InputError(ErrorCode.IMAGE_CORRUPT, "image is empty (0 bytes)")
    return data


def decode_data_url(url: str) -> bytes:
    """Decode a `data:image/...;base64,...` URL. Raises InputError(BAD_BASE64) when it is not one."""
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InputError(ErrorCode.BAD_BASE64, "a data URL must look like 'data:image/png;base64,<data>'")
    return decode_base64(payload)


def decode_base64(payload: str) -> bytes:
    """Strict base64 decode (whitespace allowed). Raises InputError(BAD_BASE64)."""
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(ErrorCode.BAD_BASE64, f"image is not valid base64 ({exc})") from None


def decode_image(data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode encoded image bytes into an RGB PIL image, faithfully: 16-bit and float greys scaled to 8 bits (not
    clipped to white), transparency composited on a background that contrasts with what is drawn (white text on
    a transparent background stays readable), and an animation's distinct frames stacked top to bottom (at most
    MAX_FRAMES, spread over the animation: a GIF whose first frame is blank still shows what it hides).

    The header is checked against the pixel and aspect-ratio limits before any pixel is decoded, so a
    decompression bomb (a huge image, or a tiny but extremely elongated one that preprocessing would blow up)
    costs nothing. Raises InputError with IMAGE_UNSUPPORTED_FORMAT, IMAGE_DECOMPRESSION_BOMB or IMAGE_CORRUPT.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in limits.image_formats:
                raise InputError(ErrorCode.IMAGE_UNSUPPORTED_FORMAT,
                                 f"image format {fmt} is not supported (supported: {', '.join(sorted(limits.image_formats))})")
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InputError(ErrorCode.IMAGE_CORRUPT, f"image has an empty size {width}x{height}")
            if width * height > limits.max_image_pixels:
                raise InputError(ErrorCode.IMAGE_DECOMPRESSION_BOMB,
                                 f"image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_image_pixels}")
            if max(width, height) > limits.max_image_aspect_ratio * min(width, height):
                raise InputError(ErrorCode.IMAGE_DECOMPRESSION_BOMB,
                                 f"image is {width}x{height}, an aspect ratio of {max(width, height) / min(width, height):.0f}:1, "
                                 f"over the limit of {limits.max_image_aspect_ratio:g}:1 (scaling it for the model would "
                                 "take far more memory than its size suggests)")
            img.seek(0)
            img.load()
            return _frames_to_rgb(img, limits)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(ErrorCode.IMAGE_UNSUPPORTED_FORMAT, "image data is not in a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(ErrorCode.IMAGE_DECOMPRESSION_BOMB, f"image refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(ErrorCode.IMAGE_CORRUPT, f"image is corrupt or truncated ({exc})") from None


#: An animation contributes at most this many frames (spread over those scanned; blank and repeated ones skipped).
MAX_FRAMES = 4
#: Frames of an animation looked at: at most 64, and at most this many pixels in all (decoding costs time).
MAX_SCANNED_FRAMES = 64
MAX_SCANNED_PIXELS = 100_000_000


def _frames_to_rgb(img: Image.Image, limits: InputLimits) -> Image.Image:
    """The image in RGB; for an animation, its distinct non-blank frames stacked top to bottom (within the pixel
    and aspect limits), so that the model and OCR see what every part of it shows, not only its first frame."""
    if not getattr(img, "is_animated", False):
        return _to_rgb(img)
    width, height = img.size
    most = max(1, min(MAX_FRAMES, limits.max_image_pixels // (width * height),
                      int(limits.max_image_aspect_ratio * width // height)))
    scan = max(1, min(MAX_SCANNED_FRAMES, MAX_SCANNED_PIXELS // (width * height)))
    kept: list[int] = []
    seen: set[bytes] = set()
    for index in range(scan):
        try:
            img.seek(index)
        except EOFError:
            break
        frame = _to_rgb(img.copy())
        if all(lo == hi for lo, hi in frame.getextrema()):
            continue  # a blank (single-colour) frame adds nothing
        thumb = frame.resize((16, 16), Image.BILINEAR).tobytes()
        if thumb not in seen:
            seen.add(thumb)
            kept.append(index)
    if len(kept) > most:
        kept = [kept[round(i * (len(kept) - 1) / (most - 1))] for i in range(most)] if most > 1 else kept[:1]
    frames = []
    for index in kept or [0]:
        img.seek(index)
        frames.append(_to_rgb(img.copy()))
    if len(frames) == 1:
        return frames[0]
    sheet = Image.new("RGB", (width, height * len(frames)), (255, 255, 255))
    for i, frame in enumerate(frames):
        sheet.paste(frame, (0, i * height))
    return sheet


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # Pillow's convert clips 16-bit and float values at 255 (a 16-bit grey PNG turns white): scale instead.
        values = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and values.max(initial=0.0) <= 1.0 else (65535.0 if values.max(initial=0.0) > 255 else 255.0)
        grey = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _background(rgba)), rgba).convert("RGB")
    return img.convert("RGB")


def _background(rgba: Image.Image) -> tuple[int, int, int, int]:
    """White, unless what is drawn (weighted by its opacity) is mostly light: then black, so that it shows."""
    pixels = np.asarray(rgba.reduce(max(1, min(rgba.size) // 64)) if min(rgba.size) > 64 else rgba, dtype=np.float64)
    alpha = pixels[..., 3] / 255.0
    if alpha.sum() == 0 or alpha.min() == 1.0:
        return (255, 255, 255, 255)
    luma = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    return (0, 0, 0, 255) if (luma * alpha).sum() / alpha.sum() > 160 else (255, 255, 255, 255)


def load_image(image: str | bytes, image_root: str | os.PathLike | None = None,
               limits: InputLimits = DEFAULT_LIMITS) -> Image.Image:
    """Read and decode a post's image (path, data URL or bytes) into RGB. Raises InputError."""
    return decode_image(read_image_bytes(image, image_root, limits), limits)
