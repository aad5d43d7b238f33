"""Logging set-up for the daemon: plain stderr lines, or journald-style priorities; and
`RateLimitedLog`, for lines that other programs' behaviour can repeat at any rate.

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) lines carry no
timestamp and start with the syslog priority ``<N>`` so journald files them at the right
level (the sd-daemon(3) convention).  Otherwise lines look like
``2026-11-27 07:40:01 ecmpd[1234] INFO message``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOGGER = "ecmpd"
NOTICE = 25
"""Between INFO and WARNING (syslog's notice): normal but significant, e.g. a WAN back."""
logging.addLevelName(NOTICE, "NOTICE")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
PLAIN_FORMAT = "%(asctime)s ecmpd[%(process)d] %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a logging level: 2 crit, 3 err, 4 warning, 5 notice,
    6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= NOTICE:
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>message``; every line of a multi-line record (tracebacks) gets the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journal connection named by JOURNAL_STREAM (dev:inode)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(level: str) -> None:
    """Send the "ecmpd" logger's records at `level` and above to stderr.

    Calling it again (e.g. after a reload changed the level) replaces the handler.
    Raises ValueError for an unknown level name.
    """
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (use {', '.join(LEVELS)})") from None
    stream = sys.stderr
    handler = logging.StreamHandler(stream)
    if stream_is_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, DATE_FORMAT))
    handler._ecmpd = True  # type: ignore[attr-defined]
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_ecmpd", False)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(levelno)
    logger.propagate = False


class RateLimitedLog:
    """Log through `logger` at most one record per key every `interval` seconds.

    Records within the interval are counted, not written; when the interval after a
    written record is over, one summary line says how many there were (and repeats the
    last one).  So whatever clients do, a key writes at most one line per interval.
    The summary is scheduled on the running asyncio loop; without one it is appended to
    the next record written.  Keys are a fixed few, so the state is bounded.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, tuple[int, int, str, tuple]] = {}
        """key -> (records held back since its last line, the last one's level, msg, args)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def suppressed(self, key: str) -> int:
        """How many records of `key` were held back since its last line."""
        held = self._held.get(key)
        return held[0] if held else 0

    def log(self, key: str, level: int, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Write the record or count it; True when it was written."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = (self.suppressed(key) + 1, level, msg, args)
            if key not in self._timers:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    self._timers[key] = loop.call_later(
                        max(0.0, last + self.interval - now), self._summary, key)
            return False
        self._cancel(key)
        held = self._held.pop(key, None)
        if held:
            msg += f" (and {held[0]} more like this in the last {now - last:.0f}s)"
        self._last[key] = now
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> bool:
        return self.log(key, logging.WARNING, msg, *args, exc_info=exc_info)

    def _summary(self, key: str) -> None:
        self._timers.pop(key, None)
        held = self._held.pop(key, None)
        if held is None:
            return
        n, level, msg, args = held
        now = self.clock()
        last = self._last.get(key, now)
        self._last[key] = now
        self.logger.log(level, "%d more like this in the last %.0fs, the last one: " + msg,
                        n, now - last, *args)

    def _cancel(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def flush(self) -> None:
        """Write the pending summaries now (e.g. when the server closes)."""
        for key in list(self._held):
            self._cancel(key)
            self._summary(key)
