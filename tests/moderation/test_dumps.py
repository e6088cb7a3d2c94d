"""Dump readers and writers (moderation.dumps): property-based round trips (hypothesis), bad rows in place,
skipping, input expansion."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.dumps import (
    count_rows,
    dump_format,
    expand_inputs,
    iter_jsonl,
    iter_rows,
    write_dump,
)
from moderation.schema import ErrorCode, InputError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text as found in posts: any unicode except lone surrogates (not encodable) and NUL (CSV cannot hold it).
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=60)
ids = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)


@st.composite
def dumps(draw):
    n = draw(st.integers(0, 12))
    uniq = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    return [{"id": i, "text": draw(texts), "lang": draw(st.sampled_from(["en", "fr", "de"]))} for i in uniq]


def _rows(path: Path) -> list:
    return [item for _, item in iter_rows(path)]


@FAST
@given(rows=dumps(), fmt=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_round_trip_every_format(tmp_path_factory, rows, fmt):
    path = tmp_path_factory.mktemp("rt") / f"d.{fmt}"
    write_dump(path, rows)
    got = _rows(path)
    if fmt == "csv":  # CSV holds strings; an empty cell is an empty string, read as "absent" by Post.from_dict
        want = [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]
        assert got == want
    else:
        assert got == rows
    assert count_rows(path) == len(rows)


@FAST
@given(lines=st.lists(st.binary(max_size=40), max_size=15))
def test_jsonl_reader_never_raises_and_keeps_one_item_per_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("j") / "d.jsonl"
    clean = [ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines]
    path.write_bytes(b"".join(ln + b"\n" for ln in clean))
    items = list(iter_jsonl(path))
    nonblank = [i + 1 for i, ln in enumerate(clean) if ln.strip()]
    assert [n for n, _ in items] == nonblank  # line numbers of the non-blank lines, in order
    for _, item in items:
        assert isinstance(item, (dict, InputError))
        if isinstance(item, InputError):
            assert item.code in (ErrorCode.MALFORMED_ROW, ErrorCode.TEXT_TOO_LONG)
    assert count_rows(path) == len(items)


@FAST
@given(rows=dumps(), skip=st.integers(0, 15), fmt=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_skip_passes_over_exactly_the_first_items(tmp_path_factory, rows, skip, fmt):
    path = tmp_path_factory.mktemp("s") / f"d.{fmt}"
    write_dump(path, rows)
    assert list(iter_rows(path, skip=skip)) == list(iter_rows(path))[skip:]


@FAST
@given(records=st.lists(st.lists(st.text(string.ascii_letters + ',"\n ', max_size=8), min_size=1, max_size=4),
                        max_size=8))
def test_csv_reader_flags_ragged_records_and_never_raises(tmp_path_factory, records):
    import csv
    path = tmp_path_factory.mktemp("c") / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for rec in records:
            w.writerow(rec)
    for _, item in iter_rows(path):
        if isinstance(item, InputError):
            assert item.code == ErrorCode.MALFORMED_ROW and "fields" in item.message
        else:
            assert set(item) == {"id", "text"}


@FAST
@given(body=st.text('a,"\n\r ', max_size=40), read_chars=st.sampled_from([3, 1 << 20]))
def test_csv_records_are_split_as_the_csv_module_reads_them(tmp_path_factory, body, read_chars):
    """Whatever the quoting, line breaks and read size, one record of the csv module is one item here."""
    import csv
    import io

    import moderation.dumps as dumps
    text = "id,text\n" + body
    try:
        want_records = [r for r in csv.reader(io.StringIO(text, newline=""))][1:]
    except csv.Error:
        return  # the csv module itself refuses this text; nothing to compare with
    want = [dict(zip(["id", "text"], r)) if len(r) == 2 else ErrorCode.MALFORMED_ROW for r in want_records if r]
    path = tmp_path_factory.mktemp("q") / "d.csv"
    path.write_bytes(text.encode("utf-8"))
    saved, dumps.CSV_READ_CHARS = dumps.CSV_READ_CHARS, read_chars
    try:
        got = [item if isinstance(item, dict) else item.code for _, item in iter_rows(path)]
    finally:
        dumps.CSV_READ_CHARS = saved
    assert got == want


def test_csv_oversized_quoted_field_with_line_breaks_is_one_row(tmp_path):
    """Issue 13.2: after the csv module's field-limit error, the reader went on inside the field, line by line:
    a 2-record file gave 87,385 rows, one with an id and text taken from inside the first post, and the second
    record was lost. Now the record is skipped to its end as one TEXT_TOO_LONG row."""
    import csv
    path = tmp_path / "posts.csv"
    inner = "\n".join(f"inner-{i},looks like a post of its own" for i in range(200))  # ~7 KB, 200 lines
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerow(["first", inner])
        w.writerow(["second", "the genuine second post"])
    saved = csv.field_size_limit()
    csv.field_size_limit(1000)  # the csv module's limit below the field (the reader raises it to max_row_bytes)
    try:
        items = list(iter_rows(path, max_row_bytes=2000))
    finally:
        csv.field_size_limit(saved)
    assert len(items) == 2
    (n1, first), (n2, second) = items
    assert n1 == 1 and first.code == ErrorCode.TEXT_TOO_LONG
    assert "posts.csv: record 1 (line 2) is" in first.message and "skipped to its end" in first.message
    assert (n2, second) == (2, {"id": "second", "text": "the genuine second post"})
    assert count_rows(path) == 2
    # An oversized unquoted line, a line longer than one read, and an unterminated quote at the end of the file.
    path.write_text("id,text\n" + "a," + "x" * 5000 + "\nb,fine\n" + 'c,"open quote\nd,never closed\n',
                    encoding="utf-8")
    import moderation.dumps as dumps
    saved_read, dumps.CSV_READ_CHARS = dumps.CSV_READ_CHARS, 64
    try:
        items = list(iter_rows(path, max_row_bytes=2000))
    finally:
        dumps.CSV_READ_CHARS = saved_read
    assert [n for n, _ in items] == [1, 2, 3]
    assert items[0][1].code == ErrorCode.TEXT_TOO_LONG and "record 1 (line 2)" in items[0][1].message
    assert items[1][1] == {"id": "b", "text": "fine"}
    assert items[2][1] == {"id": "c", "text": "open quote\nd,never closed\n"}  # as the csv module reads it


def test_jsonl_bad_lines_are_errors_in_place(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n\n[1]\n{"id": "b", "text": "caf\xe9"}\n{bad\n' + b'{"id": "c", "text": "' +
                     b"y" * 200 + b'"}\n{"id": "d"}\n')
    items = list(iter_jsonl(path, max_row_bytes=100))
    assert [n for n, _ in items] == [1, 3, 4, 5, 6, 7]
    assert items[0][1] == {"id": "a", "text": "x"}
    assert isinstance(items[1][1], InputError) and "must be a JSON object" in items[1][1].message
    assert items[2][1]["id"] == "b" and items[2][1]["text"] == "caf\udce9"  # kept; refused later as not UTF-8
    assert items[3][1].code == ErrorCode.MALFORMED_ROW and "d.jsonl:5: not valid JSON" in items[3][1].message
    assert items[4][1].code == ErrorCode.TEXT_TOO_LONG and "over the limit of 100" in items[4][1].message
    assert items[5][1] == {"id": "d"}  # the reader resynchronises on the next line after an oversized one


def test_unreadable_parquet_is_one_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    items = list(iter_rows(path))
    assert len(items) == 1 and items[0][0] == 0
    assert items[0][1].code == ErrorCode.MALFORMED_ROW and "cannot read Parquet" in items[0][1].message


def test_expand_inputs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jsonl", "a/b/2.csv", "a/3.parquet", "a/x.txt", "z.jsonl"):
        (tmp_path / name).write_text("")
    got = expand_inputs([tmp_path / "a", str(tmp_path / "*.jsonl"), tmp_path / "a" / "1.jsonl"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/1.jsonl", "a/3.parquet", "a/b/2.csv", "z.jsonl"]
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([tmp_path / "missing.jsonl"])
    with pytest.raises(ValueError, match="unsupported dump format '.txt'"):
        expand_inputs([tmp_path / "a" / "x.txt"])
    with pytest.raises(FileNotFoundError, match="holds no dump files"):
        expand_inputs([_empty(tmp_path)])
    assert dump_format("x.NDJSON") == "jsonl"


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d
