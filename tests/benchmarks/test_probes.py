"""benchmarks/probes.py: probe files scored by a model through its policy, counted per kind, misses listed."""

from __future__ import annotations

import json

import pytest

from benchmarks import probes


def test_probe_counts_per_kind_and_lists_misses(tiny_model_dir, tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"id": "a", "text": "you are a clown", "expect": "harmful", "kind": "insult"},
            {"id": "b", "text": "you utter fool", "expect": "harmful", "kind": "insult"},
            {"id": "c", "text": "lovely weather", "expect": "benign", "kind": "ordinary"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = probes.measure(str(tiny_model_dir), [path])
    fig = run["files"]["p.jsonl"]
    from moderation.scorer import Scorer
    scorer = Scorer.from_dir(tiny_model_dir, precision="fp32", ocr="off")
    actions = [r.action for r in scorer.score([{"id": r["id"], "text": r["text"]} for r in rows])]
    scorer.close()
    flagged = [a != "allow" for a in actions]
    assert [p["action"] for p in fig["posts"]] == actions
    assert (fig["n_harmful"], fig["harmful_caught"]) == (2, flagged[0] + flagged[1])
    assert (fig["n_benign"], fig["benign_allowed"]) == (1, int(not flagged[2]))
    insult = fig["kinds"]["insult"]
    assert insult["n"] == 2 and insult["as_expected"] == flagged[0] + flagged[1]
    assert insult["block"] + insult["review"] + insult["allow"] == 2
    table = probes.markdown([run, run])
    caught = flagged[0] + flagged[1]
    assert f"| insult | reviewed or blocked | {caught}/2 | {caught}/2 |" in table
    assert f"| ordinary | allowed | {int(not flagged[2])}/1 | {int(not flagged[2])}/1 |" in table
    for row, f in zip(rows[:2], flagged[:2]):  # a harmful post allowed is listed as a miss, once per model
        assert table.count(f"expected harmful): {row['text']}\n") == (0 if f else 2)


def test_a_missing_probe_file_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        probes.measure(str(tiny_model_dir), [tmp_path / "nope.jsonl"])


def test_shipped_probe_files_are_well_formed():
    for path in probes.PROBE_FILES:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len({r["id"] for r in rows}) == len(rows) >= 50
        assert {r["expect"] for r in rows} == {"harmful", "benign"}
        assert all(r["text"].strip() and r["kind"] for r in rows)
