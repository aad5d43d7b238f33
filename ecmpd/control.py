"""The daemon's control socket: newline-delimited JSON over a Unix stream socket.

Each request is one JSON object on one line, ``{"cmd": "status"}``; each answer is one
line, ``{"ok": true, ...payload}`` or ``{"ok": false, "error": "message"}``.  A client
may send several requests on one connection.  Requests are validated here (see
`COMMANDS`) before the daemon's handler sees them; no client can hurt the server.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import socket
import stat
from typing import Any, Awaitable, Callable

log = logging.getLogger("ecmpd.control")

Handler = Callable[[dict], Awaitable[dict]]
"""Gets a validated request, returns the response payload."""

COMMANDS: dict[str, dict[str, type]] = {
    "ping": {},
    "status": {},
    "reload": {},
    "disable": {"wan": str},
    "enable": {"wan": str},
}
"""Command name -> its required arguments and their types (no optional ones)."""

IDLE_TIMEOUT = 10.0
"""Seconds a connection may stay silent (no complete request line) before it is closed."""

MAX_CLIENTS = 32
"""Connections served at once; more are answered with an error and closed."""


class ControlError(Exception):
    """A control-socket failure with a message meant for people.

    The handler may raise it too: its message becomes the ``error`` of the answer.
    """


def validate_request(req: Any) -> str | None:
    """Return why `req` is not a valid request, or None when it is."""
    if not isinstance(req, dict):
        return "request must be a JSON object"
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        return 'request needs a "cmd" string'
    if cmd not in COMMANDS:
        return f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})"
    args = COMMANDS[cmd]
    for name, typ in args.items():
        if name not in req:
            return f"{cmd}: missing argument {name!r}"
        if not isinstance(req[name], typ) or isinstance(req[name], bool) and typ is not bool:
            return f"{cmd}: argument {name!r} must be a {typ.__name__}"
        if typ is str and not req[name]:
            return f"{cmd}: argument {name!r} must not be empty"
    extra = sorted(k for k in req if k != "cmd" and k not in args)
    if extra:
        return f"{cmd}: unexpected argument(s) {', '.join(map(repr, extra))}"
    return None


def _encode(resp: dict) -> bytes:
    """One response line."""
    return json.dumps(resp, separators=(",", ":")).encode() + b"\n"


def _error(message: str) -> bytes:
    return _encode({"ok": False, "error": message})


class ControlServer:
    """Serves the control protocol on a Unix socket inside the daemon's asyncio loop."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        group: str | None = None,
        max_request: int = 65536,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.StreamWriter] = set()

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
        for w in list(self._clients):
            w.close()
        if server is not None:
            await server.wait_closed()
        self._unlink_own()

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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection; never raises."""
        if len(self._clients) >= self.max_clients:
            log.warning("control socket: too many clients, refusing one")
            await self._send(writer, _error("too many clients"))
            writer.close()
            return
        self._clients.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except Exception:  # pragma: no cover - a bug: log it, keep serving others
            log.warning("control socket: connection failed", exc_info=True)
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read and answer one request line; False when the connection should end."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
        except asyncio.TimeoutError:
            log.debug("control socket: idle client, closing")
            return False
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                log.debug("control socket: client left mid-request")
            return False
        except asyncio.LimitOverrunError:
            log.warning("control socket: request longer than %d bytes", self.max_request)
            await self._send(writer, _error(f"request longer than {self.max_request} bytes"))
            return False
        except (ConnectionError, OSError) as e:
            log.debug("control socket: read failed: %s", e)
            return False
        if not line.strip():
            return True
        return await self._send(writer, await self._answer(line))

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
            log.warning("control socket: %s failed", req["cmd"], exc_info=True)
            return _error(f"internal error in {req['cmd']}: {e}")
        if not isinstance(payload, dict):
            log.warning("control socket: %s returned %r, not a dict", req["cmd"], type(payload))
            return _error(f"internal error in {req['cmd']}: bad response")
        resp = {"ok": True, **payload} if "ok" not in payload else payload
        try:
            return _encode(resp)
        except (TypeError, ValueError) as e:
            log.warning("control socket: %s response not JSON: %s", req["cmd"], e)
            return _error(f"internal error in {req['cmd']}: response is not JSON")

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Write one line; False when the client is gone or does not read its answers."""
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
            return True
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            log.debug("control socket: write failed: %r", e)
            return False
