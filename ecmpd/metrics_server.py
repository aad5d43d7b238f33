"""The HTTP side of the metrics: ``GET /metrics`` on the daemon's own loop.

No thread (prometheus_client's `start_http_server` starts one) and nothing a scraper
does can hold the loop: the request head must arrive within `HEAD_TIMEOUT` and fit in
`MAX_HEAD` bytes, the answer must be taken within `WRITE_TIMEOUT`, and at most
`MAX_CONNECTIONS` connections are open at once (one more is closed as it comes).  Every
connection carries one request and is closed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("ecmpd")

HEAD_TIMEOUT = 5.0
"""Seconds from accepting a connection to the end of its request head."""
WRITE_TIMEOUT = 5.0
"""Seconds the answer may take to leave (a scraper that does not read is dropped)."""
MAX_HEAD = 8192
"""Bytes of request line and headers."""
MAX_CONNECTIONS = 8
"""Connections open at once; Prometheus needs one per scrape."""
PATH = "/metrics"


class MetricsServer:
    """Answers ``GET /metrics`` with `render()`'s bytes; 404 for another path."""

    def __init__(self, render: Callable[[], Awaitable[bytes]],
                 max_connections: int = MAX_CONNECTIONS, head_timeout: float = HEAD_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT) -> None:
        self.render = render
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.refused = 0
        """Connections closed at once because `max_connections` were open."""
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)

    @property
    def port(self) -> int:
        """The port it listens on (the one the kernel chose for port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def open(self) -> int:
        """Connections being served."""
        return len(self._clients)

    async def close(self) -> None:
        """Stop listening and drop every connection being served."""
        if self._server is not None:
            self._server.close()
        for writer in self._clients.values():
            writer.transport.abort()      # its read or write fails: the task ends
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._answer(reader, writer)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError):
            writer.transport.abort()      # slow, gone, oversized or not HTTP: no answer
        except asyncio.CancelledError:
            # only the loop's end cancels this task; asyncio's stream callback would log
            # the cancellation as an error
            writer.transport.abort()
        else:
            writer.close()                # the answer is in the kernel's buffer already
        finally:
            self._clients.pop(task, None)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout)
        method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"only GET\n", "text/plain"
        elif path != PATH:
            status, body, kind = "404 Not Found", f"try {PATH}\n".encode(), "text/plain"
        else:
            try:
                body = await self.render()
                status, kind = "200 OK", CONTENT_TYPE_LATEST
            except Exception as exc:
                log.warning("metrics: cannot render: %s", exc)
                status, body, kind = ("500 Internal Server Error", b"cannot render\n",
                                      "text/plain")
        head_out = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        # no buffer in ecmpd: drain returns once the kernel took all of it
        writer.transport.set_write_buffer_limits(high=0)
        writer.write(head_out if method == "HEAD" else head_out + body)
        await asyncio.wait_for(writer.drain(), self.write_timeout)
