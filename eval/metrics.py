"""Evaluation metrics per category and per modality slice, with bootstrap confidence intervals.

Everything is computed on calibrated probabilities (what the scorer returns) against 0/1 labels; a NaN
label means "unknown for this category" and that cell is left out of that category's metrics (never
counted as a negative). A row whose probabilities are NaN (a post that could not be scored) is left out
of every metric and counted in `n_unscored`.

Ranking metrics come from scikit-learn (`roc_auc_score`, `average_precision_score`, `precision_recall_curve`,
`roc_curve`, `brier_score_loss`, `log_loss`, `f1_score`); only what scikit-learn lacks is written here:
expected calibration error and the Clopper-Pearson bound on precision.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Iterator

import numpy as np

RECALL_LEVELS: tuple[float, ...] = (0.80, 0.90, 0.95)
PRECISION_LEVELS: tuple[float, ...] = (0.90, 0.95)
FPR_LEVEL = 0.01
ECE_BINS = 15
SLICE_ORDER: tuple[str, ...] = ("text", "image", "image+text")
#: Headline figures that get bootstrap confidence intervals.
HEADLINE: tuple[str, ...] = ("roc_auc", "average_precision", "recall_at_fpr_1pct", "precision", "recall", "f1", "macro_f1")


# --- confidence bounds --------------------------------------------------------------------------------

def clopper_pearson_lower(k: Any, n: Any, confidence: float = 0.95) -> np.ndarray | float:
    """One-sided lower confidence bound on a binomial proportion (k successes out of n), exact (Clopper-Pearson).

    With probability >= `confidence` the true proportion is at least this value. 0 when k == 0; NaN when n == 0.
    Works element-wise on arrays.
    """
    from scipy.special import betaincinv

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("need 0 <= k <= n")
    with np.errstate(invalid="ignore", divide="ignore"):
        # The alpha quantile of Beta(k, n - k + 1) (the inverse regularised incomplete beta function).
        lower = betaincinv(np.maximum(k_arr, 1e-300), n_arr - k_arr + 1.0, 1.0 - confidence)
    lower = np.where(k_arr == 0, 0.0, lower)
    lower = np.where(n_arr == 0, np.nan, lower)
    return float(lower) if lower.ndim == 0 else lower


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval (Clopper-Pearson) for k successes out of n; (nan, nan) when n == 0."""
    from scipy.special import betaincinv

    if n == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return (lo, hi)


# --- single-category metrics --------------------------------------------------------------------------

def reliability_bins(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Equal-width probability bins: count, mean predicted probability and observed positive rate per bin."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        freq = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_predicted": conf, "fraction_positive": freq}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width bins of (bin share) * |observed positive rate - mean predicted probability|."""
    if len(y) == 0:
        return math.nan
    b = reliability_bins(y, p, n_bins)
    used = b["count"] > 0
    gaps = np.abs(b["fraction_positive"][used] - b["mean_predicted"][used])
    return float(np.sum(b["count"][used] / len(y) * gaps))


def precision_at_recall(y: np.ndarray, p: np.ndarray, recall_level: float) -> float:
    """Best precision over thresholds whose recall is >= `recall_level` (OpenAI guardrails benchmark style)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    ok = recall >= recall_level
    return float(precision[ok].max()) if ok.any() else math.nan


def recall_at_precision(y: np.ndarray, p: np.ndarray, precision_level: float) -> float:
    """Best recall over thresholds whose precision is >= `precision_level` (0 when no threshold reaches it)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    ok = precision >= precision_level
    return float(recall[ok].max()) if ok.any() else 0.0


def recall_at_fpr(y: np.ndarray, p: np.ndarray, fpr_level: float = FPR_LEVEL) -> float:
    """Best true-positive rate over thresholds whose false-positive rate is <= `fpr_level`."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    ok = fpr <= fpr_level
    return float(tpr[ok].max()) if ok.any() else 0.0


