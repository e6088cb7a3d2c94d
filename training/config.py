"""Training settings: `TrainConfig`, stored in the checkpoint's config.json.

Its own module so that the training loop (`training.train`) and the modes it dispatches to (`training.frozen`,
`training.finetune`, `training.blend`) all import it from below instead of from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.selection import STOP_METRICS

MODES = ("frozen", "lora", "full")
CLASS_WEIGHTS = ("balanced", "per_dataset", "none")


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
    #: Categories whose positive rows the caps above never drop (rare positives, e.g. Gab's `cv` threats).
    cap_keep_positive: list[str] = field(default_factory=list)
    #: Fine-tune mode: learn a logit offset per (training dataset, category), added to every modality's logits in
    #: the training loss only and centred over the datasets (issue 18 item 4): a dataset that labels a category more
    #: or less readily than the others moves its own offset, not the shared head, which serves every post alone.
    #: The offsets at the best early-stopping point are recorded with it (config.json: training.best.dataset_bias).
    dataset_bias: bool = False
    #: Fine-tune mode: learn a linear head per (training dataset) over the text embedding, (D, C) weights starting
    #: at 0, centred over the datasets and added to the text rows' logits in the training loss only (issue 18 item
    #: 4, "per-dataset heads"): what one dataset alone calls harm can be learnt by its own head, while the shared
    #: product head, which serves every post, learns what the datasets agree on (with the late-fusion head only
    #: the text classifier's logits get it). The size of each head at the best early-stopping point is recorded
    #: (training.best.dataset_heads_norm).
    dataset_heads: bool = False
    #: Fine-tune mode: start from a trained model directory's weights (head and encoders; the same architecture)
    #: instead of the pretrained encoder and a new head, with a fresh learning-rate schedule: a further epoch
    #: after a finished run, which early stopping judges like any other (the starting weights do not count
    #: as an evaluation). None: start from the pretrained encoder.
    init_from: str | None = None

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
        for option in ("dataset_bias", "dataset_heads", "init_from"):
            if getattr(self, option) not in (False, None) and self.mode == "frozen":
                raise ValueError(f"{option} is a fine-tuning option (mode 'lora' or 'full')")
        if self.init_from is not None and self.resume:
            raise ValueError("init_from and resume exclude each other: resume continues the checkpoint's own run")
        if self.grad_accum < 1 or self.checkpoint_every < 0:
            raise ValueError("grad_accum must be >= 1 and checkpoint_every >= 0")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: no CUDA device is available here (torch.cuda.is_available() is False)")
