"""The model directory: a self-describing folder that rebuilds a model with nothing else.

    config.json          format version, ModelConfig, model version, whether the head is trained
    head.safetensors     fusion + classifier weights
    encoders.safetensors encoder tensors changed by fine-tuning (LoRA weights or full), when any
    lexical.json         the lexical channel's analyzer settings and vocabularies (when the config has one)
    lexical.safetensors  its idf weights and linear coefficients (moderation.lexical)
    calibration.json     probability calibration (optional, versioned; see moderation.calibration)
    thresholds.json      per-category thresholds (optional, versioned): the policy's block thresholds
    policy.json          the moderation policy: block and review thresholds, language rule (optional, versioned;
                         moderation.policy); without one, a block-only policy is derived from thresholds.json
    precision.json       the precisions measured against fp32 on the test splits, validated or refused (optional;
                         moderation.precision): "auto" runs bf16 only where it is validated for this model version
    metrics.json         measured metrics (optional)
    MODEL_CARD.md        human-readable card (optional)

Pretrained encoder weights are not copied: the config names them and they load from their packages.
Weights are safetensors only; nothing is unpickled. Loading refuses a folder without config.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from moderation.calibration import (
    CALIBRATION_FILE,
    THRESHOLDS_FILE,
    Calibration,
    Thresholds,
    read_json,
    write_json,
)
from moderation.lexical import LEXICAL_JSON, LEXICAL_WEIGHTS, LexicalModel
from moderation.model import ModelConfig, ModerationModel
from moderation.policy import POLICY_FILE, Policy, PolicyError
from moderation.precision import PRECISION_FILE, PrecisionError, PrecisionRecord

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
ENCODERS_FILE = "encoders.safetensors"
METRICS_FILE = "metrics.json"


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or inconsistent."""


@dataclass
class ModelInfo:
    """What a model directory says about itself, besides the weights."""

    path: Path | None
    config: ModelConfig
    model_version: str
    trained: bool
    calibration: Calibration | None
    thresholds: Thresholds | None
    meta: dict[str, Any]
    #: The moderation policy (policy.json), when the directory has one.
    policy: Policy | None = None
    #: The precision record (precision.json), when the directory has one (moderation.precision).
    precision: PrecisionRecord | None = None


