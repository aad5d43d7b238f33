"""The daemon's control socket: newline-delimited JSON over a Unix stream socket.

Each request is one JSON object on one line, ``{"cmd": "status"}``; each answer is one
line, ``{"ok": true, ...payload}`` or ``{"ok": false, "error": "message"}``.  A client
may send several requests on one connection.  Requests are validated (`control_protocol.validate_request`) before the daemon's handler sees them; no client can hurt the server.

Resources are bounded whatever the clients do:

- a request line must arrive whole within `IDLE_TIMEOUT` seconds (idle clients, and
  slowloris ones dripping a line a byte at a time, are closed), and be at most
  `max_request` bytes (longer: one error answer, then the connection is closed);
- at most `MAX_CLIENTS` connections are served at once.  When a new one arrives at the
  limit, the served connection that has been waiting longest for a request line is
  closed to make room (it gets an error line saying why): a connection that holds a
  slot and asks nothing is an abandoned or hostile one, while a new connection is
  normally an ``ecmpctl`` that sends its request at once, so idle connections can never
  lock ``ecmpctl status`` out.  When every slot is busy with a request in the daemon's
  handler, the newcomer waits, unread, in a first-come-first-served queue of at most
  `MAX_WAITING` (for at most `IDLE_TIMEOUT` seconds); meanwhile each served connection
  that finishes a request gives its slot to the head of the queue.  So a crowd of
  clients asking without pause cannot starve one more: it waits its turn.  Only a full
  queue, or a wait that times out, refuses (``too many clients``; ``ecmpctl`` retries
  until its own timeout);
- the socket is read in `READ_CHUNK` pieces, so a connection buffers at most about
  2 x `max_request` + `READ_CHUNK` bytes of request (20 KiB; a waiting one: none);
- a client that does not read its answers is dropped (unsent data discarded) after
  `IDLE_TIMEOUT` seconds, so it cannot pin memory or descriptors either;
- a ``monitor`` connection leaves the request slots for `ecmpd.monitor.Monitors`,
  which bounds its clients and what each may fall behind;
- WARNINGs caused by clients (refusals, evictions, oversized requests, handler failures)
  are rate-limited: at most one line per kind per `LOG_INTERVAL` seconds, followed by a
  count of the ones suppressed meanwhile.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import socket
import stat
from collections import deque
from typing import Awaitable, Callable

from .control_protocol import (EVICTED, MAX_REQUEST, STREAMING, TOO_MANY, encode as _encode,
                               error as _error, validate_request)
from .logsetup import RateLimitedLog
from .monitor import Monitors

log = logging.getLogger("ecmpd.control_server")

Handler = Callable[[dict], Awaitable[dict]]
"""Gets a validated request, returns the response payload."""

IDLE_TIMEOUT = 10.0
"""Seconds a connection may take to send a whole request line (silent or dripping), to
read an answer, or to wait for a slot, before it is closed."""

MAX_CLIENTS = 32
"""Connections served at once; at the limit a new one replaces the longest-idle one, or
waits for a slot when all are busy in the handler."""

MAX_WAITING = 64
"""Connections waiting for a slot (first come, first served); more are refused."""

GRACE = 1.0
"""While others wait, a served connection idle this long loses its slot to them (a
newcomer arriving with nobody waiting takes the slot of the one idle longest at once)."""

DISCARD = 65536
DISCARD_SECONDS = 1.0
"""After an oversized request: how much more of it is read and dropped, for how long."""

READ_CHUNK = 4096
"""Bytes asked of the socket per read.  With asyncio's default, 256 KiB, a flood of
oversized requests held ~0.5 MB per connection for a moment; now a connection buffers at
most about 2 x MAX_REQUEST + READ_CHUNK = 20 KiB."""

LOG_INTERVAL = 10.0
"""Seconds between two client-caused WARNINGs of one kind (the rest are counted)."""




class _Conn:
    """One client connection's bookkeeping."""

    __slots__ = ("writer", "idle_since", "busy")

    def __init__(self, writer: asyncio.StreamWriter, now: float) -> None:
        self.writer = writer
        self.idle_since = now
        """Loop time since when it has been waiting for its next request line."""
        self.busy = False
        """True while the handler works on one of its requests (never evicted then)."""


