"""The training loop: frozen encoders on cached embeddings, or fine-tuning (LoRA or full) of the text encoder.

    from training.train import TrainConfig, train
    result = train(specs, "runs/my-model", ModelConfig(...), TrainConfig(mode="frozen"))

Both modes share one recipe:
- several datasets at once with partial labels: an unknown label (NaN) is masked out of the loss, it is
  never a negative (`masked_bce`);
- class imbalance: per-category `pos_weight` = negatives / positives among the known training labels;
- modality dropout: for a post with both text and image, one of the two (never both) is hidden at random
  by flipping its presence bit, so the model copes with text-only and image-only posts;
- AdamW with linear warm-up then cosine decay; early stopping on mean average precision over the
  categories of an early-stopping set (by default a stratified 10% of the training split, so that each
  dataset's `val` split stays untouched for calibration); seeds; progress bars; a per-epoch JSONL log;
- a self-describing checkpoint: `moderation.model_dir.save_model` (config + head + fine-tuned encoder
  tensors as safetensors) with the training settings and history in config.json.

Frozen mode trains `model.head` on per-post embeddings cached on disk (training.embeddings), in seconds to
minutes on a CPU. Fine-tune mode runs the text encoder (LoRA adapters via peft, or all weights) while a
frozen image encoder still reads its embeddings from the cache.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from moderation.inputs import DEFAULT_LIMITS, check_text
from moderation.model import ModelConfig, ModerationModel
from moderation.model_dir import ModelInfo, save_model
from moderation.scorer import Scorer
from training.data import DatasetSpec, LabelledSet, load_labelled
from training.embeddings import EmbeddedSet, embed_posts

MODES = ("frozen", "lora", "full")
LOG_FILE = "training_log.jsonl"


@dataclass
class TrainConfig:
    """Training settings (stored in the checkpoint's config.json)."""

    #: "frozen": train the head on cached embeddings; "lora" / "full": fine-tune the text encoder too.
    mode: str = "frozen"
    #: Maximum epochs (early stopping usually ends sooner).
    epochs: int = 60
    batch_size: int = 128
    #: Learning rate of the head (fusion + classifier).
    lr: float = 1e-3
    #: Learning rate of the fine-tuned text encoder weights (LoRA adapters or all weights).
    encoder_lr: float = 5e-4
    weight_decay: float = 0.01
    #: Fraction of the optimiser steps spent warming the learning rate up linearly from 0.
    warmup: float = 0.06
    #: Epochs (frozen) or evaluations (fine-tune) without a better early-stopping AP before stopping.
    patience: int = 8
    #: Probability of hiding one modality (chosen at random, never both) of a post that has both.
    modality_dropout: float = 0.3
    #: "balanced": per-category pos_weight = negatives / positives in the training labels; "none".
    class_weight: str = "balanced"
    #: Loss weight per dataset name (default 1.0), e.g. to keep a small dataset from being drowned out.
    dataset_weights: dict[str, float] = field(default_factory=dict)
    #: "holdout": a stratified `holdout_fraction` of the train split; "val": the datasets' val splits.
    early_stopping: str = "holdout"
    holdout_fraction: float = 0.1
    seed: int = 0
    #: Precision of the encoders' forward passes: "fp32" or "bf16" (autocast). Frozen embeddings are cached per precision.
    precision: str = "fp32"
    #: Fine-tune mode: evaluate on the early-stopping set every this many optimiser steps (0: once per epoch).
    eval_every: int = 0
    #: Fine-tune mode: stop after this many seconds of training (0: no limit); the best state is kept.
    time_budget_s: float = 0.0
    #: Embedding cache folder (None: $MODERATION_CACHE_DIR or .cache/embeddings).
    cache_dir: str | None = None
    #: Posts per forward pass when embedding or evaluating.
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', got {self.class_weight!r}")
        if self.early_stopping not in ("holdout", "val"):
            raise ValueError(f"early_stopping must be 'holdout' or 'val', got {self.early_stopping!r}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")


@dataclass
class TrainResult:
    """What `train` produced: the model directory, its version, the best early-stopping metrics, the history."""

    out_dir: Path
    model_version: str
    best: dict[str, Any]
    history: list[dict[str, Any]]
    model: ModerationModel


# --- loss, weights, modality dropout ----------------------------------------------------------------

def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over the KNOWN labels only (NaN = unknown: zero loss, zero gradient).

    logits, labels: (B, C); pos_weight: (C,); weights: (B,) per-row loss weights. Returns the weighted mean
    over known cells (0 with a live graph when none is known).
    """
    known = ~torch.isnan(labels)
    # NaN targets would poison the loss even when multiplied by 0, so they are replaced before the BCE.
    target = torch.where(known, labels, torch.zeros((), dtype=labels.dtype))
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none",
                                                          pos_weight=pos_weight)
    w = known.to(logits.dtype)
    if weights is not None:
        w = w * weights.to(logits.dtype).unsqueeze(1)
    loss = torch.where(known, loss, torch.zeros((), dtype=loss.dtype))
    return (loss * w).sum() / w.sum().clamp_min(1e-12)


def pos_weights(labels: np.ndarray, mode: str = "balanced", max_weight: float = 20.0) -> np.ndarray:
    """Per-category pos_weight: negatives / positives among known labels (1.0 when a class is missing)."""
    labels = np.asarray(labels, dtype=np.float64)
    out = np.ones(labels.shape[1], dtype=np.float32)
    if mode == "none":
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


def average_precisions(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str]) -> dict[str, float]:
    """Average precision per category over known labels (NaN when a category lacks positives or negatives)."""
    from sklearn.metrics import average_precision_score
    out = {}
    for j, c in enumerate(categories):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        out[c] = float(average_precision_score(y, probs[known, j])) if 0 < y.sum() < len(y) else float("nan")
    return out


def lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over `warmup` of the steps, then cosine decay to 0."""
    warm = max(1, int(total_steps * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- data preparation -------------------------------------------------------------------------------

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


def training_scorer(model: ModerationModel) -> Scorer:
    """A Scorer around `model` used for its `prepare` (the exact preprocessing of serving)."""
    info = ModelInfo(path=None, config=model.config, model_version="training", trained=False,
                     calibration=None, thresholds=None, meta={})
    return Scorer(model, info, num_workers=0)


def _row_weights(sources: Sequence[str], dataset_weights: dict[str, float]) -> np.ndarray:
    return np.array([float(dataset_weights.get(s, 1.0)) for s in sources], dtype=np.float32)


# --- the loop ---------------------------------------------------------------------------------------

def train(specs: Sequence[DatasetSpec], out_dir: str | os.PathLike, model_config: ModelConfig,
          config: TrainConfig, *, name: str = "moderation", progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train a model on `specs` (their train splits) and save it to `out_dir` as a model directory.

    Raises ValueError when the training data lack a category or both classes of one.
    """
    seed_everything(config.seed)
    torch_threads = torch.get_num_threads()
    categories = list(model_config.categories)
    finetune = dict(model_config.finetune)
    if config.mode == "frozen":
        finetune = {m: "frozen" for m in finetune}
    else:
        finetune["text"] = config.mode
        if finetune.get("image", "frozen") != "frozen":
            raise ValueError("fine-tuning the image encoder is not supported by this trainer; keep finetune['image'] "
                             "= 'frozen' (its embeddings come from the cache)")
    model_config = ModelConfig.from_dict({**model_config.to_dict(), "finetune": finetune})
    if config.mode != "frozen" and model_config.text_encoder is None:
        raise ValueError(f"mode {config.mode!r} fine-tunes the text encoder, but the model has none")
    model = ModerationModel(model_config)
    scorer = training_scorer(model)

    data = load_labelled(list(specs), categories, "train")
    counts = data.counts()
    for c in categories:
        if counts[c]["positive"] == 0 or counts[c]["positive"] == counts[c]["known"]:
            raise ValueError(f"the training data need positives and negatives of every category; {c!r} has "
                             f"{counts[c]['positive']} positives of {counts[c]['known']} known labels")
    if config.early_stopping == "val":
        train_set, stop_set = data, load_labelled(list(specs), categories, "val")
        stop_desc = "val splits"
    else:
        tr, held = holdout_split(data, config.holdout_fraction, config.seed)
        train_set, stop_set = data.subset(tr), data.subset(held)
        stop_desc = f"stratified {config.holdout_fraction:.0%} holdout of the train splits (seed {config.seed})"
    log(f"training {config.mode} on {len(train_set)} posts ({', '.join(f'{c}: {v}' for c, v in train_set.counts().items())}); "
        f"early stopping on {len(stop_set)} posts: {stop_desc}")

    frozen_modalities = [m for m in model.modalities if model_config.finetune.get(m, "frozen") == "frozen"]
    t0 = time.time()
    # Fine-tuning: `precision` is for the live encoder; frozen modalities keep fp32 embeddings, as served by default.
    cache_precision = config.precision if config.mode == "frozen" else "fp32"
    train_emb = embed_posts(model, scorer.prepare, train_set.posts, modalities=frozen_modalities,
                            cache=config.cache_dir, batch_size=config.embed_batch_size, precision=cache_precision,
                            progress=progress, desc="embedding train")
    stop_emb = embed_posts(model, scorer.prepare, stop_set.posts, modalities=frozen_modalities,
                           cache=config.cache_dir, batch_size=config.embed_batch_size, precision=cache_precision,
                           progress=progress, desc="embedding early-stopping set")
    log(f"embeddings ready in {time.time() - t0:.0f} s (cache: {train_emb.hits + stop_emb.hits} hits, "
        f"{train_emb.misses + stop_emb.misses} computed)")
    n_bad = int((~train_emb.ok).sum() + (~stop_emb.ok).sum())
    if n_bad:
        sample = list({**train_emb.errors, **stop_emb.errors}.items())[:3]
        log(f"WARNING: {n_bad} posts could not be prepared and are left out of training: {sample}")

    pw = torch.tensor(pos_weights(train_set.labels[train_emb.ok], config.class_weight))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_FILE
    log_path.write_text("")
    if config.mode == "frozen":
        history, best = _train_frozen(model, train_set, train_emb, stop_set, stop_emb, pw, config, log_path, progress)
    else:
        history, best = _train_finetune(model, train_set, train_emb, stop_set, stop_emb, pw, config, log_path, progress)
    torch.set_num_threads(torch_threads)
    meta = {"training": {
        "config": asdict(config),
        "datasets": [{"name": s.name, "path": str(s.path), "labels": s.labels} for s in specs],
        # The splits whose rows the weights were fitted on (eval.calibrate warns when calibrating on them).
        "splits": "train",
        "train_counts": train_set.counts(),
        "early_stopping_set": {"description": stop_desc, "size": len(stop_set), "counts": stop_set.counts()},
        "skipped_rows": data.problems,
        "unprepared_posts": n_bad,
        "pos_weight": dict(zip(categories, [float(x) for x in pw])),
        "best": best,
        "epochs_run": len(history),
        "seconds": round(time.time() - t0, 1),
    }}
    version = save_model(model, out_dir, trained=True, name=name, meta=meta)
    log(f"saved {out_dir} ({version}); best early-stopping AP {best.get('mean_ap', float('nan')):.4f} at {best.get('epoch')}")
    return TrainResult(out_dir=out_dir, model_version=version, best=best, history=history, model=model)


def _tensors(emb: EmbeddedSet, labels: np.ndarray, weights: np.ndarray) -> dict[str, torch.Tensor]:
    ok = emb.ok
    return {"present": torch.from_numpy(emb.present[ok]),
            "labels": torch.from_numpy(labels[ok]),
            "weights": torch.from_numpy(weights[ok]),
            **{f"emb_{m}": torch.from_numpy(v[ok]) for m, v in emb.embeddings.items()}}


def _write_log(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _train_frozen(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                  stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                  progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    mods = model.modalities
    tr = _tensors(train_emb, train_set.labels, _row_weights(train_set.sources, config.dataset_weights))
    st = _tensors(stop_emb, stop_set.labels, np.ones(len(stop_set), dtype=np.float32))
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
        _write_log(log_path, entry)
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


def _trainable_encoder_params(model: ModerationModel) -> list[nn.Parameter]:
    params = []
    for modality, encoder in model.encoders.items():
        mode = model.config.finetune.get(modality, "frozen")
        for name, p in encoder.named_parameters():
            p.requires_grad = mode == "full" or (mode == "lora" and "lora_" in name)
            if p.requires_grad:
                params.append(p)
    return params


def _texts(posts: Sequence[dict]) -> list[str | None]:
    out = []
    for p in posts:
        try:
            out.append(check_text(p.get("text"), DEFAULT_LIMITS)[0])
        except Exception:  # noqa: BLE001 - such a post was already marked not ok by the embedding pass
            out.append(None)
    return out


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


def _train_finetune(model: ModerationModel, train_set: LabelledSet, train_emb: EmbeddedSet, stop_set: LabelledSet,
                    stop_emb: EmbeddedSet, pw: torch.Tensor, config: TrainConfig, log_path: Path,
                    progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    mods = model.modalities
    ti = mods.index("text")
    train_ok = np.nonzero(train_emb.ok)[0]
    stop_ok = np.nonzero(stop_emb.ok)[0]
    tr_texts = _texts([train_set.posts[i] for i in train_ok])
    st_texts = _texts([stop_set.posts[i] for i in stop_ok])
    tr = _tensors(train_emb, train_set.labels, _row_weights(train_set.sources, config.dataset_weights))
    st = _tensors(stop_emb, stop_set.labels, np.ones(len(stop_set), dtype=np.float32))
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
        aps = average_precisions(torch.sigmoid(full).numpy(), st["labels"].numpy(), model.categories)
        return aps, float(np.nanmean(list(aps.values()))), loss

    history: list[dict] = []
    best: dict[str, Any] = {"mean_ap": -1.0}
    best_state = None
    bad_evals, step, start_time = 0, 0, time.time()
    running, running_n = 0.0, 0
    stop = False
    bar = tqdm(total=total_steps, desc=f"fine-tuning ({config.mode})", unit="step", disable=not progress)
    for epoch in range(1, config.epochs + 1):
        for idx in batches():
            model.train()
            present = modality_dropout(tr["present"][idx], config.modality_dropout, gen)
            with autocast:
                emb = {m: tr[f"emb_{m}"][idx] for m in mods if m != "text"}
                # Rows whose text is hidden by modality dropout need no encoder pass.
                rows = present[:, ti].nonzero(as_tuple=True)[0]
                emb["text"] = text_train(idx, rows, len(idx))
                logits = model.head(emb, present).float()
            loss = masked_bce(logits, tr["labels"][idx], pw, tr["weights"][idx])
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
                aps, mean_ap, stop_loss = evaluate()
                entry = {"epoch": epoch, "step": step, "train_loss": running / max(running_n, 1), "stop_loss": stop_loss,
                         "ap": aps, "mean_ap": mean_ap, "lr": sched.get_last_lr()[0],
                         "seconds": round(time.time() - start_time, 1)}
                running, running_n = 0.0, 0
                history.append(entry)
                _write_log(log_path, entry)
                bar.set_postfix(loss=f"{entry['train_loss']:.4f}", ap=f"{mean_ap:.4f}")
                if mean_ap > best["mean_ap"]:
                    best = {"epoch": epoch, "step": step, "mean_ap": mean_ap, "ap": aps, "stop_loss": stop_loss}
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
