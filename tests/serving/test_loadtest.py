"""The load generator's HTTP clients against a tiny local server: statuses counted, keep-alive reused, chunked
and length-less bodies read, a connection the server dropped retried once, loopback only."""

from __future__ import annotations

import asyncio

import pytest

from serving.loadtest import RawClient, closed_loop, open_loop, text_bodies


async def _serve(mode: str, stats: dict):
    """A one-route HTTP/1.1 server: `mode` picks how it answers (length, chunked, close, noclose-drop, shed)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
                body = await reader.readexactly(length)
                stats["requests"] += 1
                stats["bodies"].append(body)
                n = stats["requests"]
                if mode == "shed" and n % 2 == 0:
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                elif mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                elif mode == "close":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close")
                    await writer.drain()
                    break
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                if mode == "drop":  # closes the kept-alive connection without saying so
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/moderations"


def _run(mode: str, load):
    stats = {"connections": 0, "requests": 0, "bodies": []}

    async def main():
        server, url = await _serve(mode, stats)
        async with server:
            return await load(url)

    return asyncio.run(main()), stats


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_closed_loop_counts_200s_and_503s_and_reuses_connections(client):
    bodies = text_bodies(["a post"])
    result, stats = _run("shed", lambda url: closed_loop(url, bodies, 2, 30.0, max_requests=40, client=client))
    assert result.sent == stats["requests"] == 40
    assert result.ok == 20 and result.shed == 20 and result.other == 0
    assert len(result.latencies) == 20
    assert stats["connections"] == 2  # keep-alive: one connection per worker
    assert b'"text": "a post"' in stats["bodies"][0]


@pytest.mark.parametrize("mode", ["chunked", "close", "drop"])
def test_raw_client_reads_every_framing_and_retries_a_dropped_connection(mode):
    async def load(url):
        async with RawClient(1, 5.0) as http:
            return [await http.post(url, content=b"{}") for _ in range(3)]

    responses, stats = _run(mode, load)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].content == {"chunked": b"abcde", "close": b"body until close", "drop": b"ok"}[mode]
    assert stats["requests"] == 3  # nothing sent twice
    assert stats["connections"] == (1 if mode == "chunked" else 3)


def test_open_loop_sends_at_the_rate_and_counts_everything():
    bodies = text_bodies(["x", "y"])
    result, stats = _run("length", lambda url: open_loop(url, bodies, rate=200.0, seconds=0.5, max_requests=1000))
    assert result.sent == stats["requests"] == result.ok and 50 <= result.ok <= 180
    assert result.other == 0


def test_only_loopback_is_loaded():
    with pytest.raises(ValueError, match="127.0.0.1"):
        asyncio.run(closed_loop("http://10.1.2.3:80/v1/moderations", text_bodies(["x"]), 1, 0.1))
    with pytest.raises(ValueError, match="client must be"):
        asyncio.run(closed_loop("http://127.0.0.1:9/v1/moderations", text_bodies(["x"]), 1, 0.1, client="curl"))
