"""The control protocol between ecmpd and ecmpctl, used by both sides.

Newline-delimited JSON over a Unix stream socket at `DEFAULT_SOCKET` (or the config's
``control.socket``).  Each request is one JSON object on one line, ``{"cmd": "status"}``
or ``{"cmd": "disable", "wan": "wlan2"}`` (`COMMANDS`), at most `MAX_REQUEST` bytes;
each answer is one line, ``{"ok": true, ...payload}`` or ``{"ok": false, "error":
"message"}``.  A daemon whose connections are all taken answers `TOO_MANY` or, to an
idle connection closed to make room, `EVICTED`, both before reading its request: a
client may send the same request again (`RETRY_ERRORS`).

``{"cmd": "monitor"}`` is the one streaming request: its answer ``{"ok": true,
"monitor": true}`` is followed by one line per WAN state change (`ecmpd.history.as_json`)
until the client closes the connection (or does not keep up: then the daemon closes it).
"""

from __future__ import annotations

import json
TYPE_CHECKING = False  # `typing` stays unimported: ecmpctl's start (tests/test_startup_imports.py)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SOCKET = "/run/ecmpd/ecmpd.sock"
"""Where the daemon listens unless ``control.socket`` or ``--socket`` says otherwise."""

COMMANDS: dict[str, dict[str, type]] = {
    "ping": {},
    "status": {},
    "reload": {},
    "disable": {"wan": str},
    "enable": {"wan": str},
    "history": {},
    "monitor": {},
    "role": {"role": str},
}
"""Command name -> its required arguments and their types."""

OPTIONAL: dict[str, dict[str, type]] = {
    "history": {"wan": str},
    "monitor": {"wan": str},
    "disable": {"force": bool},
}
"""Command name -> its optional arguments (a WAN filter, `force`) and their types."""

ROLES = ("master", "backup", "fault")
"""The HA roles `role` sets (keepalived's states; `ecmpd.role`)."""

STREAMING = "monitor"
"""The command whose connection stays open for a stream of events."""

MAX_REQUEST = 8192
"""Longest request line, in bytes (the longest real one is well under 200)."""

TOO_MANY = "too many clients"
"""The error of a refused connection (``ecmpctl`` retries on it)."""

EVICTED = "idle connection closed to make room for a new client"
"""The error line sent to a connection closed to make room."""

RETRY_ERRORS = (TOO_MANY, EVICTED)
"""Answers sent before a request was read: safe to send the same request again."""


def request(cmd: str, wan: str | None = None, force: bool = False,
            role: str | None = None) -> dict[str, Any]:
    """The request for `cmd` (`wan`: the WAN it names: for disable and enable, or the
    filter of history and monitor; `force`: disable even the last WAN in the route;
    `role`: the HA role `role` sets)."""
    req: dict[str, Any] = {"cmd": cmd} if wan is None else {"cmd": cmd, "wan": wan}
    if force:
        req["force"] = True
    if role is not None:
        req["role"] = role
    return req


def validate_request(req: Any) -> str | None:
    """Return why `req` is not a valid request, or None when it is."""
    if not isinstance(req, dict):
        return "request must be a JSON object"
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        return 'request needs a "cmd" string'
    if cmd not in COMMANDS:
        return f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})"
    args = {**COMMANDS[cmd], **OPTIONAL.get(cmd, {})}
    for name, typ in args.items():
        if name not in req:
            if name in COMMANDS[cmd]:
                return f"{cmd}: missing argument {name!r}"
            continue
        if not isinstance(req[name], typ) or isinstance(req[name], bool) and typ is not bool:
            return f"{cmd}: argument {name!r} must be a {typ.__name__}"
        if typ is str and not req[name]:
            return f"{cmd}: argument {name!r} must not be empty"
    for name, typ in OPTIONAL.get(cmd, {}).items():
        if name in req and type(req[name]) is not typ:
            return f"{cmd}: argument {name!r} must be a {typ.__name__}"
    extra = sorted(k for k in req if k != "cmd" and k not in args
                   and k not in OPTIONAL.get(cmd, {}))
    if extra:
        return f"{cmd}: unexpected argument(s) {', '.join(map(repr, extra))}"
    return None


def encode(resp: dict) -> bytes:
    """One response line."""
    return json.dumps(resp, separators=(",", ":")).encode() + b"\n"


def error(message: str) -> bytes:
    """One error line."""
    return encode({"ok": False, "error": message})
