"""Selection during training: the early-stopping set and the figures it is judged by."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.data import LabelledSet


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
