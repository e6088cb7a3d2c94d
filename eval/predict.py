"""Raw logits of a labelled set, through the scorer's own code path (prepare_many + logits), as served.

Posts that cannot be scored are kept as rows with NaN logits, `ok` False and their error code counted:
they are left out of every metric and fit, never treated as negatives.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from moderation.calibration import Calibration, sigmoid
from moderation.model import PreparedPost


@dataclass
class PredictionSet:
    """Predictions of one model on one labelled set, row-aligned with the set.

    logits: (N, C) raw logits, NaN rows for posts that errored. labels: (N, C) 0/1, NaN = unknown.
    slices: "text" / "image" / "image+text" per row: the modalities the score used (for a post that could not be
    scored, what it holds). ok: (N,) post scored.
    errors: error_code -> count. sources / splits: dataset name and split per row (may be empty).
    error_examples: error_code -> first message seen (to tell the user what went wrong).
    """

    ids: list[str]
    logits: np.ndarray
    labels: np.ndarray
    slices: np.ndarray
    ok: np.ndarray
    errors: dict[str, int]
    categories: list[str]
    sources: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    error_examples: dict[str, str] = field(default_factory=dict)
    model_version: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_errors(self) -> int:
        return int((~self.ok).sum())

    def raw_probs(self) -> np.ndarray:
        """sigmoid(logits): the uncalibrated probabilities (NaN rows kept)."""
        return sigmoid(self.logits)

    def probs(self, calibration: Calibration | None) -> np.ndarray:
        """Calibrated probabilities (plain sigmoid without a calibration), as the scorer computes them; NaN rows kept."""
        if calibration is None:
            return self.raw_probs()
        out = np.full(self.logits.shape, np.nan)
        if self.ok.any():
            out[self.ok] = calibration.apply(self.logits[self.ok], self.categories, self.slices[self.ok])
        return out

    def concat(self, other: "PredictionSet") -> "PredictionSet":
        """This set's rows followed by `other`'s (same categories). Raises ValueError."""
        if list(other.categories) != list(self.categories):
            raise ValueError(f"cannot join predictions of categories {self.categories} and {other.categories}")
        errors = dict(self.errors)
        for code, n in other.errors.items():
            errors[code] = errors.get(code, 0) + n
        return PredictionSet(ids=self.ids + other.ids, logits=np.concatenate([self.logits, other.logits]),
                             labels=np.concatenate([self.labels, other.labels]),
                             slices=np.concatenate([np.asarray(self.slices, dtype=object), np.asarray(other.slices, dtype=object)]),
                             ok=np.concatenate([self.ok, other.ok]), errors=errors, categories=list(self.categories),
                             sources=list(self.sources) + list(other.sources), splits=list(self.splits) + list(other.splits),
                             error_examples={**other.error_examples, **self.error_examples}, model_version=self.model_version)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to an .npz (arrays) + a .json sidecar (counts, names); loads back without pickle."""
        path = Path(path).with_suffix(".npz")
        np.savez_compressed(path, ids=np.asarray(self.ids, dtype=str), logits=self.logits, labels=self.labels,
                            slices=np.asarray(self.slices, dtype=str), ok=self.ok,
                            sources=np.asarray(self.sources, dtype=str), splits=np.asarray(self.splits, dtype=str))
        meta = {"categories": self.categories, "errors": self.errors, "error_examples": self.error_examples,
                "model_version": self.model_version}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PredictionSet":
        """Read what `save` wrote. Raises FileNotFoundError naming the missing file."""
        path = Path(path).with_suffix(".npz")
        side = path.with_suffix(".json")
        for p in (path, side):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found; `moderation evaluate --out DIR` writes predictions.npz/.json")
        meta = json.loads(side.read_text(encoding="utf-8"))
        with np.load(path, allow_pickle=False) as z:
            return cls(ids=z["ids"].tolist(), logits=z["logits"], labels=z["labels"], slices=z["slices"].astype(object),
                       ok=z["ok"].astype(bool), errors=dict(meta["errors"]), categories=list(meta["categories"]),
                       sources=z["sources"].tolist(), splits=z["splits"].tolist(),
                       error_examples=dict(meta.get("error_examples", {})), model_version=meta.get("model_version"))


