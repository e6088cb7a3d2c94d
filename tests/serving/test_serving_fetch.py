"""Allow-listed image URLs: prefix matching on parsed URLs, fetch errors per item, and the endpoint using them.

The images are served by a small HTTP server on 127.0.0.1 started here; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moderation.schema import ErrorCode, InputError
from serving.fetch import UrlAllowList, fetch_image
from serving.parsing import parse_request, request_items
from serving.schemas import RequestLimits, ServeArgs
from tests.conftest import png_bytes
from tests.serving.conftest import validated

PNG = png_bytes((32, 24), (10, 200, 40))
LIMIT = 4096


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/media/ok.png":
            self._send(200, PNG)
        elif self.path == "/media/big.png":
            self._send(200, b"\x89PNG" + b"0" * (LIMIT + 10))
        elif self.path == "/media/endless.png":  # no Content-Length: the reader must stop at the limit itself
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"0" * 1024)
        elif self.path == "/media/redirect.png":
            self.send_response(302)
            self.send_header("Location", "/private/secret.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/media/slow.png":
            time.sleep(1.0)
            self._send(200, PNG)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_allowlist_matches_parsed_urls_only():
    allow = UrlAllowList(["https://CDN.example.com/media/", "http://127.0.0.1:8080/img/"])
    assert allow.allows("https://cdn.example.com/media/a.png")
    assert allow.allows("https://cdn.example.com:443/media/sub/a.png?x=1")
    assert allow.allows("http://127.0.0.1:8080/img/a.png")
    for url in ["https://cdn.example.com/private/a.png",          # outside the path
                "https://cdn.example.com/mediaX/a.png",           # a prefix of the name, not of the path
                "http://cdn.example.com/media/a.png",             # other scheme
                "https://cdn.example.com:8443/media/a.png",       # other port
                "https://cdn.example.com.evil.test/media/a.png",  # other host
                "https://cdn.example.com@evil.test/media/a.png",  # userinfo trick
                "https://cdn.example.com/media/../private/a.png",
                "https://cdn.example.com/media/%2e%2e/private/a.png",
                "https://cdn.example.com/media/..%5cprivate/a.png",
                "ftp://cdn.example.com/media/a.png", "not a url", "http://127.0.0.1:8081/img/a.png"]:
        assert not allow.allows(url), url
    assert not UrlAllowList()
    assert UrlAllowList(["https://cdn.example.com"]).allows("https://cdn.example.com/any/a.png")  # the whole host
    for bad in ["https://cdn.example.com/media", "ftp://cdn.example.com/",
                "https://user:pw@cdn.example.com/media/", "cdn.example.com/media/"]:
        with pytest.raises(ValueError, match="must be an http"):
            UrlAllowList([bad])
    with pytest.raises(ValueError, match="image_url_allowlist"):
        ServeArgs.model_validate({"image_url_allowlist": ["https://cdn.example.com/media"]})


def test_request_items_keep_allowlisted_urls_and_refuse_the_rest(image_server):
    allow = UrlAllowList([f"{image_server}/media/"])
    limits = RequestLimits()
    body = json.dumps({"posts": [{"id": "a", "image": f"{image_server}/media/ok.png"},
                                 {"id": "b", "image": f"{image_server}/private/x.png", "text": "hi"},
                                 {"id": "c", "text": "plain"}]}).encode()
    items = request_items(parse_request(body, limits), limits, allow)
    assert items[0].ok and items[0].image_url == f"{image_server}/media/ok.png" and items[0].image is None
    assert items[1].error_code == "image_url_refused" and "not under any prefix" in items[1].error
    assert items[2].ok and items[2].image_url is None
    # Without an allow-list the same URL is refused, and the message says how to enable fetching.
    [item] = request_items(parse_request(json.dumps({"input": [{"type": "image_url", "image_url": {
        "url": f"{image_server}/media/ok.png"}}]}).encode(), limits), limits)
    assert item.error_code == "image_url_refused" and "image_url_allowlist" in item.error


@pytest.mark.parametrize("path, code, words", [
    ("/media/missing.png", ErrorCode.IMAGE_FETCH_FAILED, "HTTP 404"),
    ("/media/redirect.png", ErrorCode.IMAGE_FETCH_FAILED, "HTTP 302 to '/private/secret.png'"),
    ("/media/big.png", ErrorCode.IMAGE_TOO_LARGE, "over the limit"),
    ("/media/endless.png", ErrorCode.IMAGE_TOO_LARGE, "more than the limit"),
    ("/media/slow.png", ErrorCode.IMAGE_FETCH_FAILED, "longer than 0.3 s"),
])
def test_fetch_errors_are_item_errors(image_server, path, code, words):
    import httpx

    async def go():
        async with httpx.AsyncClient(trust_env=False) as client:
            return await fetch_image(client, image_server + path, LIMIT, 0.3)

    with pytest.raises(InputError) as info:
        asyncio.run(go())
    assert info.value.code == code and words in info.value.message


def test_fetch_returns_the_bytes(image_server):
    import httpx

    async def go():
        async with httpx.AsyncClient(trust_env=False) as client:
            return await fetch_image(client, f"{image_server}/media/ok.png", LIMIT, 5.0)

    assert asyncio.run(go()) == PNG


def test_endpoint_scores_allowlisted_images_and_fails_bad_fetches_per_item(tiny_serving_model_dir, local_batching,
                                                                           image_server):
    from ray import serve

    from serving.app import build_app

    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "decode_workers": 0,
                     "image_url_allowlist": [f"{image_server}/media/"], "image_fetch_timeout_s": 0.5,
                     "limits": {"max_image_bytes": LIMIT}})
    handle = serve.run(app, name="local-fetch", route_prefix=None, _local_testing_mode=True)
    body = {"posts": [{"id": "ok", "image": f"{image_server}/media/ok.png", "text": "caption"},
                      {"id": "gone", "image": f"{image_server}/media/missing.png"},
                      {"id": "slow", "image": f"{image_server}/media/slow.png"},
                      {"id": "outside", "image": f"{image_server}/private/x.png"},
                      {"id": "text", "text": "just words"}]}
    status, answer = validated(*handle.moderate.remote(json.dumps(body).encode(), None).result())
    by_id = {r["id"]: r for r in answer["results"]}
    assert status == 200 and answer["errors"] == 3
    assert by_id["ok"]["error_code"] is None
    assert by_id["ok"]["category_applied_input_types"]["hate"] == ["image", "text"]
    assert by_id["gone"]["error_code"] == "image_fetch_failed" and by_id["gone"]["flagged"] is None
    assert by_id["slow"]["error_code"] == "image_fetch_failed"
    assert by_id["outside"]["error_code"] == "image_url_refused"
    assert by_id["text"]["error_code"] is None
