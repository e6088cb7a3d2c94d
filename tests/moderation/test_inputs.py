"""inputs: text checks and safe image reading (paths, data URLs, bombs, corrupt files)."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from PIL import Image

from moderation.inputs import InputLimits, check_text, decode_data_url, decode_image, load_image, resolve_image_path
from moderation.schema import ErrorCode, InputError
from tests.conftest import png_bytes


def _code(exc_info) -> ErrorCode:
    return exc_info.value.code


def test_check_text_blank_truncation_and_surrogates():
    assert check_text(None) == (None, False)
    assert check_text("  \n ") == (None, False)
    text, cut = check_text("x" * 50, InputLimits(max_text_chars=10))
    assert text == "x" * 10 and cut
    with pytest.raises(InputError, match="not valid UTF-8"):
        check_text("bad \udcff byte")


def test_path_resolution_refuses_escapes_and_urls(image_dir):
    assert resolve_image_path("red.png", image_dir) == (image_dir / "red.png").resolve()
    with pytest.raises(InputError, match="escapes the image root") as e:
        resolve_image_path("../outside.png", image_dir)
    assert _code(e) is ErrorCode.IMAGE_PATH_REFUSED
    with pytest.raises(InputError, match="escapes the image root"):
        resolve_image_path("/etc/passwd", image_dir)
    (image_dir / "link.png").symlink_to("/etc/hostname")
    with pytest.raises(InputError, match="escapes the image root"):
        resolve_image_path("link.png", image_dir)
    with pytest.raises(InputError, match="not fetched") as e:
        resolve_image_path("https://example.com/a.png", image_dir)
    assert _code(e) is ErrorCode.IMAGE_URL_REFUSED


def test_load_image_good_files_and_data_url(image_dir):
    assert load_image("red.png", image_dir).size == (40, 30)
    assert load_image("blue.jpg", image_dir).mode == "RGB"
    url = "data:image/png;base64," + base64.b64encode(png_bytes((5, 6))).decode()
    assert load_image(url).size == (5, 6)
    assert load_image(png_bytes((3, 4))).size == (3, 4)


@pytest.mark.parametrize("name, code, match", [
    ("truncated.jpg", ErrorCode.IMAGE_CORRUPT, "corrupt or truncated"),
    ("notes.txt", ErrorCode.IMAGE_UNSUPPORTED_FORMAT, "not in a recognised image format"),
    ("missing.png", ErrorCode.IMAGE_NOT_FOUND, "not found"),
])
def test_load_image_bad_files(image_dir, name, code, match):
    with pytest.raises(InputError, match=match) as e:
        load_image(name, image_dir)
    assert _code(e) is code


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: decoding it would need width*height*3 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    # Gigantic header: PIL refuses at open; our error code and wording still apply.
    with pytest.raises(InputError, match="decompression bomb") as e:
        decode_image(_png_header_only(50_000, 50_000))
    assert _code(e) is ErrorCode.IMAGE_DECOMPRESSION_BOMB
    # Over our own limit but under PIL's: refused from the header, before any pixel is decoded.
    with pytest.raises(InputError, match="over the limit of 1000") as e:
        decode_image(_png_header_only(100, 100), InputLimits(max_image_pixels=1000))
    assert _code(e) is ErrorCode.IMAGE_DECOMPRESSION_BOMB


def test_elongated_image_refused_from_its_header_before_any_work(monkeypatch):
    """Issue 13.1: a 102-byte 1x12000 PNG passes the pixel limit (12,000 pixels), but preprocessing scales its
    shorter side to 256 px: 256 x 3,072,000 pixels, 3.2 GB. It is refused from the header, nothing decoded."""
    tiny_but_long = png_bytes((1, 12_000))
    assert len(tiny_but_long) < 200
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size))
    with pytest.raises(InputError, match=r"1x12000, an aspect ratio of 12000:1, over the limit of 100:1") as e:
        decode_image(tiny_but_long)
    assert _code(e) is ErrorCode.IMAGE_DECOMPRESSION_BOMB
    with pytest.raises(InputError, match="aspect ratio of 200:1"):
        decode_image(_png_header_only(40_000, 200))  # wide as well as tall
    assert decoded == []
    monkeypatch.undo()
    # The limit itself: 100:1 passes, 101:1 does not; callers may set their own.
    assert decode_image(png_bytes((1, 100))).size == (1, 100)
    with pytest.raises(InputError, match="over the limit of 100:1"):
        decode_image(png_bytes((101, 1)))
    with pytest.raises(InputError, match="over the limit of 4:1"):
        decode_image(png_bytes((50, 10)), InputLimits(max_image_aspect_ratio=4))


def test_image_path_with_a_nul_byte_is_a_path_error(image_dir):
    """Issue 13.7: a NUL byte in an image path made os calls raise ValueError, reported as internal_error."""
    for path in ("red.png\x00.jpg", "\x00"):
        with pytest.raises(InputError, match="contains a NUL byte") as e:
            load_image(path, image_dir)
        assert _code(e) is ErrorCode.IMAGE_PATH_REFUSED
    (image_dir / "loop").symlink_to("loop")
    with pytest.raises(InputError, match="cannot be resolved") as e:
        load_image("loop", image_dir)
    assert _code(e) is ErrorCode.IMAGE_PATH_REFUSED


def test_limits_on_bytes_and_formats(image_dir):
    with pytest.raises(InputError, match="over the limit") as e:
        load_image("red.png", image_dir, InputLimits(max_image_bytes=10))
    assert _code(e) is ErrorCode.IMAGE_TOO_LARGE
    with pytest.raises(InputError, match="format PNG is not supported") as e:
        load_image("red.png", image_dir, InputLimits(image_formats=frozenset({"JPEG"})))
    assert _code(e) is ErrorCode.IMAGE_UNSUPPORTED_FORMAT


def test_bad_base64_and_data_urls():
    with pytest.raises(InputError, match="not valid base64") as e:
        decode_data_url("data:image/png;base64,@@@not-base64@@@")
    assert _code(e) is ErrorCode.BAD_BASE64
    with pytest.raises(InputError, match="must look like"):
        decode_data_url("data:image/png,rawdata")


def test_alpha_is_composited_on_white():
    import io
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(buf, format="PNG")
    img = decode_image(buf.getvalue())
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


# --- faithful conversion (issue 22 S3) ------------------------------------------------------------------------

def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_a_16_bit_grey_image_keeps_its_greys():
    import numpy as np

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)  # Pillow clipped this to white
    img = np.asarray(decode_image(_png(Image.fromarray(ramp))))
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255 and 120 < img.mean() < 135


@pytest.mark.parametrize("ink, background", [((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255))])
def test_text_on_a_transparent_background_stays_visible(ink, background):
    from PIL import ImageDraw

    img = Image.new("RGBA", (120, 40), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((10, 10, 60, 30), fill=ink + (255,))
    out = decode_image(_png(img))
    assert out.getpixel((0, 0)) == background and out.getpixel((30, 20)) == ink


def test_an_animation_shows_more_than_its_first_frame():
    import io

    from PIL import ImageDraw

    blank = Image.new("RGB", (100, 40), (255, 255, 255))
    marked = blank.copy()
    ImageDraw.Draw(marked).rectangle((10, 10, 50, 30), fill=(0, 0, 0))
    other = blank.copy()
    ImageDraw.Draw(other).ellipse((40, 5, 90, 35), fill=(200, 0, 0))
    buf = io.BytesIO()
    blank.save(buf, format="GIF", save_all=True, append_images=[marked, marked, other], duration=100)
    out = decode_image(buf.getvalue())
    # the blank first frame and the repeated one are skipped; the two distinct frames are stacked
    assert out.size == (100, 80)
    assert out.getpixel((30, 20)) == (0, 0, 0) and out.getpixel((65, 60))[0] > 150
