"""Frozen encoders: train the model's head on cached embeddings (training.embeddings), in minutes on a CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from moderation.model import ModerationModel
from training.data import LabelledSet
from training.embeddings import EmbeddedSet
from training.losses import lr_lambda, masked_bce, modality_dropout, row_weights
from training.selection import average_precisions

if TYPE_CHECKING:
    from training.train import TrainConfig


def embedded_tensors(emb: EmbeddedSet, labels: np.ndarray, weights: np.ndarray) -> dict[str, torch.Tensor]:
    ok = emb.ok
    return {"present": torch.from_numpy(emb.present[ok]),
            "labels": torch.from_numpy(labels[ok]),
            "weights": torch.from_numpy(weights[ok]),
            **{f"emb_{m}": torch.from_numpy(v[ok]) for m, v in emb.embeddings.items()}}


def write_log(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def train_frozen(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                  stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                  progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    mods = model.modalities
    tr = embedded_tensors(train_emb, train_set.labels, row_weights(train_set.sources, config.dataset_weights))
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
    best: dict[str, Any] = {"mean_ap": -1.0}
    best_state = None
    bad_epochs = 0
    bar = tqdm(range(1, config.epochs + 1), desc="epochs", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = perm[start:start + config.batch_size]
            present = modality_dropout(tr["present"][idx], config.modality_dropout, gen)
            logits = head({m: tr[f"emb_{m}"][idx] for m in mods}, present)
            loss = masked_bce(logits, tr["labels"][idx], pw, tr["weights"][idx])
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
        aps = average_precisions(torch.sigmoid(logits).numpy(), st["labels"].numpy(), model.categories)
        mean_ap = float(np.nanmean(list(aps.values())))
        entry = {"epoch": epoch, "train_loss": total / max(count, 1), "stop_loss": stop_loss,
                 "ap": aps, "mean_ap": mean_ap, "lr": sched.get_last_lr()[0]}
        history.append(entry)
        write_log(log_path, entry)
        bar.set_postfix(loss=f"{entry['train_loss']:.4f}", ap=f"{mean_ap:.4f}")
        if mean_ap > best["mean_ap"]:
            best = {"epoch": epoch, "mean_ap": mean_ap, "ap": aps, "stop_loss": stop_loss}
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
