"""The calibration report: one self-contained HTML file (plots embedded as base64 PNG), plus JSON and Markdown.

Per category: PR curve (operating point and target precision marked, with the precision lower bound), ROC
curve (1% false-positive rate marked), reliability diagram before and after calibration, score histograms
per class, a threshold table for several target precisions, per-slice tables; the anchors' figures (OpenAI
guardrails benchmark style: ROC-AUC, precision at recall 0.80/0.90/0.95, recall at 1% FPR); a side-by-side
comparison when a second model is given. The plots are drawn by eval.plots.

    write_report = build_report (what the report shows) -> render_html / render_markdown (+ the JSON)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.formatting import CSS, esc, fmt, html_table, md_table, pct, png, status_badge
from eval.metrics import PRECISION_LEVELS, RECALL_LEVELS, to_jsonable
from eval.plots import category_figure, valid_pairs
from eval.examples import examples_html, examples_markdown
from eval.fairness import html_section as fairness_html, markdown_section as fairness_markdown
from eval.functional.suite import report_rows as functional_rows
from eval.policy_report import ALTERNATIVE_HEADERS, POLICY_HEADERS, policy_section
from eval.thresholds import DEFAULT_MIN_POSITIVES, select_threshold

DEFAULT_TARGETS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95, 0.99)


def _ci(m: dict[str, Any], key: str, value: Any) -> str:
    ci = (m.get("ci") or {}).get(key)
    base = fmt(value)
    return f"{base}<br><small class='ci'>[{fmt(ci[0])}, {fmt(ci[1])}]</small>" if ci and base != "–" else base


# --- tables ---------------------------------------------------------------------------------------

def threshold_table(y: np.ndarray, p: np.ndarray, p_traffic: np.ndarray, targets: Sequence[float], confidence: float,
                    min_positives: int) -> list[dict[str, Any]]:
    """For each target precision, the threshold the calibrate rule picks on (y, p), and what it costs.

    p_traffic: calibrated scores of every scored post (labelled or not) for the share of traffic flagged.
    """
    rows = []
    for target in targets:
        r = select_threshold(y, p, target, confidence, min_positives)
        t = r.get("threshold")
        r["traffic_flagged"] = float(np.mean(p_traffic >= t)) if t is not None and len(p_traffic) else (0.0 if t is None else None)
        rows.append(r)
    return rows


SUMMARY_HEADERS = ("category", "labelled", "positive", "ROC-AUC [CI]", "PR-AUC [CI]", "threshold", "precision (lower bound)",
                   "recall [CI]", "flagged", "F1", "macro-F1", "ECE", "Brier", "log-loss")


def _summary_rows(evaluation: dict[str, Any], slice_name: str = "all") -> list[list[str]]:
    rows = []
    for c in evaluation["categories"]:
        m = evaluation["metrics"][c].get(slice_name, {})
        if not m.get("n"):
            rows.append([esc(c), "0", "0"] + ["–"] * (len(SUMMARY_HEADERS) - 3))
            continue
        op = m.get("operating", {})
        t = op.get("threshold")
        thr = fmt(t) if t is not None else '<span class="badge bad">none: flags nothing</span>'
        prec = "–" if op.get("precision") is None else f"{fmt(op['precision'])} (≥ {fmt(op.get('precision_lower_bound'))})"
        rows.append([esc(c), fmt(m["n"]), fmt(m["n_positive"]), _ci(m, "roc_auc", m.get("roc_auc")),
                     _ci(m, "average_precision", m.get("average_precision")), thr, prec, _ci(m, "recall", op.get("recall")),
                     pct(op.get("flag_rate")), _ci(m, "f1", op.get("f1")), fmt(op.get("macro_f1")), fmt(m.get("ece")),
                     fmt(m.get("brier")), fmt(m.get("log_loss"))])
    return rows


ANCHOR_HEADERS = ("category", "ROC-AUC", "P@R0.80", "P@R0.90", "P@R0.95", "R@1%FPR", "R@P0.90", "R@P0.95", "macro-F1 @0.5")


def _anchor_rows(evaluation: dict[str, Any], label: str | None = None) -> list[list[str]]:
    rows = []
    for c in evaluation["categories"]:
        m = evaluation["metrics"][c].get("all", {})
        par, rap = m.get("precision_at_recall", {}), m.get("recall_at_precision", {})
        rows.append(([esc(label)] if label else []) + [esc(c), fmt(m.get("roc_auc")),
                    *[fmt(par.get(f"{r:.2f}")) for r in RECALL_LEVELS], fmt(m.get("recall_at_fpr_1pct")),
                    *[fmt(rap.get(f"{q:.2f}")) for q in PRECISION_LEVELS], fmt((m.get("at_0.5") or {}).get("macro_f1"))])
    return rows


SLICE_HEADERS = ("slice", "labelled", "positive", "ROC-AUC", "PR-AUC", "precision", "recall", "flagged", "F1", "ECE", "log-loss")


def _slice_rows(per_slice: dict[str, Any], order: Sequence[str]) -> list[list[str]]:
    rows = []
    for g in order:
        m = per_slice.get(g)
        if m is None:
            continue
        op = m.get("operating") or {}
        rows.append([esc(g), fmt(m.get("n")), fmt(m.get("n_positive")), fmt(m.get("roc_auc")), fmt(m.get("average_precision")),
                     fmt(op.get("precision")), fmt(op.get("recall")), pct(op.get("flag_rate")), fmt(op.get("f1")),
                     fmt(m.get("ece")), fmt(m.get("log_loss"))])
    return rows


THRESHOLD_HEADERS = ("target precision", "threshold", "expected precision", "lower bound", "recall", "traffic flagged", "status")


def _threshold_rows(table: list[dict[str, Any]], confidence: float) -> list[list[str]]:
    rows = []
    for r in table:
        rows.append([fmt(r["target_precision"], 2), fmt(r.get("threshold"), 4), fmt(r.get("precision")),
                     fmt(r.get("precision_lower_bound")), fmt(r.get("recall")), pct(r.get("traffic_flagged")),
                     status_badge(r.get("status"))])
    return rows


COMPARE_KEYS = (("ROC-AUC", lambda m: m.get("roc_auc")), ("PR-AUC", lambda m: m.get("average_precision")),
                ("P@R0.90", lambda m: (m.get("precision_at_recall") or {}).get("0.90")),
                ("R@1%FPR", lambda m: m.get("recall_at_fpr_1pct")),
                ("R@P0.90", lambda m: (m.get("recall_at_precision") or {}).get("0.90")),
                ("threshold", lambda m: (m.get("operating") or {}).get("threshold")),
                ("precision", lambda m: (m.get("operating") or {}).get("precision")),
                ("recall", lambda m: (m.get("operating") or {}).get("recall")),
                ("F1", lambda m: (m.get("operating") or {}).get("f1")),
                ("ECE", lambda m: m.get("ece")), ("log-loss", lambda m: m.get("log_loss")))


def comparison(evaluation: dict[str, Any], other: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{category: {figure: {"a", "b", "delta"}}} on the "all" slice, for the categories both models score."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in evaluation["categories"]:
        if c not in other.get("categories", []):
            continue
        ma, mb = evaluation["metrics"][c].get("all", {}), other["metrics"][c].get("all", {})
        row = {}
        for name, get in COMPARE_KEYS:
            a, b = get(ma), get(mb)
            row[name] = {"a": a, "b": b, "delta": (b - a) if a is not None and b is not None else None}
        out[c] = row
    return out


def _comparison_table(comp: dict[str, dict[str, dict[str, Any]]], a: str, b: str) -> tuple[list[str], list[list[str]]]:
    """One wide table: a row per figure, (A, B, delta) columns per category."""
    cats = list(comp)
    headers = ["figure"] + [f"{c}: {x}" for c in cats for x in (a, b, "Δ")]
    figures = list(next(iter(comp.values()))) if comp else []
    rows = [[esc(f)] + [fmt(comp[c][f][k]) for c in cats for k in ("a", "b", "delta")] for f in figures]
    return headers, rows


# --- the report -----------------------------------------------------------------------------------

@dataclass
class Report:
    """What a calibration report shows, computed once and rendered as JSON, HTML and Markdown."""

    title: str
    created: str
    name: str
    evaluation: dict[str, Any]
    confidence: float
    target: float | None
    min_positives: int
    #: this model's thresholds.json contents ({} when not given) and calibration.json contents (or None)
    thresholds: dict[str, Any]
    calibration: dict[str, Any] | None
    #: the policy.json contents shown in the policy section, and that section's content (eval.policy_report)
    policy: dict[str, Any] | None
    policy_section: dict[str, Any] | None
    #: the second model of a comparison: its name, its `compare_with` dict, and the side-by-side figures
    other_name: str
    compare_with: dict[str, Any] | None
    comparison: dict[str, dict[str, dict[str, Any]]] | None
    #: base64 PNGs by category ("__policy__": the policy trade-off), threshold tables by category
    figures: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: the "Model and data" key-value rows (formatted HTML cells) and the warnings shown on top
    info_rows: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    json: dict[str, Any] = field(default_factory=dict)
    #: the fairness figures per identity group (eval.fairness.fairness), when measured
    fairness: dict[str, Any] | None = None
    #: the functional suite's summary (eval.functional.suite.summarise), when measured
    functional: dict[str, Any] | None = None
    #: example posts with the words that drove their score (eval.examples.report_examples), when explained
    examples: dict[str, Any] | None = None

    @property
    def categories(self) -> list[str]:
        return list(self.evaluation["categories"])


FUNCTIONAL_NOTE = ("Hand-written cases, one behaviour each (eval/functional/cases.jsonl), never trained on: an allow "
                   "case passes when the post is allowed, the others when it is reviewed or blocked.")


def write_report(out_dir: str | Path, evaluation: dict[str, Any], *, title: str, **options: Any) -> dict[str, Path]:
    """Write report.html (self-contained: CSS inline, plots as data:image/png;base64), report.json, report.md.

    `title` and `options` are build_report's keyword arguments. Returns {"html": path, "json": path, "md": path}.
    Raises ValueError for arrays of the wrong shape.
    """
    report = build_report(evaluation, title=title, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "report.html", "json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report.json, indent=2) + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    return paths


def build_report(evaluation: dict[str, Any], *, title: str,
                 raw_probs: np.ndarray | None = None, calibrated_probs: np.ndarray | None = None,
                 labels: np.ndarray | None = None, model: dict[str, Any] | None = None,
                 data: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
                 thresholds: dict[str, Any] | None = None, name: str = "model",
                 compare_with: dict[str, Any] | None = None, target_precisions: Sequence[float] = DEFAULT_TARGETS,
                 min_positives: int | None = None, policy: dict[str, Any] | None = None,
                 fairness: dict[str, Any] | None = None, functional: dict[str, Any] | None = None,
                 examples: dict[str, Any] | None = None) -> Report:
    """Compute everything the report shows: threshold tables, plots, comparison, policy section, warnings.

    evaluation: the dict from eval.metrics.evaluate (required; gives categories, thresholds, all tables).
    raw_probs, calibrated_probs, labels: (N, C) arrays in the evaluation's category order (NaN label =
        unknown, NaN prob row = unscored). With calibrated_probs and labels the report gets its plots and the
        threshold table; raw_probs (sigmoid of the logits) adds the "before calibration" reliability curve.
    model: what the scorer says of itself (Scorer.describe()). data: what was evaluated ({"datasets",
        "split", "n_rows", "errors", ...}); shown as given. calibration / thresholds: the model directory's
        calibration.json / thresholds.json contents (methods and CV log-loss; target, status and reason).
    name: this model's short name in legends. compare_with: a second model on the same posts:
        {"name": str, "evaluation": dict, "calibrated_probs": (N, C) | None, "labels": (N, C) | None,
         "model": dict | None}; adds a side-by-side table and overlays its PR and ROC curves.
    target_precisions: rows of the threshold table. min_positives: passed to the threshold rule
        (default: thresholds.json's, else eval.thresholds.DEFAULT_MIN_POSITIVES). fairness: eval.fairness.fairness's
        figures per identity group (adds the fairness section). examples: eval.examples.report_examples's posts
        with the words that drove their score (adds the example tables).
    Raises ValueError for arrays of the wrong shape.
    """
    cats: list[str] = list(evaluation["categories"])
    thr_json = thresholds or {}
    if min_positives is None:
        min_positives = int(thr_json.get("min_positives", DEFAULT_MIN_POSITIVES))
    arrays = {"raw_probs": raw_probs, "calibrated_probs": calibrated_probs, "labels": labels}
    for key, arr in arrays.items():
        if arr is not None and (np.ndim(arr) != 2 or np.shape(arr)[1] != len(cats)):
            raise ValueError(f"{key} must be (N, {len(cats)}) for categories {cats}, got shape {np.shape(arr)}")
    have_plots = calibrated_probs is not None and labels is not None
    if have_plots and np.shape(calibrated_probs) != np.shape(labels):
        raise ValueError(f"calibrated_probs {np.shape(calibrated_probs)} and labels {np.shape(labels)} differ in shape")
    other_eval = compare_with.get("evaluation") if compare_with else None
    report = Report(title=title, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), name=name,
                    evaluation=evaluation, confidence=float(evaluation.get("confidence", 0.95)),
                    target=thr_json.get("target_precision"), min_positives=min_positives, thresholds=thr_json,
                    calibration=calibration, policy=policy, policy_section=None,
                    other_name=(compare_with or {}).get("name", "other model"), compare_with=compare_with,
                    comparison=comparison(evaluation, other_eval) if other_eval else None, fairness=fairness,
                    functional=functional, examples=examples)
    if have_plots:
        _add_plots(report, raw_probs, calibrated_probs, labels, target_precisions)
        if policy:
            report.policy_section = policy_section(policy, calibrated_probs, labels, cats, report.confidence)
            if report.policy_section["figure"] is not None:
                report.figures["__policy__"] = png(report.policy_section["figure"])
    report.info_rows = _info_rows(evaluation, model, data, report.confidence)
    report.warnings = _warnings(report, model)
    pol, comp = report.policy_section, report.comparison
    report.json = to_jsonable({
        "title": title, "created": report.created, "model": model, "data": data, "name": name,
        "evaluation": evaluation, "threshold_table": report.tables, "target_precisions": list(target_precisions),
        "calibration": calibration, "thresholds": thresholds, "policy": pol["json"] if pol else None,
        "comparison": {"with": report.other_name, "model": (compare_with or {}).get("model"), "figures": comp,
                       "evaluation": other_eval} if comp is not None else None,
        "fairness": fairness,
        "functional": functional,
        "examples": examples,
    })
    return report


def _add_plots(report: Report, raw_probs: np.ndarray | None, calibrated_probs: np.ndarray, labels: np.ndarray,
               target_precisions: Sequence[float]) -> None:
    """Each category's threshold table and 2x2 figure (with the compared model's curves overlaid)."""
    cats, compare_with = report.categories, report.compare_with
    other_eval = compare_with.get("evaluation") if compare_with else None
    op_thresholds = report.evaluation.get("thresholds", {})
    P = np.asarray(calibrated_probs, dtype=np.float64)
    Y = np.asarray(labels, dtype=np.float64)
    R = None if raw_probs is None else np.asarray(raw_probs, dtype=np.float64)
    scored = ~np.isnan(P).any(axis=1)
    for j, c in enumerate(cats):
        rows = scored & ~np.isnan(Y[:, j])
        y, p = Y[rows, j], P[rows, j]
        report.tables[c] = threshold_table(y, p, P[scored, j], target_precisions, report.confidence,
                                           report.min_positives)
        if not len(y):
            continue
        others = []
        if compare_with and compare_with.get("calibrated_probs") is not None and other_eval and c in other_eval["categories"]:
            k = other_eval["categories"].index(c)
            P2 = np.asarray(compare_with["calibrated_probs"], dtype=np.float64)
            Y2 = np.asarray(compare_with.get("labels") if compare_with.get("labels") is not None else Y, dtype=np.float64)
            y2, p2 = valid_pairs(Y2[:, k], P2[:, k])
            others.append((report.other_name, y2, p2, other_eval.get("thresholds", {}).get(c)))
        report.figures[c] = category_figure(c, y, p, None if R is None else R[rows, j], op_thresholds.get(c),
                                            report.target, report.confidence, others, name=report.name)


def _info_rows(evaluation: dict[str, Any], model: dict[str, Any] | None, data: dict[str, Any] | None,
               confidence: float) -> list[list[str]]:
    """The "Model and data" table: the model's identity, what was evaluated, counts and confidence."""
    rows: list[list[str]] = []
    if model:
        for key in ("model_version", "trained", "calibration_version", "thresholds_version", "target_precision",
                    "text_encoder", "image_encoder", "fusion", "path"):
            if key in model:
                v = model[key]
                rows.append([esc(key), esc(json.dumps(v) if isinstance(v, (dict, list)) else v)])
    if data:
        for key, v in data.items():
            rows.append([esc(key), esc(json.dumps(v) if isinstance(v, (dict, list)) else v)])
    rows.append(["posts evaluated / unscored", f"{evaluation.get('n_rows', 0):,} / {evaluation.get('n_unscored', 0):,}"])
    rows.append(["confidence (intervals, bounds)", f"{confidence:.0%}; bootstrap resamples: {evaluation.get('bootstrap')}"])
    return rows


