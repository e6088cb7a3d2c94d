"""OCR: the packaged models read a caption rendered in code, offline; clean-up of what it reads."""

from __future__ import annotations

import socket

import pytest

from moderation.ocr import OcrEngine, OcrSettings, check_ocr_mode, clean_lines, model_dir, split_joined_words
from tests.imagegen import caption


def test_reads_a_rendered_caption_without_touching_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"OCR tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    engine = OcrEngine()  # a fresh engine: its models load here, under the guard
    assert engine.read(caption("YOU ARE A WORTHLESS IDIOT")) == "YOU ARE A WORTHLESS IDIOT"


def test_an_image_without_text_reads_as_empty():
    from PIL import Image

    assert OcrEngine().read(Image.new("RGB", (200, 120), (90, 140, 200))) == ""


def test_models_come_from_the_installed_package():
    root = model_dir()
    assert (root / "PP-OCRv6_det_small.onnx").is_file() and (root / "PP-OCRv6_rec_small.onnx").is_file()


def test_joined_words_are_split_and_the_rest_is_kept():
    assert split_joined_words("GOKILLYOURSELF") == "GO KILL YOURSELF"
    assert split_joined_words("LOOKATTHISUGLYRETARD, now!") == "LOOK AT THIS UGLY RETARD, now!"
    # real words, short runs, digits and punctuation stay as they are
    assert split_joined_words("government program 2:28 PM don't") == "government program 2:28 PM don't"


def test_clean_lines_drops_specks_and_can_keep_runs():
    assert clean_lines(["0", "  HELLO   THERE ", "|"]) == "HELLO THERE"
    assert clean_lines(["GOKILLYOURSELF"], OcrSettings(split_joined_words=False)) == "GOKILLYOURSELF"


def test_unknown_mode_lists_the_known_ones():
    assert check_ocr_mode("both") == "both"
    with pytest.raises(ValueError, match="off, auto, ocr, both"):
        check_ocr_mode("always")
