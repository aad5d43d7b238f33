"""Every WAN state change as a journal entry with structured fields.

``journalctl WAN=wlan1`` is then that WAN's history, ``journalctl STATE=down`` every
failure, across restarts (the in-memory `ecmpd.history` starts empty at each).

Written in journald's native protocol (systemd.journal-fields(7), "Native Journal
Protocol"): one datagram per entry on ``/run/systemd/journal/socket``, ``KEY=value``
lines; a value holding a newline goes as ``KEY\\n``, its length as 64-bit little
endian, the value, ``\\n``.  No dependency: ``python3-systemd`` is a Debian package
built for Debian's interpreter, which a venv on another Python cannot load, and the
protocol is a few lines.  The socket is non-blocking: when journald is slow, an entry is
dropped and counted, never waited for (the loop is the failover's).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping, Sequence

from .events import Effect, Log, Transition
from .history import family_name, human_duration
from .logsetup import syslog_priority

log = logging.getLogger("ecmpd")

SOCKET = "/run/systemd/journal/socket"

MESSAGE_ID = "4f1f6c3e0b8a4d5e9c2a7b61d0e3f5a8"
"""One id for every transition entry: ``journalctl MESSAGE_ID=...`` lists them all."""

PRIORITY = {"down": 4, "up": 5, "disabled": 5}
"""syslog priority per new state (warning, notice); the rest are info (6)."""


def encode(fields: Mapping[str, str]) -> bytes:
    """One native-protocol datagram for `fields` (upper-case keys)."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def fields(t: Transition, interface: str | None = None,
           said: Log | None = None) -> dict[str, str]:
    """The journal entry of transition `t`; `said`: the daemon's log line of it, whose
    text and level the entry takes (it is not written anywhere else)."""
    version = " IPv6" if t.family == 6 else ""
    lasted = "" if t.lasted is None else f", {t.previous} for {human_duration(t.lasted)}"
    reason = f": {t.reason}" if t.reason else ""
    out = {
        "MESSAGE": said.message if said is not None else
        f"{t.name}{version}: {t.previous} -> {t.state}{reason}{lasted}",
        "MESSAGE_ID": MESSAGE_ID,
        "PRIORITY": str(syslog_priority(said.level) if said is not None
                        else PRIORITY.get(t.state, 6)),
        "SYSLOG_IDENTIFIER": "ecmpd",
        "WAN": t.name,
        "STATE": t.state,
        "PREVIOUS": t.previous,
        "REASON": t.reason,
        "FAMILY": family_name(t.family),
        "ACTIVE": "1" if t.active else "0",
    }
    if t.lasted is not None:
        out["LASTED_SEC"] = f"{t.lasted:.3f}"
    if interface:
        out["INTERFACE"] = interface
    return out


def lines_of(effects: Sequence[Effect],
             label: Callable[[str, int], str | None]) -> dict[int, Log]:
    """id of each `Transition` in `effects` -> its log line, so that the line is written
    once, as the transition's entry.  `events.step` puts a change's line before its
    transition, starting with the WAN's label (`label(name, family)`: ``wlan1``,
    ``wlan1 IPv6``; None: no such WAN); a line not found here is written as any other."""
    out: dict[int, Log] = {}
    used: set[int] = set()
    for i, t in enumerate(effects):
        if not isinstance(t, Transition) or (name := label(t.name, t.family)) is None:
            continue
        for e in reversed(effects[:i]):
            if isinstance(e, Transition) and e.name == t.name:
                break                   # that one's line, or none
            if isinstance(e, Log) and e.key is None and id(e) not in used \
                    and e.message.startswith(name + ": "):
                out[id(t)] = e
                used.add(id(e))
                break
    return out


def under_systemd(environ: Mapping[str, str] | None = None, path: str = SOCKET) -> bool:
    """True when systemd started us with the journal as output and its socket is there
    (a daemon run by hand, e.g. in a lab namespace, writes nothing to the host's
    journal)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM")) and os.path.exists(path)


class Journal:
    """The listener that writes each transition to the journal at `path`."""

    def __init__(self, path: str = SOCKET,
                 interface: Callable[[str], str | None] = lambda name: None) -> None:
        self.path = path
        self.interface = interface
        """WAN name -> its interface now (None: unknown), for the INTERFACE field."""
        self.sent = 0
        self.dropped = 0
        self._sock: socket.socket | None = None

    def send(self, t: Transition, said: Log | None = None) -> None:
        """Write `t`'s entry (`said`: its log line, see `fields`); never blocks, never
        raises: a failure is counted and the line written to stderr instead."""
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(encode(fields(t, self.interface(t.name), said)), self.path)
            self.sent += 1
        except OSError as exc:
            self.dropped += 1
            log.debug("journal entry of %s's change dropped: %s", t.name, exc)
            if said is not None:
                log.log(said.level, "%s", said.message)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
