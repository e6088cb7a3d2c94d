"""The calibration report's figures: per category a 2x2 of PR curve, ROC curve, reliability and score histograms.

Drawn on matplotlib's Agg canvas directly (no pyplot state) and returned as base64 PNG (eval.formatting.png).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eval.formatting import png
from eval.metrics import ECE_BINS, FPR_LEVEL, expected_calibration_error, reliability_bins
from eval.thresholds import threshold_candidates

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def valid_pairs(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows where both the label and the score are known."""
    keep = ~np.isnan(y) & ~np.isnan(p)
    return y[keep], p[keep]


def category_figure(category: str, y: np.ndarray, p_cal: np.ndarray, p_raw: np.ndarray | None,
                    threshold: float | None, target: float | None, confidence: float,
                    others: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]] = (), name: str = "model") -> str:
    """2x2 figure for one category as a base64 PNG: PR, ROC, reliability (before/after), histograms per class.

    y, p_cal, p_raw: labelled rows only (0/1, calibrated and raw probabilities). others: (name, y, p_cal,
    threshold) of models to overlay on the PR and ROC curves.
    """
    # deferred: matplotlib is the optional eval extra; it and scikit-learn's curves load only when a report draws plots
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

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
    return png(fig)
