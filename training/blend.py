"""Choosing how a late-fusion model combines its channels, on validation data the channels were not fit to.

A `LateFusionClassifier` adds, per category, the lexical channel's logits to the text classifier's with a
weight `lexical_weight`, and the image classifier's with a weight `image_weight` capped at the config's
`image_weight_cap`. Both are picked here from a small grid by the early-stopping set's figure
(`training.selection.macro_aucs`: ROC-AUC per dataset, averaged, so every platform counts the same):

- lexical weight: over the posts with text;
- image weight: over the posts with both text and an image, and only where adding the image beats the
  text alone by at least `min_gain` AUROC; otherwise 0, which switches the image off for that category
  whenever there is text (a category no dataset labels on memes gets 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from moderation.datasets import LabelledSet, post_texts
from moderation.lexical import LexicalConfig, fit_lexical
from moderation.model import ModerationModel, collate
from training.config import TrainConfig
from training.embeddings import EmbeddedSet
from training.losses import loss_weights
from training.selection import macro_aucs

LEXICAL_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
IMAGE_GRID_STEPS = 10
#: The AUROC an image weight must add over the text alone on the validation memes to be switched on.
MIN_IMAGE_GAIN = 0.01
#: The AUROC the image classifier must reach alone on the validation images of a category for an image without
#: text to be judged for it at all (below, such an image is reported as not judged for that category: a branch
#: close to chance would only send every picture to review).
MIN_IMAGE_ONLY_AUC = 0.6


@dataclass
class Blend:
    """Chosen weights per category and the validation figures behind each choice."""

    lexical_weight: dict[str, float] = field(default_factory=dict)
    image_weight: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)


def _score(z: np.ndarray, labels: np.ndarray, sources: np.ndarray, rows: np.ndarray) -> float:
    if not rows.any():
        return float("nan")
    return macro_aucs(z[rows, None], labels[rows, None], ["c"], sources[rows])["c"]


def choose_blend(categories: Sequence[str], labels: np.ndarray, sources: Sequence[str], present_text: np.ndarray,
                 present_image: np.ndarray, text: np.ndarray, lexical: np.ndarray | None, image: np.ndarray | None,
                 image_cap: float, min_image_gain: float = MIN_IMAGE_GAIN) -> Blend:
    """Pick lexical and image weights per category from unimodal logits on a validation set.

    labels: (N, C) 0/1/NaN; sources: dataset per row; present_*: (N,) bool; text / lexical / image: (N, C)
    logits of each channel (rows where a channel is absent are ignored). Ties keep the smaller weight.
    """
    labels = np.asarray(labels, dtype=np.float64)
    src = np.asarray(sources)
    blend = Blend()
    for j, c in enumerate(categories):
        known = ~np.isnan(labels[:, j])
        y = labels[:, j]
        text_rows = known & present_text
        z = np.asarray(text[:, j], dtype=np.float64).copy()
        entry: dict[str, Any] = {"n_text": int(text_rows.sum())}
        lam = 0.0
        if lexical is not None:
            scores = {w: _score(z + w * lexical[:, j], y, src, text_rows) for w in LEXICAL_GRID}
            valid = {w: s for w, s in scores.items() if not np.isnan(s)}
            if valid:
                lam = max(valid, key=lambda w: (round(valid[w], 6), -w))
            entry["lexical_grid"] = scores
            z = z + lam * lexical[:, j]
        blend.lexical_weight[c] = lam
        both = text_rows & present_image
        w_img = 0.0
        if image is not None and both.any() and 0 < np.nansum(y[both]) < both.sum():
            grid = [image_cap * k / IMAGE_GRID_STEPS for k in range(IMAGE_GRID_STEPS + 1)]
            scores = {w: _score(z + w * image[:, j], y, src, both) for w in grid}
            best = max(scores, key=lambda w: (round(scores[w], 6), -w))
            gain = scores[best] - scores[0.0]
            w_img = best if gain >= min_image_gain else 0.0
            entry.update(image_grid=scores, image_gain=gain, n_image_text=int(both.sum()),
                         image_rule=f"on if it adds >= {min_image_gain} AUROC over the text alone on these posts")
        else:
            entry["image_rule"] = "off: no validation posts with text and an image labelled for this category"
        blend.image_weight[c] = w_img
        blend.evidence[c] = entry
    return blend


def _live_text_embeddings(model: ModerationModel, prepare: Callable, posts: Sequence[dict], batch_size: int,
                          progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Text embeddings of `posts` through the model's current (possibly fine-tuned) text encoder, via the
    serving path (prepare + collate + embed). Returns ((N, D) float32, (N,) bool has text)."""
    texts = post_texts(posts)
    out = np.zeros((len(posts), model.encoders["text"].output_dim), dtype=np.float32)
    rows = [i for i, t in enumerate(texts) if t is not None]
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc="text embeddings (validation)", disable=not progress):
            idx = rows[start:start + batch_size]
            items = [prepare({"id": str(i), "text": texts[i]}) for i in idx]
            emb = model.embed(collate(items, model))
            out[idx] = emb["text"].float().numpy()
    return out, np.array([t is not None for t in texts])


