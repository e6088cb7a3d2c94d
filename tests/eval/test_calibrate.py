"""Calibration fits, threshold search, and calibrate_model_dir through the real Scorer."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import log_loss

from moderation.calibration import Calibration, Thresholds, sigmoid
from moderation.scorer import Scorer

from eval.calibrate import (
    CalibrationSplitWarning,
    calibrate_model_dir,
    fit_calibration,
    fit_thresholds,
    training_overlap,
)
from eval.metrics import clopper_pearson_lower
from eval.predict import predict_logits
from eval.thresholds import select_threshold


def _miscalibrated(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits 3x too confident and shifted: true P(y=1 | z) = sigmoid(z / 3 - 0.5)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 6, n)
    y = (rng.random(n) < sigmoid(z / 3 - 0.5)).astype(float)
    return z[:, None], y[:, None]


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_each_method_improves_log_loss_on_held_out_data(method):
    z, y = _miscalibrated()
    z_test, y_test = _miscalibrated(seed=1)
    cal = fit_calibration(z, y, ["hate"], method=method)
    entry = cal.categories["hate"]
    assert entry["method"] == method
    before = log_loss(y_test[:, 0], sigmoid(z_test[:, 0]))
    after = log_loss(y_test[:, 0], np.clip(cal.apply(z_test, ["hate"])[:, 0], 1e-15, 1 - 1e-15))
    assert after < before - 0.05, (method, before, after)
    if method == "temperature":
        assert 2.0 < entry["params"]["temperature"] < 4.0
    if method == "platt":
        assert entry["params"]["a"] == pytest.approx(1 / 3, abs=0.05) and entry["params"]["b"] == pytest.approx(-0.5, abs=0.15)


def test_auto_picks_lowest_cv_log_loss_and_records_scores():
    z, y = _miscalibrated()
    cal = fit_calibration(z, y, ["hate"], method="auto", seed=3)
    entry = cal.categories["hate"]
    cv = entry["cv_log_loss"]
    assert set(cv) == {"identity", "temperature", "platt", "isotonic"}
    assert entry["method"] == min(("temperature", "platt", "isotonic"), key=cv.get)
    assert entry["method"] == "platt"  # the shift makes temperature alone insufficient
    assert cv["identity"] > cv["platt"]
    # Round trip through the artifact format the scorer reads.
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    np.testing.assert_allclose(again.apply(z, ["hate"]), cal.apply(z, ["hate"]))
    assert cal.version.startswith("cal-")


def test_nan_labels_ignored_and_tiny_categories_left_alone():
    z, y = _miscalibrated(400)
    labels = np.column_stack([y[:, 0], np.full(400, np.nan)])
    labels[:50, 0] = np.nan
    logits = np.column_stack([z[:, 0], z[:, 0]])
    cal = fit_calibration(logits, labels, ["hate", "offensive"], method="temperature")
    assert cal.categories["hate"]["n"] == 350
    assert cal.categories["offensive"]["method"] == "identity" and "not fitted" in cal.categories["offensive"]["note"]
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration(logits, labels, ["hate", "offensive"], method="beta")


def test_threshold_reaches_target_with_highest_recall():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(float)
    p = np.clip(0.45 * y + 0.55 * rng.random(2000), 0, 1)
    r = select_threshold(y, p, 0.9, 0.95, min_positives=10)
    assert r["status"] == "ok"
    t = r["threshold"]
    flagged = p >= t
    k, n = int(y[flagged].sum()), int(flagged.sum())
    assert r["precision_lower_bound"] == pytest.approx(clopper_pearson_lower(k, n, 0.95))
    assert r["precision_lower_bound"] >= 0.9
    assert r["recall"] == pytest.approx(k / y.sum())
    # No lower threshold (higher recall) passes: brute force over every candidate.
    for cand in np.unique(p[p < t]):
        f = p >= cand
        if y[f].sum() > k:
            assert clopper_pearson_lower(int(y[f].sum()), int(f.sum()), 0.95) < 0.9


def test_unreachable_target_gives_null_and_reason():
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.5).astype(float)
    p = rng.random(300)  # no signal
    thr = fit_thresholds(p[:, None], y[:, None], ["hate"], target_precision=0.9)
    entry = thr.categories["hate"]
    assert entry["threshold"] is None and entry["status"] == "unreachable"
    assert "unreachable" in entry["reason"] and entry["best_lower_bound"] < 0.9
    assert thr.threshold("hate") is None
    few = fit_thresholds(p[:30, None], y[:30, None], ["hate"], min_positives=50)
    assert few.categories["hate"]["status"] == "too_few_positives"
    with pytest.raises(ValueError, match="target_precision must be in"):
        fit_thresholds(p[:, None], y[:, None], ["hate"], target_precision=1.0)


def test_training_overlap_reads_config_defensively():
    assert training_overlap({}, ["a"], ["train"]) == 0
    assert training_overlap({"training": {"splits": ["train"]}}, ["a", "a"], ["train", "val"]) == 1
    assert training_overlap({"training": {"splits": "train", "datasets": ["b"]}}, ["a"], ["train"]) == 0
    assert training_overlap({"training": {"splits": {"a": ["train", "val"]}}}, ["a", "b"], ["val", "val"]) == 1
    assert training_overlap({"training": {"splits": 3}}, ["a"], ["train"]) == 0


def test_calibrate_model_dir_writes_files_the_scorer_uses(tiny_model_dir, tiny_scorer, labelled_set):
    labelled_set = labelled_set.subset(np.asarray(labelled_set.splits) == "val")  # a calibration split only
    posts = [dict(p) for p in labelled_set.posts]
    before = tiny_scorer.score(posts[:40], image_root="/")
    assert not any(r.flagged for r in before) and all(r.ok for r in before)  # no thresholds yet: nothing flags

    cal, thr = calibrate_model_dir(tiny_model_dir, labelled_set, target_precision=0.9, progress=False, min_positives=10)
    assert (tiny_model_dir / "calibration.json").is_file() and (tiny_model_dir / "thresholds.json").is_file()
    assert thr.categories["offensive"]["status"] == "ok"
    assert thr.categories["hate"]["threshold"] is None and thr.categories["hate"]["status"] == "unreachable"
    assert thr.version.startswith("thr-") and thr.meta["calibration_version"] == cal.version

    scorer = Scorer.from_dir(tiny_model_dir, batch_size=16, num_workers=0)
    assert scorer.thresholds_version == thr.version and scorer.thresholds()["hate"] is None
    results = scorer.score(posts, image_root="/")
    assert all(r.ok for r in results)
    flagged_off = np.array([r.categories["offensive"].flagged for r in results])
    labels_off = labelled_set.labels[:, labelled_set.categories.index("offensive")]
    assert flagged_off.any()
    assert labels_off[flagged_off].mean() >= 0.9  # the labels follow the model, so precision holds here
    assert not any(r.categories["hate"].flagged for r in results)  # unreachable -> never flags
    # What the scorer returns is the calibrated probability the thresholds were fitted on.
    preds = predict_logits(scorer, labelled_set, progress=False)
    probs = preds.probs(scorer.info.calibration)
    np.testing.assert_allclose([r.categories["offensive"].score for r in results], probs[:, 1], rtol=1e-6, atol=1e-6)

    # Refitting with another target changes the content and therefore the version.
    _, thr2 = calibrate_model_dir(tiny_model_dir, labelled_set, target_precision=0.8, progress=False,
                                  min_positives=10, scorer=scorer, predictions=preds)
    assert thr2.version != thr.version
    assert scorer.thresholds_version == thr2.version  # the passed scorer was updated in place
    assert Thresholds.from_json(json.loads((tiny_model_dir / "thresholds.json").read_text())).version == thr2.version


def test_calibrate_warns_on_training_rows(tiny_model_dir, labelled_set):
    cfg_path = tiny_model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["training"] = {"splits": ["val"], "datasets": ["toyset"]}
    cfg_path.write_text(json.dumps(cfg))
    rows = labelled_set.subset(np.arange(40))  # val and test rows alternate
    with pytest.warns(CalibrationSplitWarning) as record:
        calibrate_model_dir(tiny_model_dir, rows, progress=False, min_positives=1)
    messages = [str(w.message) for w in record]
    assert any("20 of 40 calibration rows come from dataset splits this model was trained on" in m for m in messages)
    assert any("from a 'test' split" in m for m in messages)


def test_calibrate_refuses_when_nothing_scores(tiny_model_dir, labelled_set):
    broken = labelled_set.subset(np.arange(5))
    for p in broken.posts:
        p["text"], p["image"] = None, "/nonexistent/x.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="could be scored"):
            calibrate_model_dir(tiny_model_dir, broken, progress=False)


def test_input_type_gets_its_own_calibration_when_it_has_enough_data():
    """Memes (image+text) whose logits mean something else than tweets' get a Platt map of their own;
    a type with too few labels (image only, 10 rows) falls back to the pooled calibration."""
    from moderation.calibration import Calibration

    rng = np.random.default_rng(0)
    n_text, n_meme, n_img = 2000, 400, 10
    y = rng.random(n_text + n_meme + n_img) < 0.4
    z = np.where(y, 1.5, -1.5) + rng.normal(0, 1.5, len(y))
    z[n_text:n_text + n_meme] += 3.0  # the meme logits run high: a pooled map would over-flag memes
    types = np.array(["text"] * n_text + ["image+text"] * n_meme + ["image"] * n_img, dtype=object)
    cal = fit_calibration(z[:, None], y[:, None].astype(float), ["offensive"], method="platt", input_types=types)
    entry = cal.categories["offensive"]
    assert set(entry["input_types"]) == {"text", "image+text"}
    assert entry["input_types"]["image+text"]["n"] == n_meme
    meme = slice(n_text, n_text + n_meme)
    own = cal.apply(z[:, None], ["offensive"], types)[meme, 0]
    pooled = cal.apply(z[:, None], ["offensive"])[meme, 0]
    # Per-type calibration brings the memes' mean probability back to their base rate; the pooled map does not.
    assert abs(own.mean() - y[meme].mean()) < 0.05 < abs(pooled.mean() - y[meme].mean())
    img = slice(n_text + n_meme, None)
    np.testing.assert_allclose(cal.apply(z[:, None], ["offensive"], types)[img], cal.apply(z[:, None], ["offensive"])[img])
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    np.testing.assert_allclose(again.apply(z[:, None], ["offensive"], types), cal.apply(z[:, None], ["offensive"], types))
    with pytest.raises(ValueError, match="input_types has"):
        cal.apply(z[:, None], ["offensive"], types[:5])


def test_posts_scored_from_their_text_take_the_text_calibration():
    """Where the image adds nothing to a category's score, a post with text and an image is a text post to the
    model: its rows join the text rows, and it gets the text's map rather than one of its own (which, fitted on
    the one meme dataset, would only learn that dataset's base rate)."""
    rng = np.random.default_rng(1)
    n_text, n_meme, n_img = 2000, 300, 100  # the image-only rows: the memes' pictures alone, as the recipe adds
    y = np.concatenate([rng.random(n_text) < 0.1, rng.random(n_meme) < 0.4, rng.random(n_img) < 0.4])
    z = np.where(y, 1.5, -1.5) + rng.normal(0, 1.5, len(y))
    types = np.array(["text"] * n_text + ["image+text"] * n_meme + ["image"] * n_img, dtype=object)
    own = fit_calibration(z[:, None], y[:, None].astype(float), ["offensive"], method="platt", input_types=types)
    assert own.categories["offensive"]["input_types"]["image+text"]["n"] == n_meme
    shared = fit_calibration(z[:, None], y[:, None].astype(float), ["offensive"], method="platt", input_types=types,
                             same_as_text={"offensive": {"image+text"}})
    entry = shared.categories["offensive"]["input_types"]
    assert entry["text"]["n"] == n_text + n_meme and entry["image+text"]["params"] == entry["text"]["params"]
    assert entry["image+text"]["as"].startswith("text")
    # The same logit gets the same probability whether the post came with an image or not.
    probe = np.array([[0.5], [0.5]])
    p = shared.apply(probe, ["offensive"], np.array(["text", "image+text"], dtype=object))
    assert p[0, 0] == p[1, 0]
    q = own.apply(probe, ["offensive"], np.array(["text", "image+text"], dtype=object))
    assert q[1, 0] > q[0, 0]  # its own map pulled the memes toward their 40% base rate


