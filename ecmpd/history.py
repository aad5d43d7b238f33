"""The WAN state changes the daemon saw: the last `LIMIT` `Transition`s, in memory.

`History.record` is a `Daemon.listeners` entry: it runs on the loop for every
transition, so it only appends to a bounded deque (old ones fall off the front).  The
queries answer ``ecmpctl history`` and the per-WAN summary of ``ecmpctl status`` (downs
in the last 24 h, the last down and why).  A restart starts empty: the journal keeps the
longer record (``journalctl WAN=<name>``, `ecmpd.journal`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

TYPE_CHECKING = False      # nor `typing` (tests/test_startup_imports.py)
if TYPE_CHECKING:          # ecmpctl imports this module: it stays light (no dataclasses,
    # no datetime: they cost ecmpctl more than its whole request)
    from typing import Any

    from .events import Transition

LIMIT = 1000
"""Transitions kept: a flapping WAN fills it in hours at worst, a steady router in years."""

DAY = 86400.0


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with milliseconds (None stays None)."""
    if t is None:
        return None
    ms = int(round(t * 1000))
    seconds, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}+00:00"


def human_duration(seconds: float, coarse: bool = False) -> str:
    """A short duration: 12s, 3m05s, 2h04m, 3d01h (`coarse`: 12s, 3m, 2h, 3d)."""
    s = int(max(0.0, seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if s >= size:
            if coarse:
                return f"{s // size}{unit}"
            return f"{s // size}{unit}{s % size // subsize:02d}{sub}"
    return f"{s}s"


def family_name(family: int) -> str:
    """4 -> "ipv4": the status JSON's words for IP versions ("" for 0: an HA
    transition's, which is no WAN's)."""
    return f"ipv{family}" if family else ""


def as_json(t: Transition) -> dict[str, Any]:
    """One transition as the control protocol sends it (history entries and monitor
    events alike)."""
    return {"wan": t.name, "family": family_name(t.family) or None, "state": t.state,
            "previous": t.previous, "reason": t.reason, "at": round(t.at, 3),
            "at_iso": iso(t.at), "lasted": None if t.lasted is None else round(t.lasted, 3),
            "active": t.active if t.family else None}


class Summary:
    """A WAN's (one IP version's) recent downs, for status.  (A plain class: a
    NamedTuple or dataclass costs ecmpctl's start more than its whole module.)"""

    __slots__ = ("downs_24h", "last_at", "last_reason")

    def __init__(self, downs_24h: int = 0, last_at: float | None = None,
                 last_reason: str | None = None) -> None:
        self.downs_24h = downs_24h
        self.last_at = last_at
        self.last_reason = last_reason

    def as_json(self) -> dict[str, Any]:
        """The status payload's fields."""
        last = None if self.last_at is None else {
            "at": round(self.last_at, 3), "at_iso": iso(self.last_at),
            "reason": self.last_reason}
        return {"downs_24h": self.downs_24h, "last_down": last}


class History:
    """The last `limit` transitions, oldest first."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._ring: deque[Transition] = deque(maxlen=limit)

    def record(self, t: Transition) -> None:
        """Keep `t` (the listener: O(1), never blocks)."""
        self._ring.append(t)

    def __len__(self) -> int:
        return len(self._ring)

    def entries(self, wan: str | None = None) -> list[Transition]:
        """Every transition kept, or `wan`'s, oldest first."""
        return [t for t in self._ring if wan is None or t.name == wan]

    def downs(self, wan: str, now: float, family: int | None = None,
              within: float = DAY) -> list[Transition]:
        """`wan`'s transitions into DOWN in the last `within` seconds (of IP version
        `family`; None: any)."""
        return [t for t in self._ring if t.name == wan and t.state == "down"
                and now - t.at <= within and (family is None or t.family == family)]

    def last_down(self, wan: str, family: int | None = None) -> Transition | None:
        """`wan`'s latest transition into DOWN (None: none kept)."""
        return next((t for t in reversed(self._ring) if t.name == wan and t.state == "down"
                     and (family is None or t.family == family)), None)

    def summary(self, names: Iterable[str], families: Iterable[int],
                now: float) -> dict[tuple[str, int], Summary]:
        """(WAN, IP version) -> its downs in the last 24 h and its last down, for status:
        one pass over the ring, whatever the number of WANs."""
        counts: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], Transition] = {}
        for t in self._ring:
            if t.state == "down":
                key = (t.name, t.family)
                last[key] = t
                if now - t.at <= DAY:
                    counts[key] = counts.get(key, 0) + 1
        out = {}
        for key in ((n, f) for n in names for f in families):
            t = last.get(key)
            out[key] = Summary(counts.get(key, 0), None if t is None else t.at,
                               None if t is None else t.reason)
        return out