def at_threshold(y: np.ndarray, p: np.ndarray, threshold: float | None, confidence: float = 0.95) -> dict[str, Any]:
    """Confusion counts and rates when flagging p >= threshold. None: nothing is flagged (target unreachable).

    precision is None when nothing is flagged; its exact interval and one-sided lower bound come with it.
    macro_f1 is the mean of the F1 of the positive and of the negative class (as TweetEval reports it).
    """
    from sklearn.metrics import f1_score

    y = np.asarray(y).astype(bool)
    flagged = np.zeros(len(y), dtype=bool) if threshold is None else (np.asarray(p) >= threshold)
    tp = int(np.sum(flagged & y))
    fp = int(np.sum(flagged & ~y))
    fn = int(np.sum(~flagged & y))
    tn = int(np.sum(~flagged & ~y))
    n_flag = tp + fp
    out: dict[str, Any] = {
        "threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "flag_rate": n_flag / len(y) if len(y) else math.nan,
        "precision": tp / n_flag if n_flag else None,
        "precision_lower_bound": clopper_pearson_lower(tp, n_flag, confidence) if n_flag else None,
        "precision_interval": list(clopper_pearson_interval(tp, n_flag, confidence)) if n_flag else None,
        "recall": tp / (tp + fn) if (tp + fn) else math.nan,
        "false_positive_rate": fp / (fp + tn) if (fp + tn) else math.nan,
    }
    if len(y):
        out["f1"] = float(f1_score(y, flagged, zero_division=0.0))
        out["macro_f1"] = float(f1_score(y, flagged, average="macro", labels=[False, True], zero_division=0.0))
    else:
        out["f1"] = out["macro_f1"] = math.nan
    return out


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of `scores` for labels `y` in {0, 1}; rows with a NaN label or score are left out, and the result
    is NaN when what is left does not hold both classes (the ranking is undefined then, never 0.5)."""
    from sklearn.metrics import roc_auc_score  # deferred: scikit-learn's metrics are slow to import

    y = np.asarray(y, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(y) & ~np.isnan(scores)
    y, scores = y[keep], scores[keep]
    if not 0 < y.sum() < len(y):
        return math.nan
    return float(roc_auc_score(y, scores))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float | None, confidence: float = 0.95) -> dict[str, Any]:
    """All metrics of one category on one slice: y in {0, 1}, p calibrated probabilities, no NaN."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": int(len(y)), "n_positive": n_pos, "n_negative": int(len(y) - n_pos),
                           "prevalence": n_pos / len(y) if len(y) else math.nan}
    both = 0 < n_pos < len(y)
    if both:
        out["roc_auc"] = roc_auc(y, p)
        out["average_precision"] = float(average_precision_score(y, p))
        out["precision_at_recall"] = {f"{r:.2f}": precision_at_recall(y, p, r) for r in RECALL_LEVELS}
        out["recall_at_precision"] = {f"{q:.2f}": recall_at_precision(y, p, q) for q in PRECISION_LEVELS}
        out["recall_at_fpr_1pct"] = recall_at_fpr(y, p, FPR_LEVEL)
    else:
        out["note"] = "only one class is labelled in this slice: ranking metrics are undefined"
        out["roc_auc"] = out["average_precision"] = out["recall_at_fpr_1pct"] = math.nan
        out["precision_at_recall"] = {f"{r:.2f}": math.nan for r in RECALL_LEVELS}
        out["recall_at_precision"] = {f"{q:.2f}": math.nan for q in PRECISION_LEVELS}
    if len(y):
        out["ece"] = expected_calibration_error(y, p)
        out["brier"] = float(brier_score_loss(y, p, pos_label=1)) if both else float(np.mean((p - y) ** 2))
        out["log_loss"] = float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    else:
        out["ece"] = out["brier"] = out["log_loss"] = math.nan
    out["operating"] = at_threshold(y, p, threshold, confidence)
    out["at_0.5"] = at_threshold(y, p, 0.5, confidence)
    return out


def _headline(y: np.ndarray, p: np.ndarray, threshold: float | None) -> dict[str, float]:
    # Inside the bootstrap loop: ranking metrics from scikit-learn, the threshold ones from confusion counts
    # (the same F1 formulas as sklearn.metrics.f1_score, without its per-call validation; checked in the tests).
    from sklearn.metrics import average_precision_score, roc_auc_score

    flagged = np.zeros(len(y), dtype=bool) if threshold is None else p >= threshold
    yb = y.astype(bool)
    tp = float(np.sum(flagged & yb))
    fp = float(np.sum(flagged & ~yb))
    fn = float(np.sum(~flagged & yb))
    tn = float(len(y) - tp - fp - fn)
    f1_pos = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    f1_neg = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "recall_at_fpr_1pct": recall_at_fpr(y, p, FPR_LEVEL),
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn),
        "f1": f1_pos,
        "macro_f1": (f1_pos + f1_neg) / 2,
    }


def two_class_resamples(y: np.ndarray, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row indices of `n_boot` bootstrap resamples of y (with replacement), skipping those holding a single
    class (ranking metrics are undefined on them): yields at most n_boot index arrays."""
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(y)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        s = y[idx].sum()
        if 0 < s < n:
            yield idx


def bootstrap_intervals(y: np.ndarray, p: np.ndarray, threshold: float | None, *, n_boot: int = 1000,
                        seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap intervals (rows resampled with replacement) of the HEADLINE figures.

    Resamples holding a single class are skipped (their ranking metrics are undefined); `n_valid` says how
    many counted. Returns {metric: [low, high]} plus n_boot and n_valid; empty when n_boot == 0.
    """
    if n_boot <= 0:
        return {}
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    draws: dict[str, list[float]] = {k: [] for k in HEADLINE}
    for idx in two_class_resamples(y, n_boot, seed):
        for k, v in _headline(y[idx], p[idx], threshold).items():
            draws[k].append(v)
    alpha = (1.0 - confidence) / 2
    out: dict[str, Any] = {"n_boot": n_boot, "n_valid": len(draws["roc_auc"])}
    for k, values in draws.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[k] = [float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))] if arr.size else None
    return out


