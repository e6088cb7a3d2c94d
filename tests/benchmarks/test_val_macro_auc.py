"""benchmarks/val_macro_auc.py: the per-dataset ROC-AUC averaged over datasets, the minimum-positives rule, and a run on
a tiny model over two tiny shared-dataset folders (val rows only; train and test rows are never scored)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import val_macro_auc as vma
from moderation.datasets import ALL_DATASETS


def test_macro_table_averages_datasets_not_posts_and_skips_one_class_datasets():
    cats = ["hate", "violence"]
    labels = np.array([[1, 1], [0, 0], [1, np.nan], [0, np.nan],  # dataset a: hate perfectly ranked
                       [1, 0], [0, 0], [1, 0], [0, 0]], dtype=float)  # dataset b: hate inverted; violence one-class
    scores = np.array([[0.9, 0.8], [0.1, 0.2], [0.8, 0.5], [0.2, 0.5],
                       [0.1, 0.3], [0.9, 0.2], [0.2, 0.1], [0.8, 0.4]])
    out = vma.macro_table(scores, labels, ["a"] * 4 + ["b"] * 4, cats)
    assert out["hate"]["datasets"]["a"]["roc_auc"] == 1.0 and out["hate"]["datasets"]["b"]["roc_auc"] == 0.0
    assert out["hate"]["macro"] == pytest.approx(0.5)
    assert list(out["violence"]["datasets"]) == ["a"]  # b has no violence positive; a's NaN rows are left out
    assert out["violence"]["datasets"]["a"]["positives"] == 1
    assert out["mean"] == pytest.approx((0.5 + 1.0) / 2)
    # With at least 2 positives and 2 negatives required, a's violence (1 + 1) no longer counts: NaN, not 0.
    strict = vma.macro_table(scores, labels, ["a"] * 4 + ["b"] * 4, cats, min_positives=2)
    assert np.isnan(strict["violence"]["macro"]) and strict["mean"] == pytest.approx(0.5)


def test_runs_on_val_rows_of_each_model_and_writes_json(tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "datasets"
    texts = ["you people are vermin", "have a lovely day", "I will hurt you", "the match was great",
             "get lost idiot", "thanks for the help", "they should all disappear", "see you at lunch"]
    for name in ("conan", "hatexplain"):
        (root / name).mkdir(parents=True)
        rows = [{"id": f"v{i}", "text": t, "label": i % 2 == 0, "offensive": i % 2 == 0, "split": "val"}
                for i, t in enumerate(texts)]
        rows += [{"id": "tr", "text": "a training row", "label": 0, "offensive": 0, "split": "train"},
                 {"id": "te", "text": "a test row", "label": 0, "offensive": 0, "split": "test"}]
        (root / name / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sel.json"
    others = [n for n in ALL_DATASETS if n not in ("conan", "hatexplain")]
    code = vma.main(["--model", str(tiny_model_dir), "--model", str(tiny_model_dir), "--data-root", str(root),
                     "--categories", "hate", "offensive", "--threads", "1", "--out", str(out), "--exclude", *others])
    assert code == 0
    report = json.loads(out.read_text())
    assert [m["posts"] for m in report["models"]] == [16, 16]  # val rows only
    first, second = (m["figures"] for m in report["models"])
    assert sorted(first["hate"]["datasets"]) == ["conan", "hatexplain"]
    assert first["hate"]["datasets"]["conan"]["positives"] == 4
    assert first == second  # the same model twice: the same figures
    assert "mean" in capsys.readouterr().out


def test_unknown_excluded_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        vma.main(["--model", "m", "--exclude", "no_such_set"])
    assert "unknown datasets" in capsys.readouterr().err