def align_labels(labels: np.ndarray, data_categories: list[str], model_categories: list[str]) -> np.ndarray:
    """Reorder label columns to the model's categories; a category the data does not label is all-NaN.

    Raises ValueError when the data labels none of the model's categories.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if not set(data_categories) & set(model_categories):
        raise ValueError(f"the data labels {data_categories}, none of the model's categories {model_categories}; "
                         "map a label field to one of them, e.g. --data PATH:label=hate")
    out = np.full((labels.shape[0], len(model_categories)), np.nan)
    for j, c in enumerate(model_categories):
        if c in data_categories:
            out[:, j] = labels[:, data_categories.index(c)]
    return out


def _image_root(posts: list[dict]) -> str | None:
    """Folder holding every image of the set (their paths are absolute and were checked at load time)."""
    folders = [os.path.dirname(p["image"]) for p in posts
               if isinstance(p.get("image"), str) and os.path.isabs(p["image"])]
    return os.path.commonpath(folders) if folders else None


def _slices_of(data: Any) -> np.ndarray:
    if hasattr(data, "slices"):
        return np.asarray(data.slices(), dtype=object)
    out = []
    for p in data.posts:
        has_text, has_image = bool(p.get("text")), p.get("image") is not None
        out.append("image+text" if has_text and has_image else ("image" if has_image else "text"))
    return np.asarray(out, dtype=object)


def predict_logits(scorer: Any, data: Any, *, progress: bool = True, chunk: int = 256) -> PredictionSet:
    """Run `scorer` over the posts of `data` (a moderation.datasets.LabelledSet) and return raw logits.

    Uses scorer.prepare_many + scorer.logits, the serving code path. Labels are aligned to the scorer's
    categories. Posts that fail to prepare (or whose batch fails) get NaN logits and count in `errors`.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    posts = list(data.posts)
    n, cats = len(posts), list(scorer.categories)
    labels = align_labels(data.labels, list(data.categories), cats)
    logits = np.full((n, len(cats)), np.nan)
    ok = np.zeros(n, dtype=bool)
    errors: Counter = Counter()
    examples: dict[str, str] = {}
    root = _image_root(posts)
    slices = _slices_of(data)
    bar = None
    if progress:
        bar = tqdm(total=n, desc="scoring", unit="post")
    for start in range(0, n, chunk):
        items = scorer.prepare_many(posts[start : start + chunk], root)
        ready = [i for i, it in enumerate(items) if isinstance(it, PreparedPost)]
        for it in items:
            if not isinstance(it, PreparedPost):
                errors[it.error_code] += 1
                examples.setdefault(it.error_code, f"{it.id}: {it.error}")
        if ready:
            try:
                batch_logits, _ = scorer.logits([items[i] for i in ready])
            except Exception as exc:  # noqa: BLE001 - as the scorer does: count the whole batch as failed, go on
                errors["internal_error"] += len(ready)
                examples.setdefault("internal_error", f"{type(exc).__name__}: {exc}")
            else:
                idx = start + np.asarray(ready)
                logits[idx] = batch_logits
                ok[idx] = True
                # What the score used (e.g. text read from an image by OCR), which is what calibration keys on.
                for i in ready:
                    slices[start + i] = "+".join(items[i].modalities)
        if bar is not None:
            bar.update(len(items))
            if errors:
                bar.set_postfix(errors=sum(errors.values()))
    if bar is not None:
        bar.close()
    return PredictionSet(ids=[str(p.get("id")) for p in posts], logits=logits, labels=labels, slices=slices,
                         ok=ok, errors=dict(errors), categories=cats, sources=list(getattr(data, "sources", []) or []),
                         splits=list(getattr(data, "splits", []) or []), error_examples=examples,
                         model_version=getattr(scorer, "model_version", None))
