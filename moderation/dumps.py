"""Reading and writing content dumps: one post per row, JSONL, CSV or Parquet.

Readers never raise for a bad row: a row that cannot be read becomes an `InputError` in the stream, at its
place, with the file and row number in the message, so the caller can count and report it. Reading is
streaming (a line, a CSV record or a Parquet record batch at a time), so memory does not grow with the file.

Text that is not valid UTF-8 is decoded with `surrogateescape`: the row keeps its id and the post's text is
refused later with TEXT_NOT_UTF8 (moderation.inputs.check_text), instead of losing the whole row.

pyarrow (the `batch` extra) is imported only when a Parquet file is read or written.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import decimal
import glob
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

from moderation.schema import ErrorCode, InputError

#: File suffix -> dump format.
FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: A row (JSONL line, CSV record) larger than this is refused as TEXT_TOO_LONG without being parsed, bytes.
DEFAULT_MAX_ROW_BYTES = 8 * 1024 * 1024
#: Rows per Parquet record batch read at a time.
PARQUET_BATCH_ROWS = 1024

Row = dict[str, Any]


def dump_format(path: str | os.PathLike) -> str:
    """"jsonl", "csv" or "parquet" from the file suffix. Raises ValueError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported dump format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Turn files, folders and glob patterns into the sorted list of dump files they name.

    A folder contributes its dump files (any supported suffix, searched recursively, sorted); a glob
    (`*`, `?`, `[`; `**` recurses) its matching dump files; a file is taken as is and must have a supported
    suffix. Each file appears once, in the order of the arguments. Raises FileNotFoundError when an argument
    matches nothing, ValueError for a named file of an unsupported format.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)

    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not found:
                raise FileNotFoundError(f"folder {text} holds no dump files ({', '.join(sorted(FORMATS))})")
            for p in found:
                add(p)
        elif path.is_file():
            dump_format(path)
            add(path)
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in FORMATS)
            if not found:
                raise FileNotFoundError(f"no dump files match {text!r}")
            for p in found:
                add(p)
        else:
            raise FileNotFoundError(f"input not found: {text} (give files, folders or glob patterns of "
                                    f"{', '.join(sorted(FORMATS))} files)")
    return out


def iter_rows(path: str | os.PathLike, *, skip: int = 0,
              max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[int, Row | InputError]]:
    """Yield (row number, row dict or InputError) for each row of a dump file, in file order.

    Row numbers are 1-based: the line number for JSONL (blank lines are not rows), the record number after
    the header for CSV, the row index + 1 for Parquet. The first `skip` items are passed over (JSONL lines
    unparsed). A file that cannot be opened or read yields one InputError (row number 0 when no row of it
    was read) and stops.
    """
    fmt = dump_format(path)
    if fmt == "jsonl":
        return iter_jsonl(path, skip=skip, max_row_bytes=max_row_bytes)
    reader = iter_csv if fmt == "csv" else iter_parquet
    return itertools.islice(reader(path, max_row_bytes=max_row_bytes), skip, None)


def iter_jsonl(path: str | os.PathLike, *, skip: int = 0,
               max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[int, Row | InputError]]:
    """JSONL rows: a line that is not a JSON object, or is longer than `max_row_bytes`, becomes an InputError."""
    path = Path(path)
    name = path.name
    try:
        fh = open(path, "rb")
    except OSError as exc:
        if skip < 1:
            yield 0, InputError(ErrorCode.MALFORMED_ROW, f"{name}: cannot open the file ({exc.strerror})")
        return
    with fh:
        lineno = 0
        rows = 0
        while True:
            try:
                raw = fh.readline(max_row_bytes + 1)
            except OSError as exc:
                if rows >= skip:
                    yield lineno, InputError(ErrorCode.MALFORMED_ROW, f"{name}:{lineno + 1}: read error ({exc.strerror})")
                return
            if not raw:
                return
            lineno += 1
            oversize = len(raw) > max_row_bytes
            if oversize:
                size = len(raw)
                # Drain the rest of the line in bounded pieces: memory stays bounded whatever its length.
                while not raw.endswith(b"\n"):
                    raw = fh.readline(max_row_bytes)
                    if not raw:
                        break
                    size += len(raw)
            elif not raw.strip():
                continue
            rows += 1
            if rows <= skip:
                continue
            if oversize:
                yield lineno, InputError(ErrorCode.TEXT_TOO_LONG,
                                         f"{name}:{lineno}: row is {size} bytes, over the limit of {max_row_bytes}")
                continue
            yield lineno, parse_json_line(raw, f"{name}:{lineno}", first=lineno == 1)


