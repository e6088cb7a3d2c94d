"""The job's work folder `OUT.parts/`: its fingerprint, the part files committed one chunk at a time, resume.

A part is written under a temporary name, flushed to disk and renamed, so it exists whole or not at all;
the committed parts are the contiguous run from row 0, and a run killed at any moment resumes after them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from moderation.batch.job import DONE_FILE, JOB_FILE, output_format, refuse_existing, work_dir_for
from moderation.batch.summary import BatchSummary

PART_PREFIX = "part-"


class OutputWriteError(OSError):
    """A file of the job could not be written (disk full, file too large, no permission...). Nothing is lost:
    the committed parts stay, and the same command resumes once the cause is fixed. `errno` is the cause's."""


@contextlib.contextmanager
def writing(path: Path, *temporaries: Path) -> Iterator[None]:
    """Turn an OSError raised in the block into an OutputWriteError naming `path`; remove `temporaries` (half
    written files that would only hold disk space) first."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as exc:
        for tmp in temporaries:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        name = errno.errorcode.get(exc.errno or 0)
        reason = (exc.strerror or str(exc)) + (f" ({name})" if name else "")
        err = OutputWriteError(f"cannot write {path}: {reason}. The rows scored so far are kept: free space (or fix "
                               "the cause) and run the same command again to resume")
        err.errno = exc.errno
        raise err from exc


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


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write a file under a temporary name, fsync it and rename it into place: readers see all or nothing.

    Raises OutputWriteError when it cannot be written (the temporary file is removed).
    """
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tmp):
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
    write_atomic(path, lambda fh: fh.write(lines))
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
        "ocr": [getattr(scorer, "ocr", "off"), getattr(scorer, "ocr_with_image", False)],
        "hash_lists": getattr(scorer, "hash_list_versions", {}),
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
    refuse_existing(out, overwrite)
    if work.exists():
        shutil.rmtree(work)  # an empty leftover of a cleanup that was cut short
    with writing(work):
        work.mkdir(parents=True)
    write_atomic(job, lambda fh: fh.write(json.dumps(fingerprint, indent=1)))
    return work, False


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


