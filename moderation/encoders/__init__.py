"""Text and image encoders behind one registry. See `create_text_encoder` / `create_image_encoder`."""

from moderation.encoders.factory import create_image_encoder, create_text_encoder, list_encoders
from moderation.encoders.registry import UnknownEncoderError, register_image_encoder, register_text_encoder

__all__ = [
    "UnknownEncoderError",
    "create_image_encoder",
    "create_text_encoder",
    "list_encoders",
    "register_image_encoder",
    "register_text_encoder",
]
