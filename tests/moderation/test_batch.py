"""Batch scoring (moderation.batch, `moderation score`): the output contract on dumps with every kind of bad row,
input formats, folders and globs, resume after a real `kill -9`, and the refusals that protect a resumable job."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from moderation.batch import IdSet, errors_path_for, score_dump, work_dir_for
from moderation.cli import main as cli_main
from moderation.dumps import write_dump

REPO = Path(__file__).resolve().parents[2]


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels (10 G by default), with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# id -> expected error code (None: scored)
EXPECTED = {
    "ok-text": None,
    "ok-image": None,
    "ok-both": None,
    "long-text": None,            # over max_text_chars: scored, cut and marked text_truncated
    "dup": None,                  # first occurrence scored...
    "empty": "empty_post",
    "blank-text": "empty_post",
    "not-utf8": "text_not_utf8",
    "truncated-jpeg": "image_corrupt",
    "bomb": "image_decompression_bomb",
    "not-image": "image_unsupported_format",
    "missing-file": "image_not_found",
    "escape": "image_path_refused",
    "bad-field": "invalid_field",
}


@pytest.fixture()
def bad_dump(tmp_path, image_dir) -> Path:
    """A JSONL dump with good rows and every kind of bad row; images in ./imgs next to it."""
    (image_dir / "bomb.png").write_bytes(bomb_png())
    lines = [
        json.dumps({"id": "ok-text", "text": "have a nice day", "lang": "en", "score_hint": 3}),
        json.dumps({"id": "ok-image", "image": "imgs/red.png", "lang": "xx"}),
        json.dumps({"id": "ok-both", "text": "caption", "image": "imgs/blue.jpg"}),
        json.dumps({"id": "long-text", "text": "word " * 5000}),
        json.dumps({"id": "dup", "text": "first"}),
        json.dumps({"id": "dup", "text": "second"}),
        "{this is not json",
        json.dumps({"text": "no id here"}),
        json.dumps({"id": "empty"}),
        json.dumps({"id": "blank-text", "text": "   "}),
        None,  # non-UTF-8 bytes, written below
        json.dumps({"id": "huge", "text": "x" * 40_000}),  # over max_row_bytes (30000 in the tests)
        json.dumps({"id": "truncated-jpeg", "image": "imgs/truncated.jpg"}),
        json.dumps({"id": "bomb", "image": "imgs/bomb.png"}),
        json.dumps({"id": "not-image", "image": "imgs/notes.txt"}),
        json.dumps({"id": "missing-file", "image": "imgs/nope.png"}),
        json.dumps({"id": "escape", "image": "../../../etc/passwd"}),
        json.dumps({"id": "bad-field", "text": 42}),
        "[1, 2, 3]",
    ]
    path = tmp_path / "posts.jsonl"
    with open(path, "wb") as fh:
        for line in lines:
            if line is None:
                fh.write(b'{"id": "not-utf8", "text": "caf\xe9 \xff\xfe"}\n')
            else:
                fh.write(line.encode("utf-8") + b"\n")
            fh.write(b"\n" if line == lines[2] else b"")  # a blank line: not a row
    return path


def _read_out(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_output_contract_with_every_kind_of_bad_row(tiny_scorer, bad_dump, tmp_path, suffix):
    out = tmp_path / f"results{suffix}"
    summary = score_dump([bad_dump], out, scorer=tiny_scorer, chunk_size=4, max_row_bytes=30_000, progress=False)
    rows = _read_out(out)
    # exactly one output row per input row (19 non-blank lines), in input order
    assert len(rows) == 19 == summary.rows_read
    assert [r["source_row"] for r in rows] == sorted(r["source_row"] for r in rows)
    assert summary.rows_read == summary.rows_scored + summary.rows_errored
    assert summary.rows_scored == sum(r["ok"] for r in rows) == 5
    by_id: dict = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    for post_id, code in EXPECTED.items():
        first = by_id[post_id][0]
        assert first["error_code"] == code, (post_id, first["error"])
        if code is None:
            assert first["ok"] and first["error"] is None
            assert 0.0 <= first["hate_score"] <= 1.0 and 0.0 <= first["offensive_score"] <= 1.0
            assert first["hate_flagged"] is not None and "hate_threshold" in first
            assert first["model_version"] == tiny_scorer.model_version
            assert first["action"] in ("allow", "review", "block") and first["hate_action"] in ("allow", "review", "block")
            assert first["policy_version"] == tiny_scorer.policy.version and "action_reasons" in first
        else:
            assert not first["ok"] and first["error"] and first["hate_score"] is None and first["flagged"] is None
            # An error is never allowed: it has no action at all (but says which policy was in force).
            assert first["action"] is None and first["hate_action"] is None
            assert first["policy_version"] == tiny_scorer.policy.version
    assert by_id["dup"][1]["error_code"] == "duplicate_id"
    assert by_id["long-text"][0]["text_truncated"] is True
    assert by_id["ok-both"][0]["applied_input_types"] == ["image", "text"]
    assert by_id["ok-image"][0]["applied_input_types"] == ["image"]
    assert by_id["not-utf8"][0]["error"].startswith("text is not valid UTF-8")
    no_id = [r for r in rows if r["id"] is None]
    # the oversized row is refused unparsed (memory stays bounded), so its id is unknown; the message says where
    assert sorted(r["error_code"] for r in no_id) == ["malformed_row", "malformed_row", "missing_id", "text_too_long"]
    assert any("posts.jsonl:13: row is" in r["error"] for r in no_id)
    assert any("not valid JSON" in r["error"] and "posts.jsonl:" in r["error"] for r in no_id)
    # extra columns carried through untouched (absent where the row had none)
    assert by_id["ok-text"][0]["lang"] == "en" and by_id["ok-text"][0]["score_hint"] == 3
    assert by_id["ok-image"][0]["lang"] == "xx" and by_id["ok-both"][0].get("lang") is None
    # side file of errors: one line per errored row, with the reason
    errors = [json.loads(x) for x in errors_path_for(out).read_text().splitlines()]
    assert len(errors) == summary.rows_errored == 14
    assert sum(summary.error_counts.values()) == summary.rows_errored
    assert {e["error_code"] for e in errors} >= {"duplicate_id", "image_corrupt", "malformed_row", "missing_id"}
    assert all(e["error"] for e in errors)
    assert not work_dir_for(out).exists()


def test_cli_exit_status_and_summary(tiny_model_dir, bad_dump, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    rc = cli_main(["score", str(bad_dump), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress",
                   "--max-row-bytes", "30000"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 1
    assert line.startswith("rows read 19, scored 5, errored 14")
    clean = tmp_path / "clean.csv"
    write_dump(clean, [{"id": "a", "text": "hello"}, {"id": "b", "text": "world"}])
    rc = cli_main(["score", str(clean), "--model", str(tiny_model_dir), "--out", str(tmp_path / "c.jsonl"),
                   "--no-progress"])
    assert rc == 0
    assert "rows read 2, scored 2, errored 0" in capsys.readouterr().out
    # OUT exists now: refused with what to do next, exit status 2
    rc = cli_main(["score", str(clean), "--model", str(tiny_model_dir), "--out", str(tmp_path / "c.jsonl")])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err


def test_formats_folders_globs_and_extras(tiny_scorer, tmp_path, image_dir):
    src = tmp_path / "dumps"
    (src / "sub").mkdir(parents=True)
    write_dump(src / "a.jsonl", [{"id": "j1", "text": "one", "n": 1}, {"id": "j2", "image": "red.png", "n": 2}])
    write_dump(src / "b.csv", [{"id": "c1", "text": "two", "tag": "x"}, {"id": "c2", "text": "", "tag": "y"}])
    write_dump(src / "sub" / "c.parquet", [{"id": 8, "text": "three", "w": 0.5}, {"id": 9, "text": "four", "w": None}])
    (src / "ignored.txt").write_text("not a dump")
    out = tmp_path / "out.parquet"
    s = score_dump([src], out, scorer=tiny_scorer, image_root=image_dir, progress=False)
    rows = _read_out(out)
    assert [r["id"] for r in rows] == ["j1", "j2", "c1", "c2", "8", "9"]
    assert (s.rows_read, s.rows_scored, s.rows_errored) == (6, 5, 1)
    assert rows[3]["error_code"] == "empty_post"  # CSV empty cell = absent text
    assert [r["n"] for r in rows] == [1, 2, None, None, None, None]
    assert [r["tag"] for r in rows] == [None, None, "x", "y", None, None]
    assert rows[4]["w"] == 0.5 and rows[1]["applied_input_types"] == ["image"]
    # globs (recursive) pick the same files; a pattern that matches nothing is an error
    out2 = tmp_path / "out2.jsonl"
    s2 = score_dump([str(src / "**" / "*.parquet"), str(src / "*.csv")], out2, scorer=tiny_scorer, progress=False)
    assert [r["id"] for r in _read_out(out2)] == ["8", "9", "c1", "c2"] and s2.rows_read == 4
    with pytest.raises(FileNotFoundError, match="no dump files match"):
        score_dump([str(tmp_path / "*.nothing")], tmp_path / "x.jsonl", scorer=tiny_scorer, progress=False)
    with pytest.raises(ValueError, match="must end in .jsonl or .parquet"):
        score_dump([src], tmp_path / "x.csv", scorer=tiny_scorer, progress=False)


def test_result_column_clash_is_renamed(tiny_scorer, tmp_path):
    dump = tmp_path / "d.jsonl"
    write_dump(dump, [{"id": "a", "text": "hi", "ok": "yes", "error": "upstream"}])
    s = score_dump([dump], tmp_path / "o.jsonl", scorer=tiny_scorer, progress=False)
    row = _read_out(tmp_path / "o.jsonl")[0]
    assert row["ok"] is True and row["input_ok"] == "yes" and row["input_error"] == "upstream"
    assert s.renamed_columns == {"ok": "input_ok", "error": "input_error"}


def test_unfinished_run_with_other_inputs_is_refused(tiny_scorer, tmp_path):
    dump = tmp_path / "d.jsonl"
    write_dump(dump, [{"id": str(i), "text": f"post {i}"} for i in range(10)])
    out = tmp_path / "o.parquet"
    work = work_dir_for(out)
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"inputs": []}))
    with pytest.raises(ValueError, match="unfinished run with other arguments.*--restart"):
        score_dump([dump], out, scorer=tiny_scorer, progress=False)
    s = score_dump([dump], out, scorer=tiny_scorer, progress=False, restart=True)
    assert s.rows_scored == 10


def test_interrupted_run_resumes_where_it_stopped(tiny_scorer, tmp_path, monkeypatch):
    """Ctrl-C in the middle (KeyboardInterrupt while the model runs), then the same call again: the committed
    parts are kept, only the rest is scored, duplicate ids are still found across the two runs."""
    from moderation.batch import ChunkScorer, committed_parts
    dump = tmp_path / "d.jsonl"
    write_dump(dump, [{"id": str(i % 30), "text": f"post {i}"} for i in range(40)])  # ids 0..9 again at 30..39
    ref = score_dump([dump], tmp_path / "ref.jsonl", scorer=tiny_scorer, chunk_size=7, progress=False)
    out = tmp_path / "o.jsonl"
    real_finish = ChunkScorer.finish
    calls = {"n": 0}

    def finish_then_interrupt(self, handle):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_finish(self, handle)

    monkeypatch.setattr(ChunkScorer, "finish", finish_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        score_dump([dump], out, scorer=tiny_scorer, chunk_size=7, progress=False)
    monkeypatch.setattr(ChunkScorer, "finish", real_finish)
    work = work_dir_for(out)
    assert not out.exists() and committed_parts(work)[1] == 21  # three parts of 7 rows
    (work / "part-000000000021-000000000028.jsonl.tmp").write_text("half written by a killed writer")
    scored = []
    monkeypatch.setattr(ChunkScorer, "finish", lambda self, h: scored.append(len(h)) or real_finish(self, h))
    s = score_dump([dump], out, scorer=tiny_scorer, chunk_size=7, progress=False)
    assert sum(scored) == 19 and s.resumed_rows == 21 and s.rows_read == 40
    got, want = _read_out(out), _read_out(tmp_path / "ref.jsonl")
    assert [(r["id"], r["error_code"]) for r in got] == [(r["id"], r["error_code"]) for r in want]
    assert s.error_counts == ref.error_counts == {"duplicate_id": 10}
    assert not work.exists()


def test_kill_9_mid_run_then_resume_gives_every_row_once(tiny_model_dir, tmp_path):
    """A real `kill -9` of a running `moderation score`, then the same command again."""
    n = 3000
    dump = tmp_path / "big.jsonl"
    write_dump(dump, [{"id": f"p{i}", "text": f"post number {i} " * (1 + i % 5), "k": i} for i in range(n)])
    out = tmp_path / "res.parquet"
    cmd = [sys.executable, "-m", "moderation.cli", "score", str(dump), "--model", str(tiny_model_dir),
           "--out", str(out), "--chunk-size", "8", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = work_dir_for(out)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            parts = list(work.glob("part-*.jsonl")) if work.is_dir() else []
            if len(parts) >= 5 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and work.is_dir()
    done_before = sum(1 for _ in work.glob("part-*.jsonl"))
    assert 0 < done_before
    # the same command again (a bigger chunk only changes how the rest is cut into parts: allowed, and faster)
    rc = cli_main(cmd[3:-3] + ["--chunk-size", "512", "--no-progress"])
    assert rc == 0
    rows = _read_out(out)
    assert len(rows) == n
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(n)]
    assert [r["k"] for r in rows] == list(range(n))
    assert all(r["ok"] for r in rows)
    assert not work.exists()


def test_idset_flags_repeats_across_its_buffer():
    s = IdSet(buffer=4)
    assert all(s.add(str(i)) for i in range(10))
    assert not any(s.add(str(i)) for i in range(10))
    assert s.add("10") and len(s) == 11


# --- issue 13: the defects found when the batch job was attacked ------------------------------------------

def _dump(path: Path, n: int) -> Path:
    write_dump(path, [{"id": f"p{i}", "text": f"post number {i} " * (1 + i % 5), "k": i} for i in range(n)])
    return path


def test_elongated_image_and_nul_byte_path_are_row_errors(tiny_scorer, tmp_path, image_dir):
    """13.1 and 13.7: a tiny 1x1000 PNG (preprocessing would scale it to 256 x 256,000) and an image path holding
    a NUL byte get their own row error; before, the first was scored after allocating ~260 MB (3.2 GB for a
    1x12000 one) and the second was an internal_error."""
    from tests.conftest import png_bytes
    (image_dir / "strip.png").write_bytes(png_bytes((1, 1000)))
    url = "data:image/png;base64," + __import__("base64").b64encode(png_bytes((1000, 1))).decode()
    dump = tmp_path / "d.jsonl"
    write_dump(dump, [{"id": "ok", "text": "fine", "image": "imgs/red.png"}, {"id": "strip", "image": "imgs/strip.png"},
                      {"id": "wide", "text": "caption", "image": url}, {"id": "nul", "image": "imgs/red.png\x00.jpg"}])
    out = tmp_path / "o.jsonl"
    score_dump([dump], out, scorer=tiny_scorer, progress=False)
    got = {r["id"]: (r["error_code"], r["error"]) for r in _read_out(out)}
    assert got["ok"] == (None, None)
    assert got["strip"][0] == got["wide"][0] == "image_decompression_bomb"
    assert "aspect ratio of 1000:1, over the limit of 100:1" in got["strip"][1]
    assert got["nul"][0] == "image_path_refused" and "NUL byte" in got["nul"][1]


def test_a_second_job_on_the_same_out_is_refused_while_the_first_runs(tiny_scorer, tiny_model_dir, tmp_path,
                                                                    monkeypatch, capsys):
    """13.3: the second job 'resumed' the first one's work folder, deleted its temporary parts and died (or raced
    it). Now the first job holds OUT's lock and the second is refused at once, touching nothing."""
    import threading

    from moderation.batch import ChunkScorer, JobLockedError, lock_path_for
    dump = _dump(tmp_path / "d.jsonl", 40)
    out = tmp_path / "o.jsonl"
    real_finish = ChunkScorer.finish
    inside, release = threading.Event(), threading.Event()

    def slow_finish(self, handle):
        inside.set()
        release.wait(30)
        return real_finish(self, handle)

    monkeypatch.setattr(ChunkScorer, "finish", slow_finish)
    first: dict = {}
    job = threading.Thread(target=lambda: first.update(s=score_dump([dump], out, scorer=tiny_scorer, chunk_size=8,
                                                                    progress=False)))
    job.start()
    try:
        assert inside.wait(30)
        work = work_dir_for(out)
        leftover = work / "part-000000000000-000000000008.jsonl.tmp"
        leftover.write_text("the first job's part being written")
        with pytest.raises(JobLockedError, match=r"another batch job \(pid \d+\) is writing --out .*o.jsonl"):
            score_dump([dump], out, scorer=tiny_scorer, progress=False)
        rc = cli_main(["score", str(dump), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"])
        assert rc == 2 and "another batch job" in capsys.readouterr().err
        assert leftover.exists()  # the first job's files are untouched
        leftover.unlink()
    finally:
        release.set()
        job.join(60)
    assert first["s"].rows_read == 40 and [r["k"] for r in _read_out(out)] == list(range(40))
    assert not lock_path_for(out).exists()


def test_write_failure_is_one_line_and_exit_3_then_the_same_command_resumes(tiny_model_dir, tmp_path, monkeypatch,
                                                                            capsys):
    """13.4: disk full / file too large printed a traceback and exited 1 ('some rows errored') with no output.
    Here a real EFBIG (RLIMIT_FSIZE in a subprocess) during the merge, and ENOSPC while writing parts."""
    import resource

    dump = _dump(tmp_path / "d.jsonl", 300)
    out = tmp_path / "res.jsonl"
    args = ["score", str(dump), "--model", str(tiny_model_dir), "--out", str(out), "--chunk-size", "16", "--no-progress"]
    limit = 48 * 1024  # parts (16 rows, ~10 KB) fit; the merged OUT (300 rows, ~150 KB) does not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "moderation.cli", *args], cwd=REPO, preexec_fn=small_files,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len([ln for ln in err if ln.startswith("error:")]) == 1
    assert "File too large" in err[-1] and "run the same command again to resume" in err[-1]
    assert not out.exists() and not list(tmp_path.glob("*.tmp")) and work_dir_for(out).is_dir()

    # ENOSPC in the writer thread, after two parts: the same one line, exit 3; the parts written are kept.
    import moderation.batch.local as local
    real_write, calls = local.write_part, {"n": 0}

    def disk_full_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        return real_write(*a, **k)

    out2 = tmp_path / "res2.parquet"
    args2 = [str(out2) if a == str(out) else a for a in args]
    monkeypatch.setattr(local, "write_part", disk_full_after_two)
    assert cli_main(args2) == 3
    assert "No space left on device (ENOSPC)" in capsys.readouterr().err
    monkeypatch.setattr(local, "write_part", real_write)
    # The same commands again: both resume and finish, every row exactly once.
    assert cli_main(args) == 0 and cli_main(args2) == 0
    for path in (out, out2):
        assert [r["k"] for r in _read_out(path)] == list(range(300))


def test_out_that_is_an_input_is_refused(tiny_scorer, tmp_path):
    """13.8: `--out` equal to an input, with --overwrite, replaced the input dump with the results."""
    dump = _dump(tmp_path / "d.jsonl", 5)
    before = dump.read_bytes()
    with pytest.raises(ValueError, match="d.jsonl is this job's own output"):
        score_dump([dump], dump, scorer=tiny_scorer, overwrite=True, progress=False)
    (tmp_path / "same.jsonl").hardlink_to(dump)  # the same file under another name
    with pytest.raises(ValueError, match="own output"):
        score_dump([tmp_path / "same.jsonl"], dump, scorer=tiny_scorer, overwrite=True, progress=False)
    errors_named = _dump(tmp_path / "r.errors.jsonl", 2)  # would be replaced by the errors side file of r.jsonl
    with pytest.raises(ValueError, match="own output"):
        score_dump([errors_named], tmp_path / "r.jsonl", scorer=tiny_scorer, overwrite=True, progress=False)
    assert dump.read_bytes() == before
    # OUT inside an input folder: the job's own files found there (OUT, errors file, parts) are not read as input.
    folder = tmp_path / "dumps"
    folder.mkdir()
    _dump(folder / "a.jsonl", 5)
    out = folder / "results.jsonl"
    first = score_dump([folder], out, scorer=tiny_scorer, progress=False)
    again = score_dump([folder], out, scorer=tiny_scorer, overwrite=True, progress=False)
    assert first.rows_read == again.rows_read == 5


def test_bad_arguments_are_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """13.9: arguments were checked only after loading the model (~20 s for the default one)."""
    import moderation.cli
    from moderation.batch import job_lock
    monkeypatch.setattr(moderation.cli, "build_scorer", lambda *a, **k: pytest.fail("the model was loaded"))
    dump = _dump(tmp_path / "d.jsonl", 3)
    (tmp_path / "done.jsonl").write_text("")
    cases = [
        (["--out", str(tmp_path / "missing" / "o.jsonl")], "the folder of --out does not exist"),
        (["--out", str(dump), "--overwrite"], "own output"),
        (["--out", str(tmp_path / "done.jsonl")], "already exists. Pass --overwrite"),
        (["--out", str(tmp_path / "o.csv")], "must end in .jsonl or .parquet"),
        (["--out", str(tmp_path / "o.jsonl"), "--image-root", str(tmp_path / "nope")], "is not a folder"),
    ]
    for extra, message in cases:
        assert cli_main(["score", str(dump), "--model", str(tiny_model_dir), *extra]) == 2
        assert message in capsys.readouterr().err
    with job_lock(tmp_path / "o.jsonl"):
        assert cli_main(["score", str(dump), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "another batch job" in capsys.readouterr().err


def test_ctrl_c_stops_a_job_started_in_the_background_of_a_script(tiny_model_dir, tmp_path):
    """13.9: `moderation score ... &` from a non-interactive shell inherits SIGINT ignored and could not be
    stopped with Ctrl-C / kill -INT. Now it takes SIGINT back: exit 130, the committed parts kept."""
    dump = _dump(tmp_path / "big.jsonl", 3000)
    out = tmp_path / "res.jsonl"
    cmd = [sys.executable, "-m", "moderation.cli", "score", str(dump), "--model", str(tiny_model_dir),
           "--out", str(out), "--chunk-size", "8", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    work = work_dir_for(out)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if work.is_dir() and any(work.glob("part-*.jsonl")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, proc.stderr.read().decode()[-2000:]
    assert "run the same command again to resume" in proc.stderr.read().decode()
    assert not out.exists() and any(work.glob("part-*.jsonl"))


def test_outs_of_one_stem_in_two_formats_do_not_share_an_errors_file_silently(tiny_scorer, tmp_path):
    """Issue 22 D3: --out res.jsonl and --out res.parquet both write res.errors.jsonl; the second job overwrote
    the first's without --overwrite."""
    from moderation.batch.job import job_lock
    from moderation.batch import JobLockedError

    dump = tmp_path / "in.jsonl"
    dump.write_text('{"id": "a", "text": "hi"}\n{"id": "b"}\n')
    score_dump([dump], tmp_path / "res.jsonl", scorer=tiny_scorer, progress=False)
    first = errors_path_for(tmp_path / "res.jsonl").read_text()
    with pytest.raises(ValueError, match=r"res.errors.jsonl already exists but res.parquet does not"):
        score_dump([dump], tmp_path / "res.parquet", scorer=tiny_scorer, progress=False)
    assert errors_path_for(tmp_path / "res.parquet").read_text() == first
    # two jobs at once on the two formats: the errors file's lock refuses the second
    with job_lock(tmp_path / "other.jsonl"):
        with pytest.raises(JobLockedError, match="other.errors.jsonl"):
            with job_lock(tmp_path / "other.parquet"):
                pass
    score_dump([dump], tmp_path / "res.parquet", scorer=tiny_scorer, progress=False, overwrite=True)