def test_a_refit_keeps_the_policy_term_lists_and_their_version(tiny_model_dir, labelled_set):
    """Term lists are rules a team wrote: `calibrate` refits the thresholds around them, never drops them."""
    from moderation.policy import Policy
    from moderation.termlists import FORMAT, TermList

    val = labelled_set.subset(np.asarray(labelled_set.splits) == "val")
    calibrate_model_dir(tiny_model_dir, val, progress=False, min_positives=10)
    (tiny_model_dir / "lists").mkdir()
    TermList.from_dict({"format": FORMAT, "format_version": 1, "name": "threats", "category": "hate",
                        "action": "block", "terms": ["kill you"]}).save(tiny_model_dir / "lists" / "threats.json")
    data = json.loads((tiny_model_dir / "policy.json").read_text())
    (tiny_model_dir / "policy.json").write_text(json.dumps({**data, "term_lists": ["lists/threats.json"]}))
    listed = Policy.load(tiny_model_dir)

    calibrate_model_dir(tiny_model_dir, val, progress=False, min_positives=10, target_precision=0.8)
    written = json.loads((tiny_model_dir / "policy.json").read_text())
    assert written["term_lists"] == ["lists/threats.json"]  # still relative to the model directory
    again = Policy.load(tiny_model_dir)
    assert [tl.version for tl in again.term_lists] == [tl.version for tl in listed.term_lists]
    assert again.version.endswith("+" + listed.version.split("+")[1])  # the lists' part of the version is the same
    scorer = Scorer.from_dir(tiny_model_dir, num_workers=0)
    result = scorer.score([{"id": "1", "text": "I will kill you"}])[0]
    assert result.action == "block" and result.reasons[0]["rule"] == "term_list"
    assert result.policy_version == again.version


