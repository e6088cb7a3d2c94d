"""Fine-tuning the text encoder (LoRA adapters or all weights) while frozen modalities read cached embeddings.

LoRA on the top layers only: the outputs of the frozen lower layers are computed once per text
(`prefix_states`) and a step runs, and back-propagates through, the adapted layers only.
"""

from __future__ import annotations

import math
import os
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
    frozen_keys = model.config.frozen_encoder_keys
    for modality, encoder in model.encoders.items():
        mode = model.config.finetune.get(modality, "frozen")
        for name, p in encoder.named_parameters():
            p.requires_grad = ((mode == "full" and not any(k in name for k in frozen_keys))
                               or (mode == "lora" and "lora_" in name))
            if p.requires_grad:
                params.append(p)
    return params


def _text_forward(model: ModerationModel, texts: Sequence[str | None], rows: torch.Tensor, size: int,
                  device: torch.device | None = None) -> torch.Tensor:
    """Text embeddings (size, D) for the rows that have text (others zero), through the live encoder, on `device`."""
    encoder = model.encoders["text"]
    device = device or torch.device("cpu")
    out = torch.zeros(size, encoder.output_dim, device=device)
    idx = [i for i in rows.tolist() if texts[i] is not None]
    if not idx:
        return out
    tokens = encoder.tokenize([texts[i] for i in idx])
    tokens.pop("truncated")
    feats = encoder(**{k: v.to(device) for k, v in tokens.items()}).float()
    return out.index_copy(0, torch.tensor(idx, device=device), feats)


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


CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (a crash mid-write leaves the previous one)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _trained_state(model: ModerationModel) -> dict[str, torch.Tensor]:
    """The tensors training changes: the head and the fine-tuned encoder tensors (CPU copies)."""
    keep = {f"encoders.{k}" for k in model.trainable_state_dict()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            if k.startswith("head.") or k in keep}


def _text_functions(model: ModerationModel, tr_texts: Sequence[str | None], st_texts: Sequence[str | None], start: int,
                    config: TrainConfig, progress: bool, device: torch.device) -> tuple[Any, Any]:
    """(text_train(rows_all, rows, size), text_stop(rows_all, size)): text embeddings of training / early-stopping
    rows through the live encoder, or, with LoRA above a frozen prefix (start > 0), through its top layers from
    cached prefix states."""
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
            return _text_forward(model, [tr_texts[i] for i in rows_all.tolist()], rows, size, device)

        def text_stop(rows_all: torch.Tensor, size: int) -> torch.Tensor:
            return _text_forward(model, [st_texts[i] for i in rows_all.tolist()], torch.arange(size), size, device)
    return text_train, text_stop


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of row indices: shuffled pools of 50 batches sorted by length, cut into batches, the
    batches shuffled (little padding, random order). Draws from `gen` only, so an epoch can be replayed."""
    n = len(lengths)
    perm = torch.randperm(n, generator=gen).numpy()
    pool = 50 * batch_size
    out = []
    for s in range(0, n, pool):
        chunk = perm[s:s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [torch.from_numpy(chunk[b:b + batch_size].copy()) for b in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(out), generator=gen).tolist()
    return [out[i] for i in order]


def _tensors_and_texts(data: LabelledSet, emb: EmbeddedSet, ti: int, weights: np.ndarray
                       ) -> tuple[dict[str, torch.Tensor], list[str | None]]:
    """The cached-embedding tensors of the posts that could be prepared, with the text presence bit set from
    each post's readable text, and those texts."""
    texts = post_texts([data.posts[i] for i in np.nonzero(emb.ok)[0]])
    tensors = embedded_tensors(emb, data.labels, weights)
    tensors["present"][:, ti] = torch.tensor([t is not None for t in texts])
    return tensors, texts


