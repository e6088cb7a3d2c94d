"""The training loop: frozen encoders on cached embeddings, or fine-tuning (LoRA or full) of the text encoder.

    from training.config import TrainConfig
    from training.train import train
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from moderation.datasets import DatasetSpec, load_labelled, post_texts
from moderation.language import language_mix
from moderation.model import LateFusionClassifier, ModelConfig, ModerationModel
from moderation.model_dir import ModelDirError, ModelInfo, load_model, save_model
from moderation.scorer import Scorer
from training.blend import fit_channels
from training.config import TrainConfig
from training.embeddings import embed_posts
from training.finetune import train_finetune
from training.frozen import train_frozen
from training.losses import pos_weights
from training.selection import holdout_split

LOG_FILE = "training_log.jsonl"


@dataclass
class TrainResult:
    """What `train` produced: the model directory, its version, the best early-stopping metrics, the history."""

    out_dir: Path
    model_version: str
    best: dict[str, Any]
    history: list[dict[str, Any]]
    model: ModerationModel


def cap_rows(data: Any, max_rows: dict[str, int], seed: int, keep_positive: Sequence[int] = ()) -> Any:
    """`data` with at most max_rows[name] rows of each named dataset (a seeded random sample, order kept).

    keep_positive: label columns whose positive rows are always kept; the cap then samples the other rows
    (max_rows[name] minus those kept, at least none), so a capped dataset can exceed its cap by its rare positives.
    """
    rng = np.random.default_rng(seed)
    sources = np.asarray(data.sources)
    labels = np.asarray(data.labels)
    keep = np.ones(len(data), dtype=bool)
    for name, cap in max_rows.items():
        rows = np.nonzero(sources == name)[0]
        if len(rows) <= cap:
            continue
        sure = np.zeros(len(rows), dtype=bool)
        for col in keep_positive:
            sure |= labels[rows, col] == 1
        rest = rows[~sure]
        keep[rest] = False
        n = min(len(rest), max(0, int(cap) - int(sure.sum())))
        keep[rng.choice(rest, size=n, replace=False)] = True
    return data.subset(keep)


def init_weights(model: ModerationModel, path: str | os.PathLike) -> str:
    """Copy a trained model directory's head and encoder weights into `model` (TrainConfig.init_from); returns its
    model version. Raises ValueError when the folder is not a model or its architecture differs from `model`'s."""
    try:
        src, info = load_model(path)
    except ModelDirError as exc:
        raise ValueError(f"init_from {path}: {exc}") from None
    if list(src.categories) != list(model.categories) or sorted(src.encoders) != sorted(model.encoders):
        raise ValueError(f"init_from {path}: its categories {list(src.categories)} and encoders {sorted(src.encoders)} "
                         f"differ from this model's {list(model.categories)} and {sorted(model.encoders)}")
    try:
        model.head.load_state_dict(src.head.state_dict(), strict=True)
        for modality, encoder in model.encoders.items():
            encoder.load_state_dict(src.encoders[modality].state_dict(), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"init_from {path}: its architecture differs from this model's: {str(exc)[:300]}") from None
    return info.model_version


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
    init_version = None
    if config.init_from is not None:
        init_version = init_weights(model, config.init_from)
        log(f"starting from the weights of {config.init_from} ({init_version})")
    scorer = training_scorer(model)

    data = load_labelled(list(specs), categories, "train")
    if config.max_train_rows:
        data = cap_rows(data, config.max_train_rows, config.seed,
                        keep_positive=[categories.index(c) for c in config.cap_keep_positive])
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
        "init_from": None if init_version is None else {"path": str(config.init_from), "model_version": init_version},
        "channels": channels,
        "epochs_run": len(history),
        "seconds": round(time.time() - t0, 1),
    }}
    version = save_model(model, out_dir, trained=True, name=name, meta=meta)
    log(f"saved {out_dir} ({version}); best early-stopping {config.stop_metric} {best.get('score', float('nan')):.4f} at {best.get('epoch')}")
    return TrainResult(out_dir=out_dir, model_version=version, best=best, history=history, model=model)






