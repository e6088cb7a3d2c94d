"""The Ray engine's bookkeeping without Ray: read ranges, and the check of the parts against the input that makes a
node lost mid-job cost neither a row nor a duplicate (serving.batch_ray: plan_ranges, _read_file, check_parts,
rewrite_parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from serving.batch_ray import (SEQ_SHIFT, RowsLostError, _read_file, check_parts, default_cpus_per_actor,  # noqa: E402
                               part_arrow_schema, plan_ranges, rewrite_parts)


def test_plan_ranges_cut_files_so_every_actor_gets_work_and_the_last_range_runs_to_the_end():
    assert plan_ranges([100], chunk_size=10, num_actors=2) == [
        (0, 0, 13), (0, 13, 26), (0, 26, 39), (0, 39, 52), (0, 52, 65), (0, 65, 78), (0, 78, 91), (0, 91, -1)]
    # small files: ranges of chunk_size at least; an empty (or unreadable) file is one open range
    assert plan_ranges([5, 0, 25], chunk_size=10, num_actors=4) == [
        (0, 0, -1), (1, 0, -1), (2, 0, 10), (2, 10, 20), (2, 20, -1)]
    with pytest.raises(ValueError, match="num_actors"):
        plan_ranges([3], chunk_size=10, num_actors=0)


def _rows(path: Path, plan) -> list[dict]:
    out = []
    for f, start, stop in plan:
        out += list(_read_file({"file_index": f, "path": str(path), "image_root": None, "start": start, "stop": stop},
                               max_row_bytes=1 << 20))
    return out


def test_ranges_read_every_row_once_and_only_the_files_last_row_carries_its_count(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"r{i}", "text": f"post {i}"}) for i in range(23)]
    lines[4] = "{not json"  # a bad row is a row too (it carries its error)
    path.write_text("\n".join(lines) + "\n")
    whole = _rows(path, [(0, 0, -1)])
    for plan in (plan_ranges([23], 5, 1), [(0, 0, 7), (0, 7, 8), (0, 8, -1)],
                 [(0, 0, 10), (0, 10, -1)], plan_ranges([20], 5, 1)):  # the last: a count that was short
        rows = _rows(path, plan)
        assert [r["seq"] for r in rows] == list(range(23))
        assert rows == whole
    assert [r["file_rows"] for r in whole] == [0] * 22 + [23]
    assert whole[4]["error_code"] == "malformed_row" and whole[4]["id"] is None
    assert _rows(tmp_path / "missing.jsonl", [(0, 0, -1)])[0]["error_code"] == "malformed_row"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _rows(empty, [(0, 0, -1)]) == []


def _part(folder: Path, name: str, seqs: list[int], file_rows: dict[int, int], node: str = "n1") -> Path:
    """A part file as the scorer actors write it: the schema of part_arrow_schema, with `seq`, `id` and the
    bookkeeping columns filled."""
    schema = part_arrow_schema(["hate"])
    rows = [{"seq": s, "id": f"id{s}", "ok": True, "hate_score": s / 1000, "_extras": "{}",
             "_file_rows": file_rows.get(s, 0), "_node": node} for s in seqs]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return path


def _files(tmp_path: Path, sizes: list[int]) -> list[Path]:
    files = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"f{i}.jsonl"
        p.write_text("".join(json.dumps({"id": f"{i}-{j}", "text": "x"}) + "\n" for j in range(n)))
        files.append(p)
    return files


def test_complete_parts_pass_and_count_rows_per_node(tmp_path):
    files = _files(tmp_path, [5, 0, 3])
    f2 = 2 << SEQ_SHIFT
    parts = tmp_path / "parts"
    _part(parts, "a.parquet", [0, 1, 2], {}, node="node_a")
    _part(parts, "b.parquet", [3, 4, f2, f2 + 1, f2 + 2], {4: 5, f2 + 2: 3}, node="node_b")
    check = check_parts(parts, files)
    assert (check.rows, check.repeated_rows, check.in_order, check.unreadable_parts) == (8, 0, True, [])
    assert check.rows_per_node == {"node_a": 3, "node_b": 5}


@pytest.mark.parametrize("case, message", [
    ("middle", "f0.jsonl: 1 of 5 rows missing"),
    ("last", "f0.jsonl: its last row is missing"),
    ("empty_file_not_empty", "f1.jsonl: its last row is missing"),
])
def test_a_missing_row_fails_the_job_naming_the_file(tmp_path, case, message):
    files = _files(tmp_path, [5, 2 if case == "empty_file_not_empty" else 0])
    parts = tmp_path / "parts"
    if case == "middle":
        _part(parts, "a.parquet", [0, 1, 3, 4], {4: 5})
    elif case == "last":
        _part(parts, "a.parquet", [0, 1, 2, 3], {})
    else:
        _part(parts, "a.parquet", [0, 1, 2, 3, 4], {4: 5})
    with pytest.raises(RowsLostError, match=message):
        check_parts(parts, files)


def test_rows_scored_twice_are_kept_once_and_a_part_cut_short_is_set_aside(tmp_path):
    files = _files(tmp_path, [6])
    parts = tmp_path / "parts"
    _part(parts, "a.parquet", [0, 1, 2], {}, node="node_b")
    _part(parts, "b.parquet", [3, 4, 5], {5: 6}, node="node_b")
    _part(parts, "retry.parquet", [2, 3], {}, node="node_a")  # a block written again after its node was lost
    (parts / "cut.parquet").write_bytes((parts / "b.parquet").read_bytes()[:60])  # a write cut short by the kill
    check = check_parts(parts, files)
    assert (check.rows, check.repeated_rows, check.in_order) == (6, 2, False)
    assert check.unreadable_parts == ["cut.parquet"]
    dest = tmp_path / "clean"
    assert rewrite_parts(parts, dest) == 6
    rows = [r for p in sorted(dest.glob("*.parquet")) for r in pq.read_table(str(p)).to_pylist()]
    assert [r["seq"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["_node"] for r in rows] == ["node_b", "node_b", "node_b", "node_b", "node_b", "node_b"]
    after = check_parts(dest, files)
    assert (after.rows, after.repeated_rows, after.in_order, after.unreadable_parts) == (6, 0, True, [])


def test_default_cpus_per_actor_leave_room_for_the_read_and_write_tasks():
    assert default_cpus_per_actor(2, 2) == 0.75  # two 1-CPU nodes, one actor each
    assert default_cpus_per_actor(2, 1) == 1.5
    assert default_cpus_per_actor(8, 1) == 7.5
    assert default_cpus_per_actor(1, 8) == 0.25  # never zero
