"""The systemd notify protocol (sd_notify) without any dependency.

`Notifier` sends ``KEY=value`` datagrams to ``$NOTIFY_SOCKET`` (a path, or an abstract
socket written ``@name``).  Without ``NOTIFY_SOCKET`` every call is a no-op, so the
daemon can call it unconditionally.  Sending never raises and never blocks.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("ecmpd.sdnotify")


def _address(value: str) -> str | bytes | None:
    """The socket address for a NOTIFY_SOCKET value, or None when unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:... (not supported) or empty


START_STEP = 30.0
"""Seconds each start-up phase may take before systemd gives up on the start: every
`starting` call moves the deadline to now + START_STEP (EXTEND_TIMEOUT_USEC), so a slow
box (measured: 19-28 s from exec to READY under software emulation) is not killed by
TimeoutStartSec while it makes progress, and a start that hangs still fails."""

MIN_WATCHDOG_USEC = 20_000
"""Shortest watchdog period honoured (20 ms: a ping every 10 ms)."""


class Notifier:
    """Talks to the service manager; a no-op outside systemd (or Type=notify)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID from `environ` (os.environ)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not supported; not notifying systemd", raw)
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to notify."""
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); True when the datagram was sent."""
        if self.address is None or not fields:
            return False
        msg = "".join(f"{k.upper()}={v}\n" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(msg.encode(), self.address)
            return True
        except OSError as e:
            log.debug("sd_notify %r failed: %s", msg, e)
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) is complete."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def starting(self, phase: str, allow: float = START_STEP) -> bool:
        """STATUS=starting: `phase`, and EXTEND_TIMEOUT_USEC: the start may take `allow`
        more seconds from now (systemd >= 236; older ones ignore it)."""
        return self.notify(STATUS=_one_line(f"starting: {phase}"),
                           EXTEND_TIMEOUT_USEC=int(allow * 1e6))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as systemd >= 253 expects; ready() ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        """STOPPING=1: the daemon is shutting down."""
        return self.notify(STOPPING=1)

    def status(self, text: str) -> bool:
        """STATUS=text, shown by `systemctl status`."""
        return self.notify(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: keep-alive ping (send every watchdog_interval() / 2)."""
        return self.notify(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds of WatchdogSec= for this process, or None when there is no watchdog."""
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec or 0)
        except ValueError:
            return None
        if 0 < usec < MIN_WATCHDOG_USEC:
            # pinging every few microseconds would spin the loop: the environment is not
            # trusted more than the config
            log.warning("WATCHDOG_USEC=%d is below %d ms: pinging every %d ms", usec,
                        MIN_WATCHDOG_USEC // 1000, MIN_WATCHDOG_USEC // 2000)
            usec = MIN_WATCHDOG_USEC
        return usec / 1e6 if usec > 0 else None

    def close(self) -> None:
        """Close the notify socket (a later notify reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
