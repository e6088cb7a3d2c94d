"""The final merge of a batch job's part files (moderation.batch.merge), on hand-written parts: no model runs."""

from __future__ import annotations

import json

import pytest

from moderation.batch.merge import _ColumnNamer, extra_kinds, mark_duplicate, merge_parts
from moderation.batch.scoring import result_columns
from moderation.batch.workdir import write_part

CATEGORIES = ["hate", "offensive"]


def record(seq: int, post_id: str | None, *, ok: bool = True, extras: dict | None = None) -> dict:
    """A part record as make_record writes it (result columns in order, `seq`, `_extras` as JSON text)."""
    rec = {"seq": seq, **{c: None for c in result_columns(CATEGORIES)}}
    rec.update(id=post_id, source_file="dump.jsonl", source_row=seq + 1, ok=ok, model_version="m-1",
               applied_input_types=["text"] if ok else [], text_truncated=False)
    if ok:
        rec.update(flagged=False, action="allow", hate_score=0.1, hate_flagged=False, hate_threshold=0.8,
                   hate_action="allow", offensive_score=0.2, offensive_flagged=False, offensive_threshold=0.7,
                   offensive_action="allow", precision="fp32")
    else:
        rec.update(error_code="empty_post", error="the post has neither text nor image")
    rec["_extras"] = json.dumps(extras or {})
    return rec


def test_column_namer_renames_collisions_once_and_in_order():
    name = _ColumnNamer({"id", "ok", "input_ok"})
    assert [name("lang"), name("ok"), name("id"), name("ok")] == ["lang", "input_input_ok", "input_id", "input_input_ok"]
    assert name.renamed == {"ok": "input_input_ok", "id": "input_id"}


def test_mark_duplicate_clears_every_score_and_action():
    rec = mark_duplicate(record(3, "a"), CATEGORIES)
    assert rec["ok"] is False and rec["error_code"] == "duplicate_id" and "appears earlier" in rec["error"]
    assert all(rec[f"{c}_{k}"] is None for c in CATEGORIES for k in ("score", "flagged", "threshold", "action"))
    assert rec["action"] is None and rec["applied_input_types"] == [] and rec["source_row"] == 4
    assert rec["precision"] is None and rec["model_version"] == "m-1"  # never scored; the job's versions kept


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_merge_writes_rows_in_order_errors_aside_and_renames_colliding_columns(tmp_path, fmt):
    work = tmp_path / "work"
    work.mkdir()
    parts = [write_part(work, 0, 2, [record(0, "a", extras={"lang": "en", "ok": 1}), record(1, None, ok=False)]),
             write_part(work, 2, 4, [record(2, "c", extras={"lang": "de"}), record(3, "a")])]
    assert extra_kinds(parts) == {"lang": {"str"}, "ok": {"int"}}
    out, errors = tmp_path / f"out.{fmt}", tmp_path / "out.errors.jsonl"
    counts = merge_parts(parts, out, errors, CATEGORIES, duplicate_seqs={3})
    assert counts == {"rows": 4, "scored": 2, "errored": 2, "error_counts": {"empty_post": 1, "duplicate_id": 1},
                      "renamed": {"ok": "input_ok"}}
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(str(out)).to_pylist()
    assert [r["id"] for r in rows] == ["a", None, "c", "a"] and [r["ok"] for r in rows] == [True, False, True, False]
    assert list(rows[0])[:len(result_columns(CATEGORIES))] == result_columns(CATEGORIES)
    assert rows[0]["input_ok"] == 1 and rows[0]["lang"] == "en" and rows[2]["lang"] == "de"
    assert rows[3]["error_code"] == "duplicate_id" and rows[3]["hate_score"] is None
    side = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [(e["source_row"], e["error_code"]) for e in side] == [(2, "empty_post"), (4, "duplicate_id")]
    assert not list(tmp_path.glob("*.tmp"))