def test_calibrate_model_dir_each_dataset_rule_raises_the_policy_block_only(tiny_model_dir):
    """block_rule="each_dataset" reaches policy.json through calibrate_model_dir with each row's dataset:
    the policy's block is raised until the hard dataset keeps the target; thresholds.json stays pooled."""
    from types import SimpleNamespace

    from eval.predict import PredictionSet
    from tests.eval.test_policy_fit import _two_datasets

    y, p, src = _two_datasets()
    n = len(y)
    logits = np.log(p / (1 - p))
    preds = PredictionSet(ids=[str(i) for i in range(n)], logits=np.c_[logits, logits], labels=np.c_[y, y],
                          slices=np.array(["text"] * n, dtype=object), ok=np.ones(n, dtype=bool), errors={},
                          categories=["hate", "offensive"], sources=list(src), splits=["val"] * n)
    data = SimpleNamespace(sources=list(src), splits=["val"] * n)
    _, pooled_thr = calibrate_model_dir(tiny_model_dir, data, predictions=preds, progress=False, method="temperature")
    pooled = json.loads((tiny_model_dir / "policy.json").read_text())
    _, thr = calibrate_model_dir(tiny_model_dir, data, predictions=preds, progress=False, method="temperature",
                                 block_rule="each_dataset")
    each = json.loads((tiny_model_dir / "policy.json").read_text())
    assert pooled["fitted"]["block_rule"] == "pooled" and each["fitted"]["block_rule"] == "each_dataset"
    assert thr.categories["hate"]["threshold"] == pooled_thr.categories["hate"]["threshold"]
    assert pooled["categories"]["hate"]["block"] == pytest.approx(pooled_thr.categories["hate"]["threshold"])
    assert each["categories"]["hate"]["block"] > pooled["categories"]["hate"]["block"]
    assert each["categories"]["hate"]["block_fit"]["binding_dataset"] == "hard"
    with pytest.raises(ValueError, match="block_rule"):
        calibrate_model_dir(tiny_model_dir, data, predictions=preds, progress=False, block_rule="strictest")
    # Predictions that do not name their datasets: the pooled rule fits as before, each_dataset says what it needs.
    unnamed = PredictionSet(ids=preds.ids, logits=preds.logits, labels=preds.labels, slices=preds.slices, ok=preds.ok,
                            errors={}, categories=preds.categories)
    _, again = calibrate_model_dir(tiny_model_dir, data, predictions=unnamed, progress=False, method="temperature")
    assert again.categories["hate"]["threshold"] == pooled_thr.categories["hate"]["threshold"]
    with pytest.raises(ValueError, match="needs the dataset of every row"):
        calibrate_model_dir(tiny_model_dir, data, predictions=unnamed, progress=False, block_rule="each_dataset")
