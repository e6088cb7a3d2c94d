"""benchmarks/precision_agreement.py on a tiny model and two tiny test splits: the comparison's arithmetic, the
exit status when bf16 flips a block, the precision record it writes, and `auto` refusing bf16 after it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import precision_agreement as pa
from moderation import precision as prec

TEXTS = ["you are all wonderful people", "I will find you", "this is a normal sentence about cats",
         "what a terrible awful thing to say", "the weather is nice today", "go away and never come back",
         "thanks for sharing", "nobody likes you here", "see you tomorrow at the meeting", "lol ok"]


@pytest.fixture()
def data_root(tmp_path):
    """Two shared-dataset folders with a few test rows (and train rows that must not be scored)."""
    root = tmp_path / "datasets"
    for name, offset in (("tweeteval_hate", 0), ("tweeteval_offensive", 5)):
        (root / name).mkdir(parents=True)
        rows = [{"id": f"t{i}", "text": TEXTS[(i + offset) % len(TEXTS)], "label": i % 2, "split": "test"}
                for i in range(8)]
        rows += [{"id": f"x{i}", "text": "a training row", "label": 0, "split": "train"} for i in range(3)]
        (root / name / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _native(monkeypatch, yes: bool) -> None:
    monkeypatch.setattr(prec, "_torch_cpu_capabilities", lambda: {"avx512_bf16": yes})
    monkeypatch.setattr(prec, "_cpuinfo_flags", lambda path=prec.CPUINFO: set())


def test_compare_counts_decisions_blocks_and_differences():
    cats = ["hate", "offensive"]
    ref = {"scores": np.array([[0.9, 0.1], [0.5, 0.2], [0.1, 0.1], [0.95, 0.8]]),
           "actions": ["block", "review", "allow", "block"],
           "blocked": [frozenset({"hate"}), frozenset(), frozenset(), frozenset({"hate", "offensive"})]}
    other = {"scores": np.array([[0.88, 0.1], [0.5, 0.25], [0.1, 0.1], [0.95, 0.7]]),
             "actions": ["review", "review", "allow", "block"],
             "blocked": [frozenset(), frozenset(), frozenset(), frozenset({"hate"})]}
    out = pa.compare(ref, other, cats, ["a", "b", "c", "d"])
    assert out["posts"] == 4 and out["decisions_changed"] == 1 and out["transitions"] == {"block->review": 1}
    # a lost block (a) and a moved one (d: still blocked, for fewer categories)
    assert out["blocks_changed"] == 2 and out["blocks_lost"] == 1 and out["blocks_gained"] == 0
    assert out["max_abs_diff"] == pytest.approx({"hate": 0.02, "offensive": 0.1})
    assert [c["id"] for c in out["changed"]] == ["a", "d"]
    total = pa.merge([out, pa.compare(ref, ref, cats, ["a", "b", "c", "d"])], cats)
    assert total["posts"] == 8 and total["blocks_changed"] == 2 and total["max_abs_diff"]["offensive"] == pytest.approx(0.1)
    assert total["mean_abs_diff"]["hate"] == pytest.approx(0.02 / 8)
    with pytest.raises(ValueError, match="not of the same posts"):
        pa.compare(ref, other, cats, ["a"])


def test_test_split_datasets_finds_known_folders_with_a_test_split(data_root):
    (data_root / "multioff").mkdir()
    (data_root / "multioff" / "data.jsonl").write_text(json.dumps({"id": "1", "text": "x", "split": "train"}) + "\n")
    (data_root / "not_a_known_dataset").mkdir()
    assert pa.test_split_datasets(data_root) == ["tweeteval_hate", "tweeteval_offensive"]
    posts, total = pa.load_test_posts(data_root, "tweeteval_hate", ["hate", "offensive"], limit=3, seed=0)
    assert total == 8 and len(posts) == 3 and all(p["id"].startswith("tweeteval_hate/t") for p in posts)
    again, _ = pa.load_test_posts(data_root, "tweeteval_hate", ["hate", "offensive"], limit=3, seed=0)
    assert again == posts  # the sample is reproducible


def _flip_policy(model_dir, data_root, tmp_path):
    """A policy whose hate block threshold sits between one post's fp32 and bf16 scores: bf16 flips that block."""
    from moderation.policy import CategoryPolicy, Policy
    from moderation.scorer import Scorer

    scorer = Scorer.from_dir(model_dir, precision="fp32", ocr="off", num_workers=0)
    scorers = pa.build_scorers(scorer, ["bf16"])
    posts, _ = pa.load_test_posts(data_root, "tweeteval_hate", scorer.categories, None, 0)
    prepared = scorer.prepare_many(posts)
    ref, _, _ = pa.score_prepared(scorers["fp32"], prepared)
    low, _, _ = pa.score_prepared(scorers["bf16"], prepared)
    diff = np.abs(ref["scores"][:, 0] - low["scores"][:, 0])
    i = int(np.argmax(diff))
    assert diff[i] > 0, "bf16 autocast changed no score of the tiny model"
    threshold = float((ref["scores"][i, 0] + low["scores"][i, 0]) / 2)
    policy = Policy(version="flip-1", categories={"hate": CategoryPolicy(block=threshold), "offensive": CategoryPolicy()})
    return policy.save(tmp_path / "flip-policy.json")


