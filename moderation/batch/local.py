"""The local engine of batch scoring: threads in this process, bounded queues, resumable part files.

    reader thread --chunks (bounded queue)--> prepare pool (threads) --> model (main thread) --> writer thread
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Sequence

from moderation.batch.job import job_lock, resolve_job
from moderation.batch.merge import finish_job
from moderation.batch.rows import IdSet, Item, duplicate_error, make_item
from moderation.batch.scoring import ChunkScorer
from moderation.batch.summary import BatchSummary
from moderation.batch.workdir import (
    committed_parts,
    finished_summary,
    job_fingerprint,
    open_work_dir,
    part_name,
    read_part,
    write_part,
    writing,
)
from moderation.dumps import DEFAULT_MAX_ROW_BYTES, count_rows, iter_rows
from moderation.precision import DEFAULT_BATCH_SIZE


def _progress_bar(enabled: bool, total: int | None, desc: str, initial: int = 0, unit: str = "row"):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)


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
            with writing(work / part_name(start, end)):  # disk full...: an OutputWriteError, the job stops cleanly
                write_part(work, start, end, records)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)


def score_dump(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
               scorer: Any = None, model: str | os.PathLike | None = None,
               image_root: str | os.PathLike | None = None, chunk_size: int = 128, workers: int | None = None,
               prefetch: int = 2, read_ahead: int = 4, progress: bool = True, restart: bool = False,
               overwrite: bool = False, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
               batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", precision: str = "auto") -> BatchSummary:
    """Score every row of the input dumps into OUT (.jsonl or .parquet); the Python API of `moderation score`.

    inputs: files, folders or glob patterns of JSONL / CSV / Parquet dumps. scorer: a ready Scorer, else one
    is loaded from `model` (a model directory; None: the default model) with batch_size/device/precision.
    image_root: where image paths resolve (default: the folder of each input file); escaping it is refused.
    chunk_size: rows per part file and per model window (sorted by text length within it). workers: threads
    preparing posts. prefetch: chunks being prepared ahead of the model; read_ahead: chunks read ahead.
    restart: discard an unfinished earlier run instead of resuming it. overwrite: replace an existing OUT.

    Returns a BatchSummary (rows_read == rows_scored + rows_errored). Bad rows never raise: they are in
    OUT with their error and in the errors side file. Raises FileNotFoundError / ValueError for bad
    arguments or a refused job (JobLockedError: another job writes OUT), OutputWriteError when a file cannot
    be written (disk full...), KeyboardInterrupt when interrupted (in both cases the committed parts are kept
    and calling again resumes).
    """
    if chunk_size < 1 or prefetch < 1 or read_ahead < 1:
        raise ValueError("chunk_size, prefetch and read_ahead must be >= 1")
    out, files, roots = resolve_job(inputs, out, image_root)
    with job_lock(out):  # held to the end: a second job on the same OUT is refused, never mixed in
        own_scorer = scorer is None
        if scorer is None:
            from moderation.scorer import Scorer  # deferred: torch; moderation.batch stays light for the checks before a job
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
