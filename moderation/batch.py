"""Batch scoring of content dumps: JSONL / CSV / Parquet in, one result row per input row out.

    from moderation.batch import score_dump
    summary = score_dump(["posts/*.jsonl"], "results.parquet", model="path/to/model")
    print(summary.line())          # rows read, scored, errored: they add up

How it runs (the local engine): a reader thread turns the input files into numbered rows, checks ids
(duplicates are reported, never merged) and hands out chunks through a bounded queue; a pool of threads
prepares posts (`Scorer.prepare`: image reading and decoding release the GIL) while the main thread runs
the model (`Scorer.logits`) on the previous chunk, sorted by text length to cut padding; a writer thread
writes each scored chunk as a numbered part file, committed by an atomic rename. Memory is bounded by the
queues, not by the dump. Killed at any moment and run again with the same arguments, the job skips the rows
of committed parts and goes on; a final merge writes OUT with every row exactly once, in input order.

The Ray engine (serving.batch_ray) reuses `make_item` / `ChunkScorer` / `merge_parts`, so both engines give
the same rows. This module imports no ray and no pandas; pyarrow only for Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from moderation.dumps import (
    DEFAULT_MAX_ROW_BYTES,
    Row,
    clean_text,
    clean_value,
    count_rows,
    dump_format,
    expand_inputs,
    iter_rows,
    json_default,
)
from moderation.schema import ErrorCode, InputError, Post, ScoreResult

#: Input columns that make the post; every other column is carried through to the output untouched.
POST_FIELDS = ("id", "text", "image")
OUTPUT_FORMATS = ("jsonl", "parquet")
JOB_FILE = "job.json"
DONE_FILE = "done.json"
PART_PREFIX = "part-"
#: Rows an output Parquet row group holds (parts are small; the output is read by analytics tools).
ROW_GROUP_ROWS = 16_384


# --- what one output row holds ---------------------------------------------------------------------------

def result_columns(categories: Sequence[str]) -> list[str]:
    """Output columns before the carried-through input columns, in order."""
    cols = ["id", "source_file", "source_row", "ok", "flagged"]
    for c in categories:
        cols += [f"{c}_score", f"{c}_flagged", f"{c}_threshold"]
    return cols + ["applied_input_types", "text_truncated", "model_version", "thresholds_version",
                   "error_code", "error"]


@dataclass
class Item:
    """One input row on its way through the job: where it came from, its post or why it has none."""

    seq: int
    source_file: str
    source_row: int
    id: str | None
    post: Post | None
    error: InputError | None
    extras: str  # carried-through columns as a JSON object (text), so every part has one fixed schema
    image_root: str | None


def make_item(seq: int, source_file: str, source_row: int, raw: Row | InputError, image_root: str | None) -> Item:
    """Turn a row from a reader (dict or InputError) into an Item; never raises for a bad row."""
    if isinstance(raw, InputError):
        return Item(seq, source_file, source_row, None, None, raw, "{}", image_root)
    extras = {k: v for k, v in raw.items() if k not in POST_FIELDS}
    try:
        extras_json = json.dumps(clean_value(extras), ensure_ascii=False, default=json_default)
    except (TypeError, ValueError) as exc:
        extras_json = json.dumps({"_unwritable_columns": f"{type(exc).__name__}: {exc}"})
    raw_id = raw.get("id")
    post_id = clean_text(str(raw_id)) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and raw_id != "" else None
    try:
        post = Post.from_dict(raw)
    except InputError as exc:
        return Item(seq, source_file, source_row, post_id, None, exc, extras_json, image_root)
    if post_id != post.id:  # the id itself held undecodable bytes
        return Item(seq, source_file, source_row, post_id, None,
                    InputError(ErrorCode.TEXT_NOT_UTF8, "the id is not valid UTF-8"), extras_json, image_root)
    return Item(seq, source_file, source_row, post.id, post, None, extras_json, image_root)


def duplicate_error(post_id: str) -> InputError:
    return InputError(ErrorCode.DUPLICATE_ID, f"id {post_id!r} appears earlier in the input; only the first is scored")


def _record(item: Item, result: ScoreResult | None, categories: Sequence[str], model_version: str,
            thresholds_version: str | None, error: BaseException | None = None) -> dict[str, Any]:
    """The internal (part-file) row: output columns plus `seq` and `_extras`."""
    rec: dict[str, Any] = {"seq": item.seq, "id": item.id, "source_file": item.source_file,
                           "source_row": item.source_row}
    ok = result is not None and result.ok
    rec["ok"] = ok
    rec["flagged"] = result.flagged if ok else None
    for c in categories:
        cat = result.categories.get(c) if ok else None
        rec[f"{c}_score"] = cat.score if cat else None
        rec[f"{c}_flagged"] = cat.flagged if cat else None
        rec[f"{c}_threshold"] = cat.threshold if cat else None
    rec["applied_input_types"] = list(result.applied_input_types) if ok else []
    rec["text_truncated"] = bool(result.text_truncated) if ok else False
    rec["model_version"] = model_version
    rec["thresholds_version"] = thresholds_version
    if ok:
        rec["error_code"] = rec["error"] = None
    else:
        if result is not None:
            code, message = result.error_code, result.error
        elif isinstance(error, InputError):
            code, message = error.code.value, error.message
        else:
            code, message = ErrorCode.INTERNAL.value, f"{type(error).__name__}: {error}"
        rec["error_code"] = code
        rec["error"] = clean_text(str(message))
    rec["_extras"] = item.extras
    return rec


class ChunkScorer:
    """Scores chunks of Items with one Scorer: prepare (threads for images), model, results -> records.

    `submit(items)` starts preparing a chunk and returns at once; `finish(handle)` waits for it, runs the
    model and returns one record per item, in order. Submitting the next chunk before finishing the current
    one overlaps image decoding with the model.
    """

    def __init__(self, scorer: Any, workers: int | None = None) -> None:
        self.scorer = scorer
        self.categories = list(scorer.categories)
        self.workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="batch-prepare") if self.workers > 0 else None

    def _prepare(self, item: Item) -> Any:
        try:
            return self.scorer.prepare(item.post, item.image_root)
        except Exception as exc:  # noqa: BLE001 - one bad post must not sink the chunk
            return exc

    def submit(self, items: Sequence[Item]) -> list[tuple[Item, Any]]:
        handle: list[tuple[Item, Any]] = []
        for item in items:
            if item.post is None:
                handle.append((item, None))
            elif item.post.image is not None and self._pool is not None:
                handle.append((item, self._pool.submit(self._prepare, item)))
            else:
                handle.append((item, self._prepare(item)))  # text only: microseconds, no thread hop
        return handle

    def finish(self, handle: list[tuple[Item, Any]]) -> list[dict[str, Any]]:
        from moderation.model import PreparedPost
        scorer = self.scorer
        mv, tv = scorer.model_version, scorer.thresholds_version
        done = [(item, p.result() if isinstance(p, Future) else p) for item, p in handle]
        ready = [(i, prep) for i, (_, prep) in enumerate(done) if isinstance(prep, PreparedPost)]
        results: dict[int, ScoreResult] = {}
        failure: BaseException | None = None
        if ready:
            prepared = [p for _, p in ready]
            try:
                logits, truncated = scorer.logits(prepared)
                for (i, _), r in zip(ready, scorer.results(prepared, logits, truncated)):
                    results[i] = r
            except Exception as exc:  # noqa: BLE001 - reported on every post of the chunk, never dropped
                failure = exc
        out = []
        for i, (item, prep) in enumerate(done):
            if item.error is not None:
                out.append(_record(item, None, self.categories, mv, tv, item.error))
            elif isinstance(prep, BaseException):
                out.append(_record(item, None, self.categories, mv, tv, prep))
            elif i in results:
                out.append(_record(item, results[i], self.categories, mv, tv))
            else:
                out.append(_record(item, None, self.categories, mv, tv, failure or RuntimeError("not scored")))
        return out

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        return self.finish(self.submit(items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class IdSet:
    """The ids seen so far, as 64-bit hashes: 8 bytes an id (plus a small buffer), whatever the dump size.

    Two different ids share a hash with probability about n^2 / 2^65 (1e-5 at ten million ids); such a row
    would be reported as a duplicate, never merged silently.
    """

    def __init__(self, buffer: int = 65_536) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._buffer = buffer

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")

    def add(self, key: str) -> bool:
        """Add `key`; True when it was new, False when it had been seen."""
        h = self._hash(key)
        if h in self._recent:
            return False
        if self._sorted.size:
            i = int(np.searchsorted(self._sorted, np.uint64(h)))
            if i < self._sorted.size and int(self._sorted[i]) == h:
                return False
        self._recent.add(h)
        if len(self._recent) >= self._buffer:
            self._flush()
        return True

    def _flush(self) -> None:
        fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        self._sorted = np.union1d(self._sorted, fresh)
        self._recent.clear()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)


# --- the summary -----------------------------------------------------------------------------------------

@dataclass
class BatchSummary:
    """What a batch job did. rows_read == rows_scored + rows_errored, always."""

    rows_read: int
    rows_scored: int
    rows_errored: int
    error_counts: dict[str, int]
    out: str
    errors_path: str
    engine: str = "local"
    resumed_rows: int = 0
    elapsed_s: float = 0.0
    model_version: str = ""
    thresholds_version: str | None = None
    renamed_columns: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rows_errored == 0

    @property
    def rows_per_s(self) -> float:
        done = self.rows_read - self.resumed_rows
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line: rows read = scored + errored, errors by code, where the results are."""
        errs = ", ".join(f"{k} {v}" for k, v in sorted(self.error_counts.items()))
        resumed = f" ({self.resumed_rows} from an earlier run)" if self.resumed_rows else ""
        return (f"rows read {self.rows_read}{resumed}, scored {self.rows_scored}, errored {self.rows_errored}"
                f"{' (' + errs + ')' if errs else ''} -> {self.out}; errors -> {self.errors_path}"
                f" [{self.rows_per_s:.1f} rows/s, {self.elapsed_s:.1f} s]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the job's work folder (parts, resume) ---------------------------------------------------------------

def output_format(out: str | os.PathLike) -> str:
    """"jsonl" or "parquet" from OUT's suffix. Raises ValueError otherwise."""
    suffix = Path(out).suffix.lower()
    fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)
    if fmt is None:
        raise ValueError(f"--out {out}: the output must end in .jsonl or .parquet")
    return fmt


