"""Logging set-up for the daemon: plain stderr lines, or journald-style priorities.

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) lines carry no
timestamp and start with the syslog priority ``<N>`` so journald files them at the right
level (the sd-daemon(3) convention).  Otherwise lines look like
``2026-11-27 07:40:01 ecmpd[1234] INFO message``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

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
