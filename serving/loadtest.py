"""A light load generator for the endpoint: closed loop and open loop, loopback only.

Every phase is bounded in time and in requests. Latency is measured per request from send to full
response; only 200s count towards throughput and latency, 503s (shed load) and other statuses are counted.

Two HTTP clients: "raw" (the default: HTTP/1.1 keep-alive connections written on asyncio streams, ~0.1-0.2 ms of
CPU per request) and "httpx" (the client used before 2026-12-07, ~1.5 ms of CPU per request). The load generator
shares the machine's cores with the endpoint it measures, so its own CPU is taken from the replicas: at 150 req/s
httpx used 0.2 of this machine's 2 cores (benchmarks/serve_latency.py's CPU breakdown).

    python -m serving.loadtest --url http://127.0.0.1:8000 --concurrency 16 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlparse

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CLIENTS = ("raw", "httpx")
DEFAULT_CLIENT = "raw"


@dataclass
class PhaseResult:
    """One load phase: what was sent, what came back, latencies of the 200s (seconds)."""

    name: str
    seconds: float
    sent: int = 0
    ok: int = 0
    shed: int = 0  # 503
    other: int = 0  # any other status or a transport error
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the phase."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """Latency percentile q in [0, 100], seconds (nearest rank); None without successes."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
        return ordered[rank]

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "latencies"}
        out.update(throughput=self.throughput, p50_ms=_ms(self.percentile(50)), p95_ms=_ms(self.percentile(95)),
                   p99_ms=_ms(self.percentile(99)))
        return out


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def check_loopback(url: str) -> None:
    """Refuse to load anything but this machine."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests only target 127.0.0.1 / localhost, not {host!r}")


async def _send(client, url: str, body: bytes, result: PhaseResult) -> None:
    start = time.perf_counter()
    try:
        r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
        status = str(r.status_code)
    except Exception as exc:  # noqa: BLE001 - a transport error is a counted outcome, not a crash
        status = type(exc).__name__
    elapsed = time.perf_counter() - start
    result.statuses[status] = result.statuses.get(status, 0) + 1
    if status == "200":
        result.ok += 1
        result.latencies.append(elapsed)
    elif status == "503":
        result.shed += 1
    else:
        result.other += 1


class _Response:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content


class RawClient:
    """A minimal HTTP/1.1 client on asyncio streams for load generation: keep-alive connections (at most
    `max_connections` open, idle ones reused), Content-Length or chunked responses, a connection closed after
    `Connection: close` or an error. `post` has httpx.AsyncClient.post's shape for what the load phases use."""

    def __init__(self, max_connections: int, timeout_s: float, headers: dict[str, str] | None = None) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._timeout = timeout_s
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        while self._idle:
            self._idle.pop()[1].close()

    async def post(self, url: str, content: bytes, headers: dict[str, str] | None = None) -> _Response:
        parts = urlparse(url)
        extra = self._extra + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()
                                      if k.lower() != "content-type")
        head = (f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(content)}\r\n{extra}\r\n").encode("latin-1") + content
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is not None:  # a kept-alive connection the server may have closed since: one fresh retry
                try:
                    return await self._exchange(conn, head)
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
            conn = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 80), self._timeout)
            return await self._exchange(conn, head)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> _Response:
        try:
            conn[1].write(request)
            status, body, keep = await asyncio.wait_for(self._read(conn[0]), self._timeout)
        except BaseException:
            conn[1].close()
            raise
        if keep:
            self._idle.append(conn)
        else:
            conn[1].close()
        return _Response(status, body)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {}
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip().lower()
        keep = fields.get("connection") != "close"
        if "chunked" in fields.get("transfer-encoding", ""):
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(data[:-2])
            return status, b"".join(chunks), keep
        if "content-length" in fields:
            return status, await reader.readexactly(int(fields["content-length"])), keep
        return status, await reader.read(), False  # no length: the body ends with the connection


def _client(concurrency: int, headers: dict[str, str] | None, timeout_s: float, client: str = DEFAULT_CLIENT):
    if client == "raw":
        return RawClient(concurrency, timeout_s, headers)
    if client != "httpx":
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers or {})


async def closed_loop(url: str, bodies: Callable[[int], bytes], concurrency: int, seconds: float,
                      max_requests: int = 100_000, headers: dict[str, str] | None = None,
                      timeout_s: float = 60.0, name: str | None = None, client: str = DEFAULT_CLIENT) -> PhaseResult:
    """`concurrency` workers, each sending its next request as soon as the last one is answered."""
    check_loopback(url)
    result = PhaseResult(name=name or f"closed c={concurrency}", seconds=0.0)
    counter = iter(range(max_requests))
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client) -> None:
        while time.perf_counter() < deadline:
            i = next(counter, None)
            if i is None:
                return
            result.sent += 1
            await _send(client, url, bodies(i), result)

    async with _client(concurrency, headers, timeout_s, client) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def open_loop(url: str, bodies: Callable[[int], bytes], rate: float, seconds: float,
                    max_requests: int = 100_000, headers: dict[str, str] | None = None, timeout_s: float = 60.0,
                    max_outstanding: int = 512, seed: int = 0, name: str | None = None,
                    client: str = DEFAULT_CLIENT) -> PhaseResult:
    """Requests sent at a fixed mean `rate` per second (Poisson arrivals), whether or not earlier ones returned.

    Throughput counts the requests answered over the whole phase, including the tail after the last send.
    """
    check_loopback(url)
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    rng = random.Random(seed)
    result = PhaseResult(name=name or f"open {rate:.1f}/s", seconds=0.0)
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    async with _client(max_outstanding, headers, timeout_s, client) as http:
        next_at = start
        i = 0
        while i < max_requests:
            next_at += rng.expovariate(rate)
            if next_at - start > seconds:
                break
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                result.other += 1  # the client could not keep up: counted, not silently skipped
                result.statuses["client_backlog"] = result.statuses.get("client_backlog", 0) + 1
                i += 1
                continue
            result.sent += 1
            task = asyncio.create_task(_send(http, url, bodies(i), result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


def text_bodies(texts: Sequence[str], posts_per_request: int = 1) -> Callable[[int], bytes]:
    """Request body i: `posts_per_request` text-only posts drawn in turn from `texts` (ours: {"posts": [...]})."""
    if not texts:
        raise ValueError("no texts to send")

    def make(i: int) -> bytes:
        posts = [{"id": f"{i}-{j}", "text": texts[(i * posts_per_request + j) % len(texts)]}
                 for j in range(posts_per_request)]
        return json.dumps({"posts": posts}).encode()

    return make


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load a local moderation endpoint (127.0.0.1 only).")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop workers (ignored with --rate)")
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--token-env", default=None, help="environment variable holding the bearer token")
    parser.add_argument("--client", choices=CLIENTS, default=DEFAULT_CLIENT,
                        help="HTTP client: raw asyncio streams (light) or httpx (default: %(default)s)")
    args = parser.parse_args(argv)
    import os

    headers = {"Authorization": f"Bearer {os.environ[args.token_env]}"} if args.token_env else None
    url = args.url.rstrip("/") + "/v1/moderations"
    texts = [f"sample post number {i}: have a look at this and tell me what you think" for i in range(64)]
    bodies = text_bodies(texts)
    if args.rate:
        result = asyncio.run(open_loop(url, bodies, args.rate, args.seconds, args.max_requests, headers,
                                       client=args.client))
    else:
        result = asyncio.run(closed_loop(url, bodies, args.concurrency, args.seconds, args.max_requests, headers,
                                         client=args.client))
    print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
