"""benchmarks.block_rules: both block rules fitted on val, judged per dataset on test, from saved predictions."""

from __future__ import annotations

import numpy as np

from benchmarks.block_rules import compare_rules, main, markdown
from eval.predict import PredictionSet


def _pred(seed: int) -> PredictionSet:
    rng = np.random.default_rng(seed)
    rows = []
    for name, n, sep in (("easy", 2000, 3.0), ("hard", 600, 0.5)):
        y = (rng.random(n) < 0.35).astype(float)
        logit = np.where(y == 1, sep, -sep) + rng.normal(0, 1.3, n)
        rows.append((name, y, logit))
    y = np.concatenate([r[1] for r in rows])
    logits = np.concatenate([r[2] for r in rows])[:, None]
    sources = [r[0] for r in rows for _ in range(len(r[1]))]
    return PredictionSet(ids=[f"{s}/{i}" for i, s in enumerate(sources)], logits=logits, labels=y[:, None],
                         slices=np.array(["text"] * len(y), dtype=object), ok=np.ones(len(y), dtype=bool), errors={},
                         categories=["hate"], sources=sources, splits=["x"] * len(y), model_version="m-1")


def test_each_dataset_rule_blocks_the_hard_dataset_more_precisely_on_test():
    result = compare_rules(_pred(0), _pred(1), None)
    pooled, each = result["pooled"]["hate"], result["each_dataset"]["hate"]
    assert each["block"] > pooled["block"]
    hard_pooled, hard_each = pooled["test"]["hard"]["block"], each["test"]["hard"]["block"]
    assert hard_each["flagged"] < hard_pooled["flagged"]
    assert hard_each["flagged"] == 0 or hard_each["precision"] > hard_pooled["precision"]
    assert set(pooled["test"]) == {"easy", "hard", "pooled"}
    table = markdown(result)
    assert "block rule: each_dataset" in table and "raised by hard" in table


def test_cli_refuses_predictions_of_another_model(tmp_path, capsys, tiny_model_dir):
    _pred(0).save(tmp_path / "val")
    _pred(1).save(tmp_path / "test")
    assert main(["--model", str(tiny_model_dir), "--predictions", str(tmp_path)]) == 2
    assert "predictions are of m-1" in capsys.readouterr().err
    assert main(["--model", str(tiny_model_dir), "--predictions", str(tmp_path / "nowhere")]) == 2
