"""Champion / challenger: is a retrained model measurably not worse than the one in production?

    sets = [EvalSet("tweeteval_hate/test", data), EvalSet("feedback/test", fb_test)]
    comparison = compare_models(champion_scorer, challenger_scorer, sets, bootstrap=1000)
    comparison["decision"]["promotable"]
    write_comparison("NEW/", comparison)          # comparison.json, comparison.html, comparison.md

Both models score the same posts of every fixed evaluation set (the serving code path, eval.predict), each with
its own calibration and thresholds. Per set and category with both classes labelled, a **paired bootstrap**
resamples the posts (the same resample for both models) and takes the difference challenger - champion of each
metric; its percentile interval says whether the change is real:

    better  the whole interval is above 0
    worse   the whole interval is below -margin (margin 0 by default: any significant loss)
    same    otherwise

The challenger is **promotable** only when no gating cell (set x category x gate metric; ROC-AUC and average
precision by default, threshold-free so a refitted threshold cannot hide a worse ranking) is worse, and at least
one is better. Many cells are tested at once: at 95% each, a few spurious "worse" cells make the rule
conservative (a good challenger may be held back), and a spurious "better" one can occur; widen `confidence` or
set `margin` to trade these off. The operating-point figures (precision and recall at each model's own block
threshold) are reported beside them, not gated, because each model's threshold is fitted for the same target
precision and their precision on a test set is noisy.

A better ranking can still make a worse product: a challenger whose own policy blocks far fewer posts or holds far
more for review (issue 18, 2026-12-07: two candidates in a row ranked better on val and blocked 0.2-0.7x as many
offensive posts). So the **policy checks** gate too, per category, on the posts of all the sets pooled that label it,
each model with its own block and review thresholds: the challenger's block recall >= `min_block_recall_ratio`
(0.8) x the champion's (a category the champion blocks and the challenger cannot fails), and its review share (posts
in its review band) <= the champion's + `max_review_share_rise` (3) percentage points. None turns a check off. They
read thresholds and scores only (not the language rule, hashes or term lists, which both models share).
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.formatting import CSS, html_table, md_table, png
from eval.metrics import to_jsonable, two_class_resamples
from eval.predict import predict_logits

GATE_METRICS: tuple[str, ...] = ("roc_auc", "average_precision")
METRICS: tuple[str, ...] = ("roc_auc", "average_precision", "recall_at_threshold", "precision_at_threshold")
METRIC_NAMES = {"roc_auc": "ROC-AUC", "average_precision": "PR-AUC (AP)", "recall_at_threshold": "recall @ thr",
                "precision_at_threshold": "precision @ thr"}
#: A cell needs at least this many labelled posts of each class to be judged.
MIN_CLASS = 5


@dataclass
class EvalSet:
    """A named labelled set (moderation.datasets.LabelledSet) both models are measured on."""

    name: str
    data: Any
    kind: str = "fixed"      # "fixed": a dataset's test split; "feedback": the feedback's held-out part


# --- fast metrics (the bootstrap calls them thousands of times) ------------------------------------------

def fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties averaged: equals sklearn's roc_auc_score."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fast_ap(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision, step-wise over distinct thresholds: equals sklearn's average_precision_score."""
    y = np.asarray(y, dtype=np.float64)
    n_pos = y.sum()
    if n_pos == 0:
        return math.nan
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="stable")
    ps, ys = np.asarray(p)[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last]
    flagged = np.arange(1, ys.size + 1)[last]
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * (tp / flagged)))


def _operating(y: np.ndarray, p: np.ndarray, threshold: float | None) -> tuple[float, float]:
    if threshold is None:
        return 0.0, math.nan
    flagged = p >= threshold
    tp = float((flagged & (y > 0.5)).sum())
    n_flag = float(flagged.sum())
    return tp / max(float((y > 0.5).sum()), 1.0), (tp / n_flag if n_flag else math.nan)


