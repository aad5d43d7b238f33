"""Read a config file safely: a regular file of at most `MAX_BYTES`, UTF-8 text.

Nothing here blocks or grows without bound: the type is checked with stat() before
the file is opened (a FIFO, a device, a socket or a directory is never opened), the
open is non-blocking and re-checked with fstat() (the path may change in between),
and at most `MAX_BYTES` + 1 bytes are read (st_size may lie, as in /proc).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

MAX_BYTES = 1 << 20
"""Largest config accepted (1 MiB); a real one is a few KiB, 255 WANs well under 1 MiB."""

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class Unreadable(Exception):
    """The file cannot be used; `message` follows `file: ` (or `file:line: ` if `line`)."""

    def __init__(self, message: str, line: int | None = None, missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.missing = missing
        """There is no file at the path (not an error for optional state files)."""


def _not_regular(mode: int) -> Unreadable | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "a special file")
    return Unreadable(f"not a regular file ({kind})")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else \
        f"{n >> 10} KiB" if not n % 1024 else f"{n} bytes"


def read_bytes(path: str, limit: int = MAX_BYTES, *, nofollow: bool = False,
               trusted: Callable[[os.stat_result], str | None] | None = None) -> bytes:
    """The contents of the regular file `path`, at most `limit` bytes; raises only
    `Unreadable` (`missing` set when there is no file at all).

    `nofollow`: a symlink at `path` is refused, not followed.  `trusted(stat)`: a reason
    to refuse the open file (its owner, its mode), or None."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        st0 = os.lstat(path) if nofollow else os.stat(path)   # opens nothing
        if nofollow and stat.S_ISLNK(st0.st_mode):
            raise Unreadable("a symbolic link (not followed)")
        problem = _not_regular(st0.st_mode)
        if problem:
            raise problem
        fd = os.open(path, flags | (os.O_NOFOLLOW if nofollow else 0))
    except FileNotFoundError as e:
        raise Unreadable(f"cannot read: {e.strerror}", missing=True) from None
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror or e}") from None
    except ValueError as e:  # e.g. an embedded NUL in the path
        raise Unreadable(f"cannot read: {e}") from None
    try:
        st = os.fstat(fd)
        problem = _not_regular(st.st_mode)
        if problem:
            raise problem
        why = trusted(st) if trusted is not None else None
        if why:
            raise Unreadable(why)
        if st.st_size > limit:
            raise Unreadable(f"larger than {_size(limit)}")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if left <= 0:
        raise Unreadable(f"larger than {_size(limit)}")
    return b"".join(chunks)


def read_text(path: str) -> str:
    """The file as text (see `read_bytes`); invalid UTF-8 names its line and byte."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise Unreadable(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start})", line) from None
