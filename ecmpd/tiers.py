"""Tiers: which WANs take new flows, and what changes when the carrying tier moves.
Pure.

Each WAN has a `tier` (1 first).  New flows use only the usable WANs of the lowest tier
that has one (`ecmpd.state.active`); the WANs of higher tiers stand by: probed all the
time, their nexthops out of the multipath route, their pinned flows going on by their
marks and tables.  When every WAN of the carrying tier is unusable the next tier takes
new flows in the same reconcile that takes the last one out; when a lower tier is
usable again, new flows return to it.  A WAN with ``failback: flush`` then loses its
connections (a metered backup carries nothing it need not); with ``keep`` they go on.

Each IP version has its own carrying tier: a primary whose IPv6 is down hands IPv6's
new flows to the backup while its IPv4 keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configmodel import FAMILIES, Config
from .state import State, active, carrying_tier, plane, usable


@dataclass(frozen=True)
class TierChange:
    """IP version `family`'s carrying tier moved from `old` to `new` (None: no WAN usable)."""

    family: int
    old: int | None
    new: int | None
    carrying: tuple[str, ...]
    """The WANs that take new flows now, in config order."""
    flush: tuple[str, ...]
    """WANs with ``failback: flush`` that stopped taking new flows because a lower tier
    took them back while they stayed usable: their connections are to be removed."""

    @property
    def back(self) -> bool:
        """New flows went back to a lower tier."""
        return self.new is not None and (self.old is None or self.new < self.old)

    def message(self, cfg: Config) -> str:
        """The log line: what takes new flows now, and why."""
        v = cfg.version_prefix(self.family)
        if self.new is None:
            return f"new {v}flows: no tier has a usable WAN"
        who = ", ".join(self.carrying)
        if self.back:
            gone = "" if not self.flush else (
                f"; the connections of {', '.join(self.flush)} are removed (failback: flush)")
            return f"new {v}flows: tier {self.new} again ({who}){gone}"
        return (f"new {v}flows: tier {self.new} ({who}): no WAN of tier {self.old} "
                f"is usable")


def tiered(cfg: Config) -> bool:
    """Whether the WANs are in more than one tier (else tiers change nothing)."""
    return len({w.tier for w in cfg.wans}) > 1


def changes(before: State, after: State) -> list[TierChange]:
    """How the carrying tier of each IP version moved from snapshot `before` to
    `after` (both whole snapshots; empty for an untiered config)."""
    if not (tiered(before.cfg) or tiered(after.cfg)):
        return []
    out = []
    for family in FAMILIES:
        old_p, new_p = plane(before, family), plane(after, family)
        old, new = carrying_tier(old_p), carrying_tier(new_p)
        if old == new:
            continue
        now = active(new_p)
        left = active(old_p) - now
        flush = tuple(w.name for w in new_p.cfg.wans
                      if w.name in left and w.failback == "flush" and usable(new_p, w.name))
        out.append(TierChange(family, old, new,
                              tuple(w.name for w in new_p.cfg.wans if w.name in now), flush))
    return out
