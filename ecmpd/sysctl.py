"""Set the network sysctls ecmpd needs, remembering what they were.

Paths are relative to /proc/sys and are read in the daemon's own network namespace.
A sysctl is written only when its value differs; a missing path (an interface that
does not exist yet) is skipped and retried at the next reconcile.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("ecmpd")
PROC_SYS = "/proc/sys"
"""The sysctls of the reading process's network namespace."""


class Sysctls:
    """Applies (path, value) pairs and can restore the values found before."""

    def __init__(self, root: str = PROC_SYS) -> None:
        self.root = Path(root)
        self.original: dict[str, str] = {}

    def read(self, path: str) -> str | None:
        """The current value, or None when the sysctl does not exist."""
        try:
            return (self.root / path).read_text().strip()
        except OSError:
            return None

    def apply(self, wanted: tuple[tuple[str, str], ...]) -> int:
        """Write what differs; returns the number of sysctls written."""
        written = 0
        for path, value in wanted:
            current = self.read(path)
            if current is None or current == value:
                continue
            try:
                (self.root / path).write_text(value + "\n")
            except OSError as exc:
                log.warning("cannot set %s = %s: %s", path.replace("/", "."), value, exc)
                continue
            self.original.setdefault(path, current)
            written += 1
            log.debug("sysctl %s = %s (was %s)", path.replace("/", "."), value, current)
        return written

    def restore(self) -> None:
        """Put back the values ecmpd changed."""
        for path, value in self.original.items():
            try:
                (self.root / path).write_text(value + "\n")
            except OSError:
                pass
        self.original.clear()
