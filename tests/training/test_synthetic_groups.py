"""The synthetic group statements: each claim with both labels, clean labels, never a near-copy of an evaluation text."""

from __future__ import annotations

import json

import pytest

from moderation.datasets import DatasetSpec, load_labelled
from training import synthetic, synthetic_groups


def test_group_statements_are_disjoint_from_the_suite_and_the_probes():
    cases = synthetic.functional_texts()
    probes = synthetic_groups.probe_texts()
    assert len(cases) >= 300 and len(probes) >= 50
    held = [synthetic._words(t) for t in cases + probes]
    rows = synthetic_groups.group_rows(exclude=cases + probes)
    assert len(rows) < len(synthetic_groups.group_rows())  # the check removed something: it is live
    for row in rows:
        assert not synthetic.near_copy(synthetic._words(row["text"]), held), row["text"]


def test_the_same_claim_carries_both_labels():
    """A hateful word occurs in hate and in not-hate posts, and so does a negation: neither decides alone."""
    rows = synthetic_groups.group_rows()
    for word in ("vermin", "criminals", "welcome"):
        labels = {r["hate"] for r in rows if word in r["text"]}
        assert labels == {0, 1}, word
    negated = {r["hate"] for r in rows if " not " in f" {r['text'].lower()} "}
    assert negated == {0, 1}


def test_written_file_loads_with_labels_per_kind(tmp_path):
    path = synthetic_groups.write_groups(tmp_path / "grp.jsonl", seed=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) >= 1500
    assert {r["split"] for r in rows} == {"train", "val"}
    hate = [r for r in rows if r["hate"] == 1]
    rest = [r for r in rows if r["hate"] == 0]
    assert len(hate) > 400 and len(rest) > 1000 and len(hate) + len(rest) == len(rows)
    assert all(r["offensive"] == 1 and r["violence"] is None for r in hate)
    assert all(r["offensive"] == 0 and r["violence"] == 0 for r in rest)
    data = load_labelled([DatasetSpec(path, dict(synthetic_groups.LABELS), synthetic_groups.NAME)],
                         ["hate", "offensive", "violence"], "train")
    counts = data.counts()
    assert 0 < counts["hate"]["positive"] < counts["hate"]["known"]
    assert counts["violence"]["positive"] == 0 < counts["violence"]["known"] < len(data)
    again = synthetic_groups.write_groups(tmp_path / "again.jsonl", seed=2)
    assert again.read_text() == path.read_text()


def test_v2_is_v1_with_the_benign_posts_violence_unknown():
    v1, v2 = synthetic_groups.group_rows(version="v1"), synthetic_groups.group_rows(version="v2")
    assert [r["text"] for r in v1] == [r["text"] for r in v2]
    for a, b in zip(v1, v2):
        assert (a["hate"], a["offensive"]) == (b["hate"], b["offensive"])
        assert b["violence"] is None and a["violence"] == (0 if a["hate"] == 0 else None)


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="group-data version"):
        synthetic_groups.group_rows(version="v9")
