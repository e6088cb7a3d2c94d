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

from moderation.policy import BLOCK_RULES, EACH_DATASET_MIN_FLAGGED, CategoryPolicy, LanguageRule, Policy, policy_version

from eval.metrics import clopper_pearson_lower, to_jsonable
from eval.thresholds import select_threshold, threshold_candidates

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


def dataset_block_floor(y: np.ndarray, p: np.ndarray, sources: np.ndarray, target: float,
                        min_positives: int = 20, min_flagged: int = EACH_DATASET_MIN_FLAGGED) -> dict[str, Any]:
    """The lowest block threshold at which every dataset (with >= min_positives positives) keeps its own precision
    >= target at every cut from the top down to it, counting only cuts that flag >= min_flagged of its posts.

    Returns {"floor": float (-inf when no dataset constrains), "binding": dataset or None, "per_dataset": {...}}.
    A dataset whose top `min_flagged` posts already miss the target sets the floor above its highest score.
    """
    floor, binding, per = -np.inf, None, {}
    for d in sorted(set(sources.tolist())):
        rows = sources == d
        yd, pd = y[rows], p[rows]
        if yd.sum() < min_positives:
            continue
        c = threshold_candidates(yd, pd)
        bad = np.nonzero((c["flagged"] >= min_flagged) & (c["precision"] < target))[0]
        if not len(bad):
            per[d] = None
            continue
        first = int(bad[0])  # the highest cut that misses the target: the floor sits just above it
        f = float(c["threshold"][first - 1]) if first > 0 else float(np.nextafter(pd.max(), np.inf))
        per[d] = f
        if f > floor:
            floor, binding = f, d
    return {"floor": floor, "binding": binding, "per_dataset": per}


def _block_each_dataset(y: np.ndarray, p: np.ndarray, sources: np.ndarray, target: float, confidence: float,
                        min_positives: int) -> dict[str, Any]:
    """select_threshold's pooled rule, raised to dataset_block_floor where a dataset would miss the target."""
    blk = select_threshold(y, p, target, confidence, min_positives)
    if blk["threshold"] is None:
        return blk
    fl = dataset_block_floor(y, p, sources, target, min_positives)
    out = {**blk, "rule": "each_dataset", "dataset_floors": fl["per_dataset"]}
    if fl["floor"] <= blk["threshold"]:
        return out
    t = fl["floor"]
    flagged = p >= t
    n_pos = int(y.sum())
    tp = int(y[flagged].sum())
    if not flagged.any():
        return {**out, "threshold": None, "status": "unreachable_each_dataset",
                "reason": f"{fl['binding']} misses block precision {target:g} even at its top "
                          f"{EACH_DATASET_MIN_FLAGGED} posts: this category flags nothing automatically"}
    return {**out, "threshold": float(t), "binding_dataset": fl["binding"],
            "precision": tp / int(flagged.sum()), "precision_lower_bound": float(clopper_pearson_lower(tp, int(flagged.sum()), confidence)),
            "recall": tp / n_pos if n_pos else 0.0, "tp": tp, "fp": int(flagged.sum()) - tp,
            "flag_rate": float(flagged.mean())}


def fit_policy(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str], *,
               block_precision: float = DEFAULT_BLOCK_PRECISION, review: ReviewTarget = ReviewTarget(*DEFAULT_REVIEW),
               confidence: float = 0.95, languages: LanguageRule | None = None,
               min_positives: int = 20, alternatives: bool = True, block_rule: str = "pooled",
               sources: Sequence[str] | None = None) -> Policy:
    """A policy fitted on calibrated probabilities and labels (N, C; NaN = unknown) of a calibration split.

    block_rule: "pooled" or "each_dataset" (BLOCK_RULES; the latter needs `sources`, the dataset of each row).
    Raises ValueError for targets outside (0, 1), an unknown rule or mismatched shapes.
    """
    if block_rule not in BLOCK_RULES:
        raise ValueError(f"block_rule must be one of {BLOCK_RULES}, got {block_rule!r}")
    if block_rule == "each_dataset" and (sources is None or len(sources) != len(probs)):
        raise ValueError("block_rule 'each_dataset' needs the dataset of every row (sources)")
    src = np.asarray(sources if sources is not None else [""] * len(probs), dtype=object)
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
        blk = (_block_each_dataset(y, p, src[rows], block_precision, confidence, min_positives)
               if block_rule == "each_dataset" else select_threshold(y, p, block_precision, confidence, min_positives))
        rev = select_review(y, p, blk["threshold"], review, confidence)
        meta: dict[str, Any] = {"block_fit": {k: v for k, v in blk.items() if k != "threshold"},
                                "review_fit": {k: v for k, v in rev.items() if k != "review"}}
        if alternatives:
            meta["alternatives"] = policy_alternatives(y, p, confidence, min_positives)
        cats[cat] = CategoryPolicy(block=blk["threshold"], review=rev["review"], meta=to_jsonable(meta))
    rule = languages or LanguageRule()
    meta = {"fitted": {"block_precision": block_precision, "block_rule": block_rule, "confidence": confidence,
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
