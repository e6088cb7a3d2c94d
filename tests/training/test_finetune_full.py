"""Full fine-tuning: frozen word embeddings, fp16 storage, gradient accumulation, checkpoints and --resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from training.finetune import CHECKPOINT_FILE
from training.train import TrainConfig, train


def _full_config(tiny_model_config, **kw):
    from moderation.model import ModelConfig
    return ModelConfig.from_dict({**tiny_model_config.to_dict(), **kw})


def _cfg(tmp_path, **kw):
    base = dict(mode="full", epochs=2, batch_size=4, lr=3e-3, encoder_lr=1e-3, early_stopping="val",
                cache_dir=str(tmp_path / "cache"), eval_every=1, patience=100)
    return TrainConfig(**{**base, **kw})


def test_frozen_word_embeddings_are_neither_trained_nor_saved(tiny_specs, tiny_model_config, tmp_path):
    from moderation.encoders import create_text_encoder
    from moderation.model_dir import load_model

    mc = _full_config(tiny_model_config, frozen_encoder_keys=["word_embeddings"])
    result = train(tiny_specs, tmp_path / "m", mc, _cfg(tmp_path, epochs=1), progress=False, log=lambda _: None)
    stored = load_file(str(tmp_path / "m" / "encoders.safetensors"))
    assert stored and not any("word_embeddings" in k for k in stored)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    fresh = create_text_encoder(**tiny_model_config.text_encoder).state_dict()
    trained = result.model.encoders["text"].state_dict()
    key = next(k for k in trained if "word_embeddings" in k)
    assert torch.equal(trained[key], fresh[key])  # frozen at the pretrained values
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if "word_embeddings" not in k)
    model, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(model.encoders["text"].state_dict()[key], fresh[key])


def test_gradient_accumulation_takes_one_step_per_window(tiny_specs, tiny_model_config, tmp_path):
    result = train(tiny_specs, tmp_path / "m", _full_config(tiny_model_config), _cfg(tmp_path, epochs=1, grad_accum=2),
                   progress=False, log=lambda _: None)
    assert [h["step"] for h in result.history] == [1, 2, 3, 4]  # 8 batches of 4, two per step


def test_resume_after_a_stop_ends_where_an_uninterrupted_run_ends(tiny_specs, tiny_model_config, tmp_path):
    mc = _full_config(tiny_model_config)
    whole = train(tiny_specs, tmp_path / "whole", mc, _cfg(tmp_path, checkpoint_every=1), progress=False, log=lambda _: None)
    # A run stopped after its first step (a time budget that is over at once) leaves a checkpoint ...
    cut = train(tiny_specs, tmp_path / "cut", mc, _cfg(tmp_path, checkpoint_every=1, time_budget_s=1e-9),
                progress=False, log=lambda _: None)
    assert len(cut.history) == 1 and "stopped" in cut.best
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file()
    # ... from which --resume runs the remaining steps, on the same batches: the same weights at the end.
    resumed = train(tiny_specs, tmp_path / "cut", mc, _cfg(tmp_path, checkpoint_every=1, resume=True),
                    progress=False, log=lambda _: None)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history]
    assert "stopped" not in resumed.best
    for key, value in whole.model.head.state_dict().items():
        torch.testing.assert_close(resumed.model.head.state_dict()[key], value)
    log = [json.loads(line) for line in (tmp_path / "cut" / "training_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [h["step"] for h in whole.history]  # the log is continued, not restarted


def test_resume_refuses_a_missing_or_foreign_checkpoint(tiny_specs, tiny_model_config, tmp_path):
    mc = _full_config(tiny_model_config)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_specs, tmp_path / "none", mc, _cfg(tmp_path, resume=True), progress=False, log=lambda _: None)
    train(tiny_specs, tmp_path / "m", mc, _cfg(tmp_path, epochs=1, checkpoint_every=1), progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="same data and settings"):
        train(tiny_specs, tmp_path / "m", mc, _cfg(tmp_path, epochs=1, batch_size=8, resume=True),
              progress=False, log=lambda _: None)


def test_cuda_device_is_refused_clearly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        TrainConfig(mode="full", device="cuda")


def test_dataset_bias_is_learnt_centred_recorded_and_resumed(tiny_specs, tiny_model_config, tmp_path):
    mc = _full_config(tiny_model_config)
    whole, table = _trained_with(tiny_specs, mc, tmp_path, "dataset_bias", dataset_bias=True)
    for cat in mc.categories:
        offsets = [row[cat] for row in table.values()]
        assert abs(sum(offsets)) < 1e-3 and any(abs(o) > 1e-4 for o in offsets)  # centred, and learnt
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["training"]["best"]["dataset_bias"] == table
    # --resume restores them: a stopped and resumed run ends where the uninterrupted one ends.
    _assert_resume_ends_alike(tiny_specs, mc, tmp_path, whole, "dataset_bias", dataset_bias=True)


def _trained_with(tiny_specs, mc, tmp_path, record: str, **settings):
    """A run with per-dataset terms (checkpointed every step) and its best `record` table, one row per dataset."""
    whole = train(tiny_specs, tmp_path / "whole", mc, _cfg(tmp_path, checkpoint_every=1, **settings),
                  progress=False, log=lambda _: None)
    table = whole.best[record]
    assert sorted(table) == sorted({s.name for s in tiny_specs})
    return whole, table


def _assert_resume_ends_alike(tiny_specs, mc, tmp_path, whole, record: str, **settings):
    """A run stopped after its first step and resumed ends with `whole`'s product head and best `record` table."""
    train(tiny_specs, tmp_path / "cut", mc, _cfg(tmp_path, checkpoint_every=1, time_budget_s=1e-9, **settings),
          progress=False, log=lambda _: None)
    resumed = train(tiny_specs, tmp_path / "cut", mc, _cfg(tmp_path, checkpoint_every=1, resume=True, **settings),
                    progress=False, log=lambda _: None)
    for name, row in whole.best[record].items():
        assert resumed.best[record][name] == pytest.approx(row, abs=2e-4)
    for key, value in whole.model.head.state_dict().items():
        torch.testing.assert_close(resumed.model.head.state_dict()[key], value)


