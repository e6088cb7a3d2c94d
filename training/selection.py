"""Selection during training: the early-stopping set and the figures it is judged by."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eval.metrics import roc_auc
from moderation.datasets import LabelledSet


def holdout_split(data: LabelledSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, early-stopping) holding out `fraction` of each dataset, stratified by label pattern."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(data), dtype=bool)
    pattern = [f"{s}|{','.join('n' if np.isnan(v) else str(int(v)) for v in row)}"
               for s, row in zip(data.sources, data.labels)]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(pattern):
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        idx = np.array(idx)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        held[idx[:k]] = True
    return ~held, held


def average_precisions(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str]) -> dict[str, float]:
    """Average precision per category over known labels (NaN when a category lacks positives or negatives)."""
    from sklearn.metrics import average_precision_score
    out = {}
    for j, c in enumerate(categories):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        out[c] = float(average_precision_score(y, probs[known, j])) if 0 < y.sum() < len(y) else float("nan")
    return out


def macro_aucs(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str],
               sources: Sequence[str]) -> dict[str, float]:
    """Per category, the ROC-AUC of each dataset (source) that labels it with both classes, averaged over datasets.

    Every dataset counts the same whatever its size, so a category is judged by how it holds up on each
    platform rather than on the largest one: the selection signal that predicts behaviour on a new platform
    best among those available without its data. NaN for a category no dataset labels with both classes.
    """
    src = np.asarray(sources)
    out = {}
    for j, c in enumerate(categories):
        per = []
        for name in np.unique(src):
            rows = (src == name) & ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
            auc = roc_auc(labels[rows, j], probs[rows, j])
            if not np.isnan(auc):
                per.append(auc)
        out[c] = float(np.mean(per)) if per else float("nan")
    return out


STOP_METRICS: tuple[str, ...] = ("mean_ap", "macro_auc")


def stop_score(metric: str, probs: np.ndarray, labels: np.ndarray, categories: Sequence[str],
               sources: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(score, per-category figures) of the early-stopping set: mean AP over categories ("mean_ap", pooled
    over datasets) or the mean over categories of `macro_aucs` ("macro_auc"). Raises ValueError for another name.
    """
    if metric == "mean_ap":
        per = average_precisions(probs, labels, categories)
    elif metric == "macro_auc":
        per = macro_aucs(probs, labels, categories, sources)
    else:
        raise ValueError(f"unknown stop metric {metric!r}; known: {', '.join(STOP_METRICS)}")
    return float(np.nanmean(list(per.values()))), per
