"""The report: self-contained HTML with embedded plots and tables, JSON and Markdown summaries."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from moderation.calibration import sigmoid

from eval.calibrate import fit_calibration, fit_thresholds
from eval.metrics import evaluate
from eval.report import write_report

CATS = ["hate", "offensive"]


def _synthetic(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < [0.3, 0.4]).astype(float)
    z = 4 * (2 * y - 1) + rng.normal(0, 3, (n, 2))
    y[: n // 4, 1] = np.nan  # one dataset says nothing about offensive
    z[-3:] = np.nan  # three unscored posts
    slices = np.array(["text"] * (n // 2) + ["image"] * (n // 4) + ["image+text"] * (n - n // 2 - n // 4), dtype=object)
    return z, y, slices


@pytest.fixture(scope="module")
def toy():
    """One synthetic model evaluated once for the module: (z, y, slices, evaluation, calibration, thresholds, probs)."""
    z, y, slices = _synthetic()
    return (z, y, slices, *_evaluated(z, y, slices))


def _evaluated(z, y, slices, thresholds=None):
    ok = ~np.isnan(z).any(axis=1)
    cal = fit_calibration(z[ok], y[ok], CATS, method="platt")
    probs = np.full(z.shape, np.nan)
    probs[ok] = cal.apply(z[ok], CATS)
    thr = thresholds or fit_thresholds(probs, y, CATS, target_precision=0.9)
    ev = evaluate(probs, y, CATS, {c: thr.threshold(c) for c in CATS}, slices, bootstrap=30)
    return ev, cal, thr, probs


def test_report_writes_self_contained_html_json_md(tmp_path, toy):
    z, y, slices, ev, cal, thr, probs = toy
    paths = write_report(tmp_path / "rep", ev, title="Toy <report>", raw_probs=sigmoid(z), calibrated_probs=probs,
                         labels=y, model={"model_version": "toy-1", "trained": True},
                         data={"datasets": {"a": 600}, "split": "test"}, calibration=cal.to_json(),
                         thresholds=thr.to_json())
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2  # one figure per category
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<link" not in html and "@import" not in html
    assert "Toy &lt;report&gt;" in html  # escaped
    for text in ("Threshold table", "Per modality slice", "Anchor figures", "P@R0.80", "R@1%FPR", "image+text",
                 "toy-1", "platt"):
        assert text in html, text
    # One threshold-table row per target precision, per category.
    assert len(re.findall(r"<tr><td>0\.95</td>", html)) == 2
    report = json.loads(paths["json"].read_text())
    assert set(report["threshold_table"]) == set(CATS) and len(report["threshold_table"]["hate"]) == 5
    row = report["threshold_table"]["hate"][2]  # target 0.90
    assert row["target_precision"] == 0.9 and 0 <= row["traffic_flagged"] <= 1
    md = paths["md"].read_text()
    assert md.startswith("# Toy <report>") and "| category | ROC-AUC |" in md and "Threshold table" in md


def test_report_marks_unreachable_and_compares_two_models(tmp_path, toy):
    z, y, slices, ev, cal, thr, probs = toy
    rng = np.random.default_rng(5)
    z_noise = np.where(np.isnan(z), np.nan, rng.normal(0, 1, z.shape))  # a model with no signal
    ev2, _, thr2, probs2 = _evaluated(z_noise, y, slices)
    assert thr2.threshold("hate") is None  # target unreachable for the noise model
    paths = write_report(tmp_path, ev2, title="Noise vs toy", calibrated_probs=probs2, labels=y,
                         thresholds=thr2.to_json(), name="noise",
                         compare_with={"name": "toy", "evaluation": ev, "calibrated_probs": probs, "labels": y})
    html = paths["html"].read_text()
    assert "none: flags nothing" in html and "unreachable" in html
    assert "Comparison: noise (A) vs toy (B)" in html
    report = json.loads(paths["json"].read_text())
    d = report["comparison"]["figures"]["hate"]["ROC-AUC"]
    assert d["b"] > d["a"] and d["delta"] == pytest.approx(d["b"] - d["a"])


def test_report_from_evaluation_only_has_tables_but_no_plots(tmp_path, toy):
    ev = toy[3]
    paths = write_report(tmp_path, ev, title="Tables only")
    html = paths["html"].read_text()
    assert "data:image/png" not in html and "Summary (all posts)" in html


def test_report_rejects_wrong_shapes(tmp_path, toy):
    ev = toy[3]
    with pytest.raises(ValueError, match="calibrated_probs must be"):
        write_report(tmp_path, ev, title="x", calibrated_probs=np.zeros((5, 3)), labels=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        write_report(tmp_path, ev, title="x", calibrated_probs=np.zeros((5, 2)), labels=np.zeros((4, 2)))


def test_report_warns_when_threshold_misses_target_on_this_data(tmp_path):
    rng = np.random.default_rng(7)
    y = (rng.random((400, 1)) < 0.3).astype(float)
    p = rng.random((400, 1))  # no signal: precision at any threshold is about the prevalence
    ev = evaluate(p, y, ["hate"], {"hate": 0.5}, bootstrap=0)
    paths = write_report(tmp_path, ev, title="shift", calibrated_probs=p, labels=y,
                         thresholds={"target_precision": 0.9, "categories": {"hate": {"threshold": 0.5, "status": "ok"}}})
    assert "below the target 0.9 it was fitted for" in paths["html"].read_text()


def test_report_policy_section_measures_block_review_and_alternatives(tmp_path, toy):
    from eval.policy import ReviewTarget, fit_policy
    from eval.policy_report import operating

    z, y, slices, ev, cal, thr, probs = toy
    ok = ~np.isnan(probs).any(axis=1)
    policy = fit_policy(probs[ok], y[ok], CATS, block_precision=0.9, review=ReviewTarget("recall", 0.9))
    paths = write_report(tmp_path / "rep", ev, title="Toy", calibrated_probs=probs, labels=y,
                         calibration=cal.to_json(), thresholds=thr.to_json(), policy=policy.to_json())
    html = paths["html"].read_text()
    assert "Moderation policy: allow, review or block" in html and policy.version in html
    assert html.count("data:image/png;base64,") == 3  # the two categories' figures and the review-load curve
    assert "Alternatives: hate" in html and "Alternatives: offensive" in html
    report = json.loads(paths["json"].read_text())["policy"]
    hate = report["operating"]["hate"]
    # The same figures as computed by hand from the thresholds.
    rows = ok & ~np.isnan(y[:, 0])
    yy, pp = y[rows, 0], probs[rows, 0]
    entry = policy.categories["hate"]
    assert hate["blocked"] == int((pp >= entry.block).sum())
    assert hate["block_or_review_recall"] == pytest.approx(yy[pp >= entry.review].sum() / yy.sum())
    assert hate["review_share"] == pytest.approx(((pp >= entry.review) & (pp < entry.block)).mean())
    assert len(report["alternatives"]["hate"]) == len(entry.meta["alternatives"])
    none = operating(yy, pp, None, None)
    assert none["blocked"] == 0 and none["review_share"] == 0.0 and none["block_or_review_recall"] == 0.0
    assert "Moderation policy" in paths["md"].read_text()


def test_report_shows_the_functional_suite_per_behaviour(tmp_path, toy):
    from eval.functional.suite import CaseResult, summarise

    ev = toy[3]
    results = [CaseResult(id="a", behaviour="negation", expected="allow", action="allow", passed=True),
               CaseResult(id="b", behaviour="negation", expected="allow", action="review", passed=False),
               CaseResult(id="c", behaviour="threat_person", expected="flag", action="block", passed=True)]
    paths = write_report(tmp_path, ev, title="with functional", functional=summarise(results))
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert "Functional suite" in html and "negation" in html and "50.0%" in html
    assert "| threat_person | review or block | 1 | 100.0% |" in md
    assert json.loads(paths["json"].read_text())["functional"]["n"] == 3
