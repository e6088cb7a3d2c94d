"""Fixtures of the serving tests: a tiny model directory per module, a free loopback port, and the patch that
lets @serve.batch run under `serve.run(..., _local_testing_mode=True)`."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def tiny_serving_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random model (the same as tests/conftest.py's tiny_model_dir), shared by a module's tests."""
    import torch
    from moderation.model import ModelConfig, ModerationModel
    from moderation.model_dir import save_model

    config = ModelConfig.from_dict({k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("serving") / "tiny-model"
    save_model(ModerationModel(config).eval(), path, trained=True, name="tiny")
    return path


@pytest.fixture(scope="module")
def local_batching() -> Iterator[None]:
    """Let @serve.batch run outside a Serve replica (local testing mode, direct instantiation).

    Ray Serve 2.60's batch queue reads serve.get_replica_context() for a warning only, and local testing
    mode sets no replica context (a known gap, ray-project/ray#48477 follow-ups), so the warning is skipped.
    """
    from ray.serve import batching

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
        yield


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def validated(status: int, body: dict) -> tuple[int, dict]:
    """Check an answer of POST /v1/moderations against the response models it is declared with
    (serving.schemas: ModerationResponse, ErrorResponse) and return it unchanged.

    Stricter than pydantic's default: a field sent but not declared fails too, so the schema that is sent cannot
    drift from the one in the OpenAPI document.
    """
    from serving.schemas import ErrorResponse, ModerationResponse, ModerationResult

    if "error" in body:
        assert status >= 400, f"an error body with status {status}"
        ErrorResponse.model_validate(body)
        assert set(body) == {"error"} and set(body["error"]) <= {"code", "message", "details"}, body
    else:
        assert status in (200, 422, 500), f"a moderation body with status {status}"
        ModerationResponse.model_validate(body)
        assert set(body) <= set(ModerationResponse.model_fields), set(body) - set(ModerationResponse.model_fields)
        for result in body["results"]:
            assert set(result) <= set(ModerationResult.model_fields), set(result) - set(ModerationResult.model_fields)
    return status, body


def validate_http_response(response) -> None:
    """httpx response hook: every answer of POST /v1/moderations goes through `validated`."""
    if response.request.method == "POST" and response.request.url.path == "/v1/moderations":
        response.read()
        validated(response.status_code, response.json())