def test_agreement_run_reports_and_passes_within_tolerance(tiny_model_dir, data_root, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16", "int8",
                    "--ocr", "off", "--tolerance-blocks", "1000", "--json", str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["datasets"]) == {"tweeteval_hate", "tweeteval_offensive"}
    assert report["total"]["posts"] == 16 and report["datasets"]["tweeteval_hate"]["test_split_posts"] == 8
    for p in ("bf16", "int8"):
        t = report["total"]["against_fp32"][p]
        assert set(t["max_abs_diff"]) == {"hate", "offensive"} and t["posts"] == 16
        assert report["speed"][p]["posts_per_s"] > 0
    assert "int8_beats_bf16" in report["verdicts"]
    printed = capsys.readouterr().out
    assert "TOTAL" in printed and "decision agreement" in printed and "int8 vs bf16" in printed
    assert not (tiny_model_dir / "precision.json").exists()  # only --record writes it


def test_a_flipped_block_fails_the_run_and_auto_then_refuses_bf16(monkeypatch, tiny_model_dir, data_root, tmp_path,
                                                                   capsys):
    from moderation.scorer import Scorer

    policy = _flip_policy(tiny_model_dir, data_root, tmp_path)
    code = pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16",
                    "--datasets", "tweeteval_hate", "--ocr", "off", "--policy", str(policy), "--record", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert "FAIL: bf16 changed more blocks than the tolerance (0)" in captured.err
    record = json.loads((tiny_model_dir / "precision.json").read_text())
    assert record["precisions"]["bf16"]["status"] == "refused" and record["precisions"]["bf16"]["blocks_changed"] >= 1
    assert record["meta"]["policy_version"].startswith("flip-1") and "--record" in record["meta"]["command"]
    assert "int8" not in record["precisions"]  # measured only, never runnable
    _native(monkeypatch, True)
    auto = Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off")
    assert auto.precision == "fp32" and "refuses bf16" in auto.precision_choice.reason
    forced = Scorer.from_dir(tiny_model_dir, precision="bf16", ocr="off")
    assert forced.precision == "bf16" and "refused bf16" in forced.precision_choice.warning


def test_fail_fast_stops_at_the_first_dataset_beyond_the_tolerance(tiny_model_dir, data_root, tmp_path, capsys):
    policy = _flip_policy(tiny_model_dir, data_root, tmp_path)
    out = tmp_path / "report.json"
    code = pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16",
                    "--ocr", "off", "--policy", str(policy), "--fail-fast", "--record", "--json", str(out), "--quiet"])
    assert code == 1
    report = json.loads(out.read_text())
    assert list(report["datasets"]) == ["tweeteval_hate"] and report["total"]["posts"] == 8
    assert report["stopped_early"]["not_scored"] == ["tweeteval_offensive"]
    assert "stopped early after tweeteval_hate" in capsys.readouterr().out
    record = json.loads((tiny_model_dir / "precision.json").read_text())
    assert record["precisions"]["bf16"]["status"] == "refused"
    assert record["meta"]["stopped_early"]["after"] == "tweeteval_hate"


