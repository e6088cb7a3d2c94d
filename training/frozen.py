"""Frozen encoders: train the model's head on cached embeddings (training.embeddings), in minutes on a CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moderation.datasets import LabelledSet
from moderation.model import LateFusionClassifier, ModerationModel
from training.config import TrainConfig
from training.embeddings import EmbeddedSet
from training.losses import lr_lambda, loss_weights, masked_bce, modality_dropout
from training.selection import average_precisions, stop_score


def embedded_tensors(emb: EmbeddedSet, labels: np.ndarray, weights: np.ndarray) -> dict[str, torch.Tensor]:
    ok = emb.ok
    return {"present": torch.from_numpy(emb.present[ok]),
            "labels": torch.from_numpy(labels[ok]),
            "weights": torch.from_numpy(weights[ok]),
            **{f"emb_{m}": torch.from_numpy(v[ok]) for m, v in emb.embeddings.items()}}


def unimodal_loss(head: LateFusionClassifier, embeddings: dict[str, torch.Tensor], present: torch.Tensor,
                  labels: torch.Tensor, pos_weight: torch.Tensor | None, weights: torch.Tensor,
                  offset: torch.Tensor | None = None, modality_offset: dict[str, torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """Late fusion: each modality's classifier is trained on the rows where that modality is present, alone.

    The sum over modalities of the masked BCE of each classifier's own logits, so neither can lean on the
    other; how they are combined is decided afterwards on validation data (training.blend). offset: (B, C) added
    to every modality's logits (a per-dataset bias during training; None: nothing); modality_offset: (B, C) added
    to that modality's logits only (a per-dataset head over the text embedding).
    """
    logits = head.unimodal(embeddings)
    total = torch.zeros((), dtype=next(iter(logits.values())).dtype)
    for i, m in enumerate(head.modalities):
        rows = present[:, i]
        if rows.any():
            lg = logits[m]
            for term in (offset, (modality_offset or {}).get(m)):
                lg = lg if term is None else lg + term.to(lg.dtype)
            total = total + masked_bce(lg[rows], labels[rows], pos_weight, weights[rows])
    return total


def write_log(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def train_frozen(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                  stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                  progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    mods = model.modalities
    tr = embedded_tensors(train_emb, train_set.labels,
                          loss_weights(train_set.labels, train_set.sources, config.class_weight, config.dataset_weights))
    st = embedded_tensors(stop_emb, stop_set.labels, np.ones(len(stop_set), dtype=np.float32))
    n = tr["labels"].shape[0]
    head = model.head
    # The head's matrices are small: one thread is as fast, and far faster on a busy machine (no spinning).
    torch.set_num_threads(1)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * config.epochs, config.warmup))
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best: dict[str, Any] = {"score": -1.0}
    best_state = None
    bad_epochs = 0
    late = isinstance(head, LateFusionClassifier)
    stop_sources = np.asarray(stop_set.sources)[stop_emb.ok]
    bar = tqdm(range(1, config.epochs + 1), desc="epochs", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = perm[start:start + config.batch_size]
            emb = {m: tr[f"emb_{m}"][idx] for m in mods}
            if late:
                loss = unimodal_loss(head, emb, tr["present"][idx], tr["labels"][idx], pw, tr["weights"][idx])
            else:
                present = modality_dropout(tr["present"][idx], config.modality_dropout, gen)
                loss = masked_bce(head(emb, present), tr["labels"][idx], pw, tr["weights"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        head.eval()
        with torch.no_grad():
            logits = head({m: st[f"emb_{m}"] for m in mods}, st["present"])
            stop_loss = float(masked_bce(logits, st["labels"], pw))
        probs, y = torch.sigmoid(logits).numpy(), st["labels"].numpy()
        aps = average_precisions(probs, y, model.categories)
        mean_ap = float(np.nanmean(list(aps.values())))
        score, per = stop_score(config.stop_metric, probs, y, model.categories, stop_sources)
        entry = {"epoch": epoch, "train_loss": total / max(count, 1), "stop_loss": stop_loss,
                 "ap": aps, "mean_ap": mean_ap, "stop_figures": per, "score": score, "lr": sched.get_last_lr()[0]}
        history.append(entry)
        write_log(log_path, entry)
        bar.set_postfix(loss=f"{entry['train_loss']:.4f}", **{config.stop_metric: f"{score:.4f}"})
        if score > best["score"]:
            best = {"epoch": epoch, "score": score, "stop_metric": config.stop_metric, "mean_ap": mean_ap, "ap": aps,
                    "stop_figures": per, "stop_loss": stop_loss}
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history, best
