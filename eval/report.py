"""The calibration report: one self-contained HTML file (plots embedded as base64 PNG), plus JSON and Markdown.

Per category: PR curve (operating point and target precision marked, with the precision lower bound), ROC
curve (1% false-positive rate marked), reliability diagram before and after calibration, score histograms
per class, a threshold table for several target precisions, per-slice tables; the anchors' figures (OpenAI
guardrails benchmark style: ROC-AUC, precision at recall 0.80/0.90/0.95, recall at 1% FPR); a side-by-side
comparison when a second model is given. Plots use matplotlib's Agg canvas directly (no pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.metrics import ECE_BINS, FPR_LEVEL, PRECISION_LEVELS, RECALL_LEVELS, reliability_bins, to_jsonable

DEFAULT_TARGETS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95, 0.99)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


# --- formatting -----------------------------------------------------------------------------------

def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{float(v):.{digits}f}"


def _pct(v: Any, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.{digits}f}%"


def _ci(m: dict[str, Any], key: str, value: Any) -> str:
    ci = (m.get("ci") or {}).get(key)
    base = _f(value)
    return f"{base}<br><small class='ci'>[{_f(ci[0])}, {_f(ci[1])}]</small>" if ci and base != "–" else base


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


# --- plots ----------------------------------------------------------------------------------------

def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No metadata: the default "Software" chunk carries a URL, and the file must hold none.
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _valid(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y) & ~np.isnan(p)
    return y[keep], p[keep]


def category_figure(category: str, y: np.ndarray, p_cal: np.ndarray, p_raw: np.ndarray | None,
                    threshold: float | None, target: float | None, confidence: float,
                    others: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]] = (), name: str = "model") -> str:
    """2x2 figure for one category as a base64 PNG: PR, ROC, reliability (before/after), histograms per class.

    y, p_cal, p_raw: labelled rows only (0/1, calibrated and raw probabilities). others: (name, y, p_cal,
    threshold) of models to overlay on the PR and ROC curves.
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

    from eval.calibrate import threshold_candidates

    fig = Figure(figsize=(12, 9.2))
    axes = fig.subplots(2, 2)
    fig.suptitle(f"{category}: {len(y):,} labelled posts, {int(y.sum()):,} positive", fontsize=14, fontweight="bold")
    curves = [(name, y, p_cal, threshold)] + list(others)
    has_both = 0 < y.sum() < len(y)

    ax = axes[0, 0]
    for k, (nm, yy, pp, t) in enumerate(curves):
        if not 0 < yy.sum() < len(yy):
            continue
        prec, rec, _ = precision_recall_curve(yy, pp)
        ax.plot(rec, prec, color=COLORS[k % len(COLORS)], lw=2, ls="-" if k == 0 else "--", label=f"{nm}: precision")
        if k == 0:
            c = threshold_candidates(yy, pp, confidence)
            ax.plot(c["tp"] / yy.sum(), c["lower"], color=COLORS[0], lw=1, ls=":",
                    label=f"{nm}: {confidence:.0%} lower bound on precision")
        if t is not None:
            flag = pp >= t
            if flag.any():
                op_p, op_r = yy[flag].mean(), yy[flag].sum() / yy.sum()
                ax.plot([op_r], [op_p], marker="o", ms=10, mfc="none", mew=2.5, color=COLORS[k % len(COLORS)], ls="none",
                        label=f"{nm}: operating point (t={t:.3f}, P={op_p:.2f}, R={op_r:.2f})")
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target precision {target:g}")
    if has_both:
        ax.axhline(y.mean(), color="grey", ls=":", lw=1, label=f"prevalence {y.mean():.2f}")
    if threshold is None:
        ax.text(0.5, 0.96, "no operating threshold: this category flags nothing", transform=ax.transAxes, ha="center",
                va="top", color="#b00020", fontsize=10, bbox={"facecolor": "white", "edgecolor": "#b00020", "alpha": 0.9})
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall (calibrated scores)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[0, 1]
    for k, (nm, yy, pp, t) in enumerate(curves):
        if not 0 < yy.sum() < len(yy):
            continue
        fpr, tpr, _ = roc_curve(yy, pp)
        ax.plot(fpr, tpr, color=COLORS[k % len(COLORS)], lw=2, ls="-" if k == 0 else "--", label=f"{nm}: ROC (AUC {roc_auc_score(yy, pp):.3f})")
        if t is not None:
            flag = pp >= t
            neg = yy == 0
            ax.plot([flag[neg].mean()], [flag[~neg].mean()], marker="o", ms=10, mfc="none", mew=2.5,
                    color=COLORS[k % len(COLORS)], ls="none", label=f"{nm}: operating point")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.axvline(FPR_LEVEL, color="black", ls="--", lw=1, label="1% false-positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1, 0]
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
    series = ([("before calibration (sigmoid of logit)", p_raw, "#ff7f0e")] if p_raw is not None else []) + \
             [("after calibration", p_cal, COLORS[0])]
    from eval.metrics import expected_calibration_error
    for label, pp, color in series:
        b = reliability_bins(y, pp, ECE_BINS)
        used = b["count"] > 0
        sizes = 20 + 180 * b["count"][used] / max(1.0, b["count"].max())
        ax.plot(b["mean_predicted"][used], b["fraction_positive"][used], color=color, lw=1.5)
        ax.scatter(b["mean_predicted"][used], b["fraction_positive"][used], s=sizes, color=color, alpha=0.8,
                   label=f"{label}, ECE {expected_calibration_error(y, pp):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (bin)", ylabel="observed share positive",
           title=f"Reliability ({ECE_BINS} bins; dot size = posts in bin)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1, 1]
    bins = np.linspace(0, 1, 41)
    ax.hist(p_cal[y == 0], bins=bins, histtype="stepfilled", alpha=0.45, color="#2ca02c", label=f"negatives ({int((y == 0).sum()):,})")
    ax.hist(p_cal[y == 1], bins=bins, histtype="stepfilled", alpha=0.45, color="#d62728", label=f"positives ({int((y == 1).sum()):,})")
    if threshold is not None:
        ax.axvline(threshold, color="black", lw=2, label=f"operating threshold {threshold:.3f}")
    ax.set_yscale("log")
    ax.set(xlim=(0, 1), xlabel="calibrated probability", ylabel="posts (log scale)", title="Score histogram per class")
    ax.legend(loc="upper center", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# --- tables ---------------------------------------------------------------------------------------

def threshold_table(y: np.ndarray, p: np.ndarray, p_traffic: np.ndarray, targets: Sequence[float], confidence: float,
                    min_positives: int) -> list[dict[str, Any]]:
    """For each target precision, the threshold the calibrate rule picks on (y, p), and what it costs.

    p_traffic: calibrated scores of every scored post (labelled or not) for the share of traffic flagged.
    """
    from eval.calibrate import select_threshold

    rows = []
    for target in targets:
        r = select_threshold(y, p, target, confidence, min_positives)
        t = r.get("threshold")
        r["traffic_flagged"] = float(np.mean(p_traffic >= t)) if t is not None and len(p_traffic) else (0.0 if t is None else None)
        rows.append(r)
    return rows


def _status_badge(status: str | None) -> str:
    cls = "ok" if status == "ok" else "bad"
    return f'<span class="badge {cls}">{_esc(status or "–")}</span>'


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], cls: str = "") -> str:
    if headers is None:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table class="{cls}"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def clean(s: str) -> str:
        import re
        text = html.unescape(re.sub(r"<[^>]+>", "", str(s).replace("<br>", " ")))
        return text.replace("<", "&lt;").replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(clean(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


SUMMARY_HEADERS = ("category", "labelled", "positive", "ROC-AUC [CI]", "PR-AUC [CI]", "threshold", "precision (lower bound)",
                   "recall [CI]", "flagged", "F1", "macro-F1", "ECE", "Brier", "log-loss")


def _summary_rows(evaluation: dict[str, Any], slice_name: str = "all") -> list[list[str]]:
    rows = []
    for c in evaluation["categories"]:
        m = evaluation["metrics"][c].get(slice_name, {})
        if not m.get("n"):
            rows.append([_esc(c), "0", "0"] + ["–"] * (len(SUMMARY_HEADERS) - 3))
            continue
        op = m.get("operating", {})
        t = op.get("threshold")
        thr = _f(t) if t is not None else '<span class="badge bad">none: flags nothing</span>'
        prec = "–" if op.get("precision") is None else f"{_f(op['precision'])} (≥ {_f(op.get('precision_lower_bound'))})"
        rows.append([_esc(c), _f(m["n"]), _f(m["n_positive"]), _ci(m, "roc_auc", m.get("roc_auc")),
                     _ci(m, "average_precision", m.get("average_precision")), thr, prec, _ci(m, "recall", op.get("recall")),
                     _pct(op.get("flag_rate")), _ci(m, "f1", op.get("f1")), _f(op.get("macro_f1")), _f(m.get("ece")),
                     _f(m.get("brier")), _f(m.get("log_loss"))])
    return rows


ANCHOR_HEADERS = ("category", "ROC-AUC", "P@R0.80", "P@R0.90", "P@R0.95", "R@1%FPR", "R@P0.90", "R@P0.95", "macro-F1 @0.5")


def _anchor_rows(evaluation: dict[str, Any], label: str | None = None) -> list[list[str]]:
    rows = []
    for c in evaluation["categories"]:
        m = evaluation["metrics"][c].get("all", {})
        par, rap = m.get("precision_at_recall", {}), m.get("recall_at_precision", {})
        rows.append(([_esc(label)] if label else []) + [_esc(c), _f(m.get("roc_auc")),
                    *[_f(par.get(f"{r:.2f}")) for r in RECALL_LEVELS], _f(m.get("recall_at_fpr_1pct")),
                    *[_f(rap.get(f"{q:.2f}")) for q in PRECISION_LEVELS], _f((m.get("at_0.5") or {}).get("macro_f1"))])
    return rows


SLICE_HEADERS = ("slice", "labelled", "positive", "ROC-AUC", "PR-AUC", "precision", "recall", "flagged", "F1", "ECE", "log-loss")


def _slice_rows(per_slice: dict[str, Any], order: Sequence[str]) -> list[list[str]]:
    rows = []
    for g in order:
        m = per_slice.get(g)
        if m is None:
            continue
        op = m.get("operating") or {}
        rows.append([_esc(g), _f(m.get("n")), _f(m.get("n_positive")), _f(m.get("roc_auc")), _f(m.get("average_precision")),
                     _f(op.get("precision")), _f(op.get("recall")), _pct(op.get("flag_rate")), _f(op.get("f1")),
                     _f(m.get("ece")), _f(m.get("log_loss"))])
    return rows


THRESHOLD_HEADERS = ("target precision", "threshold", "expected precision", "lower bound", "recall", "traffic flagged", "status")


def _threshold_rows(table: list[dict[str, Any]], confidence: float) -> list[list[str]]:
    rows = []
    for r in table:
        rows.append([_f(r["target_precision"], 2), _f(r.get("threshold"), 4), _f(r.get("precision")),
                     _f(r.get("precision_lower_bound")), _f(r.get("recall")), _pct(r.get("traffic_flagged")),
                     _status_badge(r.get("status"))])
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
    rows = [[_esc(f)] + [_f(comp[c][f][k]) for c in cats for k in ("a", "b", "delta")] for f in figures]
    return headers, rows


# --- the report -----------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#1b1b1b;padding:0 16px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:21px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{font-size:17px;margin-top:22px} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f2f4f7;text-align:left} td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto} small.ci{color:#666} td:first-child{text-align:left;font-weight:600}
table.kv td{text-align:left} table.kv td:first-child{width:220px;color:#444}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600}
.badge.ok{background:#dff3e4;color:#1e6b34} .badge.bad{background:#fde2e1;color:#a4161a}
.warn{background:#fff4ce;border-left:4px solid #e0a800;padding:8px 12px;margin:10px 0}
.note{color:#555;font-size:13px} img{max-width:100%;border:1px solid #eee}
.grid{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start} .grid>div{flex:1 1 560px}
"""


def write_report(out_dir: str | Path, evaluation: dict[str, Any], *, title: str,
                 raw_probs: np.ndarray | None = None, calibrated_probs: np.ndarray | None = None,
                 labels: np.ndarray | None = None, model: dict[str, Any] | None = None,
                 data: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
                 thresholds: dict[str, Any] | None = None, name: str = "model",
                 compare_with: dict[str, Any] | None = None, target_precisions: Sequence[float] = DEFAULT_TARGETS,
                 min_positives: int | None = None, policy: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.html (self-contained: CSS inline, plots as data:image/png;base64), report.json, report.md.

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
        (default: thresholds.json's, else eval.calibrate.DEFAULT_MIN_POSITIVES).
    Returns {"html": path, "json": path, "md": path}. Raises ValueError for arrays of the wrong shape.
    """
    from eval.calibrate import DEFAULT_MIN_POSITIVES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cats: list[str] = list(evaluation["categories"])
    confidence = float(evaluation.get("confidence", 0.95))
    thr_json = thresholds or {}
    target = thr_json.get("target_precision")
    if min_positives is None:
        min_positives = int(thr_json.get("min_positives", DEFAULT_MIN_POSITIVES))
    op_thresholds = evaluation.get("thresholds", {})
    arrays = {"raw_probs": raw_probs, "calibrated_probs": calibrated_probs, "labels": labels}
    for key, arr in arrays.items():
        if arr is not None and (np.ndim(arr) != 2 or np.shape(arr)[1] != len(cats)):
            raise ValueError(f"{key} must be (N, {len(cats)}) for categories {cats}, got shape {np.shape(arr)}")
    have_plots = calibrated_probs is not None and labels is not None
    if have_plots and np.shape(calibrated_probs) != np.shape(labels):
        raise ValueError(f"calibrated_probs {np.shape(calibrated_probs)} and labels {np.shape(labels)} differ in shape")
    other_eval = compare_with.get("evaluation") if compare_with else None
    other_name = (compare_with or {}).get("name", "other model")

    figures: dict[str, str] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    if have_plots:
        P = np.asarray(calibrated_probs, dtype=np.float64)
        Y = np.asarray(labels, dtype=np.float64)
        R = None if raw_probs is None else np.asarray(raw_probs, dtype=np.float64)
        scored = ~np.isnan(P).any(axis=1)
        for j, c in enumerate(cats):
            rows = scored & ~np.isnan(Y[:, j])
            y, p = Y[rows, j], P[rows, j]
            tables[c] = threshold_table(y, p, P[scored, j], target_precisions, confidence, min_positives)
            if not len(y):
                continue
            others = []
            if compare_with and compare_with.get("calibrated_probs") is not None and other_eval and c in other_eval["categories"]:
                k = other_eval["categories"].index(c)
                P2 = np.asarray(compare_with["calibrated_probs"], dtype=np.float64)
                Y2 = np.asarray(compare_with.get("labels") if compare_with.get("labels") is not None else Y, dtype=np.float64)
                y2, p2 = _valid(Y2[:, k], P2[:, k])
                others.append((other_name, y2, p2, other_eval.get("thresholds", {}).get(c)))
            figures[c] = category_figure(c, y, p, None if R is None else R[rows, j], op_thresholds.get(c), target,
                                         confidence, others, name=name)
    comp = comparison(evaluation, other_eval) if other_eval else None
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    pol = None
    if policy and have_plots:
        from eval.policy_report import policy_section
        pol = policy_section(policy, calibrated_probs, labels, cats, confidence)
        if pol["figure"] is not None:
            figures["__policy__"] = _png(pol["figure"])

    # ---- JSON
    report_json = to_jsonable({
        "title": title, "created": created, "model": model, "data": data, "name": name,
        "evaluation": evaluation, "threshold_table": tables, "target_precisions": list(target_precisions),
        "calibration": calibration, "thresholds": thresholds, "policy": pol["json"] if pol else None,
        "comparison": {"with": other_name, "model": (compare_with or {}).get("model"), "figures": comp,
                       "evaluation": other_eval} if comp is not None else None,
    })
    paths = {"html": out / "report.html", "json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report_json, indent=2) + "\n", encoding="utf-8")

    # ---- shared pieces
    info_rows: list[list[str]] = []
    if model:
        for key in ("model_version", "trained", "calibration_version", "thresholds_version", "target_precision",
                    "text_encoder", "image_encoder", "fusion", "path"):
            if key in model:
                v = model[key]
                info_rows.append([_esc(key), _esc(json.dumps(v) if isinstance(v, (dict, list)) else v)])
    if data:
        for key, v in data.items():
            info_rows.append([_esc(key), _esc(json.dumps(v) if isinstance(v, (dict, list)) else v)])
    info_rows.append(["posts evaluated / unscored", f"{evaluation.get('n_rows', 0):,} / {evaluation.get('n_unscored', 0):,}"])
    info_rows.append(["confidence (intervals, bounds)", f"{confidence:.0%}; bootstrap resamples: {evaluation.get('bootstrap')}"])
    warnings_html = []
    if model and model.get("trained") is False:
        warnings_html.append("This model's classifier head is UNTRAINED (random weights): its scores are not judgements.")
    if evaluation.get("n_unscored"):
        warnings_html.append(f"{evaluation['n_unscored']:,} posts could not be scored; they are excluded from every "
                             "metric (not counted as negatives). See the errors in the data table.")
    for c in cats:
        st = (thr_json.get("categories", {}).get(c) or {})
        if op_thresholds.get(c) is None:
            reason = st.get("reason") or "no threshold in the model directory; this category flags nothing automatically"
            warnings_html.append(f"{c}: no operating threshold: {reason}.")
            continue
        op = (evaluation["metrics"][c].get("all") or {}).get("operating") or {}
        interval = op.get("precision_interval")
        if target is not None and interval and interval[1] is not None and interval[1] < target:
            warnings_html.append(
                f"{c}: on this data the operating threshold {op_thresholds[c]:.4f} reaches precision {op['precision']:.3f} "
                f"({confidence:.0%} interval {interval[0]:.3f}-{interval[1]:.3f}), below the target {target:g} it was "
                "fitted for: the calibration split does not represent this data (distribution shift), or the threshold is stale.")

    # ---- HTML
    h: list[str] = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
                    f"<style>{CSS}</style></head><body>"]
    h.append(f"<h1>{_esc(title)}</h1><p class='sub'>Generated {created}. Scores are calibrated probabilities; "
             f"the operating threshold of a category flags posts whose score is ≥ it.</p>")
    h += [f"<div class='warn'>{_esc(w)}</div>" for w in warnings_html]
    h.append("<h2>Model and data</h2>" + _table(None, info_rows, "kv"))
    h.append("<h2>Summary (all posts)</h2>")
    h.append(f"<p class='note'>Operating point = the model's thresholds{f' (target precision {target:g})' if target else ''}. "
             f"Bracketed: {confidence:.0%} bootstrap intervals. Precision (≥ x): exact one-sided Clopper-Pearson lower bound. "
             "F1 is the positive class's; macro-F1 averages the positive and negative classes (as TweetEval).</p>")
    h.append(_table(SUMMARY_HEADERS, _summary_rows(evaluation)))
    h.append("<h2>Anchor figures (OpenAI guardrails benchmark style)</h2><p class='note'>Threshold-free: P@R = best precision at "
             "recall ≥ R; R@1%FPR = best recall with ≤ 1% false positives; R@P = best recall at precision ≥ P (point "
             "estimates, no bound); macro-F1 at a 0.5 threshold, comparable with TweetEval-style figures.</p>")
    h.append(_table(ANCHOR_HEADERS, _anchor_rows(evaluation)))
    if comp is not None:
        h.append(f"<h2>Comparison: {_esc(name)} (A) vs {_esc(other_name)} (B)</h2>")
        if compare_with and compare_with.get("model"):
            h.append(f"<p class='note'>B: {_esc(compare_with['model'].get('model_version', ''))}. Both on the same posts; "
                     "Δ = B − A (higher is better except ECE and log-loss).</p>")
        h.append(_table(*_comparison_table(comp, name, other_name)))
    if pol is not None:
        from eval.policy_report import ALTERNATIVE_HEADERS, POLICY_HEADERS
        lang = policy.get("languages") or {}
        h.append(f"<h2>Moderation policy: allow, review or block</h2><p class='note'>Policy {_esc(policy.get('version'))}: "
                 "a post is blocked automatically when a category's score reaches its block threshold, sent to human "
                 "review from its review threshold, allowed below; a post in a language other than "
                 f"{_esc(', '.join(lang.get('trained') or []))} goes to {_esc(lang.get('action', 'review'))} (not counted "
                 "here: these figures are the scores' decisions). Block precision: bracketed, its "
                 f"{confidence:.0%} Clopper-Pearson interval. Review share: of the posts that label the category.</p>")
        h.append(_table(POLICY_HEADERS, pol["rows"]))
        if "__policy__" in figures:
            h.append("<p class='note'>The trade-off a trust-and-safety lead chooses: each curve is one category's review "
                     "threshold sliding down (more posts to review, more harmful posts caught); the circle is the policy "
                     "in force, the crosses are the fitted alternatives below.</p>"
                     f"<img alt='review load against recall' src='data:image/png;base64,{figures['__policy__']}'>")
        for c, rows in pol["alternatives"].items():
            h.append(f"<h3>Alternatives: {_esc(c)}</h3><p class='note'>Thresholds fitted on the calibration split for "
                     "other targets (policy.json), measured on this data. Refit with `moderation calibrate "
                     "--target-precision P --review-recall R` (or --review-budget, --review-precision).</p>")
            h.append(_table(ALTERNATIVE_HEADERS, rows))
    for c in cats:
        h.append(f"<h2>Category: {_esc(c)}</h2>")
        st = thr_json.get("categories", {}).get(c) or {}
        if st:
            h.append(f"<p>Operating threshold from the model directory: <b>{_f(st.get('threshold'), 4)}</b> "
                     f"{_status_badge(st.get('status'))} <span class='note'>{_esc(st.get('reason', ''))}</span></p>")
        if c in figures:
            h.append(f"<img alt='{_esc(c)}: PR curve, ROC curve, reliability diagram, score histograms' "
                     f"src='data:image/png;base64,{figures[c]}'>")
        if c in tables:
            h.append(f"<h3>Threshold table</h3><p class='note'>Thresholds this data supports, picked by the calibrate rule "
                     f"(highest recall whose {confidence:.0%} Clopper-Pearson lower bound on precision reaches the target; "
                     f"at least {min_positives} labelled positives). On a test split these are diagnostics, not a refit. "
                     "Traffic flagged = share of all scored posts at or above the threshold.</p>")
            h.append(_table(THRESHOLD_HEADERS, _threshold_rows(tables[c], confidence)))
        h.append("<h3>Per modality slice</h3>")
        h.append(_table(SLICE_HEADERS, _slice_rows(evaluation["metrics"][c], evaluation.get("slices", ["all"]))))
        by_ds = (evaluation.get("by_dataset") or {}).get("metrics", {}).get(c)
        if by_ds:
            h.append("<h3>Per dataset</h3>")
            h.append(_table(SLICE_HEADERS, _slice_rows(by_ds, [g for g in by_ds if g != "all" and by_ds[g].get("n")])))
        cal = (calibration or {}).get("categories", {}).get(c)
        if cal:
            cv = cal.get("cv_log_loss") or {}
            cv_txt = ", ".join(f"{k} {_f(v, 4)}" for k, v in cv.items())
            h.append(f"<p><b>Calibration:</b> {_esc(cal.get('method'))} "
                     f"<span class='note'>({_esc(cal.get('selection', ''))}; cross-validated log-loss: {_esc(cv_txt) or '–'}"
                     f"{'; ' + _esc(cal['note']) if cal.get('note') else ''})</span></p>")
    h.append("<h2>How to read this report</h2><ul class='note'>"
             "<li><b>PR curve</b>: precision against recall as the threshold falls; the dotted curve is the lower confidence "
             "bound on precision that thresholds are chosen with; the circle is the operating point; the dashed line the target.</li>"
             "<li><b>ROC</b>: recall against false-positive rate; the dashed line marks 1% false positives.</li>"
             "<li><b>Reliability</b>: a calibrated model's dots lie on the diagonal (a score of 0.8 is right 80% of the time).</li>"
             "<li><b>Histograms</b>: how far apart the classes' scores are, and how many posts sit above the threshold.</li>"
             "<li>Unknown labels (a dataset that does not label a category) are left out of that category, never counted "
             "as negatives. Posts that could not be scored are left out and counted.</li></ul>")
    h.append("</body></html>")
    paths["html"].write_text("\n".join(h), encoding="utf-8")

    # ---- Markdown
    md = [f"# {title}", "", f"Generated {created}.", ""]
    for w in warnings_html:
        md += [f"> **Warning:** {w}", ""]
    md += ["## Model and data", "", _md_table(("field", "value"), info_rows), "", "## Summary (all posts)", "",
           _md_table(SUMMARY_HEADERS, _summary_rows(evaluation)), "",
           "## Anchor figures (OpenAI guardrails benchmark style)", "", _md_table(ANCHOR_HEADERS, _anchor_rows(evaluation)), ""]
    if pol is not None:
        from eval.policy_report import ALTERNATIVE_HEADERS, POLICY_HEADERS
        md += [f"## Moderation policy {policy.get('version')}", "", _md_table(POLICY_HEADERS, pol["rows"]), ""]
        for c, rows in pol["alternatives"].items():
            md += [f"Alternatives for {c} (fitted on the calibration split, measured here):", "",
                   _md_table(ALTERNATIVE_HEADERS, rows), ""]
    if comp is not None:
        md += [f"## Comparison: {name} (A) vs {other_name} (B)", ""]
        md += [_md_table(*_comparison_table(comp, "A", "B")), ""]
    for c in cats:
        md += [f"## {c}", ""]
        if c in tables:
            md += ["Threshold table:", "", _md_table(THRESHOLD_HEADERS, _threshold_rows(tables[c], confidence)), ""]
        md += ["Per modality slice:", "", _md_table(SLICE_HEADERS, _slice_rows(evaluation["metrics"][c], evaluation.get("slices", ["all"]))), ""]
        by_ds = (evaluation.get("by_dataset") or {}).get("metrics", {}).get(c)
        if by_ds:
            md += ["Per dataset:", "", _md_table(SLICE_HEADERS, _slice_rows(by_ds, [g for g in by_ds if g != "all" and by_ds[g].get("n")])), ""]
    md.append("Plots: see report.html next to this file.")
    paths["md"].write_text("\n".join(md) + "\n", encoding="utf-8")
    return paths
