"""The stance posts: CONAN train hate quoted in rejecting/reporting frames (hate 0) and endorsing frames (hate 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moderation.datasets import DatasetSpec, load_labelled
from training import stance


def _conan(tmp_path, n=40):
    rows = []
    for i in range(n):
        for split in ("train", "val", "test"):
            rows.append({"id": f"HS{split}{i}", "text": f"group {i} are all {split} liars and thieves.", "label": 1,
                         "kind": "hate_speech", "split": split})
        rows.append({"id": f"CN{i}", "text": f"that is not true about group {i}", "label": 0,
                     "kind": "counter_narrative", "split": "train"})
    rows.append({"id": "long", "text": "x " * 200, "label": 1, "kind": "hate_speech", "split": "train"})
    path = tmp_path / "conan.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_only_train_hate_is_quoted_and_each_quote_gets_both_stances(tmp_path):
    rows = stance.stance_rows(_conan(tmp_path), n_quotes=30)
    assert len(rows) == 60
    assert all(" train liars" in r["text"] for r in rows)  # never val/test hate, never counter-narratives, never too long
    by_quote: dict[str, list[dict]] = {}
    for r in rows:
        by_quote.setdefault(r["quote_id"], []).append(r)
    for pair in by_quote.values():
        assert sorted(r["hate"] for r in pair) == [0, 1]
        assert len({r["split"] for r in pair}) == 1  # a quote never straddles train and val
        benign, hateful = sorted(pair, key=lambda r: r["hate"])
        assert benign["offensive"] is None and benign["violence"] == 0
        assert hateful["offensive"] == 1 and hateful["violence"] is None


def test_near_copies_of_evaluation_texts_are_left_out(tmp_path):
    conan = _conan(tmp_path)
    rows = stance.stance_rows(conan, n_quotes=30)
    excluded = stance.stance_rows(conan, n_quotes=30, exclude=[rows[0]["text"]])
    assert rows[0]["text"] not in {r["text"] for r in excluded}
    assert len(excluded) < len(rows)


def test_no_quotable_hate_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hi", "kind": "counter_narrative", "split": "train"}) + "\n")
    with pytest.raises(ValueError, match="no CONAN hate speech"):
        stance.stance_rows(path)


def test_written_file_loads_with_masked_unknowns(tmp_path):
    path = stance.write_stance(tmp_path / "stance.jsonl", _conan(tmp_path), n_quotes=30)
    data = load_labelled([DatasetSpec(path, dict(stance.LABELS), stance.NAME)], ["hate", "offensive", "violence"], "train")
    assert len(data) > 0
    hate, offensive = data.labels[:, 0], data.labels[:, 1]
    assert set(np.unique(hate)) == {0.0, 1.0}
    assert np.isnan(offensive[hate == 0]).all() and (offensive[hate == 1] == 1).all()


def test_benign_violence_unknown_is_masked(tmp_path):
    path = stance.write_stance(tmp_path / "stance.jsonl", _conan(tmp_path), n_quotes=30, benign_violence=None)
    data = load_labelled([DatasetSpec(path, dict(stance.LABELS), stance.NAME)], ["hate", "offensive", "violence"], "train")
    assert len(data) > 0
    assert np.isnan(data.labels[:, 2]).all()  # every stance post's violence unknown: none a violence negative
    assert set(np.unique(data.labels[:, 0])) == {0.0, 1.0}
