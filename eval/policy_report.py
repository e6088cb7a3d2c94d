"""The moderation policy's section of the calibration report: what block and review do on the evaluated data.

Per category: precision (with its interval) and recall of automatic blocks, the share of posts sent to review
and the review queue's precision, the recall of block + review; the trade-off curve a trust-and-safety lead
chooses on (the share of posts a review band costs against the recall block + review reach, with the policy's
point and the fitted alternatives marked); and the table of alternatives (policy.json's thresholds for other
block precision and review recall targets) measured on this data.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from eval.formatting import fmt, pct
from eval.metrics import clopper_pearson_interval

POLICY_HEADERS = ("category", "block at", "blocked", "block precision [CI]", "block recall", "review from", "review share",
                  "review precision", "block + review recall")
ALTERNATIVE_HEADERS = ("block precision target", "block at", "review recall target", "review from", "block precision",
                       "block recall", "review share", "review precision", "block + review recall")


def _rate(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def operating(y: np.ndarray, p: np.ndarray, block: float | None, review: float | None,
              confidence: float = 0.95) -> dict[str, Any]:
    """What a block / review pair of thresholds does to posts with labels y and calibrated scores p."""
    blocked = p >= block if block is not None else np.zeros(len(p), dtype=bool)
    caught = p >= review if review is not None else blocked
    band = caught & ~blocked
    n_pos = float(y.sum())
    tp_block = float(y[blocked].sum())
    lo, hi = clopper_pearson_interval(int(tp_block), int(blocked.sum()), confidence) if blocked.any() else (np.nan, np.nan)
    return {"n": int(len(y)), "n_positive": int(n_pos), "blocked": int(blocked.sum()),
            "block_precision": _rate(tp_block, blocked.sum()), "block_precision_ci": [lo, hi],
            "block_recall": _rate(tp_block, n_pos), "review_share": _rate(band.sum(), len(p)),
            "review_precision": _rate(y[band].sum(), band.sum()), "block_or_review_recall": _rate(y[caught].sum(), n_pos)}


def tradeoff_curve(y: np.ndarray, p: np.ndarray, block: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(review share, block + review recall) for every review threshold below `block` on this data."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    n, n_pos = len(p), max(float(y.sum()), 1.0)
    blocked = int((p >= block).sum()) if block is not None else 0
    caught = np.arange(1, n + 1)
    recall = np.cumsum(ys) / n_pos
    keep = np.r_[ps[1:] != ps[:-1], True] & (caught > blocked)
    return (caught[keep] - blocked) / n, recall[keep]


def policy_figure(cats: Sequence[str], curves: dict[str, tuple[np.ndarray, np.ndarray]],
                  points: dict[str, dict[str, Any]], alternatives: dict[str, list[dict[str, Any]]]) -> Any:
    """One plot: per category the review share a band costs against the recall of block + review."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.subplots()
    for i, c in enumerate(cats):
        if c not in curves:
            continue
        color = f"C{i}"
        x, r = curves[c]
        ax.plot(x, r, color=color, lw=1.6, label=c)
        op = points.get(c)
        if op and not np.isnan(op["review_share"]):
            ax.plot([op["review_share"]], [op["block_or_review_recall"]], "o", color=color, ms=8, mec="black",
                    label=f"{c}: this policy")
        alt = [a for a in alternatives.get(c, []) if a.get("measured")]
        if alt:
            ax.plot([a["measured"]["review_share"] for a in alt], [a["measured"]["block_or_review_recall"] for a in alt],
                    "x", color=color, ms=6, alpha=0.8)
    ax.set_xlabel("share of posts sent to human review")
    ax.set_ylabel("recall of block + review")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Review load against recall (x: the fitted alternatives, on this data)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def policy_section(policy: dict[str, Any], probs: np.ndarray, labels: np.ndarray, categories: Sequence[str],
                   confidence: float = 0.95) -> dict[str, Any]:
    """The section's content: {"rows": per category (POLICY_HEADERS values), "alternatives": {category: rows},
    "operating": {category: dict}, "figure": matplotlib figure or None, "json": JSON-ready figures}."""
    cats = [c for c in categories if c in (policy.get("categories") or {})]
    P = np.asarray(probs, dtype=np.float64)
    Y = np.asarray(labels, dtype=np.float64)
    scored = ~np.isnan(P).any(axis=1)
    rows, alts, ops, curves, alt_json = [], {}, {}, {}, {}
    for c in cats:
        j = list(categories).index(c)
        entry = policy["categories"][c]
        keep = scored & ~np.isnan(Y[:, j])
        y, p = Y[keep, j], P[keep, j]
        if not len(y):
            continue
        op = operating(y, p, entry.get("block"), entry.get("review"), confidence)
        ops[c] = op
        curves[c] = tradeoff_curve(y, p, entry.get("block"))
        lo, hi = op["block_precision_ci"]
        rows.append([c, fmt(entry.get("block"), 4), f"{op['blocked']:,}",
                     f"{fmt(op['block_precision'])} [{fmt(lo)}, {fmt(hi)}]" if op["blocked"] else "–",
                     pct(op["block_recall"]), fmt(entry.get("review"), 4), pct(op["review_share"]),
                     fmt(op["review_precision"]), pct(op["block_or_review_recall"])])
        measured = []
        for a in entry.get("alternatives") or []:
            m = operating(y, p, a.get("block"), a.get("review"), confidence)
            measured.append({**a, "measured": m})
        alt_json[c] = measured
        alts[c] = [[f"{a['block_precision_target']:g}", fmt(a.get("block"), 4), f"{a['review_recall_target']:g}",
                    fmt(a.get("review"), 4), fmt(a["measured"]["block_precision"]), pct(a["measured"]["block_recall"]),
                    pct(a["measured"]["review_share"]), fmt(a["measured"]["review_precision"]),
                    pct(a["measured"]["block_or_review_recall"])] for a in measured]
    figure = policy_figure(cats, curves, ops, alt_json) if curves else None
    return {"rows": rows, "alternatives": alts, "operating": ops, "figure": figure,
            "json": {"version": policy.get("version"), "operating": ops, "alternatives": alt_json,
                     "languages": policy.get("languages")}}