def work_dir_for(out: str | os.PathLike) -> Path:
    """Where a job keeps its part files until the final merge: `OUT.parts/` next to OUT."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def errors_path_for(out: str | os.PathLike) -> Path:
    """The side file of errored rows: `OUT-stem.errors.jsonl` next to OUT."""
    out = Path(out)
    return out.with_name(out.stem + ".errors.jsonl")


def part_name(start: int, end: int, suffix: str = ".jsonl") -> str:
    return f"{PART_PREFIX}{start:012d}-{end:012d}{suffix}"


def committed_parts(work: Path) -> tuple[list[Path], int]:
    """The committed parts that form a contiguous prefix of the rows, and how many rows they hold.

    Leftovers of a killed run (temporary files, a part beyond a gap) are deleted: their rows are redone.
    """
    parts: list[tuple[int, int, Path]] = []
    for p in work.iterdir() if work.is_dir() else []:
        if p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
            continue
        if p.name.startswith(PART_PREFIX) and p.suffix == ".jsonl":
            try:
                start, end = (int(x) for x in p.stem[len(PART_PREFIX):].split("-"))
            except ValueError:
                continue
            parts.append((start, end, p))
    parts.sort()
    prefix: list[Path] = []
    done = 0
    for start, end, p in parts:
        if start == done and end > start:
            prefix.append(p)
            done = end
        else:
            p.unlink(missing_ok=True)
    return prefix, done


def _write_atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write a file under a temporary name, fsync it and rename it into place: readers see all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic


def write_part(work: Path, start: int, end: int, records: Sequence[dict[str, Any]]) -> Path:
    """Commit one part (rows start..end-1) atomically."""
    path = work / part_name(start, end)
    lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=True) + "\n" for r in records)
    _write_atomic(path, lambda fh: fh.write(lines))
    return path


def read_part(path: Path) -> list[dict[str, Any]]:
    """The records of one part file (JSONL from the local engine, Parquet from the Ray engine)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(str(path)).to_pylist()
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_fingerprint(files: Sequence[Path], *, image_root: str | None, scorer: Any, out: Path,
                    max_row_bytes: int, engine: str) -> dict[str, Any]:
    """What must not change between a run and its resumption: inputs, model, thresholds, options."""
    return {
        "inputs": [_file_fingerprint(p) for p in files],
        "image_root": str(Path(image_root).resolve()) if image_root is not None else None,
        "model_version": scorer.model_version,
        "thresholds_version": scorer.thresholds_version,
        "categories": list(scorer.categories),
        "precision": getattr(scorer, "precision", "fp32"),
        "output_format": output_format(out),
        "max_row_bytes": max_row_bytes,
        "engine": engine,
    }


