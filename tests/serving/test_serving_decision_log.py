"""The endpoint's decision log: every post of every request gets a row (scored or refused), no post content
unless configured, and a bad log folder stops the app from being built."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from tests.conftest import png_bytes
from tests.serving.conftest import validated


async def _call(api, body: dict | bytes):
    """POST /v1/moderations's answer, once the decision log's writer thread has written the request's rows."""
    answer = validated(*await api.moderate.remote(body if isinstance(body, bytes) else json.dumps(body).encode(), None))
    assert await api.flush_decision_log.remote() == 0  # no write failed
    return answer


def _app(model_dir, log_dir, name, **log):
    from ray import serve

    from serving.app import build_app

    app = build_app({"model_dir": str(model_dir), "num_cpus": 0, "decode_workers": 0,
                     "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.0},
                     "decision_log": {"path": str(log_dir), **log}})
    return serve.run(app, name=name, route_prefix=None, _local_testing_mode=True)


def test_every_post_is_logged_without_content(tiny_serving_model_dir, local_batching, tmp_path):
    from moderation.decision_log import iter_log_rows

    api = _app(tiny_serving_model_dir, tmp_path / "logs", "decision-log-plain")
    png = base64.b64encode(png_bytes()).decode()
    body = {"posts": [{"id": "t", "text": "you are all idiots"}, {"id": "bad", "image": "%%%"},
                      {"id": "both", "text": "caption", "image": png}]}
    status, answer = asyncio.run(_call(api, body))
    assert status == 200
    files = sorted((tmp_path / "logs").glob("decisions-*.jsonl"))
    assert len(files) == 1
    rows = list(iter_log_rows(files[0]))
    assert [r["id"] for r in rows] == ["t", "bad", "both"]
    assert [r["ok"] for r in rows] == [True, False, True]
    assert rows[1]["error_code"] == "bad_base64" and rows[1]["hate_score"] is None
    assert rows[0]["input_types"] == ["text"] and rows[2]["input_types"] == ["image", "text"]
    assert rows[0]["hate_score"] == pytest.approx(answer["results"][0]["category_scores"]["hate"])
    assert all(r["request_id"] == answer["id"] and r["latency_ms"] > 0 for r in rows)
    assert all(r["text"] is None and r["source"] == "endpoint" for r in rows)
    assert rows[0]["model_version"] == answer["model_version"]


def test_content_and_hashed_ids_when_configured(tiny_serving_model_dir, local_batching, tmp_path, monkeypatch):
    from moderation.decision_log import hash_id, iter_log_rows

    monkeypatch.setenv("MODERATION_LOG_ID_SALT", "s3cret")
    api = _app(tiny_serving_model_dir, tmp_path / "logs", "decision-log-content", content=True, hash_ids=True)
    status, _ = asyncio.run(_call(api, {"posts": [{"id": "p1", "text": "hello"}]}))
    assert status == 200
    rows = list(iter_log_rows(next((tmp_path / "logs").glob("*.jsonl"))))
    assert rows[0]["text"] == "hello" and rows[0]["id"] is None and rows[0]["id_hash"] == hash_id("p1", "s3cret")


def test_unwritable_log_folder_stops_the_build(tiny_serving_model_dir, tmp_path):
    from moderation.decision_log import DecisionLogError
    from serving.app import build_app

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DecisionLogError, match="cannot create the decision log folder"):
        build_app({"model_dir": str(tiny_serving_model_dir), "decision_log": {"path": str(blocker / "logs")}})


def test_serve_cli_decision_log_option(tmp_path):
    from moderation.cli import build_parser
    from serving.cli import _serve_args
    from serving.schemas import ServeArgs

    config = tmp_path / "serve.yaml"
    config.write_text("applications:\n  - name: moderation\n    import_path: serving.app:build_app\n"
                      "    args: {decision_log: {path: /var/log/a, format: parquet, content: true}}\n")
    app_args, _, _ = _serve_args(build_parser().parse_args(["serve", "--config", str(config), "--decision-log", "logs/"]))
    log = ServeArgs.model_validate(app_args).decision_log
    assert (log.path, log.format, log.content, log.hash_ids) == ("logs/", "parquet", True, False)
    with pytest.raises(ValueError, match="format"):
        ServeArgs.model_validate({"decision_log": {"path": "x", "format": "csv"}})


def test_a_lone_surrogate_keeps_no_request_out_of_the_log(tiny_serving_model_dir, local_batching, tmp_path):
    """Issue 22 D2: a post id (or logged text) holding a lone surrogate made the whole request vanish from the log."""
    from moderation.decision_log import iter_log_rows

    api = _app(tiny_serving_model_dir, tmp_path / "logs", "decision-log-surrogate", content=True)
    body = b'{"posts": [{"id": "\\udc00", "text": "hi"}, {"id": "t", "text": "bad \\ud800 text"}, {"id": "h", "text": "you are all idiots"}]}'
    status, answer = asyncio.run(_call(api, body))
    assert status == 200 and [r["id"] for r in answer["results"]] == ["\\udc00", "t", "h"]
    json.dumps(answer).encode("utf-8")
    rows = list(iter_log_rows(next((tmp_path / "logs").glob("*.jsonl"))))
    assert [r["id"] for r in rows] == ["\\udc00", "t", "h"] and rows[2]["ok"]