class ControlError(Exception):
    """A control-socket failure with a message meant for people.

    The handler may raise it too: its message becomes the ``error`` of the answer.
    """


class ControlServer:
    """Serves the control protocol on a Unix socket inside the daemon's asyncio loop."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        group: str | None = None,
        max_request: int = MAX_REQUEST,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.max_waiting = max_waiting
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: dict[asyncio.StreamWriter, _Conn] = {}
        self._tasks: set[asyncio.Task] = set()
        self._waiting: deque[tuple[asyncio.Future[bool], _Conn]] = deque()
        self.limited = RateLimitedLog(log, LOG_INTERVAL)
        """Client-caused WARNINGs go through it."""
        self.evicted = 0
        self.refused = 0
        self.monitors = Monitors(self.limited)
        """The ``monitor`` connections, told every WAN state change by `publish`."""

    def publish(self, wan: str, event: dict) -> None:
        """Stream `event` (about WAN `wan`) to the monitor clients; never waits."""
        self.monitors.publish(wan, event)

    async def start(self) -> None:
        """Create the socket (mode 0660, group `group`) and start accepting clients.

        Raises ControlError when another process answers on `path`, when `path` is not
        a socket, or when the socket cannot be created.
        """
        if self._server is not None:
            raise ControlError(f"control socket {self.path} is already started")
        gid = self._resolve_group()
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent, mode=0o755, exist_ok=True)
                os.chmod(parent, 0o755)
            await self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            raise ControlError(f"cannot create control socket {self.path}: {e}") from e
        try:
            # Nobody can connect before listen(): set the mode and owner in between.
            sock.bind(self.path)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            os.chmod(self.path, 0o660)
            if gid is not None:
                try:
                    os.chown(self.path, -1, gid)
                except PermissionError as e:
                    raise OSError(e.errno, f"{e.strerror}: cannot give it to group "
                                  f"{self.group} (the daemon needs CAP_CHOWN or membership "
                                  f"of the group: under systemd add "
                                  f"SupplementaryGroups={self.group})") from e
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=self.max_request
            )
        except OSError as e:
            sock.close()
            self._unlink_own()
            raise ControlError(f"cannot create control socket {self.path}: {e}") from e
        log.debug("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Stop listening, drop the connected clients and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        while self._waiting:
            fut, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_result(False)
        for w in list(self._clients):
            _drop(w)
        self._clients.clear()
        self.monitors.close()
        if self._tasks:     # they see their connection closed and end
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if server is not None:
            await server.wait_closed()
        self._unlink_own()
        self.limited.flush()

    def _resolve_group(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            if self.group.isdigit():
                return int(self.group)
            raise ControlError(f"control socket group {self.group!r} does not exist") from None

    async def _remove_stale(self) -> None:
        """Delete a socket file nobody listens on; refuse when somebody does."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not touching it")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale control socket %s", self.path)
            os.unlink(self.path)
            return
        except (asyncio.TimeoutError, OSError) as e:
            raise ControlError(f"cannot check control socket {self.path}: {e}") from e
        writer.close()
        raise ControlError(f"another ecmpd is already listening on {self.path}")

    def _unlink_own(self) -> None:
        """Remove the socket file if it is still the one we bound."""
        if self._inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove control socket %s: %s", self.path, e)
        self._inode = None

    @property
    def clients(self) -> int:
        """Connections served now."""
        return len(self._clients)

    @property
    def waiting(self) -> int:
        """Connections waiting for a slot now."""
        return sum(1 for fut, _ in self._waiting if not fut.done())

    def _make_room(self, min_idle: float = 0.0) -> bool:
        """Close the connection idle longest (at least `min_idle` seconds); False when
        there is none (all are busy)."""
        now = asyncio.get_running_loop().time()
        idle = [c for c in self._clients.values()
                if not c.busy and now - c.idle_since >= min_idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        del self._clients[victim.writer]
        self.evicted += 1
        waited = now - victim.idle_since
        self.limited.warning("evict", "control socket: %d connections open (the limit): "
                             "closed the one idle longest (%.1fs) to make room",
                             self.max_clients, waited)
        _drop(victim.writer, _error(EVICTED))
        return True

    def _refuse(self, writer: asyncio.StreamWriter, why: str) -> None:
        self.refused += 1
        self.limited.warning("refuse", "control socket: %s: refusing a new connection", why)
        _drop(writer, _error(TOO_MANY))

    async def _admit(self, conn: _Conn) -> bool:
        """Give `conn` a slot: a free one, an idle connection's, or the next one to free
        up (waiting in line); False when it was refused."""
        queue = self.waiting
        if len(self._clients) < self.max_clients or not queue and self._make_room():
            self._clients[conn.writer] = conn
            return True
        if queue >= self.max_waiting:
            self._refuse(conn.writer, f"{self.max_clients} connections busy with requests "
                         f"and {self.max_waiting} waiting (the limits)")
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((fut, conn))
        transport = conn.writer.transport
        transport.pause_reading()           # its request waits in the socket, unread
        if self._make_room(min_idle=GRACE):     # a slot held by one asking nothing
            self._hand_over()
        timer = loop.call_later(self.idle_timeout,
                                lambda: fut.done() or fut.set_result(False))
        try:
            admitted = await fut                # _hand_over registered it in _clients
        finally:
            timer.cancel()
        if not admitted:
            if self._server is None or transport.is_closing():   # closing, or it left
                _drop(conn.writer)
            else:
                self._refuse(conn.writer, f"waited {self.idle_timeout:g}s for one of "
                             f"{self.max_clients} busy connections")
            return False
        if not transport.is_closing():
            transport.resume_reading()
        conn.idle_since = loop.time()
        return True

    def _hand_over(self) -> None:
        """Slots are free: give them to the connections waiting longest."""
        while self._waiting and len(self._clients) < self.max_clients:
            fut, conn = self._waiting.popleft()
            if fut.done():                      # gave up waiting
                continue
            if conn.writer.transport.is_closing():
                fut.set_result(False)
                continue
            self._clients[conn.writer] = conn
            fut.set_result(True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection; never raises."""
        transport = writer.transport
        if hasattr(transport, "max_size"):    # asyncio's selector transports
            transport.max_size = READ_CHUNK  # type: ignore[attr-defined]
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn(writer, asyncio.get_running_loop().time())
        try:
            if not await self._admit(conn):
                return
            # Under pressure (others waiting) a connection gets one request, then makes
            # way: closed after its answer.
            while writer in self._clients and await self._one_request(reader, conn) \
                    and not self.waiting:
                pass
        except asyncio.CancelledError:
            # the loop is ending: end quietly (asyncio's stream callback would log a
            # cancelled connection task as an error)
            pass
        except Exception:  # pragma: no cover - a bug: log it, keep serving others
            self.limited.warning("bug", "control socket: connection failed", exc_info=True)
        finally:
            if self._clients.get(writer) is conn:
                del self._clients[writer]
            self._tasks.discard(task)
            _drop(writer)
            if self._server is not None:
                self._hand_over()

    async def _one_request(self, reader: asyncio.StreamReader, conn: _Conn) -> bool:
        """Read and answer one request line; False when the connection should end."""
        writer = conn.writer
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the read in a task, and the
            # task and its exception (EOF) keep each other alive until the cyclic GC
            # runs: under a flood of connections that was megabytes of garbage
            async with asyncio.timeout(self.idle_timeout):
                line = await reader.readuntil(b"\n")
        except asyncio.TimeoutError:
            log.debug("control socket: idle client, closing")
            return False
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                log.debug("control socket: client left mid-request")
            return False
        except asyncio.LimitOverrunError:
            self.limited.warning("oversized", "control socket: request longer than %d "
                                 "bytes, closing that connection", self.max_request)
            if await self._send(writer, _error(f"request longer than {self.max_request} "
                                               "bytes")):
                await self._discard(reader, writer)
            return False
        except (ConnectionError, OSError) as e:
            log.debug("control socket: read failed: %s", e)
            return False
        if not line.strip():
            return True
        if (wan := _streaming(line)) is not None:
            # a stream, not a request: its slot goes to the others at once
            del self._clients[writer]
            self._hand_over()
            await self.monitors.serve(reader, writer, wan or None)
            return False
        conn.busy = True
        try:
            answer = await self._answer(line)
        finally:
            conn.busy = False
        if writer not in self._clients:     # closed meanwhile (server closing)
            return False
        ok = await self._send(writer, answer)
        conn.idle_since = asyncio.get_running_loop().time()
        return ok

    async def _answer(self, line: bytes) -> bytes:
        """The response line for one request line."""
        try:
            req = json.loads(line)
        except (ValueError, RecursionError) as e:
            log.debug("control socket: malformed request: %s", e)
            return _error(f"malformed JSON: {e}")
        why = validate_request(req)
        if why is not None:
            log.debug("control socket: invalid request: %s", why)
            return _error(why)
        try:
            payload = await self.handler(req)
        except ControlError as e:
            return _error(str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.limited.warning("handler", "control socket: %s failed", req["cmd"],
                                 exc_info=True)
            return _error(f"internal error in {req['cmd']}: {e}")
        if not isinstance(payload, dict):
            self.limited.warning("handler", "control socket: %s returned %r, not a dict",
                                 req["cmd"], type(payload))
            return _error(f"internal error in {req['cmd']}: bad response")
        resp = {"ok": True, **payload} if "ok" not in payload else payload
        try:
            return _encode(resp)
        except (TypeError, ValueError) as e:
            self.limited.warning("handler", "control socket: %s response not JSON: %s",
                                 req["cmd"], e)
            return _error(f"internal error in {req['cmd']}: response is not JSON")

    async def _discard(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        """End the connection gently after an oversized request: say EOF, then read and
        drop what the client is still sending (a bounded amount, for a short time), so
        it reads the error instead of a reset (closing a Unix socket with unread data
        resets it)."""
        budget = DISCARD
        try:
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(DISCARD_SECONDS):
                while budget > 0:
                    chunk = await reader.read(min(budget, READ_CHUNK))
                    if not chunk:
                        break
                    budget -= len(chunk)
        except (TimeoutError, ConnectionError, OSError):
            pass

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Write one line; False when the client is gone or does not read its answers."""
        try:
            writer.write(data)
            async with asyncio.timeout(self.idle_timeout):
                await writer.drain()
            return True
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            log.debug("control socket: write failed: %r", e)
            return False


def _streaming(line: bytes) -> str | None:
    """For a valid streaming request, its WAN filter ("" for none); else None."""
    if STREAMING.encode() not in line:
        return None
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if validate_request(req) is not None or req["cmd"] != STREAMING:
        return None
    return req.get("wan", "")


def _drop(writer: asyncio.StreamWriter, last: bytes | None = None) -> None:
    """Close a connection now, after `last` if the socket takes it at once.

    A plain close() would wait for buffered answers to be read, forever for a client
    that does not read: whatever is still unsent is discarded instead.
    """
    transport = writer.transport
    if transport.is_closing():
        return
    try:
        if last is not None:
            transport.write(last)
    except (ConnectionError, OSError, RuntimeError):
        pass
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()
