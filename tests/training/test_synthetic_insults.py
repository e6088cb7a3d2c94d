"""The synthetic insult templates: labelled sensibly, both classes present, never a near-copy of a functional case."""

from __future__ import annotations

import json

import pytest

from moderation.datasets import DatasetSpec, load_labelled
from training import synthetic, synthetic_insults


def test_insults_are_disjoint_from_the_functional_suite():
    cases = synthetic.functional_texts()
    assert len(cases) >= 300
    held = [synthetic._words(t) for t in cases]
    for row in synthetic_insults.insult_rows(exclude=cases):
        words = synthetic._words(row["text"])
        assert not synthetic.near_copy(words, held), row["text"]


def test_a_suite_case_passed_as_exclude_removes_its_near_copies():
    rows = synthetic_insults.insult_rows()
    victim = rows[0]["text"]
    kept = {r["text"] for r in synthetic_insults.insult_rows(exclude=[victim])}
    assert victim not in kept and len(kept) < len(rows)


def test_written_file_loads_with_insults_offensive_and_contrasts_benign(tmp_path):
    path = synthetic_insults.write_insults(tmp_path / "ins.jsonl", seed=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) >= 600
    assert {r["split"] for r in rows} == {"train", "val"}
    insults = [r for r in rows if r["offensive"] == 1]
    benign = [r for r in rows if r["offensive"] == 0]
    assert len(insults) > 300 and len(benign) > 200
    assert all(r["violence"] == 0 and r["hate"] is None for r in insults)
    assert all(r["violence"] == 0 and r["hate"] == 0 for r in benign)
    assert not any(" a idiot" in r["text"] or " a ugly" in r["text"] for r in rows)  # articles agree
    data = load_labelled([DatasetSpec(path, dict(synthetic_insults.LABELS), synthetic_insults.NAME)],
                         ["hate", "offensive", "violence"], "train")
    counts = data.counts()
    assert 0 < counts["offensive"]["positive"] < counts["offensive"]["known"]
    assert counts["violence"]["positive"] == 0 < counts["violence"]["known"]
    # seeded: the same seed gives the same file
    again = synthetic_insults.write_insults(tmp_path / "again.jsonl", seed=3)
    assert again.read_text() == path.read_text()


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="insult-data version"):
        synthetic_insults.insult_rows(version="v9")


def test_insults_are_disjoint_from_the_blind_insult_probes():
    """eval/probes/insults_blind.jsonl was written to measure insults blind: no template may come near one of its
    posts (a template change that does fails here) and no probe may copy a functional case."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "eval" / "probes" / "insults_blind.jsonl"
    probes = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(probes) == 50
    held = [synthetic._words(t) for t in probes]
    suite = [synthetic._words(t) for t in synthetic.functional_texts()]
    for row in synthetic_insults.insult_rows(exclude=synthetic.functional_texts()):
        words = synthetic._words(row["text"])
        assert not synthetic.near_copy(words, held), row["text"]
    for words, text in zip(held, probes):
        assert not synthetic.near_copy(words, suite), text
