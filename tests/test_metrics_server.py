"""Unit tests of ecmpd.metrics_server: `GET /metrics` on a loopback port against slow,
silent, oversized, garbled and too many clients, and one that does not read its answer;
the checks are on what each client gets and on the server's open connections."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from ecmpd.metrics_server import MetricsServer
from lab.wait import until_async

async def fetch(port: int, request: bytes = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                timeout: float = 5.0) -> bytes:
    """The whole answer to `request` (until the server closes; b"" when it drops the
    connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def body() -> bytes:
    return b"ecmpd_info{version=\"x\"} 1.0\n"


def serve(test, **kw: Any) -> Any:
    """Run `test(server)` against a MetricsServer on a free loopback port."""
    async def main() -> Any:
        server = MetricsServer(kw.pop("render", body), **kw)
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.wait_for(test(server), 30)
        finally:
            await server.close()
    return asyncio.run(main())


def test_get_metrics_answers_with_the_exposition_and_closes() -> None:
    async def test(server: MetricsServer) -> list[bytes]:
        return [await fetch(server.port), await fetch(server.port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
                await fetch(server.port, b"GET / HTTP/1.1\r\n\r\n"),
                await fetch(server.port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                await fetch(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")]
    ok, query, root, post, head = serve(test)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=" in ok    # prometheus_client's own
    assert ok.endswith(b"\r\n\r\necmpd_info{version=\"x\"} 1.0\n")
    assert b"Content-Length: 28\r\n" in ok
    assert query == ok
    assert root.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert post.startswith(b"HTTP/1.1 405 ")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")


def test_a_render_that_fails_is_a_500_and_the_server_goes_on() -> None:
    calls = []

    async def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("conntrack")
        return b"x 1\n"

    async def test(server: MetricsServer) -> list[bytes]:
        return [await fetch(server.port), await fetch(server.port)]
    first, second = serve(test, render=render)
    assert first.startswith(b"HTTP/1.1 500 ")
    assert second.startswith(b"HTTP/1.1 200 OK") and second.endswith(b"x 1\n")


def test_a_silent_client_is_closed_after_the_timeout_while_others_are_served() -> None:
    async def test(server: MetricsServer) -> tuple[int, float, bytes, int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metr")                   # half a request, then nothing
        await until(lambda: server.open == 1)
        answer = await fetch(server.port)           # served meanwhile
        held = server.open                          # the silent one still waits
        assert await asyncio.wait_for(reader.read(), 10) == b""   # closed, no answer
        closed = loop.time() - start
        writer.close()
        return held, closed, answer, server.open
    held, closed, answer, still_open = serve(test, head_timeout=1.0)
    assert answer.startswith(b"HTTP/1.1 200 OK") and held == 1
    assert 1.0 <= closed < 10
    assert still_open == 0


def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    async def test(server: MetricsServer) -> tuple[list[bytes], int, int, bytes]:
        hanging = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await until(lambda: server.open == 3)
        refused = [await fetch(server.port) for _ in range(2)]
        held = server.open                           # closed before the hanging ones
        await until(lambda: server.open == 0, 10)    # the hanging ones time out...
        after = await fetch(server.port)             # ...and a scrape gets through again
        for _, w in hanging:
            w.close()
        return refused, server.refused, held, after
    refused, count, held, after = serve(test, max_connections=3, head_timeout=1.0)
    assert refused == [b"", b""] and count == 2 and held == 3
    assert after.startswith(b"HTTP/1.1 200 OK")


def test_an_oversized_or_garbled_head_is_dropped() -> None:
    async def test(server: MetricsServer) -> list[bytes]:
        big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n"
        return [await fetch(server.port, big), await fetch(server.port, b"hello\r\n\r\n"),
                await fetch(server.port)]
    big, garbled, ok = serve(test)
    assert (big, garbled) == (b"", b"")
    assert ok.startswith(b"HTTP/1.1 200 OK")


def test_a_client_that_does_not_read_the_answer_is_dropped() -> None:
    async def render() -> bytes:
        return b"x" * 64_000_000               # more than any socket buffers

    async def test(server: MetricsServer) -> tuple[int, float]:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await until(lambda: server.open == 1)
        await until(lambda: server.open == 0, 10)
        sock.close()
        return server.open, loop.time() - start
    still_open, took = serve(test, render=render, write_timeout=0.5)
    assert still_open == 0 and 0.5 <= took < 10


async def until(cond, timeout: float = 2.0) -> None:
    await until_async(cond, timeout, interval=0.01)