# --- the full evaluation ------------------------------------------------------------------------------

def _slice_names(slices: np.ndarray | None) -> list[str]:
    if slices is None:
        return []
    present = set(np.asarray(slices).tolist())
    return [s for s in SLICE_ORDER if s in present] + sorted(s for s in present if s not in SLICE_ORDER)


def evaluate(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str],
             thresholds: dict[str, float | None], slices: Sequence[str] | np.ndarray | None = None,
             bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95, *,
             progress: bool = False) -> dict[str, Any]:
    """Evaluate calibrated probabilities against partial labels, per category and per modality slice.

    probs, labels: (N, C) in the order of `categories`; NaN label = unknown (cell skipped), NaN prob row =
    unscored post (row skipped, counted). thresholds: the operating threshold per category (None: the
    category flags nothing). slices: per row "text" / "image" / "image+text" (metrics also per slice).
    bootstrap: resamples for the confidence intervals of the headline figures (0: none).

    Returns a JSON-ready dict:
      {"categories", "n_rows", "n_unscored", "confidence", "bootstrap", "thresholds",
       "metrics": {category: {slice ("all", "text", ...): {metric: value, "operating": {...}, "ci": {...}}}},
       "summary": {slice: {"macro_f1", "mean_f1", "mean_roc_auc", "mean_average_precision"}}}
    Raises ValueError for mismatched shapes or labels other than 0, 1, NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    categories = list(categories)
    if probs.ndim != 2 or probs.shape != labels.shape or probs.shape[1] != len(categories):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(categories)}) "
                         f"for categories {categories}")
    known = ~np.isnan(labels)
    if np.any((labels[known] != 0) & (labels[known] != 1)):
        raise ValueError("labels must be 0, 1 or NaN (unknown)")
    if slices is not None:
        slices = np.asarray(slices, dtype=object)
        if slices.shape != (len(probs),):
            raise ValueError(f"slices has shape {slices.shape}, expected ({len(probs)},)")
    scored = ~np.isnan(probs).any(axis=1)
    finite = probs[scored]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("probs must be probabilities in [0, 1]; pass calibrated probabilities, not logits")
    missing = [c for c in categories if c not in thresholds]
    if missing:
        raise ValueError(f"no threshold entry for {missing}; use None for a category that flags nothing")

    groups = ["all"] + _slice_names(slices)
    tasks = [(j, c, g) for j, c in enumerate(categories) for g in groups]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(tasks), desc="metrics", unit="slice")
    metrics: dict[str, dict[str, Any]] = {c: {} for c in categories}
    for j, c, g in tasks:
        rows = scored & known[:, j]
        if g != "all":
            rows &= slices == g
        y, p = labels[rows, j], probs[rows, j]
        t = thresholds[c]
        if not len(y):
            metrics[c][g] = {"n": 0, "n_positive": 0, "n_negative": 0, "note": "no labelled rows"}
        else:
            m = binary_metrics(y, p, t, confidence)
            if 0 < y.sum() < len(y):
                m["ci"] = bootstrap_intervals(y, p, t, n_boot=bootstrap, seed=seed, confidence=confidence)
            metrics[c][g] = m
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    summary: dict[str, dict[str, Any]] = {}
    for g in groups:
        cells = [metrics[c][g] for c in categories if metrics[c][g].get("n", 0) > 0]
        summary[g] = {
            "categories_evaluated": len(cells),
            "mean_roc_auc": _nanmean([m.get("roc_auc") for m in cells]),
            "mean_average_precision": _nanmean([m.get("average_precision") for m in cells]),
            "mean_f1": _nanmean([m["operating"]["f1"] for m in cells]),
            "macro_f1": _nanmean([m["operating"]["macro_f1"] for m in cells]),
        }
    out = {
        "categories": categories,
        "n_rows": int(len(probs)),
        "n_unscored": int((~scored).sum()),
        "confidence": confidence,
        "bootstrap": bootstrap,
        "seed": seed,
        "thresholds": {c: (None if thresholds[c] is None else float(thresholds[c])) for c in categories},
        "slices": groups,
        "metrics": metrics,
        "summary": summary,
    }
    return to_jsonable(out)


def _nanmean(values: list[Any]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN and inf -> None, so the result is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else v
    return obj
