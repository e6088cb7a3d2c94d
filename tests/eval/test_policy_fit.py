"""Fitting the moderation policy: block at a precision lower bound, review for recall, budget or precision."""

from __future__ import annotations

import numpy as np
import pytest

from eval.metrics import clopper_pearson_lower
from eval.policy import ReviewTarget, fit_policy, policy_actions, select_review


def _data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1.3, n))))
    return y, p


def test_review_for_recall_is_the_highest_threshold_whose_lower_bound_reaches_it():
    y, p = _data()
    r = select_review(y, p, block=0.95, target=ReviewTarget("recall", 0.9))
    t = r["review"]
    assert r["status"] == "ok" and t < 0.95
    caught = p >= t
    tp, n_pos = y[caught].sum(), y.sum()
    assert clopper_pearson_lower(tp, n_pos) >= 0.9
    # One step higher (the next distinct score) would not reach it: the band is no wider than it must be.
    higher = np.unique(p[p > t]).min()
    assert clopper_pearson_lower(y[p >= higher].sum(), n_pos) < 0.9
    assert r["block_or_review_recall"] == pytest.approx(tp / n_pos)


def test_review_budget_and_review_precision():
    y, p = _data()
    budget = select_review(y, p, block=0.95, target=ReviewTarget("budget", 0.2))
    assert budget["review_share"] <= 0.2
    assert ((p >= budget["review"]) & (p < 0.95)).mean() == pytest.approx(budget["review_share"])
    prec = select_review(y, p, block=0.95, target=ReviewTarget("precision", 0.6))
    band = (p >= prec["review"]) & (p < 0.95)
    assert y[band].mean() >= 0.6 and prec["review_precision"] == pytest.approx(y[band].mean())
    # Scores that never separate the classes: no band reaches a high precision, and the reason says what the
    # lowest threshold would give.
    flat = select_review(y, np.full_like(p, 0.5), block=None, target=ReviewTarget("precision", 0.9))
    assert flat["status"] == "unreachable" and flat["review"] is None and "lowest possible" in flat["reason"]
    with pytest.raises(ValueError, match="review target kind"):
        ReviewTarget("coverage", 0.5)
    with pytest.raises(ValueError, match="must be in"):
        ReviewTarget("recall", 1.5)


def test_fit_policy_per_category_with_unknown_labels_and_actions():
    y, p = _data()
    labels = np.stack([y, np.where(np.arange(len(y)) % 2 == 0, y, np.nan)], axis=1)
    probs = np.stack([p, p], axis=1)
    policy = fit_policy(probs, labels, ["hate", "offensive"], block_precision=0.9, review=ReviewTarget("recall", 0.85))
    for cat in ("hate", "offensive"):
        entry = policy.categories[cat]
        assert entry.block is not None and entry.review is not None and entry.review < entry.block
        assert entry.meta["block_fit"]["precision_lower_bound"] >= 0.9
        assert entry.meta["alternatives"] and {"block_precision_target", "review_recall_target", "review_share"} <= set(
            entry.meta["alternatives"][0])
    assert policy.version.startswith("pol-") and policy.meta["fitted"]["review_target"]["kind"] == "recall"
    actions = policy_actions(policy, np.array([[0.999, 0.0], [policy.categories["hate"].review, 0.0], [0.0, 0.0]]),
                             ["hate", "offensive"])
    assert actions[:, 0].tolist() == ["block", "review", "allow"]


def _two_datasets(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An easy dataset (well separated, many positives) and a hard one whose top scores are often wrong."""
    rng = np.random.default_rng(seed)
    y_easy = (rng.random(3000) < 0.4).astype(float)
    p_easy = 1 / (1 + np.exp(-(np.where(y_easy == 1, 3.0, -3.0) + rng.normal(0, 1.0, 3000))))
    y_hard = (rng.random(600) < 0.3).astype(float)
    p_hard = 1 / (1 + np.exp(-(np.where(y_hard == 1, 0.5, -0.5) + rng.normal(0, 1.5, 600))))
    return (np.r_[y_easy, y_hard], np.r_[p_easy, p_hard],
            np.array(["easy"] * 3000 + ["hard"] * 600, dtype=object))


def test_each_dataset_rule_raises_the_block_threshold_until_every_dataset_keeps_the_target():
    from eval.policy import EACH_DATASET_MIN_FLAGGED, dataset_block_floor

    y, p, src = _two_datasets()
    pooled = fit_policy(p[:, None], y[:, None], ["hate"], block_precision=0.9)
    each = fit_policy(p[:, None], y[:, None], ["hate"], block_precision=0.9, block_rule="each_dataset", sources=src)
    t_pooled, t_each = pooled.categories["hate"].block, each.categories["hate"].block
    hard = src == "hard"
    # Under the pooled rule the hard dataset's blocks miss the target; the each-dataset rule fixes that.
    assert y[hard & (p >= t_pooled)].mean() < 0.9
    assert t_each > t_pooled
    blocked = hard & (p >= t_each)
    assert blocked.sum() < EACH_DATASET_MIN_FLAGGED or y[blocked].mean() >= 0.9
    assert each.categories["hate"].meta["block_fit"]["binding_dataset"] == "hard"
    assert each.meta["fitted"]["block_rule"] == "each_dataset"
    floor = dataset_block_floor(y, p, src, 0.9)
    assert floor["binding"] == "hard" and floor["per_dataset"]["easy"] < floor["per_dataset"]["hard"]
    # Every cut at or above the floor keeps the hard dataset at the target wherever it blocks enough posts.
    for t in np.unique(p[hard & (p >= floor["floor"])]):
        sel = hard & (p >= t)
        assert sel.sum() < EACH_DATASET_MIN_FLAGGED or y[sel].mean() >= 0.9


def test_each_dataset_rule_needs_sources_and_rejects_unknown_rules():
    y, p, _ = _two_datasets()
    with pytest.raises(ValueError, match="sources"):
        fit_policy(p[:, None], y[:, None], ["hate"], block_rule="each_dataset")
    with pytest.raises(ValueError, match="block_rule"):
        fit_policy(p[:, None], y[:, None], ["hate"], block_rule="strict")