def open_work_dir(out: Path, fingerprint: dict[str, Any], *, restart: bool, overwrite: bool) -> tuple[Path, bool]:
    """Create or reopen the work folder of a job. Returns (folder, finished earlier?).

    Raises ValueError when OUT exists from a finished run (without overwrite), or when the folder holds a
    run with other arguments (without restart): resuming it would mix two different jobs.
    """
    work = work_dir_for(out)
    if restart and work.exists():
        shutil.rmtree(work)
    job = work / JOB_FILE
    if work.is_dir() and (work / DONE_FILE).is_file():
        return work, True
    if work.is_dir() and job.is_file():
        try:
            saved = json.loads(job.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            saved = None
        if saved != fingerprint:
            differs = sorted(k for k in fingerprint if not isinstance(saved, dict) or saved.get(k) != fingerprint[k])
            raise ValueError(f"{work} holds an unfinished run with other arguments or inputs (differs: "
                             f"{', '.join(differs) or 'unreadable job file'}). Rerun with the same arguments to "
                             f"resume it, or pass --restart to discard it.")
        return work, False
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists. Pass --overwrite to score again into it, or choose another --out.")
    if work.exists():
        shutil.rmtree(work)  # an empty leftover of a cleanup that was cut short
    work.mkdir(parents=True)
    _write_atomic(job, lambda fh: fh.write(json.dumps(fingerprint, indent=1)))
    return work, False


# --- the final merge -------------------------------------------------------------------------------------

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
              ("flagged", pa.bool_())]
    for c in categories:
        fields += [(f"{c}_score", pa.float64()), (f"{c}_flagged", pa.bool_()), (f"{c}_threshold", pa.float64())]
    fields += [("applied_input_types", pa.list_(pa.string())), ("text_truncated", pa.bool_()),
               ("model_version", pa.string()), ("thresholds_version", pa.string()), ("error_code", pa.string()),
               ("error", pa.string())]
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
    they collide with a result column). Both files are written under temporary names and renamed at the end.
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
                    rec.update({"ok": False, "flagged": None, "applied_input_types": [], "text_truncated": False,
                                "error_code": err.code.value, "error": err.message})
                    for c in categories:
                        rec[f"{c}_score"] = rec[f"{c}_flagged"] = rec[f"{c}_threshold"] = None
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
    _write_atomic(work / DONE_FILE, lambda fh: fh.write(json.dumps(summary.to_dict(), indent=1)))
    cleanup_work_dir(work)
    return summary


