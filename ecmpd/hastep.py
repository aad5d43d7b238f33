"""The HA role's events and what they change: `step`, `gate`, `reloaded`.  Pure.

`SetRole` comes from `ecmpctl role` (keepalived's notify script); `SplitBrainChecked`
from the master's split-brain checks (`ecmpd.splitbrain`).  Both change only
`State.ha`; `ecmpd.events.step` hands them here, and passes every other event's effects
through `gate` (see `ecmpd.role` for what a role changes).

Rules:
* a role change is logged (NOTICE; WARNING into `fault`) and is a `Transition` of the
  subject ``ha`` (family 0): hooks, history, journal, monitor and metrics see it;
* a backup or fault router deletes no conntrack entries: `gate` drops a `Flush` or
  `ForgetAddress` (logged at INFO: the master's deletions reach it through conntrackd);
* becoming master (or standalone) flushes the WANs (the IP versions) it finds DOWN: those deletions
  were skipped while it was not master, and its conntrack now holds the old master's
  connections;
* a check's sighting of a floating address not yet in conflict starts a conflict: an
  ERROR line for that address, and, when it is the first, the ``ha`` subject goes
  ``master -> split-brain``; a conflict ends after `role.CLEAR_AFTER` checks in a row
  without a sighting (NOTICE once the last one ended, ``split-brain -> master``); a
  role other than master ends every conflict (it no longer checks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from . import effects as ev_mod
from .health import Phase
from .logsetup import NOTICE
from .role import (CLEAR_AFTER, FAULT, MASTER, SPLIT_BRAIN, SUBJECT, Conflict, HaState,
                   Sighting, start_role)
from .state import State


@dataclass(frozen=True)
class SetRole:
    """The administrator (keepalived's notify script) set the role."""

    role: str
    reason: str = "ecmpctl role"


@dataclass(frozen=True)
class SplitBrainChecked:
    """One split-brain check's findings: every floating address another host answered
    for (an empty tuple: none did)."""

    sightings: tuple[Sighting, ...]


EVENTS = (SetRole, SplitBrainChecked)


def step(st: State, ev: SetRole | SplitBrainChecked, now: float) -> ev_mod.Result:
    """The state after HA event `ev` and its effects."""
    if isinstance(ev, SetRole):
        return set_role(st, ev.role, ev.reason, now)
    return _checked(st, ev.sightings, now)


def transition(before: HaState, after: HaState, reason: str, now: float) -> ev_mod.Transition:
    """The `ha` subject's change from `before` to `after` (as a WAN's, family 0)."""
    lasted = now - before.since if before.since else None
    return ev_mod.Transition(SUBJECT, after.shown, before.shown, reason, now, lasted, False,
                             family=0)


def set_role(st: State, role: str, reason: str, now: float) -> ev_mod.Result:
    """`st` with role `role`: the log line, the transition, a new master's flushes."""
    old = st.ha
    if role == old.role:
        return st, ()
    new = HaState(role, now, (), reason)
    effects: list[ev_mod.Effect] = [ev_mod.Log(
        logging.WARNING if role == FAULT else NOTICE,
        f"HA role: {old.role} -> {role} ({reason})" + (
            "; split brain over: no longer master" if old.conflicts else ""))]
    effects.append(transition(old, new, reason, now))
    after = replace(st, ha=new)
    if new.deletes_connections and not old.deletes_connections:
        effects += takeover_flushes(after)
    return after, tuple(effects)


def takeover_flushes(st: State) -> list[ev_mod.Effect]:
    """The flushes of every WAN DOWN in an IP version it carries (one by mark for the
    whole WAN when every version it carries is DOWN)."""
    cfg, out = st.cfg, []
    for w in cfg.wans:
        down = [f for f in w.families
                if (ws := (st.wans if f == 4 else st.wans6).get(w.name)) is not None
                and ws.health.state is Phase.DOWN]
        if down:
            family = None if len(down) == len(w.families) else down[0]
            out.append(ev_mod.Flush(cfg.mark_of(w), cfg.mark_mask, w.name, family))
    if out:
        names = ", ".join(e.name for e in out if isinstance(e, ev_mod.Flush) and e.name)
        out.insert(0, ev_mod.Log(logging.INFO, f"HA master: flushing the connections of the "
                                               f"WANs that are down here: {names}"))
    return out


def _checked(st: State, seen: tuple[Sighting, ...], now: float) -> ev_mod.Result:
    old = st.ha
    if old.role != MASTER:
        return st, ()           # a check that ended after the role changed
    effects: list[ev_mod.Effect] = []
    kept: list[Conflict] = []
    known = {c.sighting: c for c in old.conflicts}
    for c in old.conflicts:
        if c.sighting in seen:
            kept.append(replace(c, misses=0))
        elif c.misses + 1 < CLEAR_AFTER:
            kept.append(replace(c, misses=c.misses + 1))
    for s in sorted(set(seen)):
        if s not in known:
            kept.append(Conflict(s, now))
            effects.append(ev_mod.Log(logging.ERROR, (
                f"split brain: {s.address} on {s.interface} is held by another host "
                f"({s.mac}) while this router is master: both forward for it")))
    new = replace(old, conflicts=tuple(kept))
    if new == old:
        return st, ()
    after = replace(st, ha=new)
    if new.split_brain != old.split_brain:
        if not new.split_brain:
            effects.append(ev_mod.Log(NOTICE, "split brain over: no other host answers for "
                                              "the floating addresses"))
        why = ("another host answers for " + ", ".join(
            sorted({c.sighting.address for c in new.conflicts}))) if new.split_brain else \
            "no other host answers for the floating addresses"
        effects.append(transition(old, new, why, now))
    return after, tuple(effects)


def gate(st: State, effects: tuple[ev_mod.Effect, ...]) -> tuple[ev_mod.Effect, ...]:
    """`effects` as a router of `st`'s role carries them out: a backup or fault router
    leaves conntrack to the master (its deletions arrive through conntrackd)."""
    if st.ha.deletes_connections:
        return effects
    out: list[ev_mod.Effect] = []
    for e in effects:
        if isinstance(e, ev_mod.Flush):
            what = f"{e.name}'s connections" if e.name else f"mark 0x{e.mark:x}'s connections"
        elif isinstance(e, ev_mod.ForgetAddress):
            what = f"{e.name}'s connections NATed to {e.address}"
        else:
            out.append(e)
            continue
        out.append(ev_mod.Log(logging.INFO, f"HA {st.ha.role}: not deleting {what} "
                                            f"(the master does; conntrackd syncs it)"))
    return tuple(out)


def reloaded(before: State, after: State, now: float) -> ev_mod.Result:
    """A reload that adds `ha:` starts the pair's role (backup), one that removes it
    makes the router standalone; one that keeps it keeps the role."""
    if (before.cfg.ha is None) == (after.cfg.ha is None):
        return after, ()
    role = start_role(after.cfg)
    return set_role(after, role, "ha: added to the config" if after.cfg.ha is not None
                    else "ha: removed from the config", now)


def restored(st: State, role: str, since: float) -> State:
    """`st` with the role remembered from before a restart (`role.RoleStore`)."""
    return replace(st, ha=HaState(role, since, (), "kept from before the restart"))


__all__ = ["EVENTS", "SetRole", "SplitBrainChecked", "step", "gate", "reloaded", "restored",
           "set_role", "SPLIT_BRAIN"]
