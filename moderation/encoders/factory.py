"""Build an encoder by name: `create_text_encoder(name, **kw)`, `create_image_encoder(name, **kw)`.

Beyond the registered names, a text encoder may be any local Hugging Face folder (or a hub name already in
the local cache) and an image encoder any `timm` architecture name. Importing this module imports the
encoder modules, which registers their builders (as `timm.models` does for its architectures).
"""

from __future__ import annotations

from typing import Any

from moderation.encoders.image import TimmImageEncoder
from moderation.encoders.registry import IMAGE_BUILDERS, TEXT_BUILDERS, UnknownEncoderError
from moderation.encoders.text import HFTextEncoder, resolve_hf_source


def list_encoders(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered names: `list_encoders("text")`, `list_encoders("image")`, or both as a dict."""
    if kind == "text":
        return sorted(TEXT_BUILDERS)
    if kind == "image":
        return sorted(IMAGE_BUILDERS)
    if kind is None:
        return {"text": sorted(TEXT_BUILDERS), "image": sorted(IMAGE_BUILDERS)}
    raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")


def create_text_encoder(name: str, **kwargs: Any):
    """Build a text encoder by registered name, local Hugging Face folder, or cached hub name.

    kwargs go to the builder (e.g. pooling="mean"|"cls", max_length=128). Raises UnknownEncoderError.
    """
    if name in TEXT_BUILDERS:
        return TEXT_BUILDERS[name](**kwargs)
    source = resolve_hf_source(name, known=sorted(TEXT_BUILDERS))
    return HFTextEncoder(source, name=name, **kwargs)


def create_image_encoder(name: str, **kwargs: Any):
    """Build an image encoder by registered name or any timm architecture name.

    An unregistered timm name starts from random weights unless `checkpoint=` names a safetensors (or
    weights-only .pth) file. Raises UnknownEncoderError.
    """
    if name in IMAGE_BUILDERS:
        return IMAGE_BUILDERS[name](**kwargs)
    import timm  # deferred: timm's import is slow, and only an unregistered name needs its model list

    if timm.is_model(name):
        return TimmImageEncoder(name, **kwargs)
    raise UnknownEncoderError(
        f"unknown image encoder {name!r}. Registered: {', '.join(sorted(IMAGE_BUILDERS))}; "
        "any timm architecture name also works (see timm.list_models())."
    )
