"""A batch job's arguments and the paths it owns: OUT, its errors side file and its work folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from moderation.dumps import expand_inputs

OUTPUT_FORMATS = ("jsonl", "parquet")


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