def test_dataset_bias_is_refused_for_frozen_training():
    with pytest.raises(ValueError, match="fine-tuning option"):
        TrainConfig(mode="frozen", dataset_bias=True)
    with pytest.raises(ValueError, match="dataset_heads is a fine-tuning option"):
        TrainConfig(mode="frozen", dataset_heads=True)


def test_dataset_heads_are_learnt_recorded_resumed_and_left_out_of_the_model(tiny_specs, tiny_model_config, tmp_path):
    from moderation.model_dir import load_model

    mc = _full_config(tiny_model_config)
    whole, norms = _trained_with(tiny_specs, mc, tmp_path, "dataset_heads_norm", dataset_heads=True)
    assert any(v > 1e-4 for row in norms.values() for v in row.values())  # learnt (they start at 0)
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["training"]["best"]["dataset_heads_norm"] == norms
    # The heads belong to training only: the saved model is the product head alone, same tensors as in memory.
    loaded, _ = load_model(tmp_path / "whole")
    assert set(loaded.head.state_dict()) == set(whole.model.head.state_dict())
    ck = torch.load(tmp_path / "whole" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["dataset_heads"].shape[0] == len(tiny_specs)
    _assert_resume_ends_alike(tiny_specs, mc, tmp_path, whole, "dataset_heads_norm", dataset_heads=True)


def test_dataset_heads_change_training_only_through_the_loss(tiny_specs, tiny_model_config, tmp_path):
    """Same data and seed with and without the heads: the product heads differ (the heads took part of the loss)."""
    mc = _full_config(tiny_model_config)
    plain = train(tiny_specs, tmp_path / "plain", mc, _cfg(tmp_path), progress=False, log=lambda _: None)
    heads = train(tiny_specs, tmp_path / "heads", mc, _cfg(tmp_path, dataset_heads=True), progress=False,
                  log=lambda _: None)
    differ = [k for k, v in plain.model.head.state_dict().items()
              if v.is_floating_point() and not torch.allclose(v, heads.model.head.state_dict()[k])]
    assert differ


def test_init_from_starts_at_a_trained_models_weights(tiny_specs, tiny_model_config, tmp_path):
    from moderation.model_dir import load_model

    mc = _full_config(tiny_model_config)
    train(tiny_specs, tmp_path / "first", mc, _cfg(tmp_path, epochs=1), progress=False, log=lambda _: None)
    first, _ = load_model(tmp_path / "first")
    # With no learning (rates of 0) a further run ends at the weights it started from, not at the pretrained ones.
    lines: list[str] = []
    still = train(tiny_specs, tmp_path / "still", mc, _cfg(tmp_path, epochs=1, lr=0.0, encoder_lr=0.0,
                                                         init_from=str(tmp_path / "first")),
                  progress=False, log=lines.append)
    for part in ("head", "text"):
        a = first.head if part == "head" else first.encoders["text"]
        b = still.model.head if part == "head" else still.model.encoders["text"]
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value)
    assert any("starting from the weights of" in line for line in lines)
    saved = json.loads((tmp_path / "still" / "config.json").read_text())
    assert saved["training"]["init_from"]["model_version"] == json.loads(
        (tmp_path / "first" / "config.json").read_text())["model_version"]
    # A further epoch that learns moves away from them.
    more = train(tiny_specs, tmp_path / "more", mc, _cfg(tmp_path, epochs=1, init_from=str(tmp_path / "first")),
                 progress=False, log=lambda _: None)
    assert any(not torch.equal(more.model.head.state_dict()[k], v) for k, v in first.head.state_dict().items())


def test_init_from_refuses_another_architecture_or_a_missing_folder(tiny_specs, tiny_model_config, tmp_path):
    mc = _full_config(tiny_model_config)
    train(tiny_specs, tmp_path / "first", mc, _cfg(tmp_path, epochs=1), progress=False, log=lambda _: None)
    other = _full_config(tiny_model_config, categories=list(mc.categories)[:1])
    with pytest.raises(ValueError, match="init_from"):
        train(tiny_specs, tmp_path / "x", other, _cfg(tmp_path, epochs=1, init_from=str(tmp_path / "first")),
              progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="init_from"):
        train(tiny_specs, tmp_path / "y", mc, _cfg(tmp_path, epochs=1, init_from=str(tmp_path / "nowhere")),
              progress=False, log=lambda _: None)


def test_init_from_is_refused_for_frozen_training_and_with_resume():
    with pytest.raises(ValueError, match="fine-tuning option"):
        TrainConfig(mode="frozen", init_from="m")
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(mode="full", init_from="m", resume=True)
