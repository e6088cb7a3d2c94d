"""A batch job's arguments and the paths it owns: OUT, its errors side file, its work folder and its lock.

Everything here is checked before the model loads (seconds), so a bad command fails at once:
`check_job` = `resolve_job` (inputs, OUT's format and folder, image root, OUT not among the inputs) + no other
job holds OUT's lock + OUT not already there without --overwrite. `job_lock` is then held for the whole job.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from moderation.dumps import expand_inputs
from moderation.filelock import file_lock, holder

OUTPUT_FORMATS = ("jsonl", "parquet")
#: In the work folder: the job's fingerprint, and the summary of a finished job (its cleanup may be cut short).
JOB_FILE = "job.json"
DONE_FILE = "done.json"


class JobLockedError(ValueError):
    """Another batch job writes the same OUT (it holds `OUT.lock`): refused, never resumed under its feet."""


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


def lock_path_for(out: str | os.PathLike) -> Path:
    """The lock a running job holds on OUT: `OUT.lock` next to OUT (removed when the job ends)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _owned_by(out: Path) -> Callable[[Path], bool]:
    """A test of whether a path is one of the files the job on OUT writes (OUT, errors file, lock, work folder)."""
    out = out.resolve()
    errors = errors_path_for(out)
    names = {out, errors, lock_path_for(out), out.with_name(out.name + ".tmp"),
             errors.with_name(errors.name + ".tmp"), errors.with_name(errors.name + ".lock")}
    work = work_dir_for(out)
    stats = {(st.st_dev, st.st_ino) for st in (_stat(p) for p in names) if st is not None}

    def owned(path: Path) -> bool:
        full = path.resolve()
        if full in names or full == work or work in full.parents:
            return True
        st = _stat(full)
        return st is not None and (st.st_dev, st.st_ino) in stats  # the same file under another name (a hard link)

    return owned


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _image_roots(files: Sequence[Path], image_root: str | os.PathLike | None) -> list[str]:
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise FileNotFoundError(f"--image-root {image_root} is not a folder")
        return [str(root)] * len(files)
    return [str(p.parent) for p in files]


def resolve_job(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
                image_root: str | os.PathLike | None) -> tuple[Path, list[Path], list[str]]:
    """Check a job's arguments: (OUT, input files, image root of each file).

    The job's own files (OUT, its errors file, its work folder) are never inputs: found in a folder or by a
    glob they are passed over; named as an input they are refused, since the job would replace what it reads.
    Raises FileNotFoundError / ValueError with what to do next.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(out)
    output_format(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of --out does not exist: {out.parent}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in .jsonl or .parquet")
    owned = _owned_by(out)
    for raw in inputs:
        path = Path(os.fspath(raw))
        if path.is_file() and owned(path):
            raise ValueError(f"the input {os.fspath(raw)} is this job's own output (--out {out}, its errors file or its "
                             f"work folder): scoring would replace what it reads. Choose another --out.")
    files = [p for p in expand_inputs(inputs) if not owned(p)]
    if not files:
        raise FileNotFoundError(f"no input files besides this job's own output ({out} and its side files)")
    roots = _image_roots(files, image_root)
    return out, files, roots


@contextlib.contextmanager
def job_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold OUT's lock for the block: an exclusive `flock` on `OUT.lock`, released by the kernel if the process
    dies (a `kill -9` leaves no stale lock), and one on its errors file's lock, which `--out res.jsonl` and
    `--out res.parquet` share (`res.errors.jsonl`). Raises JobLockedError at once when another job holds either."""
    def busy(path: Path) -> Exception:
        return JobLockedError(f"another batch job{holder(path)} is writing --out {out} or its errors file "
                              f"{errors_path_for(out).name} (it holds {path}); wait for it to finish, or choose "
                              "another --out")

    errors = errors_path_for(out)
    with file_lock(lock_path_for(out), busy=busy) as path, file_lock(errors.with_name(errors.name + ".lock"), busy=busy):
        yield path


def refuse_existing(out: Path, overwrite: bool) -> None:
    """Raise ValueError when OUT, or the errors file it would write, is already there (and overwrite is off)."""
    if overwrite:
        return
    if out.exists():
        raise ValueError(f"{out} already exists. Pass --overwrite to score again into it, or choose another --out.")
    errors = errors_path_for(out)
    if errors.exists():
        raise ValueError(f"{errors} already exists but {out.name} does not: it is the errors file of another job (an "
                         f"--out named {out.stem} in another format) or a leftover. Pass --overwrite to replace it, "
                         "or choose another --out.")


def check_job(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
              image_root: str | os.PathLike | None, *, overwrite: bool = False,
              restart: bool = False) -> tuple[Path, list[Path], list[str]]:
    """Every check that needs no model, for a CLI to run before loading one: `resolve_job`, no other job holding
    OUT's lock, and OUT not already there (unless overwrite, or an unfinished run will resume). The job itself
    checks again under its lock. Returns what resolve_job does; raises FileNotFoundError / ValueError."""
    resolved = resolve_job(inputs, out, image_root)
    out = resolved[0]
    with job_lock(out):
        pass
    work = work_dir_for(out)
    resumable = not restart and ((work / JOB_FILE).is_file() or (work / DONE_FILE).is_file())
    if not resumable:
        refuse_existing(out, overwrite)
    return resolved
