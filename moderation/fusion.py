"""Fusion modules: modality embeddings plus a presence mask in, one vector out.

One contract for all (after torchmultimodal's fusion modules):
    forward(embeddings: dict[modality, (B, D_m) tensor], present: (B, M) bool tensor) -> (B, out_dim)
with modalities in sorted order (`MODALITIES`) and `present[:, i]` saying whether modality i is real for
each row. A missing modality is a normal case: its row in `embeddings` is ignored (it may hold anything)
and replaced by a learned placeholder (concat) or masked out of the gate (gated). Zeros are never fed
as if they were real features.
"""

from __future__ import annotations

import torch
from torch import nn

from moderation.schema import MODALITIES


class _Projection(nn.Module):
    """LayerNorm + Linear + GELU + Dropout: brings one modality to the fusion width."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check(embeddings: dict[str, torch.Tensor], present: torch.Tensor, modalities: tuple[str, ...]) -> None:
    if present.dim() != 2 or present.shape[1] != len(modalities):
        raise ValueError(f"present must be (batch, {len(modalities)}) for modalities {modalities}, got {tuple(present.shape)}")
    missing = [m for m in modalities if m not in embeddings]
    if missing:
        raise ValueError(f"embeddings lack modalities {missing}; give a tensor for each (rows of absent posts are ignored)")


class ConcatFusion(nn.Module):
    """Project each modality, substitute a learned placeholder where absent, concatenate with the mask, MLP."""

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities = tuple(sorted(input_dims))
        self.proj = nn.ModuleDict({m: _Projection(input_dims[m], dim, dropout) for m in self.modalities})
        self.placeholder = nn.ParameterDict({m: nn.Parameter(torch.zeros(dim)) for m in self.modalities})
        n = len(self.modalities)
        self.mlp = nn.Sequential(nn.Linear(n * dim + n, dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = dim

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        _check(embeddings, present, self.modalities)
        parts = []
        for i, m in enumerate(self.modalities):
            projected = self.proj[m](embeddings[m])
            parts.append(torch.where(present[:, i : i + 1], projected, self.placeholder[m].to(projected.dtype)))
        parts.append(present.to(parts[0].dtype))
        return self.mlp(torch.cat(parts, dim=-1))


class GatedFusion(nn.Module):
    """Project each modality, weight them by a learned gate softmaxed over the present ones, then an MLP.

    The gate lets the model lean on text for one post and on the image for another; an absent modality
    gets gate weight exactly 0. A (B, M) presence embedding is added so the MLP knows which were present.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities = tuple(sorted(input_dims))
        self.proj = nn.ModuleDict({m: _Projection(input_dims[m], dim, dropout) for m in self.modalities})
        self.gate = nn.Linear(dim, 1)
        self.presence = nn.Linear(len(self.modalities), dim, bias=False)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = dim

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        _check(embeddings, present, self.modalities)
        if not bool(present.any(dim=1).all()):
            raise ValueError("every row needs at least one present modality")
        projected = torch.stack([self.proj[m](embeddings[m]) for m in self.modalities], dim=1)  # (B, M, D)
        logits = self.gate(projected).squeeze(-1).masked_fill(~present, float("-inf"))
        weights = torch.softmax(logits, dim=1).unsqueeze(-1)
        # where(): an absent row may hold NaN/inf; 0 * inf would poison the sum, so drop it outright.
        projected = torch.where(present.unsqueeze(-1), projected, torch.zeros((), dtype=projected.dtype))
        fused = (weights * projected).sum(dim=1) + self.presence(present.to(projected.dtype))
        return self.mlp(fused)


FUSIONS: dict[str, type[nn.Module]] = {"concat": ConcatFusion, "gated": GatedFusion}


def create_fusion(name: str, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> nn.Module:
    """Build a fusion module by name ("concat" or "gated"). Raises ValueError listing the known names."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    unknown = set(input_dims) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
    return FUSIONS[name](input_dims, dim=dim, dropout=dropout)
