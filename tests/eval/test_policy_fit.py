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
