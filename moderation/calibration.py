"""Calibration and thresholds as versioned artifacts, and how the scorer applies them.

Fitting them lives in `eval/` (it needs scikit-learn and a calibration split); this module only stores,
loads and applies them, in plain numpy, so the scorer needs nothing else.

calibration.json  {"format_version": 1, "version": str, "categories": {name: {"method": ..., "params": {...},
                                                                            "input_types": {type: {"method", "params"}}}}}
    input_types (optional): a calibration of its own for the posts of one input type ("text", "image",
             "image+text": the modalities the score used, joined by "+"), fitted where there was enough data;
             posts of other types use the category's pooled calibration.
    methods: "identity" (sigmoid of the logit), "temperature" ({"temperature": T}: sigmoid(z / T)),
             "platt" ({"a": a, "b": b}: sigmoid(a z + b)),
             "isotonic" ({"x": [...], "y": [...]}: piecewise-linear map of sigmoid(z), x increasing)
thresholds.json   {"format_version": 1, "version": str, "target_precision": float,
                   "categories": {name: {"threshold": float | null, ...diagnostics}}}
    A null threshold means the target was not reachable: that category never flags automatically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT_VERSION = 1
CALIBRATION_FILE = "calibration.json"
THRESHOLDS_FILE = "thresholds.json"
METHODS = ("identity", "temperature", "platt", "isotonic")


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def apply_method(method: str, params: dict[str, Any], logits: np.ndarray) -> np.ndarray:
    """Map raw logits of one category to calibrated probabilities in [0, 1]."""
    z = np.asarray(logits, dtype=np.float64)
    if method == "identity":
        return sigmoid(z)
    if method == "temperature":
        t = float(params["temperature"])
        if not t > 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        return sigmoid(z / t)
    if method == "platt":
        return sigmoid(float(params["a"]) * z + float(params["b"]))
    if method == "isotonic":
        x = np.asarray(params["x"], dtype=np.float64)
        y = np.asarray(params["y"], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2 or np.any(np.diff(x) < 0):
            raise ValueError("isotonic params need increasing x and y of the same length >= 2")
        return np.clip(np.interp(sigmoid(z), x, y), 0.0, 1.0)
    raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")


@dataclass
class Calibration:
    """Per-category probability calibration. Categories without an entry use the plain sigmoid."""

    version: str
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def apply(self, logits: np.ndarray, categories: list[str], input_types: Sequence[str] | None = None) -> np.ndarray:
        """(N, C) logits in the order of `categories` -> (N, C) calibrated probabilities.

        input_types: per row, the modalities its score used joined by "+" ("text", "image", "image+text");
        rows of a type with a calibration of its own use it, the others the category's pooled one.
        """
        logits = np.asarray(logits, dtype=np.float64)
        out = np.empty_like(logits)
        types = None if input_types is None else np.asarray(input_types, dtype=object)
        if types is not None and types.shape != (logits.shape[0],):
            raise ValueError(f"input_types has {types.shape[0]} rows, logits {logits.shape[0]}")
        for j, name in enumerate(categories):
            entry = self.categories.get(name, {"method": "identity", "params": {}})
            out[:, j] = apply_method(entry["method"], entry.get("params", {}), logits[:, j])
            for kind, sub in (entry.get("input_types") or {}).items() if types is not None else ():
                rows = types == kind
                if rows.any():
                    out[rows, j] = apply_method(sub["method"], sub.get("params", {}), logits[rows, j])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "version": self.version, "categories": self.categories, **self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Calibration":
        _check_format(data, CALIBRATION_FILE)
        cats = data.get("categories", {})
        for name, entry in cats.items():
            if entry.get("method") not in METHODS:
                raise ValueError(f"{CALIBRATION_FILE}: category {name!r} has unknown method {entry.get('method')!r}")
            apply_method(entry["method"], entry.get("params", {}), np.zeros(1))  # validates params now, not mid-batch
            for kind, sub in (entry.get("input_types") or {}).items():
                if sub.get("method") not in METHODS:
                    raise ValueError(f"{CALIBRATION_FILE}: category {name!r}, input type {kind!r}: unknown method "
                                     f"{sub.get('method')!r}")
                apply_method(sub["method"], sub.get("params", {}), np.zeros(1))
        meta = {k: v for k, v in data.items() if k not in ("format_version", "version", "categories")}
        return cls(version=str(data["version"]), categories=cats, meta=meta)


@dataclass
class Thresholds:
    """Per-category decision thresholds on calibrated probabilities; None = never flag automatically."""

    version: str
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_precision: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def threshold(self, category: str) -> float | None:
        entry = self.categories.get(category)
        if entry is None or entry.get("threshold") is None:
            return None
        return float(entry["threshold"])

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "version": self.version, "target_precision": self.target_precision,
                "categories": self.categories, **self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Thresholds":
        _check_format(data, THRESHOLDS_FILE)
        cats = data.get("categories", {})
        for name, entry in cats.items():
            t = entry.get("threshold")
            if t is not None and not (0.0 <= float(t) <= 1.0):
                raise ValueError(f"{THRESHOLDS_FILE}: threshold of {name!r} must be in [0, 1] or null, got {t}")
        meta = {k: v for k, v in data.items() if k not in ("format_version", "version", "categories", "target_precision")}
        return cls(version=str(data["version"]), categories=cats, target_precision=data.get("target_precision"), meta=meta)


def _check_format(data: dict[str, Any], name: str) -> None:
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError(f"{name} must be a JSON object with a 'version'")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name} has format_version {data.get('format_version')!r}; this code reads {FORMAT_VERSION}")


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    tmp.replace(path)