def _batch_loss(model: ModerationModel, tr: dict[str, torch.Tensor], idx: torch.Tensor, text_train: Any,
                pw: torch.Tensor, config: TrainConfig, gen: torch.Generator, autocast: Any,
                device: torch.device, per_dataset: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The masked, weighted loss of one training batch (model in train mode), through the live text encoder.
    per_dataset: the training-only terms of each row's dataset (`tr["source"]`), each centred over the datasets
    and added to the row's logits: "bias" (datasets, C) logit offsets (config.dataset_bias), "heads" (datasets, D, C)
    linear heads over the text embedding (config.dataset_heads; rows without text get none). Empty: none."""
    model.train()
    mods = model.modalities
    late = isinstance(model.head, LateFusionClassifier)
    # Late fusion trains each modality's classifier alone (no dropout needed); other heads see dropout.
    present = tr["present"][idx] if late else modality_dropout(tr["present"][idx], config.modality_dropout, gen)
    present = present.to(device)
    labels, weights = tr["labels"][idx].to(device), tr["weights"][idx].to(device)
    with autocast:
        emb = {m: tr[f"emb_{m}"][idx].to(device) for m in mods if m != "text"}
        # Rows whose text is hidden by modality dropout need no encoder pass.
        rows = present[:, mods.index("text")].nonzero(as_tuple=True)[0].cpu()
        emb["text"] = text_train(idx, rows, len(idx))
        offset, text_offset = _dataset_offset(per_dataset or {}, tr, idx, emb["text"], present[:, mods.index("text")],
                                              device)
        if late:
            return unimodal_loss(model.head, emb, present, labels, pw, weights, offset,
                                 None if text_offset is None else {"text": text_offset}).float()
        logits = model.head(emb, present).float()
        for term in (offset, text_offset):
            logits = logits if term is None else logits + term
        return masked_bce(logits, labels, pw, weights)


def _dataset_offset(per_dataset: dict[str, torch.Tensor], tr: dict[str, torch.Tensor], idx: torch.Tensor,
                    text: torch.Tensor, has_text: torch.Tensor, device: torch.device
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (B, C) training-only logit offsets of each row's dataset (see _batch_loss): (the bias, for every
    modality's logits; the per-dataset head's, for the text logits only, 0 on rows without text). None: absent."""
    if not per_dataset:
        return None, None
    src = tr["source"][idx].to(device)
    offset = text_offset = None
    if "bias" in per_dataset:
        bias = per_dataset["bias"]
        offset = (bias - bias.mean(0))[src]
    if "heads" in per_dataset:
        heads = per_dataset["heads"]
        rows = torch.where(has_text.unsqueeze(1), text.to(heads.dtype), torch.zeros((), dtype=heads.dtype, device=device))
        text_offset = torch.einsum("bd,bdc->bc", rows, (heads - heads.mean(0))[src])
    return offset, text_offset


def _evaluate(model: ModerationModel, st: dict[str, torch.Tensor], st_texts: Sequence[str | None], text_stop: Any,
              pw: torch.Tensor, config: TrainConfig, autocast: Any, stop_sources: np.ndarray,
              device: torch.device) -> tuple[dict[str, float], float, float, float, Any]:
    """(AP per category, mean AP, loss, early-stopping score, its per-category figures) on the early-stopping set."""
    model.eval()
    mods = model.modalities
    logits = []
    order = np.argsort([len(t or "") for t in st_texts], kind="stable")
    with torch.inference_mode(), autocast:
        for s in range(0, len(st_texts), config.embed_batch_size):
            idx = torch.from_numpy(order[s:s + config.embed_batch_size].copy())
            emb = {m: st[f"emb_{m}"][idx].to(device) for m in mods if m != "text"}
            emb["text"] = text_stop(idx, len(idx))
            logits.append((idx, model.head(emb, st["present"][idx].to(device)).float().cpu()))
    full = torch.zeros(len(st_texts), len(model.categories))
    for idx, lg in logits:
        full[idx] = lg
    loss = float(masked_bce(full, st["labels"], pw.cpu()))
    probs, y = torch.sigmoid(full).numpy(), st["labels"].numpy()
    aps = average_precisions(probs, y, model.categories)
    score, per = stop_score(config.stop_metric, probs, y, model.categories, stop_sources)
    return aps, float(np.nanmean(list(aps.values()))), loss, score, per


def load_checkpoint(path: Path, n: int, total_steps: int, model: ModerationModel, optimizer: Any,
                    scheduler: Any) -> dict[str, Any]:
    """Restore the trained tensors, optimiser and schedule from a checkpoint written for the same data and
    settings; returns it (position, history, best state, random states). Raises FileNotFoundError / ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("n_train") != n or ck.get("total_steps") != total_steps:
        raise ValueError(f"--resume: {path} was written for {ck.get('n_train')} posts and {ck.get('total_steps')} "
                         f"steps, this run has {n} and {total_steps}: same data and settings are needed")
    model.load_state_dict(ck["trained"], strict=False)
    optimizer.load_state_dict(ck["opt"])
    scheduler.load_state_dict(ck["sched"])
    return ck


def _optimiser(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, tr: dict[str, torch.Tensor],
               config: TrainConfig, device: torch.device) -> tuple[Any, dict[str, torch.nn.Parameter], list[str]]:
    """AdamW over the head (`lr`), the trainable encoder tensors (`encoder_lr`) and the training-only per-dataset
    terms: with config.dataset_bias logit offsets (`lr`, no weight decay), with config.dataset_heads linear heads over
    the text embedding (`lr`, the head's weight decay), both starting at 0; their row per training post goes into
    tr["source"]. Returns (optimiser, {"bias"/"heads": tensor}, the training datasets' names in their row order)."""
    groups = [{"params": list(model.head.parameters()), "lr": config.lr},
              {"params": _trainable_encoder_params(model), "lr": config.encoder_lr}]
    per_dataset: dict[str, torch.nn.Parameter] = {}
    names = sorted(set(train_set.sources))
    if config.dataset_bias or config.dataset_heads:
        sources = np.asarray(train_set.sources)[train_emb.ok]
        tr["source"] = torch.tensor([names.index(x) for x in sources], dtype=torch.long)
    if config.dataset_bias:
        per_dataset["bias"] = torch.nn.Parameter(torch.zeros(len(names), len(model.categories), device=device))
        groups.append({"params": [per_dataset["bias"]], "lr": config.lr, "weight_decay": 0.0})
    if config.dataset_heads:
        dim = text_embedding_dim(model)
        per_dataset["heads"] = torch.nn.Parameter(torch.zeros(len(names), dim, len(model.categories), device=device))
        groups.append({"params": [per_dataset["heads"]], "lr": config.lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay), per_dataset, names


def text_embedding_dim(model: ModerationModel) -> int:
    """Width of the text embedding the head reads (config.dataset_heads needs a text modality)."""
    if "text" not in model.encoders:
        raise ValueError("dataset_heads needs a model with a text encoder")
    return int(model.encoders["text"].output_dim)


def _dataset_table(values: torch.Tensor, names: Sequence[str], categories: Sequence[str]) -> dict[str, dict[str, float]]:
    """A (datasets, C) tensor as {dataset: {category: value}}, rounded."""
    rows = values.detach().float().cpu().numpy()
    return {n: {c: round(float(rows[i, j]), 4) for j, c in enumerate(categories)} for i, n in enumerate(names)}


def _per_dataset_record(per_dataset: dict[str, torch.Tensor], names: Sequence[str], categories: Sequence[str]
                        ) -> dict[str, Any]:
    """What the best record keeps of the per-dataset terms, centred over the datasets as the loss uses them
    (config.json: training.best): the offsets (positive: the dataset labels the category more readily) and the L2
    norm of each head's weights per category."""
    centred = {key: tensor.detach() - tensor.detach().mean(0) for key, tensor in per_dataset.items()}
    out: dict[str, Any] = {}
    if "bias" in centred:
        out["dataset_bias"] = _dataset_table(centred["bias"], names, categories)
    if "heads" in centred:
        out["dataset_heads_norm"] = _dataset_table(centred["heads"].norm(dim=1), names, categories)
    return out


def train_finetune(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                    stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                    progress: bool) -> tuple[list[dict], dict]:
    """Fine-tune the text encoder (LoRA or all weights) with the head; early stopping on `stop_set`.

    One optimiser step per `config.grad_accum` batches of `config.batch_size` posts. With `config.checkpoint_every`
    > 0, a checkpoint (trained tensors, optimiser, schedule, random state, position in the epoch, best state so
    far) is written to `log_path`'s folder every that many optimiser steps and at every evaluation; with
    `config.resume`, training continues from it (the same batches, in the same order, as without the stop).
    Runs on `config.device` ("cpu", "cuda", "cuda:1", ...); frozen modalities' embeddings come from the cache.
    """
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    mods = model.modalities
    ti = mods.index("text")
    tr, tr_texts = _tensors_and_texts(train_set, train_emb, ti, loss_weights(
        train_set.labels, train_set.sources, config.class_weight, config.dataset_weights))
    st, st_texts = _tensors_and_texts(stop_set, stop_emb, ti, np.ones(len(stop_set), dtype=np.float32))
    n = len(tr_texts)
    start = lora_prefix_start(model)
    if start and device.type != "cpu":
        raise ValueError("LoRA with a cached frozen prefix runs on the CPU only; use --device cpu or adapt every layer")
    model.to(device)
    pw = pw.to(device)
    text_train, text_stop = _text_functions(model, tr_texts, st_texts, start, config, progress, device)
    opt, per_dataset, dataset_names = _optimiser(model, train_set, train_emb, tr, config, device)
    accum = max(1, int(config.grad_accum))
    batches_per_epoch = math.ceil(n / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, config.warmup))
    gen = torch.Generator().manual_seed(config.seed)
    eval_every = config.eval_every or steps_per_epoch
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if config.precision == "bf16"
                else torch.autocast(device_type=device.type, enabled=False))
    lengths = np.array([len(t or "") for t in tr_texts])
    late = isinstance(model.head, LateFusionClassifier)
    stop_sources = np.asarray(stop_set.sources)[stop_emb.ok]
    history: list[dict] = []
    best: dict[str, Any] = {"score": -1.0}
    best_state = None
    bad_evals, step, first_epoch, skip_batches = 0, 0, 1, 0
    running, running_n = 0.0, 0
    ckpt_path = log_path.parent / CHECKPOINT_FILE
    epoch_gen_state = gen.get_state()
    if config.resume:
        ck = load_checkpoint(ckpt_path, n, total_steps, model, opt, sched)
        step, first_epoch, skip_batches = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        epoch_gen_state = ck["epoch_gen_state"]
        history, best, best_state, bad_evals = ck["history"], ck["best"], ck["best_state"], ck["bad_evals"]
        for key, tensor in per_dataset.items():
            tensor.data.copy_(ck[f"dataset_{key}"].to(device))
        best.pop("stopped", None)  # the stop that ended the interrupted run is not this run's
        torch.set_rng_state(ck["torch_rng"])
    start_time = time.time() - (history[-1]["seconds"] if history else 0.0)

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        save_checkpoint(ckpt_path, {
            "n_train": n, "total_steps": total_steps, "trained": _trained_state(model), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "epoch_gen_state": epoch_gen_state, "history": history, "best": best, "best_state": best_state,
            "bad_evals": bad_evals, "torch_rng": torch.get_rng_state(),
            **{f"dataset_{key}": tensor.detach().cpu().clone() for key, tensor in per_dataset.items()}})

    stop = False
    params = [p for g in opt.param_groups for p in g["params"]]
    bar = tqdm(total=total_steps, initial=step, desc=f"fine-tuning ({config.mode})", unit="step", disable=not progress)
    for epoch in range(first_epoch, config.epochs + 1):
        gen.set_state(epoch_gen_state)
        epoch_batches = length_bucketed_batches(lengths, config.batch_size, gen)
        next_epoch_gen_state = gen.get_state()
        opt.zero_grad(set_to_none=True)
        for b, idx in enumerate(epoch_batches):
            if b < skip_batches:  # done before the checkpoint; draw its modality dropout so later draws match
                if not late:
                    modality_dropout(tr["present"][idx], config.modality_dropout, gen)
                continue
            loss = _batch_loss(model, tr, idx, text_train, pw, config, gen, autocast, device, per_dataset)
            (loss / accum).backward()
            running += float(loss.detach()) * len(idx)
            running_n += len(idx)
            if (b + 1) % accum and b + 1 < len(epoch_batches):
                continue  # accumulate gradients over `accum` batches
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            out_of_time = config.time_budget_s > 0 and time.time() - start_time > config.time_budget_s
            evaluated = False
            if step % eval_every == 0 or out_of_time:
                aps, mean_ap, stop_loss, score, per = _evaluate(model, st, st_texts, text_stop, pw, config, autocast,
                                                                stop_sources, device)
                evaluated = True
                entry = {"epoch": epoch, "step": step, "train_loss": running / max(running_n, 1), "stop_loss": stop_loss,
                         "ap": aps, "mean_ap": mean_ap, "stop_figures": per, "score": score,
                         "lr": sched.get_last_lr()[0], "seconds": round(time.time() - start_time, 1)}
                running, running_n = 0.0, 0
                history.append(entry)
                write_log(log_path, entry)
                bar.set_postfix(loss=f"{entry['train_loss']:.4f}", **{config.stop_metric: f"{score:.4f}"})
                if score > best["score"]:
                    best = {"epoch": epoch, "step": step, "score": score, "stop_metric": config.stop_metric,
                            "mean_ap": mean_ap, "ap": aps, "stop_figures": per, "stop_loss": stop_loss,
                            **_per_dataset_record(per_dataset, dataset_names, model.categories)}
                    best_state, bad_evals = _trained_state(model), 0
                else:
                    bad_evals += 1
                    stop = bad_evals >= config.patience
            if config.checkpoint_every and (evaluated or step % config.checkpoint_every == 0):
                checkpoint(epoch, b + 1)
            if out_of_time:
                best["stopped"] = f"time budget of {config.time_budget_s:.0f} s reached at step {step}"
                stop = True
            if stop:
                break
        if stop:
            break
        skip_batches = 0
        epoch_gen_state = next_epoch_gen_state
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.to("cpu")
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    return history, best
