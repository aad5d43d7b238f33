"""What a reload changes, decided from the old and the new config alone.  Pure.

The daemon applies the plan: unchanged WANs keep their health, prober and flows; a WAN
whose interface or gateway changed is judged anew; connections pinned under a mark that
no longer means the same WAN are deleted from conntrack, and so are a kept WAN's
connections of an IP version whose `nat:` changed (their old mappings would live on).
"""

from __future__ import annotations

from dataclasses import dataclass

from .configmodel import Config


def owned_by(cfg: Config) -> tuple[int, int, int, int]:
    """The config values by which ecmpd recognises its routes and rules."""
    return (cfg.route_proto, cfg.route_metric, cfg.table_base, cfg.rule_priority)


@dataclass(frozen=True)
class ReloadPlan:
    """The WAN-level consequences of switching from one config to another."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    rejudged: tuple[str, ...]
    """Kept WANs whose interface, gateway of either IP version or versions changed: their
    health starts over."""
    stale_marks: tuple[int, ...]
    """Old marks whose connections must go (removed WANs, changed mark or interface)."""
    renumbered: tuple[tuple[str, int, int], ...]
    """(name, old id, new id) of kept WANs whose id changed."""
    reinstall: bool
    """The ownership numbers changed: remove the old routes and rules first."""
    nat_changed: tuple[tuple[str, int], ...] = ()
    """(name, IP version) of kept WANs whose mark stays and whose `nat:` of a version
    they carry before and after changed (any mode to any other, or another SNAT address:
    compared as values)."""


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The plan for reloading from `old` to `new`."""
    before = {w.name: w for w in old.wans}
    after = {w.name: w for w in new.wans}
    stale: list[int] = []
    rejudged: list[str] = []
    renumbered: list[tuple[str, int, int]] = []
    nat: list[tuple[str, int]] = []
    for name, wan in after.items():
        prev = before.get(name)
        if prev is None:
            continue
        if old.mark_of(prev) != new.mark_of(wan) or prev.interface != wan.interface:
            stale.append(old.mark_of(prev))     # all its connections go anyway
        else:
            nat += [(name, f) for f in prev.families if f in wan.families
                    and (prev.nat_mode(f), prev.snat_address(f))
                    != (wan.nat_mode(f), wan.snat_address(f))]
        if prev.id != wan.id:
            renumbered.append((name, prev.id, wan.id))
        # either version's gateway, or which versions it carries
        if ((prev.interface, prev.gateway, prev.gateway6, prev.families)
                != (wan.interface, wan.gateway, wan.gateway6, wan.families)):
            rejudged.append(name)
    removed = tuple(n for n in before if n not in after)
    stale += [old.mark_of(before[n]) for n in removed]
    return ReloadPlan(
        added=tuple(n for n in after if n not in before),
        removed=removed,
        rejudged=tuple(rejudged),
        stale_marks=tuple(dict.fromkeys(stale)),
        renumbered=tuple(renumbered),
        reinstall=owned_by(old) != owned_by(new),
        nat_changed=tuple(nat),
    )
