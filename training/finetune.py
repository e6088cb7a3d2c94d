"""Fine-tuning the text encoder (LoRA adapters or all weights) while frozen modalities read cached embeddings.

LoRA on the top layers only: the outputs of the frozen lower layers are computed once per text
(`prefix_states`) and a step runs, and back-propagates through, the adapted layers only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from moderation.datasets import LabelledSet, post_texts
from moderation.model import LateFusionClassifier, ModerationModel
from training.config import TrainConfig
from training.embeddings import EmbeddedSet
from training.frozen import embedded_tensors, unimodal_loss, write_log
from training.losses import lr_lambda, loss_weights, masked_bce, modality_dropout
from training.selection import average_precisions, stop_score


def _trainable_encoder_params(model: ModerationModel) -> list[nn.Parameter]:
    params = []
    for modality, encoder in model.encoders.items():
        mode = model.config.finetune.get(modality, "frozen")
        for name, p in encoder.named_parameters():
            p.requires_grad = mode == "full" or (mode == "lora" and "lora_" in name)
            if p.requires_grad:
                params.append(p)
    return params


def _text_forward(model: ModerationModel, texts: Sequence[str | None], rows: torch.Tensor, size: int) -> torch.Tensor:
    """Text embeddings (size, D) for the rows that have text (others zero), through the live encoder."""
    encoder = model.encoders["text"]
    out = torch.zeros(size, encoder.output_dim)
    idx = [i for i in rows.tolist() if texts[i] is not None]
    if not idx:
        return out
    tokens = encoder.tokenize([texts[i] for i in idx])
    tokens.pop("truncated")
    feats = encoder(**tokens).float()
    return out.index_copy(0, torch.tensor(idx), feats) if len(idx) else out


class _Passthrough(nn.Module):
    """Stands in for a BERT embedding layer: hands cached hidden states straight to the first kept layer."""

    def forward(self, inputs_embeds: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return inputs_embeds


def lora_prefix_start(model: ModerationModel) -> int:
    """First text-encoder layer that LoRA adapts, when the layers below it stay frozen (0: no cacheable prefix).

    Those lower layers never change during training, so their outputs can be computed once per text and
    kept in memory; a training step then runs (and back-propagates through) the adapted layers only.
    Needs a BERT-like Hugging Face model (`embeddings`, `encoder.layer`).
    """
    if model.config.finetune.get("text") != "lora" or "text" not in model.encoders:
        return 0
    layers = (model.config.text_lora or {}).get("layers_to_transform")
    if not layers:
        return 0
    start = min(layers) if isinstance(layers, (list, tuple)) else int(layers)
    hf = getattr(model.encoders["text"], "model", None)
    if not (hasattr(hf, "embeddings") and hasattr(getattr(hf, "encoder", None), "layer")):
        return 0
    if getattr(model.encoders["text"], "layers", None):  # pools lower layers too: they must run in every step
        return 0
    return start if 0 < start < len(hf.encoder.layer) else 0


class _LayerSlice:
    """Context manager: run only layers [lo, hi) of a BERT-like model; below lo, inputs are cached hidden states."""

    def __init__(self, hf: nn.Module, lo: int, hi: int | None = None) -> None:
        self.hf, self.lo, self.hi = hf, lo, hi

    def __enter__(self) -> None:
        self.embeddings, self.layers = self.hf.embeddings, self.hf.encoder.layer
        if self.lo > 0:
            self.hf.embeddings = _Passthrough()
        self.hf.encoder.layer = nn.ModuleList(list(self.layers)[self.lo:self.hi])

    def __exit__(self, *exc: Any) -> None:
        self.hf.embeddings, self.hf.encoder.layer = self.embeddings, self.layers


def prefix_states(encoder: nn.Module, texts: Sequence[str | None], start: int, batch_size: int = 64,
                  progress: bool = True, desc: str = "caching frozen layers") -> list[torch.Tensor | None]:
    """Per text, the (tokens, D) output of the encoder's first `start` layers (bf16, padding removed)."""
    from tqdm.auto import tqdm

    out: list[torch.Tensor | None] = [None] * len(texts)
    order = [i for i in sorted(range(len(texts)), key=lambda i: len(texts[i] or "")) if texts[i] is not None]
    bar = tqdm(total=len(order), desc=desc, unit="text", disable=not progress)
    with torch.inference_mode(), _LayerSlice(encoder.model, 0, start):
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            tokens = encoder.tokenize([texts[i] for i in idx])
            tokens.pop("truncated")
            hidden = encoder.model(**tokens).last_hidden_state
            lengths = tokens["attention_mask"].sum(1).tolist()
            for r, i in enumerate(idx):
                out[i] = hidden[r, : int(lengths[r])].to(torch.bfloat16).clone()
            bar.update(len(idx))
    bar.close()
    return out


