"""`ecmpctl monitor`'s side in the daemon: WAN state changes streamed to the clients.

A monitor connection leaves the control server's request slots (it would otherwise be
the "idle" one evicted first) and is served here until the client closes it.  The
daemon's listener calls `Monitors.publish`, which never waits: each client has a queue
of at most `QUEUE` lines (plus what its socket buffers); one that does not keep up is
closed and logged, so a stopped ``ecmpctl monitor | less`` cannot stall the loop or
pin memory.  At most `MAX_MONITORS` clients at once; more are refused.
"""

from __future__ import annotations

import asyncio
import logging

from .control_protocol import encode, error
from .logsetup import RateLimitedLog

log = logging.getLogger("ecmpd.control_server")

QUEUE = 256
"""Lines a client may fall behind (a flapping WAN makes a few per second at worst)."""

MAX_MONITORS = 32
"""Monitor connections at once (beside the control server's request slots)."""

TOO_MANY_MONITORS = "too many monitor clients"


class _Client:
    __slots__ = ("writer", "wan", "queue")

    def __init__(self, writer: asyncio.StreamWriter, wan: str | None, size: int) -> None:
        self.writer = writer
        self.wan = wan
        """Only this WAN's events (None: every WAN's)."""
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)


class Monitors:
    """The connected monitor clients."""

    def __init__(self, limited: RateLimitedLog, queue: int = QUEUE,
                 limit: int = MAX_MONITORS) -> None:
        self.limited = limited
        self.queue = queue
        self.limit = limit
        self._clients: dict[asyncio.StreamWriter, _Client] = {}
        self.dropped = 0
        """Clients closed because they did not keep up."""

    def __len__(self) -> int:
        return len(self._clients)

    def publish(self, wan: str, event: dict) -> None:
        """Queue `event` (about WAN `wan`) for every client that wants it; never waits."""
        if not self._clients:
            return
        line = encode(event)
        for c in list(self._clients.values()):
            if c.wan is not None and c.wan != wan:
                continue
            try:
                c.queue.put_nowait(line)
            except asyncio.QueueFull:
                self.dropped += 1
                self.limited.warning("monitor", "control socket: a monitor client fell %d "
                                     "events behind: closed it", self.queue)
                self._close(c)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    wan: str | None) -> None:
        """Stream to one client until it closes, falls behind or the server closes."""
        if len(self._clients) >= self.limit:
            self.limited.warning("monitor", "control socket: %d monitor clients (the "
                                 "limit): refusing another", self.limit)
            writer.write(error(TOO_MANY_MONITORS))
            return
        client = _Client(writer, wan, self.queue)
        self._clients[writer] = client
        gone = asyncio.ensure_future(_until_eof(reader))
        try:
            writer.write(encode({"ok": True, "monitor": True}))
            while not writer.transport.is_closing():
                get = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait({get, gone},
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                lines = [get.result()]
                while not client.queue.empty():     # one write for what is queued
                    lines.append(client.queue.get_nowait())
                writer.write(b"".join(lines))
                await writer.drain()
        except (ConnectionError, OSError) as e:
            log.debug("control socket: monitor client gone: %r", e)
        finally:
            gone.cancel()
            self._clients.pop(writer, None)

    def close(self) -> None:
        """Close every monitor connection (the server is closing), after the lines
        still queued for it: the last changes before a stop are sent too."""
        for c in list(self._clients.values()):
            self._clients.pop(c.writer, None)
            transport = c.writer.transport
            while not c.queue.empty() and not transport.is_closing():
                transport.write(c.queue.get_nowait())
            transport.close()           # after what is buffered, as the loop allows

    def _close(self, c: _Client) -> None:
        self._clients.pop(c.writer, None)
        c.writer.transport.abort()      # unsent lines are dropped: the client is behind


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side (what it sends meanwhile is dropped)."""
    try:
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError):
        pass
