"""Multimodal harmful-content moderation: score posts (text, image or both) per harm category.

    from moderation import Scorer
    scorer = Scorer.default()                       # the shipped default model
    results = scorer.score([{"id": "1", "text": "have a nice day"}])

Heavy modules (torch, transformers, timm) load on first use of `Scorer`, `load_model`, ..., not at import.
"""

from __future__ import annotations

from typing import Any

from moderation.schema import (
    DEFAULT_CATEGORIES,
    MODALITIES,
    CategoryResult,
    ErrorCode,
    InputError,
    Post,
    ScoreResult,
)

__version__ = "0.1.0"

_LAZY = {
    "Scorer": "moderation.scorer",
    "ModerationModel": "moderation.model",
    "ModelConfig": "moderation.model",
    "load_model": "moderation.model_dir",
    "save_model": "moderation.model_dir",
    "default_model_dir": "moderation.model_dir",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moderation' has no attribute {name!r}")


__all__ = ["DEFAULT_CATEGORIES", "MODALITIES", "CategoryResult", "ErrorCode", "InputError", "Post", "ScoreResult",
           *_LAZY]
