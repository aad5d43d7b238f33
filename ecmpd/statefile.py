"""ecmpd's small state files next to the control socket (the ownership ledger, the
disabled WANs), read and written as untrusted input.

Whatever sits at a state path may have been put there by someone else: a FIFO (an
open() would block the daemon before it serves anything), a device or a symlink to one
(a read that never ends), a symlink into another file (a write through it would replace
that file), a huge file.  So:

* a read opens only a regular file, never through a symlink (``O_NOFOLLOW``), never
  blocking (``O_NONBLOCK``), owned by this process's user and writable by nobody else,
  and reads at most `LIMIT` bytes (`configfile.read_bytes` does the checks);
* a write goes to a fresh temporary file in the same directory (`tempfile.mkstemp`:
  ``O_EXCL``, a random name, so no symlink planted at a predictable name is followed),
  is flushed to disk and renamed over the path (the rename replaces a symlink at the
  path itself, never its target), then the directory is synced.

A file refused on read counts as absent: the caller starts from nothing (one warning).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from typing import Any

from .configfile import Unreadable, read_bytes

log = logging.getLogger("ecmpd")

LIMIT = 64 << 10
"""Largest state file read (64 KiB): ecmpd writes a few hundred bytes."""
MODE = 0o644


def _trusted(st: os.stat_result) -> str | None:
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by ecmpd's uid {os.geteuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def read(path: str, limit: int = LIMIT) -> bytes | None:
    """The file's bytes; None when there is none or it is refused (logged)."""
    try:
        return read_bytes(path, limit, nofollow=True, trusted=_trusted)
    except Unreadable as exc:
        if not exc.missing:
            log.warning("ignoring %s: %s", path, exc.message)
        return None


def read_json(path: str, limit: int = LIMIT) -> Any:
    """The file's JSON document; None when there is none, it is refused or is not JSON
    (logged)."""
    data = read(path, limit)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:                 # UnicodeDecodeError included
        log.warning("ignoring %s: not JSON: %s", path, exc)
        return None
    except RecursionError:
        log.warning("ignoring %s: nested too deeply", path)
        return None


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at `path` passes `read`'s checks and holds `data` (quietly)."""
    try:
        return read_bytes(path, LIMIT, nofollow=True, trusted=_trusted) == data
    except Unreadable:
        return False


def write(path: str, text: str) -> bool:
    """Replace the file at `path` with `text`, atomically and durably; raises OSError
    (no temporary file is left behind).  A file that already holds `text` (and passes
    `read`'s checks) is left as it is: every start and reload records the same numbers
    again, and the two fsyncs of a write are most of a start's time on a slow disk.
    True when the file was written."""
    if _holds(path, text.encode()):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError:
        pass
    return True
