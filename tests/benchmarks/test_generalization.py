"""benchmarks.generalization --mode full: the reduced fine-tuned recipe's settings and argument errors."""

from __future__ import annotations

import pytest

from benchmarks.generalization import full_configs, main
from moderation.datasets import ALL_DATASETS
from training.recipes.default_model import MODEL, TRAINING


def test_full_configs_are_the_recipe_s_fine_tuning_with_every_dataset_capped():
    model_cfg, train_cfg = full_configs(2500, list(ALL_DATASETS))
    assert model_cfg.finetune == {"text": "full", "image": "frozen"}
    assert model_cfg.frozen_encoder_keys == ["word_embeddings"]
    assert model_cfg.text_encoder["name"] == MODEL["text_encoder"]["name"]
    assert model_cfg.text_encoder["layers"] == MODEL["text_encoder"]["layers"]
    assert train_cfg.mode == "full" and train_cfg.lr == TRAINING["full"]["lr"]
    assert train_cfg.encoder_lr == TRAINING["full"]["encoder_lr"] and train_cfg.epochs == 1
    assert train_cfg.max_train_rows == {n: 2500 for n in ALL_DATASETS}
    # two early-stopping evaluations over an epoch of 12 x 2,500 rows in batches of 32
    assert train_cfg.eval_every == 2500 * len(ALL_DATASETS) // 32 // 2
    assert train_cfg.early_stopping == "val"


def test_too_few_rows_are_refused(capsys):
    with pytest.raises(ValueError, match="rows-per-dataset"):
        full_configs(10, ["ethos"])
    assert main(["--mode", "full", "--rows-per-dataset", "10", "--data-root", "/nonexistent"]) == 2
    assert "rows-per-dataset" in capsys.readouterr().err


def test_per_dataset_terms_reach_the_fold_settings_and_need_full_mode(capsys):
    _, train_cfg = full_configs(2500, list(ALL_DATASETS), dataset_heads=True)
    assert train_cfg.dataset_heads and not train_cfg.dataset_bias
    assert main(["--dataset-heads", "--data-root", "/nonexistent"]) == 2  # frozen mode: refused before any data
    assert "--dataset-heads needs --mode full" in capsys.readouterr().err


def test_the_seed_reaches_the_fold_settings():
    assert full_configs(2500, list(ALL_DATASETS), seed=3)[1].seed == 3