def cell_metrics(y: np.ndarray, p: np.ndarray, threshold: float | None) -> dict[str, float]:
    recall, precision = _operating(y, p, threshold)
    return {"roc_auc": fast_auc(y, p), "average_precision": fast_ap(y, p),
            "recall_at_threshold": recall, "precision_at_threshold": precision}


def paired_bootstrap(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, t_a: float | None, t_b: float | None, *,
                     n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per metric: A's and B's value on the posts, B - A, and the percentile interval of B - A over `n_boot`
    paired resamples (the same posts for both; resamples holding one class are skipped)."""
    y = np.asarray(y, dtype=np.float64)
    a, b = cell_metrics(y, p_a, t_a), cell_metrics(y, p_b, t_b)
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    valid = 0
    for idx in two_class_resamples(y, n_boot, seed):
        valid += 1
        ma, mb = cell_metrics(y[idx], p_a[idx], t_a), cell_metrics(y[idx], p_b[idx], t_b)
        for m in METRICS:
            diffs[m].append(mb[m] - ma[m])
    alpha = (1.0 - confidence) / 2
    out: dict[str, Any] = {"n_boot": n_boot, "n_valid": valid}
    for m in METRICS:
        d = np.asarray(diffs[m], dtype=np.float64)
        d = d[np.isfinite(d)]
        ci = [float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))] if d.size else [math.nan, math.nan]
        out[m] = {"champion": a[m], "challenger": b[m], "diff": b[m] - a[m], "ci": ci}
    return out


def verdict(ci: Sequence[float], margin: float = 0.0) -> str:
    """"better" (interval above 0), "worse" (interval below -margin) or "same"."""
    lo, hi = ci
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "not judged"
    if lo > 0:
        return "better"
    if hi < -margin:
        return "worse"
    return "same"


# --- what each model's policy does --------------------------------------------------------------------------

#: Defaults of the policy checks (module docstring); benchmarks.policy_shift applies the same to the val fits.
MIN_BLOCK_RECALL_RATIO = 0.8
MAX_REVIEW_SHARE_RISE = 3.0


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def policy_check(champion_recall: float | None, challenger_recall: float | None, champion_share: float | None,
                 challenger_share: float | None, *, min_block_recall_ratio: float | None = MIN_BLOCK_RECALL_RATIO,
                 max_review_share_rise: float | None = MAX_REVIEW_SHARE_RISE) -> tuple[str, str]:
    """(block check, review check), each "ok", "FAIL" or "-" (the champion has no such figure, or the check is off:
    None). Recall and shares are fractions; the rise is in percentage points."""
    if min_block_recall_ratio is None or _missing(champion_recall) or not champion_recall > 0:
        block = "-"
    else:
        block = ("ok" if not _missing(challenger_recall) and challenger_recall >= min_block_recall_ratio * champion_recall
                 else "FAIL")
    if max_review_share_rise is None or _missing(champion_share):
        review = "-"
    else:
        review = ("ok" if not _missing(challenger_share) and 100 * (challenger_share - champion_share) <= max_review_share_rise
                  else "FAIL")
    return block, review


def policy_figures(y: np.ndarray, p: np.ndarray, block: float | None, review: float | None) -> dict[str, Any]:
    """One model's policy on labelled posts: block recall (of the positives; 0 without a block threshold, None
    without positives) and review share (posts in the band review <= p < block; 0 without a review threshold)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    blocked = p >= block if block is not None else np.zeros(p.shape, dtype=bool)
    in_band = (p >= review) & ~blocked if review is not None else np.zeros(p.shape, dtype=bool)
    n_pos = float((y > 0.5).sum())
    return {"block": block, "review": review,
            "block_recall": float((blocked & (y > 0.5)).sum() / n_pos) if n_pos else None,
            "review_share": float(in_band.mean()) if y.size else None}


