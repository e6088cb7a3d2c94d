"""Retraining end to end on tiny data: a champion trained on one dataset meets new slang in production; simulated
reviewers (a labelled dataset's labels, as `moderation feedback simulate` does) judge what it sent to review; the
challenger trained on the training data + that feedback is compared with the champion (paired bootstrap) on the
fixed test split and the feedback's hold-out, and gets a promotion decision and its lineage."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_CONFIG

HATE = ["vermin", "scum", "subhuman", "filth"]
KIND = ["sunshine", "garden", "coffee", "friends"]
SLANG = ["blorpers", "zindle", "quarvish"]   # hateful words the champion never saw ...
NEUTRAL = ["weather", "parking", "lunch"]     # ... and harmless ones it never saw either


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_rows(n=90):
    rows = []
    for i in range(n):
        bad = i % 2 == 0
        words = HATE if bad else KIND
        split = ("train", "train", "train", "val", "test")[i % 5]
        rows.append({"id": f"b{i}", "text": f"{words[i % 4]} {words[(i + 1) % 4]} and {KIND[(i + 3) % 4]} {i}",
                     "label": int(bad), "split": split})
    return rows


def traffic_rows(n=160):
    rows = []
    for i in range(n):
        bad = i % 2 == 0
        word = SLANG[i % 3] if bad else NEUTRAL[i % 3]
        rows.append({"id": f"t{i}", "text": f"those {word} again {i}", "label": int(bad),
                     "split": "train"})
    return rows


@pytest.fixture()
def champion_dir(tmp_path):
    from moderation.model import ModelConfig
    from moderation.datasets import DatasetSpec, load_labelled
    from training.config import TrainConfig
    from training.train import train

    from eval.calibrate import calibrate_model_dir

    spec = DatasetSpec(_write(tmp_path / "data" / "base" / "data.jsonl", base_rows()), {"label": "hate"}, "base")
    config = ModelConfig.from_dict({**{k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()},
                                    "categories": ["hate"], "image_encoder": None})
    out = tmp_path / "champion"
    train([spec], out, config, TrainConfig(mode="frozen", epochs=40, batch_size=16, lr=1e-2, patience=40,
                                           early_stopping="val", cache_dir=str(tmp_path / "cache"), seed=0),
          progress=False, log=lambda s: None)
    calibrate_model_dir(out, load_labelled([spec], ["hate"], "val"), target_precision=0.8, min_positives=5,
                        progress=False)
    return out


def test_retrain_from_simulated_reviewers_compares_and_decides(tmp_path, champion_dir, capsys):
    from moderation.batch import score_dump
    from moderation.model_dir import read_model_info
    from moderation.scorer import Scorer
    from moderation.datasets import DatasetSpec
    from operations.feedback import FeedbackStore, load_decision_index
    from operations.simulate import simulate_verdicts
    from operations.retrain import RetrainConfig, retrain

    # Production traffic, scored by the champion as a batch job (its output carries the posts' text).
    traffic = _write(tmp_path / "traffic" / "data.jsonl", traffic_rows())
    dump = _write(tmp_path / "dump.jsonl", [{"id": r["id"], "text": r["text"]} for r in traffic_rows()])
    scorer = Scorer.from_dir(champion_dir, num_workers=0)
    score_dump([dump], tmp_path / "scored.jsonl", scorer=scorer, progress=False)
    # Simulated reviewers: every post goes to review (score >= 0), the dataset's labels are the verdicts.
    verdicts, counts = simulate_verdicts([tmp_path / "scored.jsonl"], DatasetSpec(traffic, {"label": "hate"}, "traffic"),
                                         split="train", categories=["hate"], review_min_score=0.0)
    assert counts["sent_to_review"] == 160
    store = FeedbackStore.create(tmp_path / "fb", ["hate"])
    summary = store.add(verdicts, decisions=load_decision_index([tmp_path / "scored.jsonl"]))
    assert summary.content_from_log == summary.added == len(verdicts)

    config = RetrainConfig(mode="frozen", epochs=40, bootstrap=200, cache_dir=str(tmp_path / "cache"),
                           data_root=str(tmp_path / "data"))
    result = retrain(champion_dir, tmp_path / "fb", tmp_path / "new", config, progress=False, log=lambda s: None)
    comp = json.loads((tmp_path / "new" / "comparison.json").read_text())
    assert comp["decision"] == result.comparison["decision"]
    sets = {s["name"]: s for s in comp["sets"]}
    assert set(sets) == {"base/test", "feedback/test"} and sets["feedback/test"]["kind"] == "feedback"
    cells = {(c["set"], c["category"]): c for c in comp["cells"]}
    fb = cells[("feedback/test", "hate")]["metrics"]["roc_auc"]
    assert fb["challenger"] > fb["champion"] and fb["verdict"] == "better"  # it learned the new slang
    assert cells[("base/test", "hate")]["metrics"]["roc_auc"]["verdict"] in ("same", "better")
    assert comp["decision"]["promotable"] is True and comp["decision"]["better"]
    # The policy checks ran on the posts of both sets pooled, with each model's own thresholds, and passed.
    (pol,) = comp["policy"]
    assert pol["category"] == "hate" and pol["n"] == sum(c["n"] for c in comp["cells"])
    assert pol["block_check"] in ("ok", "-") and pol["review_check"] in ("ok", "-")
    assert comp["decision"]["policy_failed"] == []
    assert "Policy checks" in (tmp_path / "new" / "comparison.md").read_text()
    assert (tmp_path / "new" / "comparison.html").read_text().count("PROMOTABLE") >= 1
    # Lineage: the parent, the data (with hashes), the feedback's fingerprint, the decision.
    info = read_model_info(tmp_path / "new")
    lineage = info.meta["lineage"]
    assert lineage["parent"]["model_version"] == read_model_info(champion_dir).model_version
    assert [d["name"] for d in lineage["data"]] == ["base"] and len(lineage["data"][0]["sha256"]) == 64
    assert lineage["feedback"]["verdicts_fingerprint"] == store.fingerprint()
    assert lineage["comparison"]["promotable"] is True
    assert info.thresholds is not None and info.calibration is not None  # recalibrated
    assert [d["name"] for d in info.meta["training"]["datasets"]] == ["base", "feedback"]


def test_a_challenger_that_ranks_as_well_but_cannot_block_is_not_promotable(tmp_path, champion_dir):
    from moderation.datasets import DatasetSpec, load_labelled
    from moderation.scorer import Scorer
    from operations.champion import EvalSet, compare_models, write_comparison

    spec = DatasetSpec(tmp_path / "data" / "base" / "data.jsonl", {"label": "hate"}, "base")
    sets = [EvalSet("base/test", load_labelled([spec], ["hate"], "test"))]
    champion = Scorer.from_dir(champion_dir, num_workers=0)
    challenger = Scorer.from_dir(champion_dir, num_workers=0)
    champion.thresholds = lambda: {"hate": 0.5}     # (the tiny model's own fit found no block threshold)
    challenger.thresholds = lambda: {"hate": None}  # the same scores, but its policy never blocks
    comp = compare_models(champion, challenger, sets, bootstrap=100, progress=False)
    (pol,) = comp["policy"]
    assert pol["champion"]["block_recall"] > 0 and pol["challenger"]["block_recall"] == 0.0
    assert pol["block_check"] == "FAIL"
    assert comp["decision"]["promotable"] is False
    assert comp["decision"]["reason"].startswith("1 policy check(s) failed: hate block recall")
    off = compare_models(champion, challenger, sets, bootstrap=100, progress=False, min_block_recall_ratio=None,
                         max_review_share_rise=None)
    assert off["policy"][0]["block_check"] == "-" and off["decision"]["policy_failed"] == []
    html = write_comparison(tmp_path / "cmp", comp)["html"].read_text()
    assert "policy does</h2>" in html and "FAIL" in html


def test_retrain_refusals(tmp_path, champion_dir):
    from moderation.cli import main
    from operations.feedback import FeedbackStore

    FeedbackStore.create(tmp_path / "empty", ["hate"])
    FeedbackStore.create(tmp_path / "other", ["violence"])
    base = ["retrain", "--model", str(champion_dir), "--data-root", str(tmp_path / "data"), "--no-progress"]
    assert main(base + ["--feedback", str(tmp_path / "empty"), "--out", str(tmp_path / "n1")]) == 2
    assert main(base + ["--feedback", str(tmp_path / "other"), "--out", str(tmp_path / "n2")]) == 2
    assert main(base + ["--feedback", str(tmp_path / "empty"), "--out", str(champion_dir)]) == 2
    assert main(base + ["--feedback", str(tmp_path / "empty"), "--out", str(tmp_path / "n3"), "--gate", "f1"]) == 2
    for bad in (["--min-block-recall-ratio", "0"], ["--min-block-recall-ratio", "1.5"], ["--max-review-share-rise", "-1"]):
        assert main(base + ["--feedback", str(tmp_path / "other"), "--out", str(tmp_path / "n4")] + bad) == 2


def test_compare_two_existing_models_from_the_command_line(tmp_path, champion_dir):
    from moderation.cli import main

    out = tmp_path / "cmp"
    base = ["compare", "--champion", str(champion_dir), "--challenger", str(champion_dir), "--bootstrap", "100",
            "--no-progress", "--out", str(out)]
    # A model against itself: nothing better, so not promotable (exit 3); the sets default to its training data.
    assert main(base) == 3
    comp = json.loads((out / "comparison.json").read_text())
    assert [s["name"] for s in comp["sets"]] == ["base/test"] and comp["limit"] is None
    assert comp["decision"]["reason"].startswith("no gating cell significantly better")
    assert comp["policy"][0]["block_check"] in ("ok", "-") and comp["policy"][0]["review_check"] == "ok"
    spec = f"{tmp_path / 'data' / 'base' / 'data.jsonl'}:label=hate@again"
    assert main(base + ["--data", spec, "--limit", "12", "--split", "test"]) == 3
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["sets"] == [{"name": "again/test", "kind": "fixed", "rows": 12, "scored_by_both": 12,
                             "errors": {"champion": {}, "challenger": {}}}]
    assert main(base + ["--limit", "5"]) == 2
    assert main(base + ["--data", spec, "--split", "nonesuch"]) == 2
