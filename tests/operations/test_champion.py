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


def test_policy_checks_block_recall_ratio_and_review_share_rise():
    from operations.champion import policy_check

    assert policy_check(0.30, 0.24, 0.20, 0.23) == ("ok", "ok")          # exactly 0.8x, exactly +3 points
    assert policy_check(0.30, 0.23, 0.20, 0.2301) == ("FAIL", "FAIL")
    assert policy_check(0.30, None, 0.20, None) == ("FAIL", "FAIL")      # the challenger cannot block / has no fit
    assert policy_check(0.0, 0.0, None, 0.5) == ("-", "-")               # nothing the champion did to keep
    assert policy_check(float("nan"), 0.1, 0.1, 0.1) == ("-", "ok")
    assert policy_check(0.30, 0.01, 0.0, 0.9, min_block_recall_ratio=None, max_review_share_rise=None) == ("-", "-")
    assert policy_check(0.30, 0.20, 0.10, 0.20, min_block_recall_ratio=0.5, max_review_share_rise=10) == ("ok", "ok")


def test_policy_figures_and_rows_pool_the_sets():
    from operations.champion import policy_figures, policy_rows

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.array([0.95, 0.9, 0.6, 0.2, 0.7, 0.55, 0.1, 0.1, 0.1, 0.1])
    f = policy_figures(y, p, block=0.8, review=0.5)
    assert f["block_recall"] == 0.5 and f["review_share"] == 0.3  # 0.6, 0.7, 0.55 in the band
    assert policy_figures(y, p, None, None) == {"block": None, "review": None, "block_recall": 0.0, "review_share": 0.0}
    assert policy_figures(np.zeros(3), p[:3], 0.8, 0.5)["block_recall"] is None

    # Two sets pooled: the challenger blocks only one of the four positives and reviews most of the rest.
    pooled = {"hate": {"y": [y[:5], y[5:]], "champion": [p[:5], p[5:]],
                       "challenger": [p[:5] * 0.87, np.full(5, 0.6)]}}
    thr = {"champion": {"block": {"hate": 0.8}, "review": {"hate": 0.5}},
           "challenger": {"block": {"hate": 0.8}, "review": {"hate": 0.5}}}
    (row,) = policy_rows(pooled, thr)
    assert row["n"] == 10 and row["n_positive"] == 4
    assert row["champion"]["block_recall"] == 0.5 and row["challenger"]["block_recall"] == 0.25
    assert row["challenger"]["review_share"] == 0.8 and row["block_check"] == "FAIL" and row["review_check"] == "FAIL"
    (off,) = policy_rows(pooled, thr, min_block_recall_ratio=None, max_review_share_rise=None)
    assert off["block_check"] == off["review_check"] == "-"


def test_a_failed_policy_check_holds_a_better_ranking_back():
    cell = {"set": "a", "category": "hate", "metrics": {
        "roc_auc": {"diff": 0.02, "ci": [0.01, 0.03], "verdict": "better"},
        "average_precision": {"diff": 0.0, "ci": [0, 0], "verdict": "same"}}}
    ok = {"category": "hate", "champion": {"block_recall": 0.3, "review_share": 0.2},
          "challenger": {"block_recall": 0.3, "review_share": 0.2}, "block_check": "ok", "review_check": "ok"}
    assert decide([cell], policy=[ok])["promotable"] is True
    bad = {**ok, "challenger": {"block_recall": 0.05, "review_share": 0.2}, "block_check": "FAIL"}
    held = decide([cell], policy=[bad])
    assert held["promotable"] is False
    assert held["reason"] == "1 policy check(s) failed: hate block recall 30.0% -> 5.0%"
    assert held["policy_failed"] == ["hate block recall 30.0% -> 5.0%"]
    both = decide([{**cell, "metrics": {**cell["metrics"], "average_precision": {
        "diff": -0.02, "ci": [-0.03, -0.01], "verdict": "worse"}}}], policy=[bad])
    assert both["reason"] == ("1 gating cell(s) significantly worse; 1 policy check(s) failed: hate block recall "
                              "30.0% -> 5.0%")


def test_the_command_line_defaults_are_the_library_defaults():
    """retrain_cli must stay light at import (no numpy), so it spells the policy checks' defaults itself."""
    import argparse

    from operations.champion import MAX_REVIEW_SHARE_RISE, MIN_BLOCK_RECALL_RATIO
    from operations.retrain_cli import add_comparison_options

    p = argparse.ArgumentParser()
    add_comparison_options(p)
    args = p.parse_args([])
    assert (args.min_block_recall_ratio, args.max_review_share_rise) == (MIN_BLOCK_RECALL_RATIO, MAX_REVIEW_SHARE_RISE)