def policy_rows(pooled: dict[str, dict[str, list[np.ndarray]]], thresholds: dict[str, dict[str, Any]], *,
                min_block_recall_ratio: float | None = MIN_BLOCK_RECALL_RATIO,
                max_review_share_rise: float | None = MAX_REVIEW_SHARE_RISE) -> list[dict[str, Any]]:
    """Per category of `pooled` ({category: {"y": [...], "champion": [...], "challenger": [...]}}, arrays of
    the labelled posts per set, at least one set per category): both models' policy_figures and the two checks. thresholds: {role: {"block":
    {category: t}, "review": {category: t}}}."""
    rows = []
    for cat, parts in pooled.items():
        y = np.concatenate(parts["y"])
        figs = {role: policy_figures(y, np.concatenate(parts[role]), thresholds[role]["block"].get(cat),
                                     thresholds[role]["review"].get(cat))
                for role in ("champion", "challenger")}
        a, b = figs["champion"], figs["challenger"]
        block_check, review_check = policy_check(a["block_recall"], b["block_recall"], a["review_share"],
                                                 b["review_share"], min_block_recall_ratio=min_block_recall_ratio,
                                                 max_review_share_rise=max_review_share_rise)
        rows.append({"category": cat, "n": int(y.size), "n_positive": int((y > 0.5).sum()), **figs,
                     "block_check": block_check, "review_check": review_check})
    return rows


