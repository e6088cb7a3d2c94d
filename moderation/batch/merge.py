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
    import pyarrow as pa
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
    import pyarrow as pa
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
               ("error_code", pa.string()), ("error", pa.string())]
    return pa.schema(fields)


def internal_arrow_schema(categories: Sequence[str]):
    """Schema of a Parquet part (Ray engine): the result columns plus `seq` and `_extras`."""
    import pyarrow as pa
    base = _result_arrow_schema(categories)
    return pa.schema([pa.field("seq", pa.int64()), *base, pa.field("_extras", pa.string())])


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
    reserved = set(base_cols)
    extra_kinds: dict[str, set[str]] = {}
    renamed: dict[str, str] = {}

    def out_name(col: str) -> str:
        if col not in reserved:
            return col
        if col not in renamed:
            new = "input_" + col
            while new in reserved:
                new = "input_" + new
            renamed[col] = new
        return renamed[col]

    def records() -> Iterator[dict[str, Any]]:
        for part in parts:
            for rec in read_part(part):
                if duplicate_seqs and rec["seq"] in duplicate_seqs and rec.get("id") is not None:
                    err = duplicate_error(rec["id"])
                    rec.update({"ok": False, "flagged": None, "action": None, "applied_input_types": [],
                                "text_truncated": False, "ocr_text": None, "hash_match": None, "language": None,
                                "language_confidence": None, "action_reasons": None,
                                "error_code": err.code.value, "error": err.message})
                    for c in categories:
                        rec[f"{c}_score"] = rec[f"{c}_flagged"] = rec[f"{c}_threshold"] = rec[f"{c}_action"] = None
                yield rec

    if fmt == "parquet":  # the file's schema is fixed before the first row: one cheap pass over the extras
        for part in parts:
            for rec in read_part(part):
                for k, v in json.loads(rec.get("_extras") or "{}").items():
                    extra_kinds.setdefault(k, set()).add(_kind(v))
        for k in extra_kinds:
            out_name(k)

    counts: Counter[str] = Counter()
    n_rows = n_ok = 0
    err_tmp = errors_path.with_name(errors_path.name + ".tmp")
    out_tmp = out.with_name(out.name + ".tmp")
    with writing(out, out_tmp, err_tmp):  # disk full, file too large...: one clear error, no half files
        with open(err_tmp, "w", encoding="utf-8") as err_fh:
            def account(rec: dict[str, Any]) -> None:
                nonlocal n_rows, n_ok
                n_rows += 1
                if rec["ok"]:
                    n_ok += 1
                else:
                    counts[rec["error_code"]] += 1
                    err_fh.write(json.dumps({"id": rec["id"], "source_file": rec["source_file"],
                                             "source_row": rec["source_row"], "error_code": rec["error_code"],
                                             "error": rec["error"]}, ensure_ascii=False) + "\n")

            if fmt == "jsonl":
                with open(out_tmp, "w", encoding="utf-8") as fh:
                    for rec in records():
                        account(rec)
                        row = {c: rec.get(c) for c in base_cols}
                        for k, v in json.loads(rec.get("_extras") or "{}").items():
                            row[out_name(k)] = v
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq
                schema = _result_arrow_schema(categories)
                extra_types = {k: _extras_arrow_type(v) for k, v in extra_kinds.items()}
                for k, t in extra_types.items():
                    schema = schema.append(pa.field(out_name(k), t))
                writer = pq.ParquetWriter(str(out_tmp), schema)
                buf: list[dict[str, Any]] = []

                def flush() -> None:
                    if not buf:
                        return
                    cols: dict[str, list[Any]] = {c: [r.get(c) for r in buf] for c in base_cols}
                    for k, t in extra_types.items():
                        vals = [r["_x"].get(k) for r in buf]
                        cols[out_name(k)] = [_to_string(v) for v in vals] if t == pa.string() else vals
                    writer.write_table(pa.Table.from_pydict(cols, schema=schema))
                    buf.clear()

                try:
                    for rec in records():
                        account(rec)
                        rec["_x"] = json.loads(rec.get("_extras") or "{}")
                        buf.append(rec)
                        if len(buf) >= ROW_GROUP_ROWS:
                            flush()
                    flush()
                finally:
                    writer.close()
            err_fh.flush()
            os.fsync(err_fh.fileno())
        os.replace(err_tmp, errors_path)
        os.replace(out_tmp, out)
    return {"rows": n_rows, "scored": n_ok, "errored": n_rows - n_ok, "error_counts": dict(counts),
            "renamed": renamed}


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
