"""Champion / challenger statistics: the fast metrics equal scikit-learn's, the paired bootstrap sees a real
difference and not a null one, verdicts and the promotion rule."""

from __future__ import annotations

import numpy as np
import pytest

from operations.champion import decide, fast_ap, fast_auc, paired_bootstrap, verdict


def test_fast_metrics_equal_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        p = np.round(rng.random(300) * 0.5 + 0.4 * y, 2)  # rounded: many ties
        assert fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert fast_ap(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert np.isnan(fast_auc(np.ones(4), np.arange(4.0)))


def _scores(rng, y, separation):
    return 1 / (1 + np.exp(-(rng.normal(size=y.size) + separation * y)))


def test_paired_bootstrap_sees_a_better_model_and_not_a_twin():
    rng = np.random.default_rng(1)
    y = (rng.random(800) < 0.3).astype(float)
    weak, strong = _scores(rng, y, 0.8), _scores(rng, y, 2.5)
    better = paired_bootstrap(y, weak, strong, 0.7, 0.7, n_boot=300, seed=0)
    assert better["roc_auc"]["diff"] > 0.1 and verdict(better["roc_auc"]["ci"]) == "better"
    assert verdict(better["average_precision"]["ci"]) == "better"
    assert better["recall_at_threshold"]["challenger"] > better["recall_at_threshold"]["champion"]
    twin = paired_bootstrap(y, weak, weak, 0.7, 0.7, n_boot=300, seed=0)
    assert twin["roc_auc"]["diff"] == 0.0 and verdict(twin["roc_auc"]["ci"]) == "same"
    worse = paired_bootstrap(y, strong, weak, 0.7, None, n_boot=300, seed=0)
    assert verdict(worse["roc_auc"]["ci"]) == "worse"
    assert worse["recall_at_threshold"]["challenger"] == 0.0  # no threshold: nothing flagged


def test_verdicts_and_the_promotion_rule():
    assert verdict([0.01, 0.03]) == "better" and verdict([-0.03, -0.01]) == "worse"
    assert verdict([-0.03, -0.01], margin=0.02) == "same" and verdict([-0.01, 0.02]) == "same"
    assert verdict([float("nan"), 0.1]) == "not judged"

    def cell(name, auc, ap):
        return {"set": name, "category": "hate", "metrics": {
            "roc_auc": {"diff": 0.0, "ci": [0, 0], "verdict": auc},
            "average_precision": {"diff": 0.0, "ci": [0, 0], "verdict": ap}}}

    assert decide([cell("a", "better", "same"), cell("b", "same", "same")])["promotable"] is True
    held = decide([cell("a", "better", "better"), cell("b", "same", "worse")])
    assert held["promotable"] is False and "1 gating cell(s) significantly worse" == held["reason"]
    assert decide([cell("a", "same", "same")])["reason"].startswith("no gating cell significantly better")
    assert decide([{"set": "a", "category": "hate", "note": "not judged"}])["promotable"] is False
    # Gating on AUC alone ignores an AP loss.
    assert decide([cell("a", "better", "worse")], ["roc_auc"])["promotable"] is True
