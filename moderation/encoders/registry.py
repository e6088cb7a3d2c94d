"""Encoder registry: one builder per name for text and for image encoders.

This module holds only the tables and the decorators that fill them, so the encoder modules (`text`, `image`)
can register their builders without importing the factory that uses them (`moderation.encoders.factory`).
Registered names double as an allow-list: `list_encoders()` shows them, and an unknown name raises an
error that lists the known ones.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

#: Registered builders by name (filled by the decorators below when their modules are imported).
TEXT_BUILDERS: dict[str, Callable[..., Any]] = {}
IMAGE_BUILDERS: dict[str, Callable[..., Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


class UnknownEncoderError(ValueError):
    """Raised for an encoder name that is neither registered nor resolvable."""


def register_text_encoder(name: str) -> Callable[[F], F]:
    """Decorator: register a text-encoder builder under `name` (builder(**kwargs) -> TextEncoder)."""
    def deco(fn: F) -> F:
        if name in TEXT_BUILDERS:
            raise ValueError(f"text encoder {name!r} is already registered")
        TEXT_BUILDERS[name] = fn
        return fn
    return deco


def register_image_encoder(name: str) -> Callable[[F], F]:
    """Decorator: register an image-encoder builder under `name` (builder(**kwargs) -> ImageEncoder)."""
    def deco(fn: F) -> F:
        if name in IMAGE_BUILDERS:
            raise ValueError(f"image encoder {name!r} is already registered")
        IMAGE_BUILDERS[name] = fn
        return fn
    return deco
