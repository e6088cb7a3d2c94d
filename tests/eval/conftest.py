"""Fixtures of the eval tests: a small labelled dataset whose labels follow the tiny model's own scores.

The tiny model has random weights, so real labels would be noise to it. For `offensive` the label is
"the tiny model's logit is in its top 35%" (a threshold at high precision exists); for `hate` it is a
coin flip (no threshold reaches 0.9 precision). Posts are text-only, image-only and image+text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_bytes

WORDS = ("you", "are", "a", "lovely", "terrible", "person", "cat", "dog", "idiot", "friend", "go", "away", "nice",
         "day", "stupid", "great", "hate", "love", "this", "that", "never", "always", "people", "them")


def make_posts(folder: Path, n: int = 240, seed: int = 0) -> list[dict]:
    """n posts (80% text, 10% image, 10% both) with images written under folder/images."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    posts = []
    for i in range(n):
        kind = "text" if i % 10 < 8 else ("image" if i % 10 == 8 else "both")
        post: dict = {"id": f"p{i}"}
        if kind in ("text", "both"):
            post["text"] = " ".join(rng.choice(WORDS, size=rng.integers(3, 12)))
        if kind in ("image", "both"):
            name = f"images/p{i}.png"
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (folder / name).write_bytes(png_bytes((24 + i % 16, 20 + i % 9), color))
            post["image"] = name
        posts.append(post)
    return posts


def model_labels(scorer, posts: list[dict], folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """offensive: top 35% of the model's offensive logit; hate: coin flips."""
    items = scorer.prepare_many(posts, folder)
    logits, _ = scorer.logits(items)
    j = scorer.categories.index("offensive")
    offensive = (logits[:, j] >= np.quantile(logits[:, j], 0.65)).astype(int)
    hate = np.random.default_rng(seed + 1).integers(0, 2, len(posts))
    return {"offensive": offensive, "hate": hate}


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory) -> Path:
    """A dataset folder (data.jsonl + images) with a val and a test split, labels following the tiny model.

    Built once per session with its own copy of the tiny model: `tiny_model` is seeded, so every test's
    `tiny_model_dir` holds the same weights and these labels follow it too. Tests must not write into it.
    """
    import torch

    from moderation.model import ModelConfig, ModerationModel
    from moderation.model_dir import ModelInfo
    from moderation.scorer import Scorer
    from tests.conftest import TINY_CONFIG

    config = ModelConfig.from_dict({k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()})
    torch.manual_seed(0)  # as the tiny_model fixture does
    model = ModerationModel(config).eval()
    scorer = Scorer(model, ModelInfo(path=None, config=config, model_version="tiny", trained=True, calibration=None,
                                     thresholds=None, meta={}), batch_size=32, num_workers=0)
    folder = tmp_path_factory.mktemp("toyset")
    posts = make_posts(folder)
    labels = model_labels(scorer, posts, folder)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as fh:
        for i, post in enumerate(posts):
            row = {**post, "off_label": int(labels["offensive"][i]), "hate_label": int(labels["hate"][i]),
                   "split": "val" if i % 2 == 0 else "test"}
            fh.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture()
def labelled_set(labelled_folder):
    """All rows of labelled_folder as a moderation.datasets.LabelledSet (categories hate, offensive)."""
    from moderation.datasets import DatasetSpec, load_labelled
    spec = DatasetSpec(path=labelled_folder / "data.jsonl", labels={"off_label": "offensive", "hate_label": "hate"},
                       name="toyset")
    return load_labelled([spec], ["hate", "offensive"], {"val", "test"})
