"""Encoder registry: one builder per name for text and for image encoders.

Registered names double as an allow-list: `list_encoders()` shows them, and an unknown name raises an
error that lists the known ones. Beyond the registered names, a text encoder may be any local Hugging Face
folder (or a hub name already in the local cache) and an image encoder any `timm` architecture name.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

_TEXT: dict[str, Callable[..., Any]] = {}
_IMAGE: dict[str, Callable[..., Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


class UnknownEncoderError(ValueError):
    """Raised for an encoder name that is neither registered nor resolvable."""


def register_text_encoder(name: str) -> Callable[[F], F]:
    """Decorator: register a text-encoder builder under `name` (builder(**kwargs) -> TextEncoder)."""
    def deco(fn: F) -> F:
        if name in _TEXT:
            raise ValueError(f"text encoder {name!r} is already registered")
        _TEXT[name] = fn
        return fn
    return deco


def register_image_encoder(name: str) -> Callable[[F], F]:
    """Decorator: register an image-encoder builder under `name` (builder(**kwargs) -> ImageEncoder)."""
    def deco(fn: F) -> F:
        if name in _IMAGE:
            raise ValueError(f"image encoder {name!r} is already registered")
        _IMAGE[name] = fn
        return fn
    return deco


def list_encoders(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered names: `list_encoders("text")`, `list_encoders("image")`, or both as a dict."""
    _load_builtin()
    if kind == "text":
        return sorted(_TEXT)
    if kind == "image":
        return sorted(_IMAGE)
    if kind is None:
        return {"text": sorted(_TEXT), "image": sorted(_IMAGE)}
    raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")


def create_text_encoder(name: str, **kwargs: Any):
    """Build a text encoder by registered name, local Hugging Face folder, or cached hub name.

    kwargs go to the builder (e.g. pooling="mean"|"cls", max_length=128). Raises UnknownEncoderError.
    """
    _load_builtin()
    if name in _TEXT:
        return _TEXT[name](**kwargs)
    from moderation.encoders.text import HFTextEncoder, resolve_hf_source
    source = resolve_hf_source(name, known=sorted(_TEXT))
    return HFTextEncoder(source, name=name, **kwargs)


def create_image_encoder(name: str, **kwargs: Any):
    """Build an image encoder by registered name or any timm architecture name.

    An unregistered timm name starts from random weights unless `checkpoint=` names a safetensors (or
    weights-only .pth) file. Raises UnknownEncoderError.
    """
    _load_builtin()
    if name in _IMAGE:
        return _IMAGE[name](**kwargs)
    import timm
    if timm.is_model(name):
        from moderation.encoders.image import TimmImageEncoder
        return TimmImageEncoder(name, **kwargs)
    raise UnknownEncoderError(
        f"unknown image encoder {name!r}. Registered: {', '.join(sorted(_IMAGE))}; "
        "any timm architecture name also works (see timm.list_models())."
    )


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators; done lazily so `import moderation` stays light.
    import moderation.encoders.image  # noqa: F401
    import moderation.encoders.text  # noqa: F401
