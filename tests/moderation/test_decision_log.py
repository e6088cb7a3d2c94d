"""The decision log: rows built from results (policy fields when present, null when not), no content unless asked,
hashed ids, rotation, retention, Parquet and JSONL read back with the same columns."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from moderation.decision_log import (
    DecisionLog,
    DecisionLogConfig,
    DecisionLogError,
    decision_record,
    hash_id,
    iter_log_rows,
    log_columns,
    parse_time,
)
from moderation.schema import CategoryResult, HashMatch, ScoreResult

CATS = ["hate", "offensive"]


def _result(pid: str = "p1", hate: float = 0.95, offensive: float = 0.1, **extra) -> ScoreResult:
    r = ScoreResult(id=pid, categories={"hate": CategoryResult(hate, hate >= 0.9, 0.9),
                                        "offensive": CategoryResult(offensive, False, None)},
                    applied_input_types=["image", "ocr_text"], model_version="m-1", thresholds_version="thr-1",
                    ocr_text="read in the image")
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_record_has_every_column_and_no_content_by_default():
    rec = decision_record(_result(), CATS, input_types=["image"], latency_ms=12.5, request_id="modr-1",
                          text="the post's words")
    assert list(rec) == log_columns(CATS)
    assert rec["id"] == "p1" and rec["id_hash"] is None and rec["ok"] is True and rec["flagged"] is True
    assert rec["hate_score"] == 0.95 and rec["hate_flagged"] is True and rec["offensive_threshold"] is None
    assert rec["text"] is None and rec["ocr_text"] is None  # content is off
    # Policy fields are null until the result carries them.
    assert rec["action"] is None and rec["hate_action"] is None and rec["policy_version"] is None
    assert rec["language"] is None and rec["action_reasons"] is None
    assert rec["applied_input_types"] == ["image", "ocr_text"] and rec["input_types"] == ["image"]


def test_record_reads_policy_fields_and_content_when_configured():
    result = _result(action="review", language="de", language_confidence=0.97, policy_version="pol-1",
                     reasons=[{"action": "review", "category": None, "rule": "language"}])
    result.categories["hate"].action = "block"
    result.hash_match = HashMatch("known", "v1", "e1", "hate", 3, 31)
    rec = decision_record(result, CATS, content=True, text="Hallo", input_types=["image", "text"])
    assert rec["action"] == "review" and rec["hate_action"] == "block" and rec["offensive_action"] is None
    assert rec["language"] == "de" and rec["language_confidence"] == 0.97 and rec["policy_version"] == "pol-1"
    assert json.loads(rec["action_reasons"])[0]["rule"] == "language"
    assert rec["hash_match"]["distance"] == 3
    assert rec["text"] == "Hallo" and rec["ocr_text"] == "read in the image"


def test_errored_post_is_never_safe_and_hashed_id():
    failed = ScoreResult.failure("p9", ValueError("boom"), "m-1")
    rec = decision_record(failed, CATS, id_salt="pepper")
    assert rec["ok"] is False and rec["flagged"] is None and rec["action"] is None
    assert rec["hate_score"] is None and rec["error_code"] == "internal_error"
    assert rec["id"] is None and rec["id_hash"] == hash_id("p9", "pepper") != hash_id("p9", "")
    refused = decision_record(None, CATS, post_id="x", error_code="bad_base64")
    assert refused["ok"] is False and refused["error_code"] == "bad_base64" and refused["id"] == "x"


def test_config_errors():
    with pytest.raises(DecisionLogError, match="format must be one of"):
        DecisionLogConfig(path="x", format="csv")
    with pytest.raises(DecisionLogError, match="unknown decision log settings"):
        DecisionLogConfig.from_dict({"path": "x", "rotate": 3})
    with pytest.raises(DecisionLogError, match="retention_days"):
        DecisionLogConfig(path="x", retention_days=0)


@dataclass
class _Item:
    id: str
    text: str | None = None
    image: bytes | None = None
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_log_request_writes_rows_that_read_back(tmp_path, fmt):
    log = DecisionLog(DecisionLogConfig(path=str(tmp_path / "logs"), format=fmt))
    items = [_Item("a", text="hello"), _Item("b", error_code="bad_base64"), _Item("c", image=b"\x89PNG")]
    n = log.log_request(items, [_result("a"), _result("c", hate=0.2)], CATS, latency_ms=7.0, request_id="modr-9",
                        model_version="m-1", thresholds_version="thr-1")
    log.close()
    assert n == 3
    files = sorted((tmp_path / "logs").iterdir())
    assert len(files) == 1 and files[0].suffix == f".{fmt}" and files[0].name.startswith("decisions-")
    rows = list(iter_log_rows(files[0]))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [r["ok"] for r in rows] == [True, False, True]
    assert rows[1]["error_code"] == "bad_base64" and rows[1]["input_types"] == []
    assert rows[0]["input_types"] == ["text"] and rows[2]["input_types"] == ["image"]
    assert rows[0]["text"] is None  # content off
    assert rows[0]["latency_ms"] == 7.0 and rows[0]["request_id"] == "modr-9"
    assert parse_time(rows[0]["time"]).tzinfo is not None
    assert set(rows[0]) == set(log_columns(CATS))


def test_rotation_by_size_and_retention(tmp_path):
    folder = tmp_path / "logs"
    log = DecisionLog(DecisionLogConfig(path=str(folder), rotate_mb=0.0005, retention_days=1))  # ~500 bytes
    for i in range(4):
        log.write([decision_record(_result(f"p{i}"), CATS)])
    log.close()
    files = sorted(folder.glob("decisions-*.jsonl"))
    assert len(files) >= 2
    assert sum(len(list(iter_log_rows(f))) for f in files) == 4
    old = files[0]
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    log2 = DecisionLog(DecisionLogConfig(path=str(folder), retention_days=1))
    log2.rotate()  # retention runs at rotation
    assert not old.exists() and files[-1].exists()


def test_half_written_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "a", "ok": True}) + "\n" + '{"id": "b", "ok"')
    errors: list[str] = []
    rows = list(iter_log_rows(path, errors=errors))
    assert [r["id"] for r in rows] == ["a"] and len(errors) == 1 and "not a JSON object" in errors[0]


def test_parse_time_forms():
    want = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    assert parse_time("2026-11-28T09:00:00Z") == want
    assert parse_time("2026-11-28T10:00:00+01:00") == want
    assert parse_time("2026-11-28 09:00:00") == want
    assert parse_time(want.timestamp()) == want
    with pytest.raises(ValueError):
        parse_time("yesterday")
