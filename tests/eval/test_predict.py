"""predict_logits: the scorer's code path, errored posts counted and kept out of metrics, labels aligned."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.datasets import LabelledSet

from eval.metrics import evaluate
from eval.predict import PredictionSet, align_labels, predict_logits


def test_errored_posts_are_counted_not_negatives(tiny_scorer, image_dir):
    posts = [
        {"id": "a", "text": "hello there"},
        {"id": "b", "image": str(image_dir / "red.png")},
        {"id": "c", "text": "caption", "image": str(image_dir / "truncated.jpg")},  # corrupt image
        {"id": "d", "image": str(image_dir / "notes.txt")},  # not an image
        {"id": "e", "text": "fine words", "image": str(image_dir / "blue.jpg")},
    ]
    # Data labels offensive then hate (the model's order is hate, offensive); hate unknown for "a".
    labels = np.array([[1, np.nan], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=float)
    data = LabelledSet(posts=posts, labels=labels, categories=["offensive", "hate"], sources=["s"] * 5)
    pred = predict_logits(tiny_scorer, data, progress=False, chunk=2)
    assert pred.ok.tolist() == [True, True, False, False, True]
    assert sum(pred.errors.values()) == 2 and pred.n_errors == 2
    assert set(pred.errors) <= {"image_corrupt", "image_unsupported_format"}
    assert np.isnan(pred.logits[2]).all() and np.isfinite(pred.logits[[0, 1, 4]]).all()
    assert pred.slices.tolist() == ["text", "image", "image+text", "image", "image+text"]
    np.testing.assert_array_equal(pred.labels[:, 1], labels[:, 0])  # columns follow the model's categories
    # Same logits as the scorer's own path.
    direct, _ = tiny_scorer.logits(tiny_scorer.prepare_many([posts[i] for i in (0, 1, 4)], "/"))
    np.testing.assert_allclose(pred.logits[[0, 1, 4]], direct, rtol=1e-5, atol=1e-6)
    ev = evaluate(pred.probs(None), pred.labels, pred.categories, {"hate": None, "offensive": None},
                  pred.slices, bootstrap=0)
    assert ev["n_unscored"] == 2
    assert ev["metrics"]["offensive"]["all"]["n"] == 3  # rows c and d are not counted as anything


def test_prediction_set_round_trip(tmp_path, tiny_scorer):
    posts = [{"id": f"p{i}", "text": f"post number {i}"} for i in range(6)]
    data = LabelledSet(posts=posts, labels=np.tile([1.0, np.nan], (6, 1)), categories=["hate", "offensive"],
                       sources=["x"] * 6, splits=["val"] * 6)
    pred = predict_logits(tiny_scorer, data, progress=False)
    path = pred.save(tmp_path / "predictions")
    again = PredictionSet.load(path)
    np.testing.assert_array_equal(again.logits, pred.logits)
    np.testing.assert_array_equal(again.labels, pred.labels)
    assert again.ids == pred.ids and again.splits == ["val"] * 6 and again.categories == pred.categories
    with pytest.raises(FileNotFoundError, match="moderation evaluate --out"):
        PredictionSet.load(tmp_path / "missing.npz")


def test_align_labels_refuses_disjoint_categories():
    with pytest.raises(ValueError, match="none of the model's categories"):
        align_labels(np.zeros((2, 1)), ["toxic"], ["hate", "offensive"])
