"""`moderation train` end to end on tiny datasets and tiny encoders, plus its argument errors."""

from __future__ import annotations

import json

import pytest

from moderation.cli import main


def test_train_cli_writes_a_loadable_model_dir(tiny_specs, tmp_path, capsys):
    text_spec, meme_spec = tiny_specs
    out = tmp_path / "model"
    code = main(["train", "--data", f"{text_spec.path}:label=hate@t", "--data", f"{meme_spec.path.parent}:label=offensive",
                 "--text-encoder", "tiny-random-bert", "--image-encoder", "tiny-random-cnn", "--max-length", "16",
                 "--text-layers", "0,1", "--fusion", "concat", "--fusion-dim", "16", "--epochs", "3", "--batch-size", "8",
                 "--dataset-weight", "tiny_memes=2", "--early-stopping", "val", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out)])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["categories"] == ["hate", "offensive"] and cfg["model"]["fusion"] == "concat"
    assert cfg["model"]["text_encoder"]["layers"] == [0, 1]  # embeddings and the one layer, pooled side by side
    assert cfg["training"]["config"]["dataset_weights"] == {"tiny_memes": 2.0}
    assert [d["name"] for d in cfg["training"]["datasets"]] == ["t", "tiny_memes"]
    assert "model directory:" in capsys.readouterr().out
    from moderation.scorer import Scorer
    results = Scorer.from_dir(out, num_workers=0).score([{"id": "1", "text": "vermin scum"}])
    assert results[0].ok and set(results[0].categories) == {"hate", "offensive"}


def test_train_cli_default_head_is_late_fusion_with_a_lexical_channel(tiny_specs, tmp_path):
    text_spec, meme_spec = tiny_specs
    out = tmp_path / "late"
    assert main(["train", "--data", f"{text_spec.path}:label=hate@t", "--data", f"{meme_spec.path.parent}:label=offensive",
                 "--text-encoder", "tiny-random-bert", "--image-encoder", "tiny-random-cnn", "--max-length", "16",
                 "--fusion-dim", "16", "--epochs", "3", "--batch-size", "8", "--cache-dir", str(tmp_path / "c"),
                 "--calibrate", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["fusion"] == "late" and cfg["model"]["lexical"] is True
    train = cfg["training"]
    assert train["config"]["class_weight"] == "per_dataset" and train["config"]["stop_metric"] == "macro_auc"
    assert set(train["channels"]["blend"]["lexical_weight"]) == {"hate", "offensive"}
    assert train["languages"]["trained"] == ["en"]
    assert (out / "lexical.json").is_file() and (out / "policy.json").is_file()


def test_train_cli_reports_bad_arguments(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["train", "--data", "x", "--dataset-weight", "multioff", "--out", str(tmp_path / "m")]) == 2
    assert "expected NAME=NUMBER" in capsys.readouterr().err
    assert main(["train", "--data", "x", "--text-layers", "3,six", "--out", str(tmp_path / "m")]) == 2
    assert "expected comma-separated hidden-state indices" in capsys.readouterr().err


def test_train_cli_refuses_dataset_bias_without_fine_tuning(tiny_specs, tmp_path, capsys):
    text_spec, _ = tiny_specs
    assert main(["train", "--data", f"{text_spec.path}:label=hate@t", "--text-encoder", "tiny-random-bert",
                 "--dataset-bias", "--out", str(tmp_path / "m")]) == 2
    assert "dataset_bias is a fine-tuning option" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
