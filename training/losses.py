"""What a training step optimises: the masked multi-label loss, class and dataset weights, modality dropout,
and the learning-rate schedule. Shared by the frozen-head loop (training.frozen) and fine-tuning (training.finetune).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over the KNOWN labels only (NaN = unknown: zero loss, zero gradient).

    logits, labels: (B, C); pos_weight: (C,); weights: (B,) per-row or (B, C) per-cell loss weights. Returns the
    weighted mean over known cells (0 with a live graph when none is known).
    """
    known = ~torch.isnan(labels)
    # NaN targets would poison the loss even when multiplied by 0, so they are replaced before the BCE.
    target = torch.where(known, labels, torch.zeros((), dtype=labels.dtype))
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none",
                                                          pos_weight=pos_weight)
    w = known.to(logits.dtype)
    if weights is not None:
        weights = weights.to(logits.dtype)
        w = w * (weights.unsqueeze(1) if weights.dim() == 1 else weights)
    loss = torch.where(known, loss, torch.zeros((), dtype=loss.dtype))
    return (loss * w).sum() / w.sum().clamp_min(1e-12)


def pos_weights(labels: np.ndarray, mode: str = "balanced", max_weight: float = 20.0) -> np.ndarray:
    """Per-category pos_weight: negatives / positives among known labels (1.0 when a class is missing)."""
    labels = np.asarray(labels, dtype=np.float64)
    out = np.ones(labels.shape[1], dtype=np.float32)
    if mode in ("none", "per_dataset"):  # per_dataset balances with per-cell weights instead (loss_weights)
        return out
    for j in range(labels.shape[1]):
        col = labels[:, j][~np.isnan(labels[:, j])]
        pos, neg = float((col == 1).sum()), float((col == 0).sum())
        if pos > 0 and neg > 0:
            out[j] = min(max_weight, neg / pos)
    return out


def modality_dropout(present: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide one modality of each multi-modality row with probability p (which one: uniform). Never hides all.

    present: (B, M) bool. Returns a new mask; rows with a single present modality are unchanged.
    """
    if p <= 0 or present.shape[1] < 2:
        return present
    out = present.clone()
    multi = present.sum(1) >= 2
    drop = (torch.rand(present.shape[0], generator=generator) < p) & multi
    for i in drop.nonzero(as_tuple=True)[0].tolist():
        cols = present[i].nonzero(as_tuple=True)[0]
        pick = cols[int(torch.randint(len(cols), (1,), generator=generator))]
        out[i, pick] = False
    return out


def dataset_balanced_weights(labels: np.ndarray, sources: Sequence[str]) -> np.ndarray:
    """(N, C) loss weights under which, within each dataset and category, positives and negatives weigh the same.

    A dataset keeps its total weight (its number of known labels), but its base rate no longer pays: with
    several datasets whose positive rates differ (9% of Gab posts are hate, 42% of HatEval tweets), a model
    would otherwise learn which platform a post comes from as evidence of harm, which does not transfer to a
    new platform. Unknown cells get weight 0; a dataset with one class only for a category keeps weight 1.
    """
    labels = np.asarray(labels, dtype=np.float64)
    src = np.asarray(sources)
    out = np.zeros(labels.shape, dtype=np.float32)
    for name in np.unique(src):
        rows = src == name
        for j in range(labels.shape[1]):
            known = rows & ~np.isnan(labels[:, j])
            pos = known & (labels[:, j] == 1)
            neg = known & (labels[:, j] == 0)
            if not pos.any() or not neg.any():
                out[known, j] = 1.0
                continue
            out[pos, j] = 0.5 * known.sum() / pos.sum()
            out[neg, j] = 0.5 * known.sum() / neg.sum()
    return out


def row_weights(sources: Sequence[str], dataset_weights: dict[str, float]) -> np.ndarray:
    """(N,) loss weight of each row by its dataset name (1.0 for a dataset not named)."""
    return np.array([float(dataset_weights.get(s, 1.0)) for s in sources], dtype=np.float32)


def loss_weights(labels: np.ndarray, sources: Sequence[str], class_weight: str,
                 dataset_weights: dict[str, float]) -> np.ndarray:
    """Loss weights of the training rows: (N,) dataset weights, or (N, C) when class_weight is "per_dataset"."""
    rows = row_weights(sources, dataset_weights)
    if class_weight == "per_dataset":
        return rows[:, None] * dataset_balanced_weights(labels, sources)
    return rows


def lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over `warmup` of the steps, then cosine decay to 0."""
    warm = max(1, int(total_steps * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f
