"""Tiny labelled datasets written in tmp_path: a text dataset labelling `hate`, a meme dataset labelling `offensive`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG, png_bytes

HATE_WORDS = ["vermin", "scum", "subhuman", "filth"]
KIND_WORDS = ["sunshine", "garden", "coffee", "friends"]


def write_tiny_datasets(root: Path, n: int = 24) -> tuple[Path, Path]:
    """A separable text dataset (hate words vs kind words) and a meme dataset (red image = offensive)."""
    text_dir, meme_dir = root / "tiny_text", root / "tiny_memes"
    text_dir.mkdir(parents=True)
    (meme_dir / "images").mkdir(parents=True)
    (meme_dir / "images" / "red.png").write_bytes(png_bytes((32, 32), (220, 20, 20)))
    (meme_dir / "images" / "blue.png").write_bytes(png_bytes((32, 32), (20, 20, 220)))
    with open(text_dir / "data.jsonl", "w") as fh:
        for i in range(n):
            bad = i % 2 == 0
            words = HATE_WORDS if bad else KIND_WORDS
            text = f"{words[i % 4]} {words[(i + 1) % 4]} {words[(i + 2) % 4]} number {i}"
            split = "train" if i < n * 2 // 3 else "val"
            fh.write(json.dumps({"id": i, "text": text, "label": int(bad), "split": split}) + "\n")
    with open(meme_dir / "data.jsonl", "w") as fh:
        for i in range(n):
            bad = i % 2 == 0
            row = {"id": f"m{i}", "image": f"images/{'red' if bad else 'blue'}.png", "label": int(bad),
                   "split": "train" if i < n * 2 // 3 else "val"}
            if i % 3:
                row["text"] = f"{'vermin' if bad else 'garden'} meme {i}"
            fh.write(json.dumps(row) + "\n")
    return text_dir, meme_dir


@pytest.fixture()
def tiny_specs(tmp_path):
    from moderation.datasets import DatasetSpec
    text_dir, meme_dir = write_tiny_datasets(tmp_path / "data")
    return [DatasetSpec(text_dir / "data.jsonl", {"label": "hate"}, "tiny_text"),
            DatasetSpec(meme_dir / "data.jsonl", {"label": "offensive"}, "tiny_memes")]


@pytest.fixture()
def tiny_model_config():
    from moderation.model import ModelConfig
    return ModelConfig.from_dict({k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()})
