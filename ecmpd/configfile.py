"""Read a config file safely: a regular file of at most `MAX_BYTES`, UTF-8 text.

Nothing here blocks or grows without bound: the type is checked with stat() before
the file is opened (a FIFO, a device, a socket or a directory is never opened), the
open is non-blocking and re-checked with fstat() (the path may change in between),
and at most `MAX_BYTES` + 1 bytes are read (st_size may lie, as in /proc).
"""

from __future__ import annotations

import os
import stat

MAX_BYTES = 1 << 20
"""Largest config accepted (1 MiB); a real one is a few KiB, 255 WANs well under 1 MiB."""

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class Unreadable(Exception):
    """The file cannot be used; `message` follows `file: ` (or `file:line: ` if `line`)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _not_regular(mode: int) -> Unreadable | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "a special file")
    return Unreadable(f"not a regular file ({kind})")


def read_bytes(path: str) -> bytes:
    """The contents of the regular file `path`; raises only `Unreadable`."""
    try:
        problem = _not_regular(os.stat(path).st_mode)  # follows symlinks, opens nothing
        if problem:
            raise problem
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror or e}") from None
    except ValueError as e:  # e.g. an embedded NUL in the path
        raise Unreadable(f"cannot read: {e}") from None
    try:
        st = os.fstat(fd)
        problem = _not_regular(st.st_mode)
        if problem:
            raise problem
        if st.st_size > MAX_BYTES:
            raise Unreadable("larger than 1 MiB")
        chunks: list[bytes] = []
        left = MAX_BYTES + 1
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
        raise Unreadable("larger than 1 MiB")
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
