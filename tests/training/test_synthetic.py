"""The synthetic threat templates: labelled sensibly, and never a near-copy of a functional-suite case."""

from __future__ import annotations

import json

import pytest

from moderation.datasets import DatasetSpec, load_labelled
from training import synthetic


def test_templates_are_disjoint_from_the_functional_suite():
    cases = synthetic.functional_texts()
    assert len(cases) >= 300  # the suite is there to be checked against
    rows = synthetic.synthetic_rows(exclude=cases)
    held = [synthetic._words(t) for t in cases]
    for row in rows:
        words = synthetic._words(row["text"])
        assert not synthetic.near_copy(words, held), row["text"]
    assert len(rows) < len(synthetic.synthetic_rows())  # the filter did remove near-copies


def test_written_file_loads_with_both_classes_per_category(tmp_path):
    path = synthetic.write_synthetic(tmp_path / "syn.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"train", "val"}
    data = load_labelled([DatasetSpec(path, dict(synthetic.LABELS), synthetic.NAME)], ["hate", "offensive", "violence"], "train")
    counts = data.counts()
    for category in ("hate", "offensive", "violence"):
        assert 0 < counts[category]["positive"] < counts[category]["known"], category
    threats = [r for r in rows if r["violence"] == 1]
    assert all(r["offensive"] == 1 for r in threats)
    assert any(r["hate"] is None for r in threats) and any(r["hate"] == 1 for r in threats)


def test_v2_adds_person_threats_and_keeps_v1_and_the_suite_disjoint():
    cases = synthetic.functional_texts()
    v1 = synthetic.synthetic_rows(exclude=cases)
    v2 = synthetic.synthetic_rows(exclude=cases, version="v2")
    person = lambda rows: [r for r in rows if r["violence"] == 1 and r["hate"] is None]  # noqa: E731
    assert len(person(v2)) > 1.5 * len(person(v1))
    # v2 keeps v1's threats (its benign posts are another seeded sample of the same templates)
    assert {r["text"] for r in v1 if r["violence"] == 1} <= {r["text"] for r in v2}
    held = [synthetic._words(t) for t in cases]
    for row in v2:
        words = synthetic._words(row["text"])
        assert not synthetic.near_copy(words, held), row["text"]
    with pytest.raises(ValueError, match="version"):
        synthetic.synthetic_rows(version="v3")
