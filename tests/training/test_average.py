"""training.average: tensor-by-tensor interpolation of two model directories of one architecture."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_CONFIG
from training.average import average_models, main


def _save(tmp_path, name: str, seed: int, **overrides):
    from moderation.model import ModelConfig, ModerationModel
    from moderation.model_dir import save_model
    cfg = ModelConfig.from_dict({**{k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()},
                                 "finetune": {"text": "full", "image": "frozen"}, **overrides})
    torch.manual_seed(seed)
    model = ModerationModel(cfg).eval()
    with torch.no_grad():  # the encoders start from the same (registry) weights: make the two models' differ
        for p in model.encoders["text"].parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(model, tmp_path / name, trained=True, name="tiny",
               meta={"training": {"best": {"score": 0.5 + seed / 10}, "seconds": 10.0 + seed}})
    return tmp_path / name


def test_the_average_is_the_weighted_mean_of_head_and_encoder(tmp_path):
    from moderation.model_dir import load_model
    a, b = _save(tmp_path, "a", 0), _save(tmp_path, "b", 1)
    version = average_models(a, b, 0.25, tmp_path / "avg", name="tiny")
    ma, ia = load_model(a)
    mb, ib = load_model(b)
    mx, ix = load_model(tmp_path / "avg")
    assert ix.model_version == version and ix.trained
    for key, t in mx.head.state_dict().items():
        ta, tb = ma.head.state_dict()[key], mb.head.state_dict()[key]
        torch.testing.assert_close(t, 0.75 * ta + 0.25 * tb)
        if not torch.equal(ta, tb):
            assert not torch.allclose(t, ta) and not torch.allclose(t, tb)
    enc = {k: v for k, v in mx.trainable_state_dict().items()}
    ea, eb = ma.trainable_state_dict(), mb.trainable_state_dict()
    assert enc.keys() == ea.keys()
    for key, t in enc.items():  # stored in fp16: rounding of ~1e-3 relative
        torch.testing.assert_close(t, 0.75 * ea[key] + 0.25 * eb[key], rtol=2e-3, atol=2e-3)
    meta = json.loads((tmp_path / "avg" / "config.json").read_text())["averaged"]
    assert meta["models"] == [ia.model_version, ib.model_version] and meta["weight_of_second"] == 0.25
    assert meta["command"].startswith("python -m training.average")
    # the second run's early-stopping point is not the average's; its other training records are kept
    assert "best" not in ix.meta["training"] and ix.meta["training"]["seconds"] == 11.0
    assert meta["second_model_early_stopping"] == {"score": 0.6}


def test_weight_zero_gives_back_the_first_model(tmp_path):
    from moderation.model_dir import load_model
    a, b = _save(tmp_path, "a", 0), _save(tmp_path, "b", 1)
    average_models(a, b, 0.0, tmp_path / "avg")
    ma, _ = load_model(a)
    mx, _ = load_model(tmp_path / "avg")
    for key, t in mx.head.state_dict().items():
        assert torch.equal(t, ma.head.state_dict()[key])


def test_different_architectures_and_bad_weights_are_refused(tmp_path):
    a = _save(tmp_path, "a", 0)
    other = _save(tmp_path, "b", 1, fusion_dim=8)
    with pytest.raises(ValueError, match="different model configs"):
        average_models(a, other, 0.5, tmp_path / "avg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_models(a, a, 1.5, tmp_path / "avg2")


def test_cli_writes_the_average_and_refuses_a_non_empty_out(tmp_path, capsys):
    a, b = _save(tmp_path, "a", 0), _save(tmp_path, "b", 1)
    assert main([str(a), str(b), "--out", str(tmp_path / "avg")]) == 0
    assert "--skip-train" in capsys.readouterr().out
    assert main([str(a), str(b), "--out", str(tmp_path / "avg")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "avg3")]) == 2
    assert "error:" in capsys.readouterr().err