def fit_channels(model: ModerationModel, train_set: LabelledSet, train_ok: np.ndarray, stop_set: LabelledSet,
                 stop_emb: EmbeddedSet, config: "TrainConfig", prepare: Callable, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """After the unimodal classifiers are trained: fit the lexical channel (when the config has one) on the
    training texts, then choose the blend weights on the early-stopping set and store them in the head.

    Returns what was chosen and why (stored in config.json's training entry).
    """
    head = model.head
    cats = model.categories
    mods = model.modalities
    report: dict[str, Any] = {}
    if model.config.lexical:
        texts = post_texts(train_set.posts)
        rows = np.array([ok and t is not None for ok, t in zip(train_ok, texts)])
        weights = loss_weights(train_set.labels, train_set.sources, config.class_weight, config.dataset_weights)
        lex_config = LexicalConfig(C=config.lexical_c)
        log(f"fitting the lexical channel on {int(rows.sum())} texts ({lex_config})")
        model.lexical = fit_lexical([t for t, r in zip(texts, rows) if r], train_set.labels[rows], cats, lex_config,
                                    sample_weight=weights[rows], progress=progress)
        report["lexical"] = {"config": asdict(lex_config), **model.lexical.meta}
    ok = stop_emb.ok
    labels = stop_set.labels[ok]
    sources = np.asarray(stop_set.sources)[ok]
    emb: dict[str, torch.Tensor] = {}
    present = {m: np.zeros(int(ok.sum()), dtype=bool) for m in ("image", "text")}
    for m in mods:
        if model.config.finetune.get(m, "frozen") == "frozen":
            emb[m] = torch.from_numpy(stop_emb.embeddings[m][ok])
            present[m] = stop_emb.present[ok, mods.index(m)]
        else:
            vectors, has = _live_text_embeddings(model, prepare, [p for p, k in zip(stop_set.posts, ok) if k],
                                                 config.embed_batch_size, progress)
            emb[m], present[m] = torch.from_numpy(vectors), has
    with torch.inference_mode():
        logits = {m: v.float().numpy() for m, v in head.unimodal(emb).items()}
    lexical = None
    if model.lexical is not None:
        stop_texts = [t if t is not None else "" for t in post_texts([p for p, k in zip(stop_set.posts, ok) if k])]
        lexical = model.lexical.logits(stop_texts).astype(np.float64)
    blend = choose_blend(cats, labels, sources, present["text"], present["image"],
                         logits.get("text", np.zeros(labels.shape)), lexical, logits.get("image"),
                         model.config.image_weight_cap)
    # The categories an image alone may be judged for: the image classifier saw labelled examples of them
    # (training posts with an image) and beats chance clearly on the validation images.
    supervised = [False] * len(cats)
    if "image" in mods:
        with_image = train_ok & np.asarray([p.get("image") is not None for p in train_set.posts])
        for j, c in enumerate(cats):
            if not (~np.isnan(train_set.labels[with_image, j])).any():
                continue
            rows = present["image"] & ~np.isnan(labels[:, j])
            auc = _score(logits["image"][:, j], labels[:, j], sources, rows)
            blend.evidence[c]["image_only_auc"] = auc
            supervised[j] = bool(auc >= MIN_IMAGE_ONLY_AUC)
            blend.evidence[c]["image_only_rule"] = (f"an image without text is judged for {c} only if the image "
                                                    f"classifier reaches ROC-AUC >= {MIN_IMAGE_ONLY_AUC} alone on the "
                                                    f"validation images: {auc:.3f}")
    with torch.no_grad():
        head.lexical_weight.copy_(torch.tensor([blend.lexical_weight[c] for c in cats]))
        head.image_weight.copy_(torch.tensor([blend.image_weight[c] for c in cats]))
        head.image_categories.copy_(torch.tensor([float(f) for f in supervised]))
    log("blend chosen on the early-stopping set: lexical weight " + ", ".join(f"{c} {blend.lexical_weight[c]:g}" for c in cats)
        + "; image weight " + ", ".join(f"{c} {blend.image_weight[c]:g}" for c in cats))
    report["blend"] = {"lexical_weight": blend.lexical_weight, "image_weight": blend.image_weight,
                       "image_categories": [c for c, f in zip(cats, supervised) if f], "evidence": blend.evidence}
    return report