def parse_json_line(raw: bytes, where: str, first: bool = False) -> Row | InputError:
    """Parse one JSONL line into a dict, or an InputError(MALFORMED_ROW) that says why (`where` prefixes it)."""
    line = raw.decode("utf-8", "surrogateescape")
    if first and line.startswith("\ufeff"):
        line = line[1:]
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputError(ErrorCode.MALFORMED_ROW, f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return InputError(ErrorCode.MALFORMED_ROW, f"{where}: JSON nested too deeply")
    if not isinstance(row, dict):
        return InputError(ErrorCode.MALFORMED_ROW, f"{where}: a row must be a JSON object, got {type(row).__name__}")
    return row


def read_jsonl(path: str | os.PathLike) -> Iterator[Row | InputError]:
    """Yield each row of a JSONL file as a dict, or an InputError for a bad line (see iter_jsonl)."""
    for _, item in iter_jsonl(path):
        yield item


def iter_csv(path: str | os.PathLike, *,
             max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[int, Row | InputError]]:
    """CSV rows (header line first): every value is a string, as in the file; empty cells count as absent.

    One record in, one row out: records are split first (`csv_records`, quoting as the csv module reads it,
    so a quoted field may hold line breaks), then each is parsed alone. A record with more or fewer fields
    than the header, or one the csv module cannot parse, is an InputError(MALFORMED_ROW); a record over
    `max_row_bytes` characters is an InputError(TEXT_TOO_LONG), skipped to its end unparsed (memory stays
    bounded), so nothing inside it is ever read as records of its own.
    """
    path = Path(path)
    name = path.name
    # csv's field limit is process-wide; raise it to the row limit so that a record under max_row_bytes is
    # never refused by csv's 128 KiB default (a larger record never reaches the csv module).
    if csv.field_size_limit() < max_row_bytes:
        csv.field_size_limit(max_row_bytes)
    try:
        fh = open(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        yield 0, InputError(ErrorCode.MALFORMED_ROW, f"{name}: cannot open the file ({exc.strerror})")
        return
    with fh:
        records = csv_records(fh, max_row_bytes)
        header: list[str] | None = None
        rowno = 0
        while True:
            try:
                first_line, text, size = next(records)
            except StopIteration:
                return
            except OSError as exc:
                yield rowno, InputError(ErrorCode.MALFORMED_ROW, f"{name}: read error after record {rowno} ({exc.strerror})")
                return
            where = f"{name}: record {rowno + 1} (line {first_line})"
            if text is None:
                if header is None:
                    yield 0, InputError(ErrorCode.MALFORMED_ROW, f"{name}: the CSV header is over {max_row_bytes} characters")
                    return
                rowno += 1
                yield rowno, InputError(ErrorCode.TEXT_TOO_LONG,
                                        f"{where} is {size} characters, over the limit of {max_row_bytes}; skipped to its end")
                continue
            try:
                parsed = list(csv.reader((text,)))
            except csv.Error as exc:
                parsed = exc
            if header is None:
                if parsed == [] or parsed == [[]]:
                    continue  # blank lines before the header
                if isinstance(parsed, csv.Error) or len(parsed) != 1:
                    yield 0, InputError(ErrorCode.MALFORMED_ROW, f"{name}: unreadable CSV header ({parsed})")
                    return
                header = parsed[0]
                continue
            if parsed == [] or parsed == [[]]:
                continue  # a blank line is not a row
            rowno += 1
            if isinstance(parsed, csv.Error) or len(parsed) != 1:
                why = parsed if isinstance(parsed, csv.Error) else f"read as {len(parsed)} records"
                yield rowno, InputError(ErrorCode.MALFORMED_ROW, f"{where}: {why}")
                continue
            record = parsed[0]
            if len(record) != len(header):
                yield rowno, InputError(ErrorCode.MALFORMED_ROW,
                                        f"{where} has {len(record)} fields, the header has {len(header)}")
                continue
            yield rowno, dict(zip(header, record))


#: Characters read at a time when splitting CSV records: bounds memory on a line of any length.
CSV_READ_CHARS = 1 << 20

# States of the CSV record splitter (the csv module's default dialect: ',' between fields, '"' quotes).
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def csv_records(fh: TextIO, max_chars: int) -> Iterator[tuple[int, str | None, int]]:
    """Split CSV text (a file opened with newline="") into records: (first line number, text, size).

    Quoting follows the csv module's default dialect: a field that starts with '"' runs to the next '"' that
    is not doubled, across line breaks; a '"' anywhere else is text. `text` is None for a record over
    `max_chars` characters: it is read to its end in bounded pieces and not kept. A quoted field left open
    runs to the end of the file (as in the csv module). Raises OSError when the file cannot be read.
    """
    line = 0
    state = _FIELD_START
    parts: list[str] = []
    size = 0
    first = 1
    while True:
        piece = fh.readline(CSV_READ_CHARS)
        if not piece:
            if size:
                yield first, ("".join(parts) if size <= max_chars else None), size
            return
        ends_line = piece.endswith(("\n", "\r"))
        if ends_line:
            line += 1
        state = _scan_csv(piece, state)
        size += len(piece)
        if size <= max_chars:
            parts.append(piece)
        elif parts:
            parts = []  # over the limit: drop what was kept, read on to the record's end
        if ends_line and state != _QUOTED:
            yield first, ("".join(parts) if size <= max_chars else None), size
            parts, size, state, first = [], 0, _FIELD_START, line + 1


def _scan_csv(piece: str, state: int) -> int:
    """The splitter's state after `piece` (see csv_records); only quotes and commas move it."""
    i, n = 0, len(piece)
    while i < n:
        if state == _QUOTED:
            j = piece.find('"', i)
            if j < 0:
                return _QUOTED
            state, i = _QUOTE_IN_QUOTED, j + 1
        elif state == _QUOTE_IN_QUOTED:
            c = piece[i]
            # '""' is a quote inside the field; ',' or a line break ends it; other text follows it in the field.
            state = _QUOTED if c == '"' else _FIELD_START if c in ",\r\n" else _UNQUOTED
            i += 1
        elif state == _FIELD_START:
            c = piece[i]
            state = _QUOTED if c == '"' else _FIELD_START if c in ",\r\n" else _UNQUOTED
            i += 1
        else:  # _UNQUOTED: quotes are text; the field runs to the next comma (or the line's end)
            j = piece.find(",", i)
            if j < 0:
                return _UNQUOTED
            state, i = _FIELD_START, j + 1
    return state


def iter_parquet(path: str | os.PathLike, *,
                 max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[int, Row | InputError]]:
    """Parquet rows, a record batch at a time. Values keep their Python types (binary `image` = image bytes).

    An unreadable file, or the unreadable rest of one, yields one InputError and stops.
    """
    path = Path(path)
    name = path.name
    pq = _pyarrow_parquet()
    rowno = 0
    try:
        pf = pq.ParquetFile(str(path))
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                rowno += 1
                yield rowno, row
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; the file is reported, the job goes on
        yield rowno, InputError(ErrorCode.MALFORMED_ROW,
                                f"{name}: cannot read Parquet{' after row ' + str(rowno) if rowno else ''} "
                                f"({type(exc).__name__}: {exc})")


def count_rows(path: str | os.PathLike) -> int:
    """Number of rows `iter_rows` will yield for a healthy file (for progress bars): cheap, streaming."""
    fmt = dump_format(path)
    try:
        if fmt == "parquet":
            return int(_pyarrow_parquet().ParquetFile(str(path)).metadata.num_rows)
        if fmt == "jsonl":
            n = 0
            with open(path, "rb") as fh:
                for line in fh:
                    if line.strip():
                        n += 1
            return n
        return sum(1 for _ in iter_csv(path))
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader itself
        return 0


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet needs the package 'pyarrow' (pip install 'moderation[batch]')") from exc
    return pq


# --- writing --------------------------------------------------------------------------------------------

def json_default(value: Any) -> Any:
    """json.dumps fallback for values Parquet rows can hold: bytes -> base64 text, dates -> ISO text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, _dt.timedelta)):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write a value of type {type(value).__name__} as JSON")


def clean_text(value: str) -> str:
    """A string that encodes as UTF-8: lone surrogates (from undecodable bytes) become U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def clean_value(value: Any) -> Any:
    """`value` with every string made UTF-8-safe (see clean_text), recursing into lists and dicts."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


def write_jsonl(path: str | os.PathLike, rows: Iterable[Row]) -> int:
    """Write rows as JSONL (UTF-8, one object a line). Returns the number of rows written."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(clean_value(row), ensure_ascii=False, default=json_default) + "\n")
            n += 1
    return n


def write_csv(path: str | os.PathLike, rows: Sequence[Row]) -> int:
    """Write rows as CSV with a header of every key seen (first-seen order); absent values are empty cells."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return len(rows)


def write_parquet(path: str | os.PathLike, rows: Sequence[Row]) -> int:
    """Write rows as one Parquet file (column types inferred by pyarrow). Returns the number of rows."""
    import pyarrow as pa
    pq = _pyarrow_parquet()
    pq.write_table(pa.Table.from_pylist(list(rows)), str(path))
    return len(rows)


def write_dump(path: str | os.PathLike, rows: Sequence[Row]) -> int:
    """Write rows in the format the suffix of `path` names (JSONL, CSV or Parquet)."""
    fmt = dump_format(path)
    return {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[fmt](path, rows)