def _warnings(report: Report, model: dict[str, Any] | None) -> list[str]:
    """What the reader must see first: an untrained head, unscored posts, missing or stale thresholds."""
    evaluation, confidence, target = report.evaluation, report.confidence, report.target
    op_thresholds = evaluation.get("thresholds", {})
    out = []
    if model and model.get("trained") is False:
        out.append("This model's classifier head is UNTRAINED (random weights): its scores are not judgements.")
    if evaluation.get("n_unscored"):
        out.append(f"{evaluation['n_unscored']:,} posts could not be scored; they are excluded from every "
                   "metric (not counted as negatives). See the errors in the data table.")
    for c in report.categories:
        st = (report.thresholds.get("categories", {}).get(c) or {})
        if op_thresholds.get(c) is None:
            reason = st.get("reason") or "no threshold in the model directory; this category flags nothing automatically"
            out.append(f"{c}: no operating threshold: {reason}.")
            continue
        op = (evaluation["metrics"][c].get("all") or {}).get("operating") or {}
        interval = op.get("precision_interval")
        if target is not None and interval and interval[1] is not None and interval[1] < target:
            out.append(
                f"{c}: on this data the operating threshold {op_thresholds[c]:.4f} reaches precision {op['precision']:.3f} "
                f"({confidence:.0%} interval {interval[0]:.3f}-{interval[1]:.3f}), below the target {target:g} it was "
                "fitted for: the calibration split does not represent this data (distribution shift), or the threshold is stale.")
    return out


