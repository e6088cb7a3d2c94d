"""Reading content dumps: one post per row.

JSONL is read here line by line: a line that is not a JSON object becomes an `InputError` in the stream
(with its line number), never a silent skip, so the caller can count and report it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from moderation.schema import ErrorCode, InputError


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any] | InputError]:
    """Yield each line of a JSONL file as a dict, or an InputError(MALFORMED_ROW / TEXT_NOT_UTF8) for a bad line.

    Blank lines are skipped (they are not rows). The error message names the file and line number.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InputError(ErrorCode.TEXT_NOT_UTF8, f"{path.name}:{lineno}: line is not valid UTF-8 (byte {exc.start})")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputError(ErrorCode.MALFORMED_ROW, f"{path.name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield InputError(ErrorCode.MALFORMED_ROW, f"{path.name}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
                continue
            yield row