def test_a_run_within_tolerance_records_bf16_as_validated(monkeypatch, tiny_model_dir, data_root):
    from moderation.scorer import Scorer

    code = pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16",
                    "--ocr", "off", "--limit", "4", "--tolerance-blocks", "1000", "--record", "--quiet"])
    assert code == 0
    record = json.loads((tiny_model_dir / "precision.json").read_text())
    assert record["precisions"]["bf16"]["status"] == "validated" and record["precisions"]["bf16"]["posts"] == 8
    assert "4 posts drawn at random" in record["meta"]["sample"]
    _native(monkeypatch, True)
    assert Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off").precision == "bf16"
    _native(monkeypatch, False)
    assert Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off").precision == "fp32"


def test_bad_arguments_exit_2(tiny_model_dir, data_root, tmp_path):
    with pytest.raises(SystemExit) as err:
        pa.main(["--precisions", "int8", "--gate", "bf16"])
    assert err.value.code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pa.main(["--model", str(tiny_model_dir), "--data-root", str(empty), "--quiet"]) == 2


def test_bf16_guarded_takes_its_margins_from_val_and_keeps_the_flipped_block(monkeypatch, tiny_model_dir, data_root,
                                                                              tmp_path, capsys):
    from moderation.scorer import Scorer

    path = data_root / "tweeteval_hate" / "data.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    val = [{**r, "id": "v" + r["id"], "split": "val"} for r in rows if r["split"] == "test"]  # the same texts
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + val))
    policy = _flip_policy(tiny_model_dir, data_root, tmp_path)
    out = tmp_path / "report.json"
    code = pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16",
                    "bf16-guarded", "bf16-block-guarded", "--gate", "bf16-guarded", "bf16-block-guarded",
                    "--datasets", "tweeteval_hate", "--ocr", "off", "--policy", str(policy), "--record", "--json",
                    str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["guard_margins"]["posts"] == 8 and report["guard_margins"]["factor"] == 2.0
    total = report["total"]["against_fp32"]
    assert total["bf16"]["blocks_changed"] >= 1 and total["bf16-guarded"]["blocks_changed"] == 0
    assert total["bf16-guarded"]["rescored"] >= 1  # at least the post at the threshold was scored again
    assert total["bf16"]["max_abs_logit_diff"]["hate"] > 0
    assert total["bf16-block-guarded"]["blocks_changed"] == 0
    assert 1 <= total["bf16-block-guarded"]["rescored"] <= total["bf16-guarded"]["rescored"]
    assert "guard margins (logit, from 8 val posts" in capsys.readouterr().out
    record = json.loads((tiny_model_dir / "precision.json").read_text())
    guarded = record["precisions"]["bf16-guarded"]
    assert record["precisions"]["bf16"]["status"] == "refused" and guarded["status"] == "validated"
    assert guarded["margin_logit"]["hate"] == pytest.approx(2 * report["guard_margins"]["max_abs_logit_diff"]["hate"],
                                                            rel=1e-3, abs=1.6e-6)  # both rounded to 6 decimals
    assert 0 < guarded["rescored_share"] <= 1 and "val splits (8 posts)" in guarded["margin_from"]
    _native(monkeypatch, True)
    block = record["precisions"]["bf16-block-guarded"]
    assert block["status"] == "validated" and block["margin_logit"] == guarded["margin_logit"]
    auto = Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off")
    assert auto.precision == "bf16-block-guarded" and auto.guard_margin == guarded["margin_logit"]
    assert "bf16 alone refused" in auto.precision_choice.reason


def test_bf16_guarded_without_val_splits_is_a_clear_error(tiny_model_dir, data_root):
    assert pa.main(["--model", str(tiny_model_dir), "--data-root", str(data_root), "--precisions", "bf16-guarded",
                    "--ocr", "off", "--quiet"]) == 2
