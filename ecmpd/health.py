"""Per-WAN health: a pure state machine fed by probe rounds and carrier events.

Modelled on ExaBGP's healthcheck.  A WAN starts in INIT (trusted until proven bad), is
UP while rounds succeed, FALLING after a failed round, DOWN after `down` consecutive
failed rounds, RISING after a good round while DOWN and UP again after `up` consecutive
good rounds.  A carrier loss makes it DOWN at once; carrier back makes it RISING.

A round has one of three verdicts (`Verdict`): GOOD (enough targets answered in time),
FAILED (nothing proves the WAN alive) or SLOW (the probes were late, but late replies or
traffic from beyond the gateway prove the line alive: a saturated line).  SLOW is life,
not health: it ends a falling streak (UP/FALLING/INIT -> UP) but does not count toward
rising (RISING keeps its streak, DOWN stays DOWN), so a busy WAN is never taken out for
being busy, and a dead one only comes back on answered probes.

No I/O happens here: callers feed `step()` one probe round at a time and log
`describe(old, new)` whenever `transitioned(old, new)`.

`Health.count` is the length of the streak counting toward the next transition: failed
rounds in INIT and FALLING, good rounds in RISING, always 0 in UP and DOWN.

`Health.reason` explains the *last state change* ("after 3 failed rounds: 0/2 targets
answered ...") and is only rewritten when the state changes; a round that keeps the
state (even when it moves `count`) leaves the reason alone, so `ecmpctl status` can show
why a WAN is in its state.  The current round's own reason lives in the prober's last
result.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    """The verdict on one probe round."""

    GOOD = "good"
    SLOW = "slow"
    FAILED = "failed"


class Phase(str, Enum):
    """The health phase of one WAN (`ecmpd.state.State` is the daemon's whole state)."""

    INIT = "init"
    RISING = "rising"
    UP = "up"
    FALLING = "falling"
    DOWN = "down"


@dataclass(frozen=True)
class Health:
    """A WAN's health: the state, the streak toward the next change and its reason."""

    state: Phase = Phase.INIT
    count: int = 0
    """Consecutive rounds counted toward the next transition."""
    reason: str = ""
    """Why the last state change happened (human-readable)."""


def _moved(h: Health, state: Phase, count: int, streak: int, verdict: Verdict,
           reason: str) -> Health:
    """The new Health; the reason is rewritten only when the state changes."""
    if state == h.state:
        return Health(state, count, h.reason)
    why = f"after {streak} {verdict.value} round{'' if streak == 1 else 's'}"
    return Health(state, count, f"{why}: {reason}" if reason else why)


def step(h: Health, verdict: Verdict, down: int, up: int, reason: str = "") -> Health:
    """Feed one probe round's `verdict` (with its `reason`) to `h`.

    `down` (>= 1) consecutive failed rounds take an UP/INIT WAN DOWN; `up` (>= 1)
    consecutive good rounds take a DOWN WAN UP; see the module for SLOW.
    """
    if down < 1 or up < 1:
        raise ValueError(f"down and up must be >= 1 (got down={down}, up={up})")
    if not isinstance(verdict, Verdict):
        raise TypeError(f"verdict must be a Verdict, got {verdict!r}")
    s = h.state
    if verdict is not Verdict.FAILED and s in (Phase.INIT, Phase.UP, Phase.FALLING):
        return _moved(h, Phase.UP, 0, 1, verdict, reason)
    if verdict is Verdict.SLOW:
        return h  # RISING keeps its streak, DOWN stays DOWN
    if verdict is Verdict.GOOD:  # DOWN or RISING
        n = h.count + 1 if s is Phase.RISING else 1
        if n >= up:
            return _moved(h, Phase.UP, 0, n, verdict, reason)
        return _moved(h, Phase.RISING, n, n, verdict, reason)
    # a failed round
    if s in (Phase.INIT, Phase.UP, Phase.FALLING):
        n = h.count + 1 if s is not Phase.UP else 1
        if n >= down:
            return _moved(h, Phase.DOWN, 0, n, verdict, reason)
        nxt = Phase.INIT if s is Phase.INIT else Phase.FALLING
        return _moved(h, nxt, n, n, verdict, reason)
    # DOWN stays DOWN; RISING falls back at once
    return _moved(h, Phase.DOWN, 0, 1, verdict, reason)


def carrier_lost(h: Health, reason: str) -> Health:
    """The WAN's link lost carrier: DOWN at once, count 0.

    A WAN already DOWN keeps its reason (the reason changes only with the state).
    """
    if h.state is Phase.DOWN:
        return Health(Phase.DOWN, 0, h.reason)
    return Health(Phase.DOWN, 0, reason)


def carrier_back(h: Health, reason: str = "carrier up") -> Health:
    """The link has carrier again: a DOWN WAN becomes RISING (count 0); else no-op.

    The WAN then needs `up` good rounds to be UP again.
    """
    if h.state is not Phase.DOWN:
        return h
    return Health(Phase.RISING, 0, reason)


def takes_new_flows(state: Phase) -> bool:
    """Whether a WAN in `state` gets new connections (a nexthop in the multipath route).

    INIT and FALLING are given the benefit of the doubt; RISING must prove itself first.
    """
    return state in (Phase.INIT, Phase.UP, Phase.FALLING)


def transitioned(old: Health, new: Health) -> bool:
    """Whether the state changed (a change of `count` alone is not a transition)."""
    return old.state != new.state


def describe(old: Health, new: Health) -> str:
    """A log line for a step from `old` to `new`.

    E.g. "FALLING -> DOWN after 3 failed rounds: 0/2 targets answered (silent: ...)".
    """
    if not transitioned(old, new):
        detail = f" ({new.count})" if new.count else ""
        return f"{new.state.name}{detail}"
    if new.reason.startswith("after "):
        return f"{old.state.name} -> {new.state.name} {new.reason}"
    if new.reason:
        return f"{old.state.name} -> {new.state.name}: {new.reason}"
    return f"{old.state.name} -> {new.state.name}"