def policy_failures(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        a, b = r["champion"], r["challenger"]
        if r["block_check"] == "FAIL":
            out.append(f"{r['category']} block recall {_pct(a['block_recall'])} -> {_pct(b['block_recall'])}")
        if r["review_check"] == "FAIL":
            out.append(f"{r['category']} review share {_pct(a['review_share'])} -> {_pct(b['review_share'])}")
    return out


def _pct(v: float | None) -> str:
    return "–" if _missing(v) else f"{100 * v:.1f}%"


# --- the comparison ------------------------------------------------------------------------------------

def _thresholds(scorer: Any) -> dict[str, float | None]:
    return scorer.thresholds() if hasattr(scorer, "thresholds") else {}


def _review_thresholds(scorer: Any) -> dict[str, float | None]:
    return scorer.review_thresholds() if hasattr(scorer, "review_thresholds") else {}


def compare_models(champion: Any, challenger: Any, sets: Sequence[EvalSet], *, bootstrap: int = 1000,
                   confidence: float = 0.95, margin: float = 0.0, gate_metrics: Sequence[str] = GATE_METRICS,
                   seed: int = 0, progress: bool = True, predictions_dir: str | os.PathLike | None = None,
                   min_block_recall_ratio: float | None = MIN_BLOCK_RECALL_RATIO,
                   max_review_share_rise: float | None = MAX_REVIEW_SHARE_RISE) -> dict[str, Any]:
    """Measure both scorers on every set and decide whether the challenger is promotable (module docstring).

    Categories: those both models score. predictions_dir: also save each model's PredictionSet per set there
    (npz + json). min_block_recall_ratio, max_review_share_rise: the policy checks (None: that check off). Raises
    ValueError for an unknown gate metric or when the models share no category.
    """

    unknown = [m for m in gate_metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown gate metrics {unknown}; choose from {list(METRICS)}")
    cats = [c for c in champion.categories if c in challenger.categories]
    if not cats:
        raise ValueError(f"the models share no category ({champion.categories} vs {challenger.categories})")
    thr_a, thr_b = _thresholds(champion), _thresholds(challenger)
    pooled: dict[str, dict[str, list[np.ndarray]]] = {c: {"y": [], "champion": [], "challenger": []} for c in cats}
    cells: list[dict[str, Any]] = []
    set_info: list[dict[str, Any]] = []
    for k, es in enumerate(sets):
        preds = {}
        for role, scorer in (("champion", champion), ("challenger", challenger)):
            pred = predict_logits(scorer, es.data, progress=progress)
            preds[role] = pred
            if predictions_dir is not None:
                Path(predictions_dir).mkdir(parents=True, exist_ok=True)
                pred.save(Path(predictions_dir) / f"{role}-{k:02d}-{es.name.replace('/', '_')}")
        pa = preds["champion"].probs(champion.info.calibration)
        pb = preds["challenger"].probs(challenger.info.calibration)
        ok = preds["champion"].ok & preds["challenger"].ok
        set_info.append({"name": es.name, "kind": es.kind, "rows": len(es.data), "scored_by_both": int(ok.sum()),
                         "errors": {"champion": preds["champion"].errors, "challenger": preds["challenger"].errors}})
        for cat in cats:
            ja, jb = champion.categories.index(cat), challenger.categories.index(cat)
            y = preds["champion"].labels[:, ja]
            rows = ok & ~np.isnan(y)
            yy = y[rows]
            n_pos = int(yy.sum())
            cell: dict[str, Any] = {"set": es.name, "kind": es.kind, "category": cat, "n": int(rows.sum()),
                                    "n_positive": n_pos}
            if not len(yy):
                continue  # this set does not label this category
            for key, arr in (("y", yy), ("champion", pa[rows, ja]), ("challenger", pb[rows, jb])):
                pooled[cat][key].append(arr)
            if n_pos < MIN_CLASS or len(yy) - n_pos < MIN_CLASS:
                cell["note"] = f"not judged: {n_pos} positives and {len(yy) - n_pos} negatives (need {MIN_CLASS} of each)"
                cells.append(cell)
                continue
            boot = paired_bootstrap(yy, pa[rows, ja], pb[rows, jb], thr_a.get(cat), thr_b.get(cat), n_boot=bootstrap,
                                    confidence=confidence, seed=seed)
            cell["n_boot_valid"] = boot.pop("n_valid")
            boot.pop("n_boot")
            for m, fig in boot.items():
                fig["verdict"] = verdict(fig["ci"], margin)
                fig["gates"] = m in gate_metrics
            cell["metrics"] = boot
            cells.append(cell)
    policy = policy_rows({c: v for c, v in pooled.items() if v["y"]},
                         {"champion": {"block": thr_a, "review": _review_thresholds(champion)},
                          "challenger": {"block": thr_b, "review": _review_thresholds(challenger)}},
                         min_block_recall_ratio=min_block_recall_ratio, max_review_share_rise=max_review_share_rise)
    decision = decide(cells, gate_metrics, policy)
    return to_jsonable({
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "champion": {"model_version": champion.model_version, "thresholds": thr_a,
                     "path": str(champion.info.path) if champion.info.path else None},
        "challenger": {"model_version": challenger.model_version, "thresholds": thr_b,
                       "path": str(challenger.info.path) if challenger.info.path else None},
        "categories": cats, "sets": set_info,
        "settings": {"bootstrap": bootstrap, "confidence": confidence, "margin": margin, "seed": seed,
                     "gate_metrics": list(gate_metrics), "min_class": MIN_CLASS,
                     "min_block_recall_ratio": min_block_recall_ratio, "max_review_share_rise": max_review_share_rise},
        "cells": cells,
        "policy": policy,
        "decision": decision,
    })


def decide(cells: Sequence[dict[str, Any]], gate_metrics: Sequence[str] = GATE_METRICS,
           policy: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Promotable when no gating cell is "worse", at least one is "better" (cells as compare_models makes) and no
    policy check fails (rows as policy_rows makes)."""
    judged = [(c, m) for c in cells if "metrics" in c for m in gate_metrics]

    def line(c: dict[str, Any], m: str) -> str:
        f = c["metrics"][m]
        return f"{c['set']} / {c['category']} / {METRIC_NAMES[m]}: {f['diff']:+.4f} [{f['ci'][0]:+.4f}, {f['ci'][1]:+.4f}]"

    worse = [line(c, m) for c, m in judged if c["metrics"][m]["verdict"] == "worse"]
    better = [line(c, m) for c, m in judged if c["metrics"][m]["verdict"] == "better"]
    failed = policy_failures(policy)
    if not judged:
        reason = "no cell could be judged (too few labelled posts of a class in every set)"
    elif worse:
        reason = f"{len(worse)} gating cell(s) significantly worse"
        if failed:
            reason += f"; {len(failed)} policy check(s) failed: {'; '.join(failed)}"
    elif failed:
        reason = f"{len(failed)} policy check(s) failed: {'; '.join(failed)}"
    elif not better:
        reason = "no gating cell significantly better: nothing to gain from the swap"
    else:
        reason = f"no gating cell worse, {len(better)} better"
    return {"promotable": bool(judged) and not worse and not failed and bool(better), "reason": reason,
            "worse": worse, "better": better, "cells_judged": len(judged), "policy_failed": failed}


# --- writing it down -------------------------------------------------------------------------------------

def forest_figure(comparison: dict[str, Any], metric: str) -> str | None:
    """One row per (set, category): B - A with its interval, coloured by verdict (base64 PNG)."""
    from matplotlib.figure import Figure  # deferred: matplotlib is the optional eval extra

    rows = [c for c in comparison["cells"] if "metrics" in c]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 0.42 * len(rows) + 1.2))
    ax = fig.subplots()
    colors = {"better": "#2ca02c", "worse": "#d62728", "same": "#555555", "not judged": "#aaaaaa"}
    for i, c in enumerate(rows):
        m = c["metrics"][metric]
        lo, hi = m["ci"]
        ax.plot([lo, hi], [i, i], color=colors[m["verdict"]], linewidth=2.5)
        ax.plot([m["diff"]], [i], "o", color=colors[m["verdict"]])
    ax.axvline(0, color="black", linewidth=0.8)
    margin = comparison["settings"]["margin"]
    if margin:
        ax.axvline(-margin, color="#d62728", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{c['set']} · {c['category']} (n={c['n']:,})" for c in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"challenger − champion, {METRIC_NAMES[metric]} ({comparison['settings']['confidence']:.0%} paired bootstrap)")
    fig.tight_layout()
    return png(fig)


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def comparison_rows(comparison: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in comparison["cells"]:
        if "metrics" not in c:
            rows.append([c["set"], c["category"], f"{c['n']:,}", f"{c['n_positive']:,}", "–", "–", "–", "–",
                         c.get("note", "")])
            continue
        for m, fig in c["metrics"].items():
            gate = " (gate)" if fig.get("gates") else ""
            rows.append([c["set"], c["category"], f"{c['n']:,}", f"{c['n_positive']:,}", METRIC_NAMES[m] + gate,
                         _fmt(fig["champion"]), _fmt(fig["challenger"]),
                         f"{fig['diff']:+.4f} [{fig['ci'][0]:+.4f}, {fig['ci'][1]:+.4f}]" if fig["diff"] is not None
                         else "–", fig["verdict"]])
    return rows


HEADERS = ("set", "category", "posts", "positives", "metric", "champion", "challenger", "Δ [interval]", "verdict")
POLICY_HEADERS = ("category", "posts", "positives", "block threshold A / B", "block recall A / B", "check",
                  "review threshold A / B", "review share A / B", "check")


def policy_table(comparison: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in comparison.get("policy", []):
        a, b = r["champion"], r["challenger"]
        rows.append([r["category"], f"{r['n']:,}", f"{r['n_positive']:,}", f"{_fmt(a['block'], 3)} / {_fmt(b['block'], 3)}",
                     f"{_pct(a['block_recall'])} / {_pct(b['block_recall'])}", r["block_check"],
                     f"{_fmt(a['review'], 3)} / {_fmt(b['review'], 3)}",
                     f"{_pct(a['review_share'])} / {_pct(b['review_share'])}", r["review_check"]])
    return rows


def _policy_rule(settings: dict[str, Any]) -> str:
    ratio, rise = settings.get("min_block_recall_ratio"), settings.get("max_review_share_rise")
    block = f"the challenger's block recall >= {ratio:g}x the champion's" if ratio is not None else "block recall not checked"
    review = (f"its review share <= the champion's + {rise:g} points" if rise is not None
              else "review share not checked")
    return (f"Policy checks, per category on the labelled posts of all sets pooled, each model with its own "
            f"thresholds: {block}; {review}.")


def write_comparison(out_dir: str | os.PathLike, comparison: dict[str, Any],
                     extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write OUT/comparison.json, OUT/comparison.html (self-contained, side by side, forest plots) and
    OUT/comparison.md. extra: more JSON-ready facts (training, lineage) to put in the JSON and the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**comparison, **(extra or {})}
    paths = {"json": out / "comparison.json", "html": out / "comparison.html", "md": out / "comparison.md"}
    paths["json"].write_text(json.dumps(to_jsonable(data), indent=2) + "\n", encoding="utf-8")
    dec = comparison["decision"]
    esc = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    status = "PROMOTABLE" if dec["promotable"] else "NOT PROMOTABLE"
    color = "#dff3e4;color:#1e6b34" if dec["promotable"] else "#fde2e1;color:#a4161a"
    h = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Champion vs challenger</title>"
         f"<style>{CSS}</style></head><body><h1>Champion vs challenger</h1>",
         f"<p class='sub'>Generated {esc(comparison['created'])}. Champion (A) {esc(comparison['champion']['model_version'])}, "
         f"challenger (B) {esc(comparison['challenger']['model_version'])}; Δ = B − A.</p>",
         f"<div style='font-size:20px;font-weight:700;padding:10px 14px;border-radius:6px;background:{color}'>"
         f"{status}: {esc(dec['reason'])}</div>"]
    for label, items in (("Worse", dec["worse"]), ("Better", dec["better"])):
        if items:
            h.append(f"<p><b>{label}</b> (gating cells):</p><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    s = comparison["settings"]
    h.append(f"<p class='note'>Rule: promotable when no gating cell ({', '.join(METRIC_NAMES[m] for m in s['gate_metrics'])} "
             f"per set and category) is worse (its {s['confidence']:.0%} paired-bootstrap interval of Δ below "
             f"{0 - s['margin']:g}) and at least one is better (interval above 0). {s['bootstrap']} resamples; a cell needs "
             f"{s['min_class']} labelled posts of each class. Each model uses its own calibration and thresholds.</p>")
    if comparison.get("policy"):
        h.append("<h2>What each model's policy does</h2><p class='note'>" + esc(_policy_rule(s)) + "</p>"
                 + html_table(POLICY_HEADERS, [[esc(x) for x in r] for r in policy_table(comparison)]))
    h.append("<h2>Evaluation sets</h2>" + html_table(("set", "kind", "posts", "scored by both"),
                                                   [[esc(x["name"]), esc(x["kind"]), f"{x['rows']:,}",
                                                     f"{x['scored_by_both']:,}"] for x in comparison["sets"]]))
    for m in s["gate_metrics"]:
        fig = forest_figure(comparison, m)
        if fig:
            h.append(f"<h2>{esc(METRIC_NAMES[m])}: challenger − champion</h2><img alt='forest plot of {esc(m)}' "
                     f"src='data:image/png;base64,{fig}'>")
    h.append("<h2>Side by side</h2>" + html_table(HEADERS, [[esc(x) for x in r] for r in comparison_rows(comparison)]))
    if extra:
        h.append("<h2>Training and lineage</h2><pre style='font-size:12px;white-space:pre-wrap'>"
                 + esc(json.dumps(to_jsonable(extra), indent=2)) + "</pre>")
    h.append("</body></html>")
    paths["html"].write_text("\n".join(h), encoding="utf-8")
    md = [f"# Champion vs challenger: {status}", "", f"{dec['reason']}.", "",
          f"Champion (A) `{comparison['champion']['model_version']}`, challenger (B) "
          f"`{comparison['challenger']['model_version']}`; Δ = B − A, {s['confidence']:.0%} paired bootstrap "
          f"({s['bootstrap']} resamples).", "", md_table(HEADERS, comparison_rows(comparison)), ""]
    if comparison.get("policy"):
        md += [_policy_rule(s), "", md_table(POLICY_HEADERS, policy_table(comparison)), ""]
    paths["md"].write_text("\n".join(md), encoding="utf-8")
    return paths
