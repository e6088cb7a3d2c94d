"""Fitting a moderation policy (moderation.policy) on a calibration split: block and review thresholds per category.

block   the highest-recall threshold whose one-sided Clopper-Pearson lower bound on precision reaches the
        block target (eval.thresholds.select_threshold, as thresholds.json has always been fitted); unreachable:
        null, the category never blocks automatically.
review  below block, from one of three targets (`ReviewTarget`):
        recall      the highest threshold at which block + review catches at least that share of the harmful
                    posts, judged by the one-sided lower confidence bound of recall (so a small split does not
                    promise more than it showed);
        budget      the lowest threshold at which at most that share of the posts lands in review (of the
                    calibration split: its share of harmful posts is not your traffic's, see docs/evaluation.md);
        precision   the lowest threshold at which the review band's own precision is at least that (reviewers'
                    time spent on harmful posts).
Every category's entry records what its thresholds gave on the calibration split, and `alternatives` tabulates
other targets, so that a trust-and-safety lead can pick the trade-off (docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moderation.policy import CategoryPolicy, LanguageRule, Policy, policy_version

from eval.metrics import clopper_pearson_lower, to_jsonable
from eval.thresholds import select_threshold

REVIEW_KINDS: tuple[str, ...] = ("recall", "budget", "precision")
#: Defaults for a platform: automatic removal at >= 90% precision (95% lower bound), human review sized so
#: that block + review catches >= 90% of harmful posts (95% lower bound on the calibration split).
DEFAULT_BLOCK_PRECISION = 0.90
DEFAULT_REVIEW = ("recall", 0.90)
RECALL_GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
BLOCK_GRID: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class ReviewTarget:
    """How the review band is sized: kind "recall" | "budget" | "precision" and its value in (0, 1)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in REVIEW_KINDS:
            raise ValueError(f"review target kind must be one of {REVIEW_KINDS}, got {self.kind!r}")
        if not 0.0 < float(self.value) < 1.0:
            raise ValueError(f"review target {self.kind} must be in (0, 1), got {self.value}")


def _band(y: np.ndarray, p: np.ndarray, lo: float, hi: float | None) -> dict[str, Any]:
    """Figures of the review band lo <= p < hi (hi None: no block threshold) and of block + review (p >= lo)."""
    in_band = (p >= lo) & (p < hi) if hi is not None else p >= lo
    caught = p >= lo
    n_pos = float(y.sum())
    tp_band = float(y[in_band].sum())
    return {"review_share": float(in_band.mean()), "review_precision": tp_band / in_band.sum() if in_band.any() else float("nan"),
            "block_or_review_recall": float(y[caught].sum() / n_pos) if n_pos else float("nan"),
            "block_or_review_share": float(caught.mean())}


