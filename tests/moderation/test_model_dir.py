"""Model directory: exact save/load round trip, refusals with clear messages, calibration/threshold files."""

from __future__ import annotations

import json

import pytest
import torch

from moderation.calibration import Calibration, Thresholds
from moderation.model import ModelConfig, ModerationModel, PreparedPost, collate
from moderation.model_dir import (
    ModelDirError,
    load_model,
    read_model_info,
    save_model,
    write_calibration,
    write_thresholds,
)


def _batch(model):
    items = [PreparedPost("a", "hello world", torch.rand(3, *model.encoders["image"].data_config["input_size"][1:])),
             PreparedPost("b", "text only", None),
             PreparedPost("c", None, torch.rand(3, *model.encoders["image"].data_config["input_size"][1:]))]
    return collate(items, model)


def test_round_trip_is_exact(tiny_model, tmp_path):
    with torch.no_grad():  # make the head differ from a fresh init, so a load that did nothing would fail
        for p in tiny_model.head.parameters():
            p.add_(0.5)
    version = save_model(tiny_model, tmp_path / "m", trained=True, name="tiny")
    loaded, info = load_model(tmp_path / "m")
    batch = _batch(tiny_model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), tiny_model(batch), rtol=0, atol=0)
    assert info.model_version == version and version.startswith("tiny-") and info.trained
    assert info.config == tiny_model.config
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "head.safetensors"]


def test_version_changes_with_weights(tiny_model, tmp_path):
    v1 = save_model(tiny_model, tmp_path / "a", trained=True)
    with torch.no_grad():
        tiny_model.head.classifier.bias.add_(1.0)
    assert save_model(tiny_model, tmp_path / "b", trained=True) != v1


def test_fully_finetuned_encoder_round_trips(tiny_config, tmp_path):
    tiny_config.finetune = {"text": "full", "image": "frozen"}
    model = ModerationModel(tiny_config).eval()
    with torch.no_grad():
        model.encoders["text"].model.embeddings.word_embeddings.weight.mul_(2.0)
    save_model(model, tmp_path / "m", trained=True)
    assert (tmp_path / "m" / "encoders.safetensors").is_file()
    loaded, _ = load_model(tmp_path / "m")
    batch = _batch(model)
    # Stored in fp16: the loaded model is the saved one up to fp16 rounding of its weights.
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), rtol=2e-3, atol=2e-4)
        for key, value in loaded.encoders["text"].state_dict().items():
            torch.testing.assert_close(value, model.encoders["text"].state_dict()[key].half().float())


def test_refuses_folder_without_config(tmp_path):
    with pytest.raises(ModelDirError, match="has no config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelDirError, match="not found"):
        load_model(tmp_path / "nope")


def test_refuses_bad_config_and_mismatched_weights(tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg["model"]["fusion_dim"] = 99
    (tiny_model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match="does not match the config's architecture"):
        load_model(tiny_model_dir)
    cfg["model"]["colour"] = "blue"
    (tiny_model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match="unknown model config fields"):
        read_model_info(tiny_model_dir)
    (tiny_model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        read_model_info(tiny_model_dir)


def test_calibration_and_thresholds_files(tiny_model_dir):
    write_calibration(tiny_model_dir, Calibration("cal-1", {"hate": {"method": "temperature", "params": {"temperature": 2.0}}}))
    write_thresholds(tiny_model_dir, Thresholds("thr-1", {"hate": {"threshold": 0.7}, "offensive": {"threshold": None}}, 0.9))
    info = read_model_info(tiny_model_dir)
    assert info.calibration.version == "cal-1" and info.thresholds.threshold("hate") == 0.7
    assert info.thresholds.threshold("offensive") is None
    write_thresholds(tiny_model_dir, Thresholds("thr-2", {"hate": {"threshold": 1.7}}))
    with pytest.raises(ModelDirError, match="must be in \\[0, 1\\]"):
        read_model_info(tiny_model_dir)


def test_config_validation():
    with pytest.raises(ValueError, match="duplicate categories"):
        ModelConfig(categories=["hate", "Hate"])
    with pytest.raises(ValueError, match="needs a text encoder, an image encoder or both"):
        ModelConfig(text_encoder=None, image_encoder=None)
    with pytest.raises(ValueError, match="LoRA is supported for the text encoder only"):
        ModelConfig(finetune={"image": "lora"})