def cleanup_work_dir(work: Path) -> None:
    """Remove a finished job's folder: parts first, the done marker last (a cut-short cleanup is redone)."""
    for p in sorted(work.iterdir()):
        if p.name != DONE_FILE:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    (work / DONE_FILE).unlink(missing_ok=True)
    work.rmdir()


def finished_summary(work: Path) -> BatchSummary:
    """The summary a finished run recorded (its cleanup was cut short); finishes the cleanup."""
    data = json.loads((work / DONE_FILE).read_text(encoding="utf-8"))
    cleanup_work_dir(work)
    return BatchSummary(**data)


# --- the local engine ------------------------------------------------------------------------------------

def _progress_bar(enabled: bool, total: int | None, desc: str, initial: int = 0, unit: str = "row"):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)


def _image_roots(files: Sequence[Path], image_root: str | os.PathLike | None) -> list[str]:
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise FileNotFoundError(f"--image-root {image_root} is not a folder")
        return [str(root)] * len(files)
    return [str(p.parent) for p in files]


def resolve_job(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
                image_root: str | os.PathLike | None) -> tuple[Path, list[Path], list[str]]:
    """Check a job's arguments: (OUT, input files, image root of each file). Raises FileNotFoundError/ValueError."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(out)
    output_format(out)
    files = expand_inputs(inputs)
    roots = _image_roots(files, image_root)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of --out does not exist: {out.parent}")
    return out, files, roots


class _Stopped(Exception):
    pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _reader(files: Sequence[Path], roots: Sequence[str], skip: int, chunk_size: int, seen: IdSet,
            max_row_bytes: int, out_q: queue.Queue, stop: threading.Event, errors: list[BaseException]) -> None:
    """Thread: number the rows, mark duplicate ids, hand out chunks of Items (bounded queue).

    The first `skip` rows (committed by an earlier run) are read but not handed out: their ids are already
    in `seen`, rebuilt from the parts.
    """
    try:
        seq = 0
        chunk: list[Item] = []
        for path, root in zip(files, roots):
            for rowno, raw in iter_rows(path, max_row_bytes=max_row_bytes):
                if seq < skip:
                    seq += 1
                    continue
                item = make_item(seq, str(path), rowno, raw, root)
                seq += 1
                if item.id is not None and not seen.add(item.id):
                    item.error, item.post = duplicate_error(item.id), None
                chunk.append(item)
                if len(chunk) >= chunk_size:
                    _put(out_q, chunk, stop)
                    chunk = []
        if chunk:
            _put(out_q, chunk, stop)
        _put(out_q, None, stop)
    except _Stopped:
        return
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which stops the job
        errors.append(exc)
        try:
            out_q.put_nowait(None)
        except queue.Full:
            pass


def _writer(work: Path, in_q: queue.Queue, errors: list[BaseException]) -> None:
    """Thread: commit each scored chunk as a part file, in order."""
    while True:
        job = in_q.get()
        if job is None:
            return
        if errors:
            continue  # after a failure, drain without writing: nothing past a gap is committed
        start, end, records = job
        try:
            write_part(work, start, end, records)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)


def score_dump(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
               scorer: Any = None, model: str | os.PathLike | None = None,
               image_root: str | os.PathLike | None = None, chunk_size: int = 128, workers: int | None = None,
               prefetch: int = 2, read_ahead: int = 4, progress: bool = True, restart: bool = False,
               overwrite: bool = False, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, batch_size: int = 32,
               device: str = "cpu", precision: str = "fp32") -> BatchSummary:
    """Score every row of the input dumps into OUT (.jsonl or .parquet); the Python API of `moderation score`.

    inputs: files, folders or glob patterns of JSONL / CSV / Parquet dumps. scorer: a ready Scorer, else one
    is loaded from `model` (a model directory; None: the default model) with batch_size/device/precision.
    image_root: where image paths resolve (default: the folder of each input file); escaping it is refused.
    chunk_size: rows per part file and per model window (sorted by text length within it). workers: threads
    preparing posts. prefetch: chunks being prepared ahead of the model; read_ahead: chunks read ahead.
    restart: discard an unfinished earlier run instead of resuming it. overwrite: replace an existing OUT.

    Returns a BatchSummary (rows_read == rows_scored + rows_errored). Bad rows never raise: they are in
    OUT with their error and in the errors side file. Raises FileNotFoundError / ValueError for bad
    arguments, KeyboardInterrupt when interrupted (the committed parts are kept for the next run).
    """
    if chunk_size < 1 or prefetch < 1 or read_ahead < 1:
        raise ValueError("chunk_size, prefetch and read_ahead must be >= 1")
    out, files, roots = resolve_job(inputs, out, image_root)
    own_scorer = scorer is None
    if scorer is None:
        from moderation.scorer import Scorer
        opts = dict(batch_size=batch_size, device=device, precision=precision)
        scorer = Scorer.from_dir(model, **opts) if model is not None else Scorer.default(**opts)
    started = time.perf_counter()
    chunker: ChunkScorer | None = None
    try:
        fingerprint = job_fingerprint(files, image_root=str(image_root) if image_root is not None else None,
                                      scorer=scorer, out=out, max_row_bytes=max_row_bytes, engine="local")
        work, finished = open_work_dir(out, fingerprint, restart=restart, overwrite=overwrite)
        if finished:
            return finished_summary(work)
        parts, done = committed_parts(work)
        seen = IdSet()
        for part in parts:
            for rec in read_part(part):
                if rec.get("id") is not None:
                    seen.add(rec["id"])
        total = sum(count_rows(p) for p in files)
        chunker = ChunkScorer(scorer, workers)
        stop = threading.Event()
        errors: list[BaseException] = []
        in_q: queue.Queue = queue.Queue(maxsize=read_ahead)
        out_q: queue.Queue = queue.Queue(maxsize=2)
        reader = threading.Thread(target=_reader, name="batch-reader", daemon=True,
                                  args=(files, roots, done, chunk_size, seen, max_row_bytes, in_q, stop, errors))
        writer = threading.Thread(target=_writer, name="batch-writer", daemon=True, args=(work, out_q, errors))
        reader.start()
        writer.start()
        bar = _progress_bar(progress, max(total, done), "scoring", initial=done)
        pending: deque[tuple[list[Item], list[tuple[Item, Any]]]] = deque()
        eof = False

        def fill() -> None:
            nonlocal eof
            while len(pending) < prefetch and not eof:
                chunk = in_q.get()
                if errors:
                    raise errors[0]
                if chunk is None:
                    eof = True
                else:
                    pending.append((chunk, chunker.submit(chunk)))

        try:
            fill()
            while pending:
                chunk, handle = pending.popleft()
                fill()  # keep `prefetch` chunks being prepared while the model runs on this one
                records = chunker.finish(handle)
                if errors:
                    raise errors[0]
                out_q.put((chunk[0].seq, chunk[-1].seq + 1, records))
                bar.update(len(chunk))
        finally:
            stop.set()
            out_q.put(None)
            writer.join()
            reader.join(timeout=5)
            bar.close()
            for _, handle in pending:
                for _, fut in handle:
                    if isinstance(fut, Future):
                        fut.cancel()
        if errors:
            raise errors[0]
        parts, n_done = committed_parts(work)
        summary_base = {"engine": "local", "resumed_rows": done, "model_version": scorer.model_version,
                        "thresholds_version": scorer.thresholds_version}
        summary_base["elapsed_s"] = time.perf_counter() - started
        return finish_job(work, parts, out, summary_base, scorer.categories, expected_rows=n_done)
    finally:
        if chunker is not None:
            chunker.close()
        if own_scorer:
            scorer.close()