def select_review(y: np.ndarray, p: np.ndarray, block: float | None, target: ReviewTarget,
                  confidence: float = 0.95) -> dict[str, Any]:
    """The review threshold for one category (see the module docstring); None when no threshold below the block
    threshold meets the target (status "unreachable"), with what the lowest one gives."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    cand = np.unique(p)[::-1]  # from the highest score down: each step admits more posts
    if block is not None:
        cand = cand[cand < block]
    if not len(cand) or not y.sum():
        return {"review": None, "status": "unreachable", "reason": "no scores below the block threshold" if len(cand)
                else "no labelled harmful posts"}
    n_pos = y.sum()
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # For each candidate t: caught = #(p >= t), tp = #(harmful and p >= t); band = caught minus the blocked ones.
    caught = np.searchsorted(-ps, -cand, side="right")
    tp = np.concatenate([[0.0], np.cumsum(ys)])[caught]
    blocked = int((p >= block).sum()) if block is not None else 0
    tp_blocked = float(y[p >= block].sum()) if block is not None else 0.0
    band_n = caught - blocked
    band_tp = tp - tp_blocked
    if target.kind == "recall":
        ok = np.asarray(clopper_pearson_lower(tp, np.full_like(tp, n_pos), confidence)) >= target.value
        pick = int(np.argmax(ok)) if ok.any() else None  # the first (highest) threshold that reaches the recall
    elif target.kind == "budget":
        ok = band_n / len(p) <= target.value
        pick = int(np.nonzero(ok)[0][-1]) if ok.any() else None  # the lowest threshold within budget
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(band_n > 0, band_tp / np.maximum(band_n, 1), np.nan)
        ok = prec >= target.value
        pick = int(np.nonzero(ok)[0][-1]) if ok.any() else None
    if pick is None:
        low = float(cand[-1])
        return {"review": None, "status": "unreachable",
                "reason": f"no review threshold meets {target.kind} {target.value:g}; the lowest possible gives "
                          f"{_band(y, p, low, block)}", "target": {"kind": target.kind, "value": target.value}}
    t = float(cand[pick])
    return {"review": t, "status": "ok", "target": {"kind": target.kind, "value": target.value},
            **_band(y, p, t, block)}


def fit_policy(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str], *,
               block_precision: float = DEFAULT_BLOCK_PRECISION, review: ReviewTarget = ReviewTarget(*DEFAULT_REVIEW),
               confidence: float = 0.95, languages: LanguageRule | None = None,
               min_positives: int = 20, alternatives: bool = True) -> Policy:
    """A policy fitted on calibrated probabilities and labels (N, C; NaN = unknown) of a calibration split.

    Raises ValueError for targets outside (0, 1) or mismatched shapes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if probs.shape != labels.shape or probs.shape[1] != len(categories):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(categories)})")
    if not 0.0 < block_precision < 1.0:
        raise ValueError(f"block precision must be in (0, 1), got {block_precision}")
    cats: dict[str, CategoryPolicy] = {}
    for j, cat in enumerate(categories):
        rows = ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        y, p = labels[rows, j], probs[rows, j]
        blk = select_threshold(y, p, block_precision, confidence, min_positives)
        rev = select_review(y, p, blk["threshold"], review, confidence)
        meta: dict[str, Any] = {"block_fit": {k: v for k, v in blk.items() if k != "threshold"},
                                "review_fit": {k: v for k, v in rev.items() if k != "review"}}
        if alternatives:
            meta["alternatives"] = policy_alternatives(y, p, confidence, min_positives)
        cats[cat] = CategoryPolicy(block=blk["threshold"], review=rev["review"], meta=to_jsonable(meta))
    rule = languages or LanguageRule()
    meta = {"fitted": {"block_precision": block_precision, "confidence": confidence,
                       "review_target": {"kind": review.kind, "value": review.value}, "n_rows": int(len(probs))}}
    return Policy(version=policy_version(cats, rule), categories=cats, languages=rule, meta=meta)


def policy_alternatives(y: np.ndarray, p: np.ndarray, confidence: float = 0.95,
                        min_positives: int = 20) -> list[dict[str, Any]]:
    """The trade-off table of one category: for each block precision target and review recall target, the
    thresholds and what they give on this split (block precision/recall, review share and precision)."""
    out = []
    for bp in BLOCK_GRID:
        blk = select_threshold(y, p, bp, confidence, min_positives)
        b = blk["threshold"]
        for r in RECALL_GRID:
            rev = select_review(y, p, b, ReviewTarget("recall", r), confidence)
            out.append({"block_precision_target": bp, "block": b, "block_precision": blk.get("precision"),
                        "block_recall": blk.get("recall", 0.0), "review_recall_target": r, "review": rev["review"],
                        "review_share": rev.get("review_share"), "review_precision": rev.get("review_precision"),
                        "block_or_review_recall": rev.get("block_or_review_recall")})
    return out


def policy_actions(policy: Policy, probs: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """(N, C) array of "allow" / "review" / "block" from calibrated probabilities (vectorised Policy.decide
    without the language and hash rules: what the scores alone decide)."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.full(probs.shape, "allow", dtype=object)
    for j, cat in enumerate(categories):
        entry = policy.categories.get(cat)
        if entry is None:
            continue
        if entry.review is not None:
            out[probs[:, j] >= entry.review, j] = "review"
        if entry.block is not None:
            out[probs[:, j] >= entry.block, j] = "block"
    return out
