"""Images made in code for the OCR and hash tests: captions rendered with Pillow's bundled font, and
textured "photos" from a seeded random generator (PDQ needs texture: a flat image has no hash worth the name)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def caption(text: str, size: tuple[int, int] = (640, 160), font_size: int = 32,
            background: tuple[int, int, int] = (255, 255, 255), fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """`text` centred on a plain background, with a margin all round (Pillow's bundled font, no system fonts)."""
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    width = draw.textlength(text, font=font)
    if width > size[0] - 40:
        raise ValueError(f"{text!r} is {width:.0f} px wide at size {font_size}: too wide for {size}")
    draw.text(((size[0] - width) / 2, (size[1] - font_size) / 2), text, font=font, fill=fill)
    return img


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured picture: smooth random colour fields plus a few random ellipses, the same for the same seed."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    img = low.resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        r = int(rng.integers(10, 60))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def encode(img: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    """The image's encoded bytes (e.g. fmt="JPEG", quality=50)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()