def _top_forward(encoder: nn.Module, states: Sequence[torch.Tensor | None], rows: torch.Tensor, size: int,
                 start: int) -> torch.Tensor:
    """Text embeddings (size, D) from cached prefix states through the adapted top layers, pooled as the encoder pools."""
    out = torch.zeros(size, encoder.output_dim)
    idx = [i for i in rows.tolist() if states[i] is not None]
    if not idx:
        return out
    longest = max(int(states[i].shape[0]) for i in idx)
    hidden = torch.zeros(len(idx), longest, encoder.output_dim)
    mask = torch.zeros(len(idx), longest, dtype=torch.long)
    for r, i in enumerate(idx):
        n = int(states[i].shape[0])
        hidden[r, :n] = states[i].float()
        mask[r, :n] = 1
    with _LayerSlice(encoder.model, start):
        last = encoder.model(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
    if encoder.pooling == "cls":
        feats = last[:, 0]
    else:
        m = mask.unsqueeze(-1).to(last.dtype)
        feats = (last * m).sum(1) / m.sum(1).clamp_min(1.0)
    return out.index_copy(0, torch.tensor(idx), feats.float())


def train_finetune(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                    stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                    progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    mods = model.modalities
    ti = mods.index("text")
    train_ok = np.nonzero(train_emb.ok)[0]
    stop_ok = np.nonzero(stop_emb.ok)[0]
    tr_texts = post_texts([train_set.posts[i] for i in train_ok])
    st_texts = post_texts([stop_set.posts[i] for i in stop_ok])
    tr = embedded_tensors(train_emb, train_set.labels,
                          loss_weights(train_set.labels, train_set.sources, config.class_weight, config.dataset_weights))
    st = embedded_tensors(stop_emb, stop_set.labels, np.ones(len(stop_set), dtype=np.float32))
    tr["present"][:, ti] = torch.tensor([t is not None for t in tr_texts])
    st["present"][:, ti] = torch.tensor([t is not None for t in st_texts])
    n = len(tr_texts)
    start = lora_prefix_start(model)
    if start:
        # Layers below `start` are frozen: compute their outputs once, then train through the top layers only.
        encoder = model.encoders["text"]
        encoder.eval()
        tr_states = prefix_states(encoder, tr_texts, start, config.embed_batch_size, progress, "caching frozen layers (train)")
        st_states = prefix_states(encoder, st_texts, start, config.embed_batch_size, progress, "caching frozen layers (early stopping)")

        def text_train(rows_all: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
            return _top_forward(encoder, [tr_states[i] for i in rows_all.tolist()], rows, size, start)

        def text_stop(rows_all: torch.Tensor, size: int) -> torch.Tensor:
            return _top_forward(encoder, [st_states[i] for i in rows_all.tolist()], torch.arange(size), size, start)
    else:
        def text_train(rows_all: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
            return _text_forward(model, [tr_texts[i] for i in rows_all.tolist()], rows, size)

        def text_stop(rows_all: torch.Tensor, size: int) -> torch.Tensor:
            return _text_forward(model, [st_texts[i] for i in rows_all.tolist()], torch.arange(size), size)
    enc_params = _trainable_encoder_params(model)
    opt = torch.optim.AdamW([{"params": model.head.parameters(), "lr": config.lr},
                             {"params": enc_params, "lr": config.encoder_lr}], weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, config.warmup))
    gen = torch.Generator().manual_seed(config.seed)
    eval_every = config.eval_every or steps_per_epoch
    autocast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if config.precision == "bf16"
                else torch.autocast(device_type="cpu", enabled=False))
    lengths = np.array([len(t or "") for t in tr_texts])

    def batches() -> list[torch.Tensor]:
        # Length-bucketed batches (shuffled buckets of similar length, then shuffled order): less padding.
        perm = torch.randperm(n, generator=gen).numpy()
        pool = 50 * config.batch_size
        out = []
        for s in range(0, n, pool):
            chunk = perm[s:s + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            out += [torch.from_numpy(chunk[b:b + config.batch_size].copy()) for b in range(0, len(chunk), config.batch_size)]
        order = torch.randperm(len(out), generator=gen).tolist()
        return [out[i] for i in order]

    def evaluate() -> tuple[dict[str, float], float, float]:
        model.eval()
        logits = []
        order = np.argsort([len(t or "") for t in st_texts], kind="stable")
        with torch.inference_mode(), autocast:
            for s in range(0, len(st_texts), config.embed_batch_size):
                idx = torch.from_numpy(order[s:s + config.embed_batch_size].copy())
                emb = {m: st[f"emb_{m}"][idx] for m in mods if m != "text"}
                emb["text"] = text_stop(idx, len(idx))
                logits.append((idx, model.head(emb, st["present"][idx]).float()))
        full = torch.zeros(len(st_texts), len(model.categories))
        for idx, lg in logits:
            full[idx] = lg
        loss = float(masked_bce(full, st["labels"], pw))
        probs, y = torch.sigmoid(full).numpy(), st["labels"].numpy()
        aps = average_precisions(probs, y, model.categories)
        score, per = stop_score(config.stop_metric, probs, y, model.categories, stop_sources)
        return aps, float(np.nanmean(list(aps.values()))), loss, score, per

    late = isinstance(model.head, LateFusionClassifier)
    stop_sources = np.asarray(stop_set.sources)[stop_emb.ok]
    history: list[dict] = []
    best: dict[str, Any] = {"score": -1.0}
    best_state = None
    bad_evals, step, start_time = 0, 0, time.time()
    running, running_n = 0.0, 0
    stop = False
    bar = tqdm(total=total_steps, desc=f"fine-tuning ({config.mode})", unit="step", disable=not progress)
    for epoch in range(1, config.epochs + 1):
        for idx in batches():
            model.train()
            # Late fusion trains each modality's classifier alone (no dropout needed); other heads see dropout.
            present = tr["present"][idx] if late else modality_dropout(tr["present"][idx], config.modality_dropout, gen)
            with autocast:
                emb = {m: tr[f"emb_{m}"][idx] for m in mods if m != "text"}
                # Rows whose text is hidden by modality dropout need no encoder pass.
                rows = present[:, ti].nonzero(as_tuple=True)[0]
                emb["text"] = text_train(idx, rows, len(idx))
                if late:
                    loss = unimodal_loss(model.head, emb, present, tr["labels"][idx], pw, tr["weights"][idx]).float()
                else:
                    loss = masked_bce(model.head(emb, present).float(), tr["labels"][idx], pw, tr["weights"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach()) * len(idx)
            running_n += len(idx)
            bar.update(1)
            out_of_time = config.time_budget_s > 0 and time.time() - start_time > config.time_budget_s
            if step % eval_every == 0 or out_of_time:
                aps, mean_ap, stop_loss, score, per = evaluate()
                entry = {"epoch": epoch, "step": step, "train_loss": running / max(running_n, 1), "stop_loss": stop_loss,
                         "ap": aps, "mean_ap": mean_ap, "stop_figures": per, "score": score,
                         "lr": sched.get_last_lr()[0], "seconds": round(time.time() - start_time, 1)}
                running, running_n = 0.0, 0
                history.append(entry)
                write_log(log_path, entry)
                bar.set_postfix(loss=f"{entry['train_loss']:.4f}", **{config.stop_metric: f"{score:.4f}"})
                if score > best["score"]:
                    best = {"epoch": epoch, "step": step, "score": score, "stop_metric": config.stop_metric,
                            "mean_ap": mean_ap, "ap": aps, "stop_figures": per, "stop_loss": stop_loss}
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()
                                  if k.startswith("head.") or any(k.startswith(f"encoders.{m}.") and
                                  (model.config.finetune.get(m) == "full" or "lora_" in k) for m in mods)}
                    bad_evals = 0
                else:
                    bad_evals += 1
                    stop = bad_evals >= config.patience
            if out_of_time:
                best["stopped"] = f"time budget of {config.time_budget_s:.0f} s reached at step {step}"
                stop = True
            if stop:
                break
        if stop:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    return history, best
