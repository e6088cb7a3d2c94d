"""benchmarks/policy_shift.py on hand-made metrics.json files: the two checks per category, the exit status, and a
clear error for a model directory without val policy fits."""

from __future__ import annotations

import json

from benchmarks import policy_shift as ps


def _model(root, name, offensive_recall, violence_share, offensive_block=0.8):
    folder = root / name
    folder.mkdir()
    per = {
        "hate": {"block": 0.77, "review": 0.12,
                 "block_fit": {"status": "ok", "precision": 0.91, "recall": 0.34},
                 "review_fit": {"status": "ok", "review_share": 0.30, "review_precision": 0.33}},
        "offensive": {"block": offensive_block, "review": 0.13,
                      "block_fit": {"status": "ok", "precision": 0.93, "recall": offensive_recall},
                      "review_fit": {"status": "ok", "review_share": 0.38, "review_precision": 0.39}},
        "violence": {"block": None, "review": 0.01,
                     "block_fit": {"status": "unreachable", "precision": None, "recall": None},
                     "review_fit": {"status": "ok", "review_share": violence_share, "review_precision": 0.09}},
    }
    (folder / "metrics.json").write_text(json.dumps({"model_version": name, "policy": {"version": f"pol-{name}",
                                                                                          "per_category": per}}))
    return folder


def test_a_candidate_that_blocks_less_or_reviews_more_fails(tmp_path, capsys):
    shipped = _model(tmp_path, "shipped", 0.177, 0.189)
    assert ps.main(["--shipped", str(shipped), "--candidate", str(_model(tmp_path, "same", 0.15, 0.20))]) == 0
    assert "checks" in capsys.readouterr().out
    worse = _model(tmp_path, "worse", 0.036, 0.333)
    assert ps.main(["--shipped", str(shipped), "--candidate", str(worse)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: offensive block recall, violence review share" in out
    rows = {r["category"]: r for r in ps.compare(ps.policy_fits(shipped), ps.policy_fits(worse))}
    assert (rows["hate"]["block_check"], rows["violence"]["block_check"]) == ("ok", "-")
    # looser limits let the same candidate through; a candidate with no offensive block threshold fails
    assert ps.main(["--shipped", str(shipped), "--candidate", str(worse), "--min-block-recall-ratio", "0.1",
                    "--max-review-share-rise", "20"]) == 0
    none = _model(tmp_path, "none", 0.5, 0.189, offensive_block=None)
    assert ps.compare(ps.policy_fits(shipped), ps.policy_fits(none))[1]["block_check"] == "FAIL"


def test_a_model_without_fits_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "metrics.json").write_text(json.dumps({"model_version": "x"}))
    assert ps.main(["--shipped", str(tmp_path / "bare"), "--candidate", str(tmp_path / "bare")]) == 2
    assert "no val policy fits" in capsys.readouterr().err
    assert ps.main(["--shipped", str(tmp_path / "nowhere"), "--candidate", str(tmp_path / "bare")]) == 2
    assert "cannot read" in capsys.readouterr().err
