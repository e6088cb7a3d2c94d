"""Batch output of the image extras: ocr_text and hash_match columns (JSONL and Parquet), and a job whose OCR
mode or hash lists changed is not resumed as if it were the same job."""

from __future__ import annotations

import json

import pytest

from moderation.batch import score_dump
from moderation.hashes import HashList, pdq_hash
from moderation.scorer import Scorer
from tests.imagegen import encode, photo
from tests.moderation.test_scorer_images import FakeOcr


@pytest.fixture()
def dump(tmp_path):
    (tmp_path / "listed.jpg").write_bytes(encode(photo(21).resize((200, 150)), "JPEG", quality=50))
    (tmp_path / "other.png").write_bytes(encode(photo(22)))
    rows = [{"id": "listed", "image": "listed.jpg"}, {"id": "other", "image": "other.png"},
            {"id": "captioned", "text": "look", "image": "other.png"}, {"id": "text", "text": "hello"},
            {"id": "broken", "image": "missing.png"}]
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hl = HashList(name="known-bad", path=tmp_path / "known-bad.json")
    hl.add(pdq_hash(photo(21))[0], "offensive", id="k1")
    hl.save()
    return path, hl


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_output_has_ocr_text_and_hash_match(tiny_model_dir, dump, tmp_path, suffix):
    path, hl = dump
    scorer = Scorer.from_dir(tiny_model_dir, batch_size=4, ocr_engine=FakeOcr("printed words"), hash_lists=[hl.path])
    out = tmp_path / f"results{suffix}"
    summary = score_dump([path], out, scorer=scorer, progress=False, workers=2)
    assert summary.rows_read == 5 and summary.rows_errored == 1
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq
        rows = pq.read_table(out).to_pylist()
    by_id = {r["id"]: r for r in rows}
    listed = by_id["listed"]
    assert listed["flagged"] is True and listed["offensive_flagged"] is True
    assert listed["hash_match"]["id"] == "k1" and listed["hash_match"]["list_version"] == hl.version
    assert listed["ocr_text"] == "printed words" and listed["applied_input_types"] == ["ocr_text"]
    assert by_id["other"]["hash_match"] is None and by_id["other"]["ocr_text"] == "printed words"
    # issue 22: a caption no longer stops OCR in the default mode
    assert by_id["captioned"]["ocr_text"] == "printed words"
    assert by_id["captioned"]["applied_input_types"] == ["image", "ocr_text", "text"]
    assert by_id["text"]["ocr_text"] is None and by_id["broken"]["ocr_text"] is None
    assert by_id["broken"]["hash_match"] is None and by_id["broken"]["error_code"] == "image_not_found"
    scorer.close()


def test_changed_ocr_mode_or_hash_lists_is_another_job(tiny_model_dir, dump, tmp_path, monkeypatch):
    from moderation.batch import workdir
    path, hl = dump
    out = tmp_path / "results.jsonl"
    # Leave an unfinished run behind: its job file is written, then the scoring stops.
    first = Scorer.from_dir(tiny_model_dir, ocr="off", hash_lists=[hl.path])
    fingerprint = workdir.job_fingerprint([path], image_root=None, scorer=first, out=out, max_row_bytes=1 << 20,
                                          engine="local")
    assert fingerprint["ocr"] == ["off", False] and fingerprint["hash_lists"] == {"known-bad": hl.version}
    other = Scorer.from_dir(tiny_model_dir, ocr_engine=FakeOcr(), hash_lists=[hl.path])
    assert workdir.job_fingerprint([path], image_root=None, scorer=other, out=out, max_row_bytes=1 << 20,
                                   engine="local") != fingerprint
