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

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from moderation.language import language_mix
from moderation.model import LateFusionClassifier, ModelConfig, ModerationModel
from moderation.model_dir import ModelInfo, save_model
from moderation.scorer import Scorer
from training.blend import fit_channels
from moderation.datasets import DatasetSpec, load_labelled, post_texts
from training.embeddings import embed_posts
from training.finetune import train_finetune
from training.frozen import train_frozen
from training.losses import pos_weights
from training.selection import STOP_METRICS, holdout_split

MODES = ("frozen", "lora", "full")
CLASS_WEIGHTS = ("balanced", "per_dataset", "none")
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
    #: "balanced": per-category pos_weight = negatives / positives in the training labels; "per_dataset": the same
    #: balance within each dataset (training.losses.dataset_balanced_weights), so no dataset's base rate is
    #: learned as evidence; "none".
    class_weight: str = "balanced"
    #: Loss weight per dataset name (default 1.0), e.g. to keep a small dataset from being drowned out.
    dataset_weights: dict[str, float] = field(default_factory=dict)
    #: "holdout": a stratified `holdout_fraction` of the train split; "val": the datasets' val splits.
    early_stopping: str = "holdout"
    holdout_fraction: float = 0.1
    #: What the early-stopping set judges: "mean_ap" (average precision per category, pooled over datasets, then
    #: averaged) or "macro_auc" (ROC-AUC per dataset, averaged over the datasets labelling each category, then
    #: over categories: every platform counts the same).
    stop_metric: str = "mean_ap"
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
    #: Inverse regularisation of the lexical channel's logistic regressions (models whose config has one).
    lexical_c: float = 1.0
    #: Fine-tune mode: batches whose gradients are summed before one optimiser step (effective batch =
    #: batch_size x grad_accum).
    grad_accum: int = 1
    #: Fine-tune mode: write a checkpoint (checkpoint.pt in the output folder) every this many optimiser steps
    #: and at every evaluation (0: never).
    checkpoint_every: int = 0
    #: Fine-tune mode: continue from the output folder's checkpoint.pt (same data and settings).
    resume: bool = False
    #: Fine-tune mode: where the live encoder runs ("cpu", "cuda", "cuda:0", ...). Frozen embeddings are cached on the CPU.
    device: str = "cpu"
    #: At most this many training rows of the named datasets (a seeded random sample; others keep all rows):
    #: keeps the large all-benign sets from dominating an epoch's time.
    max_train_rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}")
        if self.stop_metric not in STOP_METRICS:
            raise ValueError(f"stop_metric must be one of {STOP_METRICS}, got {self.stop_metric!r}")
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
        if self.grad_accum < 1 or self.checkpoint_every < 0:
            raise ValueError("grad_accum must be >= 1 and checkpoint_every >= 0")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: no CUDA device is available here (torch.cuda.is_available() is False)")


@dataclass
class TrainResult:
    """What `train` produced: the model directory, its version, the best early-stopping metrics, the history."""

    out_dir: Path
    model_version: str
    best: dict[str, Any]
    history: list[dict[str, Any]]
    model: ModerationModel


def cap_rows(data: Any, max_rows: dict[str, int], seed: int) -> Any:
    """`data` with at most max_rows[name] rows of each named dataset (a seeded random sample, order kept)."""
    rng = np.random.default_rng(seed)
    sources = np.asarray(data.sources)
    keep = np.ones(len(data), dtype=bool)
    for name, cap in max_rows.items():
        rows = np.nonzero(sources == name)[0]
        if len(rows) > cap:
            keep[rows] = False
            keep[rng.choice(rows, size=int(cap), replace=False)] = True
    return data.subset(keep)


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_scorer(model: ModerationModel) -> Scorer:
    """A Scorer around `model` used for its `prepare` (the exact preprocessing of serving)."""
    info = ModelInfo(path=None, config=model.config, model_version="training", trained=False,
                     calibration=None, thresholds=None, meta={})
    # No OCR: training reads each dataset's own text; the frozen image encoder needs the pixels only.
    return Scorer(model, info, num_workers=0, ocr="off")

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
    if config.max_train_rows:
        data = cap_rows(data, config.max_train_rows, config.seed)
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
    if not config.resume:
        log_path.write_text("")
    if config.mode == "frozen":
        history, best = train_frozen(model, train_set, train_emb, stop_set, stop_emb, pw, config, log_path, progress)
    else:
        history, best = train_finetune(model, train_set, train_emb, stop_set, stop_emb, pw, config, log_path, progress)
    torch.set_num_threads(torch_threads)
    channels = None
    if isinstance(model.head, LateFusionClassifier):
        channels = fit_channels(model, train_set, train_emb.ok, stop_set, stop_emb, config, scorer.prepare, progress, log)
    meta = {"training": {
        "config": asdict(config),
        "datasets": [{"name": s.name, "path": str(s.path), "labels": s.labels} for s in specs],
        # The splits whose rows the weights were fitted on (eval.calibrate warns when calibrating on them).
        "splits": "train",
        "train_counts": train_set.counts(),
        "early_stopping_set": {"description": stop_desc, "size": len(stop_set), "counts": stop_set.counts()},
        "skipped_rows": data.problems,
        # What the policy's language rule needs: the languages the model was trained on (moderation.language).
        "languages": language_mix(post_texts(train_set.posts)),
        "unprepared_posts": n_bad,
        "pos_weight": dict(zip(categories, [float(x) for x in pw])),
        "best": best,
        "channels": channels,
        "epochs_run": len(history),
        "seconds": round(time.time() - t0, 1),
    }}
    version = save_model(model, out_dir, trained=True, name=name, meta=meta)
    log(f"saved {out_dir} ({version}); best early-stopping {config.stop_metric} {best.get('score', float('nan')):.4f} at {best.get('epoch')}")
    return TrainResult(out_dir=out_dir, model_version=version, best=best, history=history, model=model)






