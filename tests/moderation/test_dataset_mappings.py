"""Label mappings where one field feeds several categories, or only its negatives count ("~category")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moderation.datasets import ALL_DATASETS, KNOWN_DATASETS, DatasetSpec, load_labelled, parse_dataset_arg


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_one_field_feeds_several_categories_and_negatives_only(tmp_path):
    data = _write(tmp_path / "d.jsonl", [
        {"id": "hs", "text": "hateful post", "label": 1, "split": "train"},
        {"id": "cn", "text": "a counter-narrative", "label": 0, "split": "train"},
    ])
    spec = DatasetSpec(data, {"label": "hate+offensive+~violence"}, "conanlike")
    got = load_labelled([spec], ["hate", "offensive", "violence"], "train")
    # hate speech: hate 1, offensive 1, violence unknown (a positive says nothing about threats);
    # counter-narrative: 0 for all three.
    np.testing.assert_array_equal(got.labels[0], [1.0, 1.0, np.nan])
    np.testing.assert_array_equal(got.labels[1], [0.0, 0.0, 0.0])
    assert spec.categories() == {"hate", "offensive", "violence"}


def test_mapping_from_the_command_line_and_errors(tmp_path):
    data = _write(tmp_path / "d.jsonl", [{"id": "a", "text": "x", "label": 0, "split": "train"}])
    spec = parse_dataset_arg(f"{data}:label=hate+~violence@mine")
    assert spec.labels == {"label": "hate+~violence"} and spec.name == "mine"
    with pytest.raises(ValueError, match="empty category"):
        DatasetSpec(data, {"label": "hate+"}, "bad")
    with pytest.raises(ValueError):
        DatasetSpec(data, {"label": "~"}, "bad")


def test_every_shared_dataset_has_a_mapping_of_known_categories():
    for name in ALL_DATASETS:
        spec = DatasetSpec(f"/nonexistent/{name}/data.jsonl", KNOWN_DATASETS[name], name)
        assert spec.categories() <= {"hate", "offensive", "violence"}, name
