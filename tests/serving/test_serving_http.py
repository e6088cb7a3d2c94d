"""Real HTTP against the app on a local Ray (127.0.0.1 only): routes, bad inputs, auth, overload -> 503, and a
clean shutdown. The tests of this module run in order and share one deployment."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.serving.conftest import free_port, port_open, validate_http_response, validated

pytestmark = pytest.mark.ray

TOKEN_ENV = "MODERATION_HTTP_TEST_TOKEN"
TOKEN = "http-test-token-123"
WAIT_S = 1.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0


def _args(model_dir, **over) -> dict:
    # One request at a time in the model replica and one queued, so that an overload is easy to make; the
    # replica is 'slowed' by its own batching: a lone post waits WAIT_S for the batch of 8 to fill.
    args = {"model_dir": str(model_dir), "num_cpus": 0, "decode_workers": 0, "auth_token_env": TOKEN_ENV,
            "batch": {"max_batch_size": 8, "batch_wait_timeout_s": WAIT_S},
            "max_ongoing_requests": 1, "max_queued_requests": 1,
            "limits": {"max_body_bytes": 32 * 1024, "max_items": 8, "body_timeout_s": BODY_TIMEOUT_S}}
    args.update(over)
    return args


@pytest.fixture(scope="module", params=["fused", "split"])
def server(request, ray_local, tiny_serving_model_dir):
    """Serve on a free loopback port, in each topology; yields (base URL, port). Shut down by the last test
    (and here, to be sure). Overload is shed by the fused replica itself, by Ray's queue limit when split."""
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_http

    port = free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv(TOKEN_ENV, TOKEN)
    start_http("127.0.0.1", port, keep_alive_timeout_s=KEEP_ALIVE_S)
    serve.run(build_app(_args(tiny_serving_model_dir, topology=request.param)), name="moderation", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        mp.undo()
        serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    import httpx

    with httpx.Client(base_url=server[0], timeout=30.0, headers={"Authorization": f"Bearer {TOKEN}"},
                      event_hooks={"response": [validate_http_response]}) as c:
        yield c


def test_health_ready_model(request, client, server):
    import httpx

    base = server[0]
    # Probes need no token.
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = client.get("/v1/model")
    assert info.status_code == 200
    body = info.json()
    assert body["categories"] == ["hate", "offensive"] and body["auth"] is True
    assert body["topology"] == request.node.callspec.params["server"]
    assert body["batch"] == {"max_batch_size": 8, "batch_wait_timeout_s": WAIT_S, "forward_batch_size": None,
                             "policy": None}


def test_auth_over_http(client, server):
    import httpx

    base = server[0]
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.post(f"{base}/v1/moderations", json={"input": "hi"}, headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        validated(r.status_code, r.json())
    assert httpx.get(f"{base}/v1/model", timeout=10).status_code == 401


def test_moderations_and_bad_inputs_over_http(client):
    r = client.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": ["one", "two"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert [x["id"] for x in body["results"]] == ["0", "1"] and body["errors"] == 0
    assert isinstance(body["results"][0]["flagged"], bool)

    r = client.post("/v1/moderations", json={"posts": [{"id": "ok", "text": "fine"}, {"id": "bad", "image": "@@"}]})
    assert r.status_code == 200
    assert [(x["id"], x["error_code"]) for x in r.json()["results"]] == [("ok", None), ("bad", "bad_base64")]

    cases = [
        (b'{"input": ', 400, "invalid_json"),
        (b'{"input": 42}', 422, "invalid_request"),
        (b'{"input": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 422, "too_many_items"),
        (b'{"input": "' + b"x" * 40_000 + b'"}', 413, "body_too_large"),
    ]
    for raw, status, code in cases:
        r = client.post("/v1/moderations", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == status, raw[:30]
        assert r.json()["error"]["code"] == code
    r = client.post("/v1/moderations", json={"posts": [{"id": "only", "image": "data:image/png;base64,!!"}]})
    assert r.status_code == 422 and r.json()["results"][0]["error_code"] == "bad_base64"
    assert client.get("/nope").status_code == 404


def test_overload_answers_503_quickly(server):
    """Six concurrent requests against one slot and a queue of one: the extra ones get 503 at once."""
    import httpx

    async def one(ac, i):
        start = time.perf_counter()
        r = await ac.post("/v1/moderations", json={"input": f"post {i}"})
        return r, time.perf_counter() - start

    async def burst():
        async with httpx.AsyncClient(base_url=server[0], timeout=30.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as ac:
            return await asyncio.gather(*(one(ac, i) for i in range(6)))

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r, _ in answers)
    assert 200 in codes and 503 in codes, codes
    assert set(codes) <= {200, 503}
    for r, elapsed in answers:
        validated(r.status_code, r.json())
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
            assert elapsed < WAIT_S  # shed at once, not after waiting behind the slow batch
        else:
            assert r.json()["results"][0]["error_code"] is None


def test_with_auth_on_no_docs_and_no_server_paths(client, server, tiny_serving_model_dir):
    """Issue 13.6: with auth on, /docs, /openapi.json and /redoc answered without a token, and /v1/model gave the
    server's filesystem path of the model."""
    import httpx

    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(server[0] + path, timeout=10).status_code == 404
        assert client.get(path).status_code == 404  # not served at all, token or not
    info = client.get("/v1/model")
    assert info.status_code == 200 and "path" not in info.json()
    assert str(tiny_serving_model_dir) not in info.text and str(tiny_serving_model_dir.parent) not in info.text


def test_deeply_nested_json_is_400_over_http(client):
    """Issue 13.5: RecursionError in json.loads was answered 500 internal_error."""
    body = b'{"input": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = client.post("/v1/moderations", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert "nested too deeply" in r.json()["error"]["message"]


def _read_until_closed(sock, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after limit_s."""
    import socket

    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the server kept the connection open for {limit_s} s; received {data[:200]!r}")
    return data


def test_slow_body_gets_408_and_idle_connections_are_closed(server):
    """Issue 13.9: a client trickling its body held a replica slot as long as it liked (Ray's proxy timeout can be
    lifted by the client's own x-request-timeout-seconds header), and idle keep-alive connections stayed 90 s."""
    import socket

    port = server[1]
    head = (b"POST /v1/moderations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nContent-Type: application/json\r\nx-request-timeout-seconds: 0\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"input"')  # 8 of the 100 bytes, then nothing
        answer = _read_until_closed(sock, BODY_TIMEOUT_S + 20)
    assert answer.startswith(b"HTTP/1.1 408") and b'"code":"body_timeout"' in answer
    body = b'{"input": "hi"}'
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # a whole request, then idle
        sock.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = _read_until_closed(sock, KEEP_ALIVE_S + 20)
    assert answer.startswith(b"HTTP/1.1 200")


def test_clean_shutdown_leaves_nothing_listening(server):
    from ray import serve

    _, port = server
    assert port_open(port)
    serve.shutdown()
    deadline = time.time() + 20
    while port_open(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not port_open(port)
    listening = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert listening.strip() == ""
