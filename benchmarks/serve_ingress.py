"""Where a request's time goes inside the endpoint's ingress, without Ray, HTTP or the model: microseconds per stage.

The ingress (serving.ingress.ModerationIngress) answers POST /v1/moderations on one-post requests of real tweets,
its model replaced by a stub that hands back results the real scorer computed once beforehand, so that what is
timed is only the ingress's own work. Stages, each timed in a loop of `--requests` requests:

- parse: the body's JSON and its structure checked (serving.parsing.parse_request: json.loads + pydantic), and
  orjson.loads + pydantic beside it (a hand-written check of the common shapes was tried and bought nothing: the
  pydantic validation of a one-post request costs ~20 us, and model_construct about as much);
- items: per-item checks (request_items);
- format: the OpenAI-shaped results (format_results);
- metrics: the Ray Serve metrics of one request (IngressMetrics.request + results);
- encode: the response body, stdlib json (what FastAPI's JSONResponse does) against orjson (when installed);
- decision log: one request's rows written in the request (a JSONL file), against handing them to the writer thread;
- whole: `moderations_response` on a Starlette request (the route's body), and the ASGI app of FastAPI with the
  same route (routing + the route's dependency handling included).

    .venv/bin/python -m benchmarks.serve_ingress --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run by path: the repository root holds the benchmarks package

from benchmarks.serve_latency import load_texts  # noqa: E402
from moderation.decision_log import DecisionLog  # noqa: E402
from moderation.schema import Post  # noqa: E402
from moderation.scorer import Scorer  # noqa: E402
from serving.loadtest import text_bodies  # noqa: E402
from serving.parsing import format_results, parse_request, request_items  # noqa: E402
from serving.schemas import ModerationRequest  # noqa: E402


class _StubCore:
    """Stands in for serving.model_core.ModelCore: answers `score` with results computed beforehand."""

    def __init__(self, scorer: Any, texts: list[str]) -> None:
        self._describe = scorer.describe()
        self._by_text = {t: r for t, r in zip(texts, scorer.score([Post(id=str(i), text=t) for i, t in enumerate(texts)]))}

    async def score(self, posts: list[dict[str, Any]]) -> list[Any]:
        out = []
        for p in posts:
            r = self._by_text[p["text"]]
            r.id = p["id"]
            out.append(r)
        return out

    def describe(self) -> dict[str, Any]:
        return self._describe


def _timeit(fn: Callable[[int], Any], n: int, rounds: int = 3) -> float:
    """Median over `rounds` of the mean microseconds of fn(i) over n calls."""
    fn(0)
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        means.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(means)


def _request(body: bytes, path: str = "/v1/moderations") -> tuple[dict, Callable]:
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "root_path": ""}
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--requests", type=int, default=2000, help="requests per timed loop")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from fastapi import FastAPI, Request
    from starlette.requests import Request as StarletteRequest

    from serving.ingress import ModerationIngress, encode_json  # deferred: Ray, after its loopback environment

    texts, source = load_texts(Path(args.datasets), 256)
    scorer = Scorer.from_dir(args.model, num_workers=0) if args.model else Scorer.default(num_workers=0)
    stub = _StubCore(scorer, texts)
    scorer.close()
    bodies = text_bodies(texts, 1)
    ingress = ModerationIngress(None, core=stub)
    categories = list(stub.describe()["categories"])
    limits = ingress.limits
    loop = asyncio.new_event_loop()
    n = args.requests
    figures: dict[str, float] = {}

    import orjson

    figures["parse (parse_request: json.loads + pydantic)"] = _timeit(lambda i: parse_request(bodies(i), limits), n)
    figures["parse (orjson.loads + pydantic model_validate)"] = _timeit(
        lambda i: ModerationRequest.model_validate(orjson.loads(bodies(i))), n)
    requests = [parse_request(bodies(i), limits) for i in range(64)]
    figures["items (request_items)"] = _timeit(lambda i: request_items(requests[i % 64], limits, ingress.allow), n)
    items = [request_items(r, limits, ingress.allow) for r in requests]
    scored = [loop.run_until_complete(stub.score([{"id": it.id, "text": it.text} for it in its])) for its in items]
    figures["format (format_results)"] = _timeit(lambda i: format_results(items[i % 64], scored[i % 64], categories), n)
    results = [format_results(items[i], scored[i], categories) for i in range(64)]
    figures["metrics (IngressMetrics.request + results)"] = _timeit(
        lambda i: (ingress.metrics.request("/v1/moderations", 200, 5.0), ingress.metrics.results(results[i % 64])), n)
    payload = [{"id": "modr-0", "model": "m", "results": results[i]} for i in range(64)]
    figures["encode (json.dumps, as JSONResponse)"] = _timeit(
        lambda i: json.dumps(payload[i % 64], ensure_ascii=False, allow_nan=False, indent=None,
                             separators=(",", ":")).encode("utf-8"), n)
    figures["encode (encode_json: orjson when installed)"] = _timeit(lambda i: encode_json(payload[i % 64]), n)

    with tempfile.TemporaryDirectory() as folder:
        log = DecisionLog({"path": folder})
        info = loop.run_until_complete(ingress._static_info())
        figures["decision log (written in the request)"] = _timeit(
            lambda i: log.log_request(items[i % 64], scored[i % 64], categories, latency_ms=5.0, request_id="r",
                                      model_version=info["model_version"],
                                      thresholds_version=info["thresholds_version"]), n)
        ingress.decision_log = DecisionLog({"path": folder})
        figures["decision log (handed to the writer thread)"] = _timeit(
            lambda i: ingress._log_decisions(items[i % 64], scored[i % 64], info, 5.0, "r"), n)
        ingress.close()
        ingress.decision_log = None

    async def whole(i: int) -> None:
        scope, receive = _request(bodies(i))
        await ingress.moderations_response(StarletteRequest(scope, receive))

    figures["whole: moderations_response (no decision log)"] = _timeit(lambda i: loop.run_until_complete(whole(i)), n)

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.post("/v1/moderations")
    async def route(request: Request) -> Any:
        return await ingress.moderations_response(request)

    async def asgi(i: int) -> None:
        scope, receive = _request(bodies(i))
        scope["app"] = api

        async def send(message: dict) -> None:
            return None

        await api(scope, receive, send)

    figures["whole: FastAPI app around it (ASGI call)"] = _timeit(lambda i: loop.run_until_complete(asgi(i)), n)
    loop.close()

    print(f"texts: {source}; one post per request; {n} requests per loop, median of 3 loops")
    width = max(len(k) for k in figures)
    for name, us in figures.items():
        print(f"{name:<{width}}  {us:8.1f} us")
    if args.out:
        Path(args.out).write_text(json.dumps({"texts": source, "requests": n, "us_per_request": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
