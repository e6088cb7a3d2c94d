"""`moderation calibrate | evaluate | report` end to end on the tiny model and a small labelled folder."""

from __future__ import annotations

import json

import pytest

from moderation.cli import main


def test_calibrate_evaluate_report(tiny_model_dir, labelled_folder, tmp_path, capsys):
    spec = f"{labelled_folder}:off_label=offensive,hate_label=hate@toyset"
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--split", "val", "--no-progress",
                 "--min-positives", "10"]) == 0
    out = capsys.readouterr().out
    assert "thresholds thr-" in out and "policy pol-" in out and "unreachable" in out and "WARNING hate" in out
    thresholds = json.loads((tiny_model_dir / "thresholds.json").read_text())
    assert thresholds["fitted_on"]["splits"] == ["val"]
    policy = json.loads((tiny_model_dir / "policy.json").read_text())
    assert policy["fitted"]["review_target"] == {"kind": "recall", "value": 0.9}
    assert policy["categories"]["offensive"]["block"] == thresholds["categories"]["offensive"]["threshold"]
    assert policy["categories"]["offensive"]["alternatives"]  # the trade-off table a T&S lead chooses from
    # A review budget instead, and a stricter language rule: both land in policy.json.
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--split", "val", "--no-progress",
                 "--min-positives", "10", "--review-budget", "0.1", "--languages", "en,de",
                 "--language-action", "block"]) == 0
    policy = json.loads((tiny_model_dir / "policy.json").read_text())
    assert policy["fitted"]["review_target"] == {"kind": "budget", "value": 0.1}
    assert policy["languages"]["trained"] == ["en", "de"] and policy["languages"]["action"] == "block"
    assert policy["not_judged"] == "allow"
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--split", "val", "--no-progress",
                 "--min-positives", "10", "--not-judged", "review"]) == 0
    assert json.loads((tiny_model_dir / "policy.json").read_text())["not_judged"] == "review"
    assert "categories no input can judge: review" in capsys.readouterr().out
    # Recalibrating keeps the deployment's choice unless it is given again.
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--split", "val", "--no-progress",
                 "--min-positives", "10", "--review-budget", "0.1", "--languages", "en,de",
                 "--language-action", "block"]) == 0
    policy = json.loads((tiny_model_dir / "policy.json").read_text())
    assert policy["not_judged"] == "review"
    for entry in policy["categories"].values():
        assert entry["review_fit"].get("review_share", 0.0) <= 0.1
    capsys.readouterr()
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--review-budget", "0.1",
                 "--review-recall", "0.9"]) == 2
    assert "give one review target" in capsys.readouterr().err

    run_dir = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", spec, "--split", "test", "--out", str(run_dir),
                 "--bootstrap", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "image+text" in out and "hate has no operating threshold" in out
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["thresholds_file"]["version"] == thresholds["version"]
    assert evaluation["metrics"]["offensive"]["all"]["n"] == 120
    assert evaluation["data"]["splits"] == ["test"] and evaluation["split"] == "test"

    rep = tmp_path / "rep"
    assert main(["report", "--from-eval", str(run_dir), "--compare-eval", str(run_dir), "--out", str(rep)]) == 0
    html = (rep / "report.html").read_text()
    # one figure per category, and the policy section's review-load curve
    assert html.count("data:image/png;base64,") == 3 and "Comparison" in html and "Moderation policy" in html

    rep2 = tmp_path / "rep2"
    assert main(["report", "--model", str(tiny_model_dir), "--compare", str(tiny_model_dir), "--data", spec,
                 "--split", "test", "--out", str(rep2), "--bootstrap", "0", "--no-progress"]) == 0
    assert (rep2 / "report.md").is_file() and (rep2 / "run" / "evaluation.json").is_file()
    assert (rep2 / "run-compare" / "evaluation.json").is_file()
    comparison = json.loads((rep2 / "report.json").read_text())["comparison"]["figures"]
    assert comparison["offensive"]["ROC-AUC"]["delta"] == 0.0  # the same model on both sides

    # The block rule: each dataset on its own must keep the block precision (recorded in policy.json).
    capsys.readouterr()
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--split", "val", "--no-progress",
                 "--min-positives", "10", "--block-rule", "each_dataset"]) == 0
    assert "on every dataset on its own too" in capsys.readouterr().out
    assert json.loads((tiny_model_dir / "policy.json").read_text())["fitted"]["block_rule"] == "each_dataset"


def test_cli_user_errors(tiny_model_dir, labelled_folder, tmp_path, capsys):
    spec = f"{labelled_folder}:off_label=offensive@toyset"
    assert main(["calibrate", "--data", spec]) == 2
    assert "calibrate needs --model DIR" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", spec, "--target-precision", "1.5"]) == 2
    assert "--target-precision must be between 0 and 1" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", spec, "--split", "train", "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    assert "no rows of split(s) ['train']" in capsys.readouterr().err
    assert main(["report", "--from-eval", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "moderation evaluate --out" in capsys.readouterr().err
    assert main(["report", "--from-eval", str(tmp_path), "--model", str(tiny_model_dir), "--out", str(tmp_path)]) == 2
    assert "do not combine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--model", str(tiny_model_dir), "--method", "beta"])
