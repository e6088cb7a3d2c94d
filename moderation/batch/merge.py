"""The final merge: the part files, one at a time, into OUT (JSONL or Parquet) and the errors side file."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from moderation.batch.job import errors_path_for, output_format
from moderation.batch.rows import duplicate_error
from moderation.batch.scoring import result_columns
from moderation.batch.summary import BatchSummary
from moderation.batch.workdir import DONE_FILE, cleanup_work_dir, read_part, write_atomic, writing

#: Rows an output Parquet row group holds (parts are small; the output is read by analytics tools).
ROW_GROUP_ROWS = 16_384


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2 ** 63) <= value < 2 ** 63 else "other"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "other"


def _extras_arrow_type(kinds: set[str]):
    import pyarrow as pa  # deferred: pyarrow is an optional extra of the core (batch)
    kinds = kinds - {"null"}
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    return pa.string()  # strings, and any mix: non-strings are written as their JSON text


def _to_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _result_arrow_schema(categories: Sequence[str]):
    import pyarrow as pa  # deferred: pyarrow is an optional extra of the core (batch)
    fields = [("id", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()), ("ok", pa.bool_()),
              ("flagged", pa.bool_()), ("action", pa.string())]
    for c in categories:
        fields += [(f"{c}_score", pa.float64()), (f"{c}_flagged", pa.bool_()), (f"{c}_threshold", pa.float64()),
                   (f"{c}_action", pa.string())]
    hash_match = pa.struct([("list", pa.string()), ("list_version", pa.string()), ("id", pa.string()),
                            ("category", pa.string()), ("distance", pa.int64()), ("threshold", pa.int64())])
    fields += [("applied_input_types", pa.list_(pa.string())), ("text_truncated", pa.bool_()),
               ("ocr_text", pa.string()), ("hash_match", hash_match), ("language", pa.string()),
               ("language_confidence", pa.float64()), ("action_reasons", pa.string()),
               ("model_version", pa.string()), ("thresholds_version", pa.string()), ("policy_version", pa.string()),
               ("precision", pa.string()), ("error_code", pa.string()), ("error", pa.string())]
    return pa.schema(fields)


def internal_arrow_schema(categories: Sequence[str]):
    """Schema of a Parquet part (Ray engine): the result columns plus `seq` and `_extras`."""
    import pyarrow as pa  # deferred: pyarrow is an optional extra of the core (batch)
    base = _result_arrow_schema(categories)
    return pa.schema([pa.field("seq", pa.int64()), *base, pa.field("_extras", pa.string())])


class _ColumnNamer:
    """Output names of the carried-through input columns: a column that collides with a result column is written
    as `input_<name>` (`input_input_<name>` when that collides too); `renamed` records each rename."""

    def __init__(self, reserved: set[str]) -> None:
        self.reserved = reserved
        self.renamed: dict[str, str] = {}

    def __call__(self, col: str) -> str:
        if col not in self.reserved:
            return col
        if col not in self.renamed:
            new = "input_" + col
            while new in self.reserved:
                new = "input_" + new
            self.renamed[col] = new
        return self.renamed[col]


class _ErrorTally:
    """Counts the rows written and, for each unscored one, its error code and one line in the errors side file."""

    def __init__(self, err_fh: Any) -> None:
        self.err_fh = err_fh
        self.rows = 0
        self.scored = 0
        self.counts: Counter[str] = Counter()

    def add(self, rec: dict[str, Any]) -> None:
        self.rows += 1
        if rec["ok"]:
            self.scored += 1
            return
        self.counts[rec["error_code"]] += 1
        self.err_fh.write(json.dumps({"id": rec["id"], "source_file": rec["source_file"],
                                      "source_row": rec["source_row"], "error_code": rec["error_code"],
                                      "error": rec["error"]}, ensure_ascii=False) + "\n")


def mark_duplicate(rec: dict[str, Any], categories: Sequence[str]) -> dict[str, Any]:
    """Turn a scored (or errored) record into a DUPLICATE_ID error, in place: no scores, no action."""
    err = duplicate_error(rec["id"])
    rec.update({"ok": False, "flagged": None, "action": None, "applied_input_types": [],
                "text_truncated": False, "ocr_text": None, "hash_match": None, "language": None,
                "language_confidence": None, "action_reasons": None, "precision": None,  # never scored, as locally
                "error_code": err.code.value, "error": err.message})
    for c in categories:
        rec[f"{c}_score"] = rec[f"{c}_flagged"] = rec[f"{c}_threshold"] = rec[f"{c}_action"] = None
    return rec


def _records(parts: Sequence[Path], categories: Sequence[str], duplicate_seqs: set[int] | None
             ) -> Iterator[dict[str, Any]]:
    """The records of the parts in order, one part in memory at a time; `duplicate_seqs` marked as duplicates."""
    for part in parts:
        for rec in read_part(part):
            if duplicate_seqs and rec["seq"] in duplicate_seqs and rec.get("id") is not None:
                mark_duplicate(rec, categories)
            yield rec


def extra_kinds(parts: Sequence[Path]) -> dict[str, set[str]]:
    """The carried-through columns of the parts and the kinds of value each holds (one pass over the extras:
    a Parquet file's schema is fixed before its first row)."""
    kinds: dict[str, set[str]] = {}
    for part in parts:
        for rec in read_part(part):
            for k, v in json.loads(rec.get("_extras") or "{}").items():
                kinds.setdefault(k, set()).add(_kind(v))
    return kinds


def _write_jsonl(records: Iterator[dict[str, Any]], path: Path, base_cols: Sequence[str], name: _ColumnNamer,
                 tally: _ErrorTally) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            tally.add(rec)
            row = {c: rec.get(c) for c in base_cols}
            for k, v in json.loads(rec.get("_extras") or "{}").items():
                row[name(k)] = v
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _write_parquet(records: Iterator[dict[str, Any]], path: Path, categories: Sequence[str],
                   base_cols: Sequence[str], kinds: dict[str, set[str]], name: _ColumnNamer,
                   tally: _ErrorTally) -> None:
    import pyarrow as pa  # deferred: pyarrow is an optional extra of the core (batch), needed for Parquet only
    import pyarrow.parquet as pq

    schema = _result_arrow_schema(categories)
    extra_types = {k: _extras_arrow_type(v) for k, v in kinds.items()}
    for k, t in extra_types.items():
        schema = schema.append(pa.field(name(k), t))
    writer = pq.ParquetWriter(str(path), schema)
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        if not buf:
            return
        cols: dict[str, list[Any]] = {c: [r.get(c) for r in buf] for c in base_cols}
        for k, t in extra_types.items():
            vals = [r["_x"].get(k) for r in buf]
            cols[name(k)] = [_to_string(v) for v in vals] if t == pa.string() else vals
        writer.write_table(pa.Table.from_pydict(cols, schema=schema))
        buf.clear()

    try:
        for rec in records:
            tally.add(rec)
            rec["_x"] = json.loads(rec.get("_extras") or "{}")
            buf.append(rec)
            if len(buf) >= ROW_GROUP_ROWS:
                flush()
        flush()
    finally:
        writer.close()


def merge_parts(parts: Sequence[Path], out: Path, errors_path: Path, categories: Sequence[str], *,
                duplicate_seqs: set[int] | None = None) -> dict[str, Any]:
    """Write OUT (JSONL or Parquet) and the errors side file from the part files, one part at a time.

    `duplicate_seqs`: rows to turn into DUPLICATE_ID errors here (the Ray engine finds them after scoring).
    Returns counts: rows, scored, errored, error_counts, renamed (carried-through columns renamed because
    they collide with a result column). Both files are written under temporary names and renamed at the end;
    raises OutputWriteError when they cannot be written (the temporary files are removed, the parts kept).
    """
    fmt = output_format(out)
    base_cols = result_columns(categories)
    name = _ColumnNamer(set(base_cols))
    kinds = extra_kinds(parts) if fmt == "parquet" else {}
    for k in kinds:  # renames in the order of the file's schema
        name(k)
    records = _records(parts, categories, duplicate_seqs)
    err_tmp = errors_path.with_name(errors_path.name + ".tmp")
    out_tmp = out.with_name(out.name + ".tmp")
    with writing(out, out_tmp, err_tmp):  # disk full, file too large...: one clear error, no half files
        with open(err_tmp, "w", encoding="utf-8") as err_fh:
            tally = _ErrorTally(err_fh)
            if fmt == "jsonl":
                _write_jsonl(records, out_tmp, base_cols, name, tally)
            else:
                _write_parquet(records, out_tmp, categories, base_cols, kinds, name, tally)
            err_fh.flush()
            os.fsync(err_fh.fileno())
        os.replace(err_tmp, errors_path)
        os.replace(out_tmp, out)
    return {"rows": tally.rows, "scored": tally.scored, "errored": tally.rows - tally.scored,
            "error_counts": dict(tally.counts), "renamed": name.renamed}


def finish_job(work: Path, parts: Sequence[Path], out: Path, summary_base: dict[str, Any], categories: Sequence[str],
               *, expected_rows: int | None, duplicate_seqs: set[int] | None = None) -> BatchSummary:
    """Merge the parts into OUT, check the counts, record the summary, then remove the work folder."""
    errors_path = errors_path_for(out)
    counts = merge_parts(parts, out, errors_path, categories, duplicate_seqs=duplicate_seqs)
    if expected_rows is not None and counts["rows"] != expected_rows:
        raise RuntimeError(f"internal error: {expected_rows} rows were read but the parts hold {counts['rows']}; "
                           f"the parts are kept in {work}")
    summary = BatchSummary(rows_read=counts["rows"], rows_scored=counts["scored"], rows_errored=counts["errored"],
                           error_counts=counts["error_counts"], out=str(out), errors_path=str(errors_path),
                           renamed_columns=counts["renamed"], **summary_base)
    write_atomic(work / DONE_FILE, lambda fh: fh.write(json.dumps(summary.to_dict(), indent=1)))
    cleanup_work_dir(work)
    return summary