# --- rendering ------------------------------------------------------------------------------------

HOW_TO_READ = (
    "<h2>How to read this report</h2><ul class='note'>"
    "<li><b>PR curve</b>: precision against recall as the threshold falls; the dotted curve is the lower confidence "
    "bound on precision that thresholds are chosen with; the circle is the operating point; the dashed line the target.</li>"
    "<li><b>ROC</b>: recall against false-positive rate; the dashed line marks 1% false positives.</li>"
    "<li><b>Reliability</b>: a calibrated model's dots lie on the diagonal (a score of 0.8 is right 80% of the time).</li>"
    "<li><b>Histograms</b>: how far apart the classes' scores are, and how many posts sit above the threshold.</li>"
    "<li>Unknown labels (a dataset that does not label a category) are left out of that category, never counted "
    "as negatives. Posts that could not be scored are left out and counted.</li></ul>")


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (CSS inline, plots as data: URLs)."""
    r, evaluation, confidence, target = report, report.evaluation, report.confidence, report.target
    h: list[str] = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(r.title)}</title>"
                    f"<style>{CSS}</style></head><body>"]
    h.append(f"<h1>{esc(r.title)}</h1><p class='sub'>Generated {r.created}. Scores are calibrated probabilities; "
             f"the operating threshold of a category flags posts whose score is ≥ it.</p>")
    h += [f"<div class='warn'>{esc(w)}</div>" for w in r.warnings]
    h.append("<h2>Model and data</h2>" + html_table(None, r.info_rows, "kv"))
    h.append("<h2>Summary (all posts)</h2>")
    h.append(f"<p class='note'>Operating point = the model's thresholds{f' (target precision {target:g})' if target else ''}. "
             f"Bracketed: {confidence:.0%} bootstrap intervals. Precision (≥ x): exact one-sided Clopper-Pearson lower bound. "
             "F1 is the positive class's; macro-F1 averages the positive and negative classes (as TweetEval).</p>")
    h.append(html_table(SUMMARY_HEADERS, _summary_rows(evaluation)))
    h.append("<h2>Anchor figures (OpenAI guardrails benchmark style)</h2><p class='note'>Threshold-free: P@R = best precision at "
             "recall ≥ R; R@1%FPR = best recall with ≤ 1% false positives; R@P = best recall at precision ≥ P (point "
             "estimates, no bound); macro-F1 at a 0.5 threshold, comparable with TweetEval-style figures.</p>")
    h.append(html_table(ANCHOR_HEADERS, _anchor_rows(evaluation)))
    if r.comparison is not None:
        h.append(f"<h2>Comparison: {esc(r.name)} (A) vs {esc(r.other_name)} (B)</h2>")
        if r.compare_with and r.compare_with.get("model"):
            h.append(f"<p class='note'>B: {esc(r.compare_with['model'].get('model_version', ''))}. Both on the same posts; "
                     "Δ = B − A (higher is better except ECE and log-loss).</p>")
        h.append(html_table(*_comparison_table(r.comparison, r.name, r.other_name)))
    if r.policy_section is not None:
        h += _policy_html(report)
    if r.fairness is not None:
        h.append(fairness_html(r.fairness, r.fairness.get("model_version")))
    if r.functional is not None:
        h.append(f"<h2>Functional suite</h2><p class='note'>{FUNCTIONAL_NOTE}</p>")
        h.append(html_table(*functional_rows(r.functional)))
    if r.examples is not None:
        h.append(examples_html(r.examples))
    for c in r.categories:
        h += _category_html(report, c)
    h.append(HOW_TO_READ)
    h.append("</body></html>")
    return "\n".join(h)


def _policy_html(report: Report) -> list[str]:
    policy, pol, confidence = report.policy or {}, report.policy_section or {}, report.confidence
    lang = policy.get("languages") or {}
    h = [f"<h2>Moderation policy: allow, review or block</h2><p class='note'>Policy {esc(policy.get('version'))}: "
         "a post is blocked automatically when a category's score reaches its block threshold, sent to human "
         "review from its review threshold, allowed below; a post in a language other than "
         f"{esc(', '.join(lang.get('trained') or []))} goes to {esc(lang.get('action', 'review'))} (not counted "
         "here: these figures are the scores' decisions). Block precision: bracketed, its "
         f"{confidence:.0%} Clopper-Pearson interval. Review share: of the posts that label the category.</p>",
         html_table(POLICY_HEADERS, pol["rows"])]
    if "__policy__" in report.figures:
        h.append("<p class='note'>The trade-off a trust-and-safety lead chooses: each curve is one category's review "
                 "threshold sliding down (more posts to review, more harmful posts caught); the circle is the policy "
                 "in force, the crosses are the fitted alternatives below.</p>"
                 f"<img alt='review load against recall' src='data:image/png;base64,{report.figures['__policy__']}'>")
    for c, rows in pol["alternatives"].items():
        h.append(f"<h3>Alternatives: {esc(c)}</h3><p class='note'>Thresholds fitted on the calibration split for "
                 "other targets (policy.json), measured on this data. Refit with `moderation calibrate "
                 "--target-precision P --review-recall R` (or --review-budget, --review-precision).</p>")
        h.append(html_table(ALTERNATIVE_HEADERS, rows))
    return h


def _category_html(report: Report, c: str) -> list[str]:
    evaluation, confidence = report.evaluation, report.confidence
    h = [f"<h2>Category: {esc(c)}</h2>"]
    st = report.thresholds.get("categories", {}).get(c) or {}
    if st:
        h.append(f"<p>Operating threshold from the model directory: <b>{fmt(st.get('threshold'), 4)}</b> "
                 f"{status_badge(st.get('status'))} <span class='note'>{esc(st.get('reason', ''))}</span></p>")
    if c in report.figures:
        h.append(f"<img alt='{esc(c)}: PR curve, ROC curve, reliability diagram, score histograms' "
                 f"src='data:image/png;base64,{report.figures[c]}'>")
    if c in report.tables:
        h.append(f"<h3>Threshold table</h3><p class='note'>Thresholds this data supports, picked by the calibrate rule "
                 f"(highest recall whose {confidence:.0%} Clopper-Pearson lower bound on precision reaches the target; "
                 f"at least {report.min_positives} labelled positives). On a test split these are diagnostics, not a refit. "
                 "Traffic flagged = share of all scored posts at or above the threshold.</p>")
        h.append(html_table(THRESHOLD_HEADERS, _threshold_rows(report.tables[c], confidence)))
    h.append("<h3>Per modality slice</h3>")
    h.append(html_table(SLICE_HEADERS, _slice_rows(evaluation["metrics"][c], evaluation.get("slices", ["all"]))))
    by_ds = (evaluation.get("by_dataset") or {}).get("metrics", {}).get(c)
    if by_ds:
        h.append("<h3>Per dataset</h3>")
        h.append(html_table(SLICE_HEADERS, _slice_rows(by_ds, [g for g in by_ds if g != "all" and by_ds[g].get("n")])))
    cal = (report.calibration or {}).get("categories", {}).get(c)
    if cal:
        cv = cal.get("cv_log_loss") or {}
        cv_txt = ", ".join(f"{k} {fmt(v, 4)}" for k, v in cv.items())
        h.append(f"<p><b>Calibration:</b> {esc(cal.get('method'))} "
                 f"<span class='note'>({esc(cal.get('selection', ''))}; cross-validated log-loss: {esc(cv_txt) or '–'}"
                 f"{'; ' + esc(cal['note']) if cal.get('note') else ''})</span></p>")
    return h


def render_markdown(report: Report) -> str:
    """The report's tables as Markdown (the plots stay in the HTML)."""
    r, evaluation, confidence = report, report.evaluation, report.confidence
    md = [f"# {r.title}", "", f"Generated {r.created}.", ""]
    for w in r.warnings:
        md += [f"> **Warning:** {w}", ""]
    md += ["## Model and data", "", md_table(("field", "value"), r.info_rows), "", "## Summary (all posts)", "",
           md_table(SUMMARY_HEADERS, _summary_rows(evaluation)), "",
           "## Anchor figures (OpenAI guardrails benchmark style)", "", md_table(ANCHOR_HEADERS, _anchor_rows(evaluation)), ""]
    if r.policy_section is not None:
        md += [f"## Moderation policy {(r.policy or {}).get('version')}", "",
               md_table(POLICY_HEADERS, r.policy_section["rows"]), ""]
        for c, rows in r.policy_section["alternatives"].items():
            md += [f"Alternatives for {c} (fitted on the calibration split, measured here):", "",
                   md_table(ALTERNATIVE_HEADERS, rows), ""]
    if r.fairness is not None:
        md += [fairness_markdown(r.fairness, r.fairness.get("model_version"))]
    if r.functional is not None:
        md += ["## Functional suite", "", FUNCTIONAL_NOTE, "", md_table(*functional_rows(r.functional)), ""]
    if r.examples is not None:
        md += [examples_markdown(r.examples)]
    if r.comparison is not None:
        md += [f"## Comparison: {r.name} (A) vs {r.other_name} (B)", ""]
        md += [md_table(*_comparison_table(r.comparison, "A", "B")), ""]
    for c in r.categories:
        md += [f"## {c}", ""]
        if c in r.tables:
            md += ["Threshold table:", "", md_table(THRESHOLD_HEADERS, _threshold_rows(r.tables[c], confidence)), ""]
        md += ["Per modality slice:", "", md_table(SLICE_HEADERS, _slice_rows(evaluation["metrics"][c], evaluation.get("slices", ["all"]))), ""]
        by_ds = (evaluation.get("by_dataset") or {}).get("metrics", {}).get(c)
        if by_ds:
            md += ["Per dataset:", "", md_table(SLICE_HEADERS, _slice_rows(by_ds, [g for g in by_ds if g != "all" and by_ds[g].get("n")])), ""]
    md.append("Plots: see report.html next to this file.")
    return "\n".join(md) + "\n"
