"""Metrics against hand-computed tiny cases and scikit-learn; NaN masking; bounds; JSON-readiness."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import beta
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

from eval.metrics import (
    _headline,
    at_threshold,
    binary_metrics,
    bootstrap_intervals,
    clopper_pearson_interval,
    clopper_pearson_lower,
    evaluate,
    expected_calibration_error,
    roc_auc,
    precision_at_recall,
    recall_at_fpr,
    recall_at_precision,
)

# 4 negatives, 4 positives; scores sorted: (0.1 n) (0.2 n) (0.3 p) (0.4 n) (0.6 p) (0.7 n) (0.8 p) (0.9 p)
Y = np.array([0, 0, 1, 0, 1, 0, 1, 1], dtype=float)
P = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])


def test_tiny_case_by_hand():
    m = binary_metrics(Y, P, threshold=0.6)
    # AUC = share of (pos, neg) pairs ranked right: pos 0.3 beats 2 negs, 0.6 beats 3, 0.8 and 0.9 beat 4 -> 13/16.
    assert m["roc_auc"] == pytest.approx(13 / 16)
    # AP = mean over positives of precision at their rank: 1/1, 2/2, 3/4, 4/6 -> (1 + 1 + .75 + 2/3) / 4.
    assert m["average_precision"] == pytest.approx((1 + 1 + 0.75 + 2 / 3) / 4)
    op = m["operating"]  # flag 0.6, 0.7, 0.8, 0.9: tp 3, fp 1
    assert (op["tp"], op["fp"], op["fn"], op["tn"]) == (3, 1, 1, 3)
    assert op["precision"] == pytest.approx(0.75) and op["recall"] == pytest.approx(0.75)
    assert op["f1"] == pytest.approx(0.75) and op["macro_f1"] == pytest.approx(0.75)
    assert op["flag_rate"] == pytest.approx(0.5)
    # precision at recall >= 0.8 needs all 4 positives: the best cut is 0.3 -> 4/6.
    assert m["precision_at_recall"]["0.80"] == pytest.approx(4 / 6)
    # recall at precision >= 0.9: top 2 are both positive -> recall 0.5.
    assert m["recall_at_precision"]["0.90"] == pytest.approx(0.5)
    # at FPR <= 1% no negative may be flagged: the top 2 -> recall 0.5.
    assert m["recall_at_fpr_1pct"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2))


def test_ece_by_hand():
    # Two bins used: 0.1 (two posts, one positive: |0.5 - 0.1|) and 0.9 (two posts, both positive: |1 - 0.9|).
    y = np.array([0, 1, 1, 1.0])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)


def test_against_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(float)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    m = binary_metrics(y, p, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))
    assert m["operating"]["f1"] == pytest.approx(f1_score(y, p >= 0.5))
    assert m["operating"]["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    # The bootstrap's count-based figures equal scikit-learn's.
    h = _headline(y, p, 0.5)
    assert h["f1"] == pytest.approx(f1_score(y, p >= 0.5))
    assert h["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    # Brute force over every threshold for the curve-derived figures.
    ts = np.unique(p)
    prec = np.array([y[p >= t].mean() for t in ts])
    rec = np.array([y[p >= t].sum() / y.sum() for t in ts])
    fpr = np.array([(p[y == 0] >= t).mean() for t in ts])
    assert precision_at_recall(y, p, 0.9) == pytest.approx(prec[rec >= 0.9].max())
    assert recall_at_precision(y, p, 0.9) == pytest.approx(rec[prec >= 0.9].max() if (prec >= 0.9).any() else 0.0)
    assert recall_at_fpr(y, p, 0.05) == pytest.approx(rec[fpr <= 0.05].max())


def test_no_threshold_flags_nothing():
    op = at_threshold(Y, P, None)
    assert op["tp"] == op["fp"] == 0 and op["precision"] is None and op["recall"] == 0.0 and op["flag_rate"] == 0.0


def test_clopper_pearson_matches_beta_quantiles():
    for k, n in [(1, 1), (5, 10), (29, 29), (90, 100), (0, 7), (365, 394)]:
        expected = 0.0 if k == 0 else beta.ppf(0.05, k, n - k + 1)
        assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(expected, abs=1e-10)
        lo, hi = clopper_pearson_interval(k, n, 0.95)
        assert lo == pytest.approx(0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1), abs=1e-10)
        assert hi == pytest.approx(1.0 if k == n else beta.ppf(0.975, k + 1, n - k), abs=1e-10)
    # Closed form when every flagged post is right: the bound is alpha ** (1 / n).
    assert clopper_pearson_lower(29, 29, 0.95) == pytest.approx(0.05 ** (1 / 29))
    arr = clopper_pearson_lower(np.array([0, 5, 10]), np.array([10, 10, 10]), 0.9)
    assert arr.shape == (3,) and arr[0] == 0.0 and arr[1] < 0.5 < arr[2]
    assert math.isnan(clopper_pearson_lower(0, 0))
    with pytest.raises(ValueError, match="confidence must be in"):
        clopper_pearson_lower(1, 2, 1.5)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson_lower(3, 2)


def test_clopper_pearson_covers():
    # Coverage: the true proportion lies above the 90% lower bound in at least ~90% of draws.
    rng = np.random.default_rng(0)
    k = rng.binomial(40, 0.8, size=4000)
    covered = clopper_pearson_lower(k, np.full(4000, 40), 0.9) <= 0.8
    assert covered.mean() >= 0.89


def test_bootstrap_brackets_point_estimate():
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.4).astype(float)
    p = np.clip(0.35 * y + rng.random(400) * 0.65, 0, 1)
    ci = bootstrap_intervals(y, p, 0.6, n_boot=200, seed=0)
    assert ci["n_valid"] == 200
    auc = roc_auc_score(y, p)
    assert ci["roc_auc"][0] < auc < ci["roc_auc"][1]
    assert 0 < ci["roc_auc"][1] - ci["roc_auc"][0] < 0.2
    assert bootstrap_intervals(y, p, 0.6, n_boot=0) == {}


def test_evaluate_masks_unknown_labels_and_unscored_rows():
    rng = np.random.default_rng(3)
    n = 300
    y = (rng.random((n, 2)) < 0.4).astype(float)
    p = np.clip(0.3 * y + rng.random((n, 2)) * 0.7, 0, 1)
    labels = y.copy()
    labels[:100, 1] = np.nan  # the first 100 rows say nothing about category 2
    probs = p.copy()
    probs[-5:] = np.nan  # five posts could not be scored
    slices = np.array(["text"] * 150 + ["image+text"] * 150, dtype=object)
    ev = evaluate(probs, labels, ["hate", "offensive"], {"hate": 0.5, "offensive": None}, slices, bootstrap=20)
    json.dumps(ev, allow_nan=False)  # strict JSON: NaN became null
    assert ev["n_unscored"] == 5 and ev["slices"] == ["all", "text", "image+text"]
    off = ev["metrics"]["offensive"]["all"]
    assert off["n"] == 195  # 300 - 100 unknown - 5 unscored
    # Unknown labels are not negatives: the figures equal scikit-learn's on the known rows only.
    rows = slice(100, 295)
    assert off["roc_auc"] == pytest.approx(roc_auc_score(y[rows, 1], p[rows, 1]))
    assert off["operating"]["flag_rate"] == 0.0 and off["operating"]["recall"] == 0.0
    hate_text = ev["metrics"]["hate"]["text"]
    assert hate_text["n"] == 150
    assert hate_text["roc_auc"] == pytest.approx(roc_auc_score(y[:150, 0], p[:150, 0]))
    assert set(ev["metrics"]["hate"]["all"]["ci"]) >= {"roc_auc", "average_precision", "recall", "precision"}


def test_one_class_slice_is_reported_not_crashed():
    ev = evaluate(np.array([[0.2], [0.9]]), np.array([[1.0], [1.0]]), ["hate"], {"hate": 0.5}, bootstrap=10)
    m = ev["metrics"]["hate"]["all"]
    assert m["roc_auc"] is None and "only one class" in m["note"] and m["operating"]["recall"] == 0.5


def test_evaluate_errors():
    p = np.full((3, 1), 0.5)
    with pytest.raises(ValueError, match="must both be"):
        evaluate(p, np.zeros((3, 2)), ["hate"], {"hate": 0.5})
    with pytest.raises(ValueError, match="labels must be 0, 1 or NaN"):
        evaluate(p, np.array([[0.0], [2.0], [1.0]]), ["hate"], {"hate": 0.5})
    with pytest.raises(ValueError, match="not logits"):
        evaluate(p * 4, np.zeros((3, 1)), ["hate"], {"hate": 0.5})
    with pytest.raises(ValueError, match="no threshold entry"):
        evaluate(p, np.zeros((3, 1)), ["hate"], {})
    with pytest.raises(ValueError, match="slices has shape"):
        evaluate(p, np.zeros((3, 1)), ["hate"], {"hate": 0.5}, slices=["text"])


def test_roc_auc_leaves_out_nan_rows_and_is_nan_without_both_classes():
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 1, np.nan, 1, 0, 1])
    s = np.array([0.1, 0.8, 0.5, np.nan, 0.7, 0.6])
    assert roc_auc(y, s) == pytest.approx(roc_auc_score([0, 1, 0, 1], [0.1, 0.8, 0.7, 0.6]))
    assert np.isnan(roc_auc(np.array([1.0, 1.0, np.nan]), np.array([0.2, 0.3, 0.4])))
    assert np.isnan(roc_auc(np.array([]), np.array([])))