def save_model(model: ModerationModel, path: str | os.PathLike, *, trained: bool, name: str = "moderation",
               meta: dict[str, Any] | None = None) -> str:
    """Write config + weights of `model` into `path` (created if needed). Returns the model version.

    The version is `{name}-{sha256 of the weights, 12 hex}`, so two different models never share one.
    Existing calibration/thresholds files are left alone only if the caller keeps them consistent: a new
    model usually needs a new calibration, so `moderation calibrate` should be rerun.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    encoders = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    if any(model.config.finetune.get(m) == "full" for m in model.modalities):
        # Fully fine-tuned weights are stored in fp16 (half the size; the largest rounding, ~1e-3 relative, moves
        # no score measurably); they are loaded back into the fp32 encoder.
        encoders = {k: v.half() if v.is_floating_point() else v for k, v in encoders.items()}
    save_file(head, str(path / HEAD_FILE))
    if encoders:
        save_file(encoders, str(path / ENCODERS_FILE))
    elif (path / ENCODERS_FILE).exists():
        (path / ENCODERS_FILE).unlink()
    if model.config.lexical:
        if model.lexical is None:
            raise ValueError("the model's config has a lexical channel but none is attached (model.lexical)")
        model.lexical.save(path)
    else:
        for fname in (LEXICAL_JSON, LEXICAL_WEIGHTS):
            (path / fname).unlink(missing_ok=True)
    digest = hashlib.sha256()
    for fname in (HEAD_FILE, ENCODERS_FILE, LEXICAL_WEIGHTS, LEXICAL_JSON):
        if (path / fname).exists():
            digest.update((path / fname).read_bytes())
    version = f"{name}-{digest.hexdigest()[:12]}"
    config = {
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "trained": bool(trained),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.config.to_dict(),
        **(meta or {}),
    }
    write_json(path / CONFIG_FILE, config)
    return version


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read config, calibration and thresholds of a model directory (no weights). Raises ModelDirError."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model directory not found: {path}")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelDirError(f"{path} is not a model directory: it has no {CONFIG_FILE}. "
                            "Create one with `moderation train` (or save_model()), or omit --model to use the default model.")
    try:
        raw = read_json(cfg_path)
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{cfg_path} is not valid JSON: {exc}") from None
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{cfg_path} has format_version {raw.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(raw["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{cfg_path} has an invalid model config: {exc}") from None
    calibration = thresholds = None
    current = path / CALIBRATION_FILE  # named in the error: "Expecting value: line 1" alone says not which file
    try:
        if current.is_file():
            calibration = Calibration.from_json(read_json(current))
        current = path / THRESHOLDS_FILE
        if current.is_file():
            thresholds = Thresholds.from_json(read_json(current))
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{current}: {exc}") from None
    policy = None
    if (path / POLICY_FILE).is_file():
        try:
            policy = Policy.load(path / POLICY_FILE)
        except PolicyError as exc:
            raise ModelDirError(str(exc)) from None
    precision = None
    if (path / PRECISION_FILE).is_file():
        try:
            precision = PrecisionRecord.load(path / PRECISION_FILE)
        except PrecisionError as exc:
            raise ModelDirError(str(exc)) from None
    meta = {k: v for k, v in raw.items() if k not in ("format_version", "model_version", "trained", "model")}
    return ModelInfo(path=path, config=config, model_version=str(raw.get("model_version", "unknown")),
                     trained=bool(raw.get("trained", False)), calibration=calibration, thresholds=thresholds, meta=meta,
                     policy=policy, precision=precision)


def load_model(path: str | os.PathLike, *, text_encoder: torch.nn.Module | None = None,
               image_encoder: torch.nn.Module | None = None) -> tuple[ModerationModel, ModelInfo]:
    """Rebuild a model from its directory: architecture from config.json, weights from safetensors.

    Encoders are built from the registry (pretrained weights from their packages) unless injected.
    The head loads strictly; saved encoder tensors must all exist in the rebuilt encoders. Raises ModelDirError.
    """
    info = read_model_info(path)
    path = Path(path)
    if not (path / HEAD_FILE).is_file():
        raise ModelDirError(f"{path} has no {HEAD_FILE}")
    model = ModerationModel(info.config, text_encoder=text_encoder, image_encoder=image_encoder)
    try:
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)), strict=True)
    except RuntimeError as exc:
        raise ModelDirError(f"{path / HEAD_FILE} does not match the config's architecture: {exc}") from None
    expects_encoders = any(model.config.finetune.get(m, "frozen") != "frozen" for m in model.modalities)
    if expects_encoders:
        if not (path / ENCODERS_FILE).is_file():
            raise ModelDirError(f"{path}: config says encoders were fine-tuned but {ENCODERS_FILE} is missing")
        try:
            model.load_trainable_state_dict(load_file(str(path / ENCODERS_FILE)))
        except KeyError as exc:
            raise ModelDirError(f"{path / ENCODERS_FILE} {exc.args[0]}") from None
    if info.config.lexical:
        try:
            model.lexical = LexicalModel.load(path)
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ModelDirError(f"{path}: {exc}") from None
        if model.lexical.categories != model.categories:
            raise ModelDirError(f"{path / LEXICAL_JSON} scores {model.lexical.categories}, the model {model.categories}")
    model.eval()
    return model, info


def write_calibration(path: str | os.PathLike, calibration: Calibration) -> None:
    write_json(Path(path) / CALIBRATION_FILE, calibration.to_json())


def write_thresholds(path: str | os.PathLike, thresholds: Thresholds) -> None:
    write_json(Path(path) / THRESHOLDS_FILE, thresholds.to_json())


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    write_json(Path(path) / METRICS_FILE, metrics)


def default_model_dir() -> Path | None:
    """The trained default model shipped inside the package, or None while none has been trained."""
    here = Path(__file__).resolve().parent / "default_model"
    return here if (here / CONFIG_FILE).is_file() else None
