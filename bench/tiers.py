"""Figure 12: tiers.  One dual-stack lab of 3 WANs (wlan1, wlan2, lte), and in each
repetition three daemons one after the other: untiered (the in-run baseline: ordinary
same-tier failover), then `lte` at ``tier: 2`` with ``failback: keep``, then with
``failback: flush``.  Every run, for both IP versions:

* share: `SHARE` new flows per version with every WAN up: how many went through lte;
* takeover: new flows of both versions, one every `INTERVAL` s each (`ipv6.flows_across`),
  across the death of tier 1 (wlan1 and wlan2 ``dead`` at once; untiered: wlan1 alone):
  figure 1's outage (`stats.settled_outage`): until every new flow is greeted, which
  with tier 1 dead means through lte; the kernel routes (``ip -ts monitor route``) say
  when lte came in (untiered: when wlan1 left), the daemon's log when it moved the tier;
* failback: once the daemon logged the dead WANs' connections removed (the DOWN's
  conntrack flush), long-lived flows of both versions opened while tier 1 is dead (all
  through lte in the tiered runs), then new flows across the heal: seconds until new
  flows leave lte (untiered: until wlan1 takes new flows again), and the long-lived flows
  on lte broken after the heal (keep: none; flush: all, and how soon).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from lab import FlowResult, Lab
from lab.traffic import fault_offset

from bench import stats
from bench.flows import OBSERVE
from bench.ipv6 import (_stop_quietly, dual_config, flows_across, hold_both, new_flow_outage,
                        server, sources, start_dual, whole)
from bench.routers import EpochEcmpd, stop_ecmpd
from bench.underload import RouteWatch

NAMES = ("wlan1", "wlan2", "lte")
TIER1 = ("wlan1", "wlan2")
BACKUP = "lte"
VERSIONS = (4, 6)
"""IP versions in the order the rows give them."""
KINDS = ("untiered", "keep", "flush")
"""Each repetition's daemons: no tiers, then lte at tier 2 with each failback."""
INTERVAL = 0.01
"""One new flow of each version every 10 ms across the fault and the heal."""
TAKEOVER_AFTER = 5.0
"""Seconds of new flows after tier 1 died."""
FAILBACK_AFTER = 4.0
"""Seconds of new flows after tier 1 healed (its UP takes 5 rounds, ~1 s)."""
SHARE = 1000
"""New flows per version with every WAN up."""
FLUSH_WAIT = 60.0
"""Seconds to wait for the daemon's conntrack flushes (logged when done)."""
TARGET = 1.0
"""The takeover's goal (s); a run above it keeps the daemon's log around the fault."""


def tier_config(lab: Lab, kind: str) -> dict[str, Any]:
    """Defaults, both versions; `kind` "keep" / "flush": lte at tier 2 with that failback."""
    cfg = dual_config(lab)
    if kind != "untiered":
        cfg["wans"][BACKUP].update(tier=2, failback=kind)
    return cfg


def left_after(results: Sequence[FlowResult], t: float, wan: str) -> float:
    """Seconds from epoch `t` to the start of the first new flow after which none went
    through `wan` (0.0: none did after `t`; inf: the last one did)."""
    offset = fault_offset(results, t)
    flows = sorted(results, key=lambda r: r.t)
    last = max((i for i, r in enumerate(flows) if r.ok and r.wan == wan), default=None)
    if last is None or flows[last].t < offset:
        return 0.0
    return math.inf if last == len(flows) - 1 else flows[last + 1].t - offset


def joined_after(results: Sequence[FlowResult], t: float, wan: str) -> float:
    """Seconds from epoch `t` to the start of the first new flow after it through `wan`
    (inf: none)."""
    offset = fault_offset(results, t)
    return min((r.t - offset for r in results if r.t >= offset and r.ok and r.wan == wan),
               default=math.inf)


def _logged(d: Any, t: float, prefixes: Sequence[str], timeout: float = 0.0) -> float | None:
    """Seconds from epoch `t` until the daemon had logged a line starting with each of
    `prefixes` (its log polled for `timeout` s; None: not all of them)."""
    end = time.monotonic() + timeout
    while True:
        lines = stats.log_between(d.log(), t, math.inf)
        firsts = [next((ts for ts, _, m in lines if m.startswith(p)), None) for p in prefixes]
        if all(x is not None for x in firsts):
            return max(firsts) - t  # type: ignore[type-var]
        if time.monotonic() > end:
            return None
        time.sleep(0.2)  # the log is polled


def _removed(wans: Sequence[str]) -> list[str]:
    """The daemon's log lines saying each version's connections of `wans` went."""
    return [f"{w}: its IPv{f} connections were removed" for w in wans for f in VERSIONS]


def _value(v: float | None, fmt: str = "{:.3f}s") -> str:
    return "—" if v is None else "never" if v == math.inf else fmt.format(v)


def _failures(results: Sequence[FlowResult], t: float) -> str:
    """When (s from epoch `t`), through which bound WAN and how the failed flows failed."""
    offset = fault_offset(results, t)
    bad = [r for r in results if not r.ok]
    errors = Counter((r.error or "?")[:60] for r in bad).most_common(3)
    return (f"{len(bad)} failed from {min(r.t for r in bad) - offset:+.2f}s to "
            f"{max(r.t for r in bad) - offset:+.2f}s, " + ", ".join(
                f"{n}x {e}" for e, n in errors) + "; from " + ", ".join(
                sorted({r.bind or "?" for r in bad})[:5]))


def _since(t: float, ts: float | None) -> float | None:
    return None if ts is None else ts - t


@dataclass
class TierRun:
    """One daemon (`kind`), one death and one heal of tier 1 (untiered: of wlan1)."""

    kind: str
    share: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """Per version with every WAN up: (through lte, greeted, opened)."""
    takeover: dict[int, float] = field(default_factory=dict)
    """Per version: the new-flow outage (s; inf: not recovered within `window`)."""
    window: float = 0.0
    route_take: dict[int, float | None] = field(default_factory=dict)
    """Per version: fault -> lte in the kernel route (untiered: wlan1 out of it)."""
    log_take: dict[int, float | None] = field(default_factory=dict)
    """Per version: fault -> the daemon's "tier 2" line (tiered only)."""
    down_flush: float | None = None
    """Fault -> the daemon logged the dead WANs' connections removed (both versions; the
    heal waits for it)."""
    back: dict[int, float] = field(default_factory=dict)
    """Per version: heal -> new flows left lte (untiered: wlan1 took a new flow)."""
    back_failed: dict[int, int] = field(default_factory=dict)
    """Per version: new flows that failed across the heal."""
    notes: list[str] = field(default_factory=list)
    """What failed, when and how (for the details)."""
    route_back: dict[int, float | None] = field(default_factory=dict)
    """Per version: heal -> lte out of the kernel route (untiered: wlan1 in it)."""
    log_back: dict[int, float | None] = field(default_factory=dict)
    """Per version: heal -> the daemon's "tier 1 again" line (tiered only)."""
    flushed: float | None = None
    """Heal -> the daemon logged lte's connections removed, both versions (flush only)."""
    held: dict[int, int] = field(default_factory=dict)
    """Per version: long-lived flows through lte across the heal."""
    broken: dict[int, int] = field(default_factory=dict)
    broken_after: dict[int, list[float]] = field(default_factory=dict)
    """Per version: heal -> each break of those flows (s)."""
    log: list[str] = field(default_factory=list)
    """The daemon's log around the fault when the takeover exceeded `TARGET`."""

    @property
    def tiered(self) -> bool:
        return self.kind != "untiered"

    def line(self) -> str:
        def per(d: dict[int, Any], fmt: str = "{:.3f}s") -> str:
            return ", ".join(f"IPv{f} {_value(v, fmt)}" for f, v in d.items())
        shares = ", ".join(f"IPv{f} {a}/{b} ({c - b} failed)" for f, (a, b, c)
                           in self.share.items())
        held = ", ".join(f"IPv{f} {self.broken[f]}/{n}" for f, n in self.held.items())
        return (f"{self.kind}: through lte {shares}; takeover {per(self.takeover)} "
                f"(window {self.window:.1f}s), route {per(self.route_take)}, log "
                f"{per(self.log_take)}, DOWN flushes done {_value(self.down_flush)}; "
                f"failback {per(self.back)}, failed {per(self.back_failed, '{}')}, route "
                f"{per(self.route_back)}, log {per(self.log_back)}, lte flushed "
                f"{_value(self.flushed)}; long-lived on lte broken {held}"
                + "".join(f"; {n}" for n in self.notes))


def _share(lab: Lab, family: int) -> tuple[int, int, int]:
    res = lab.new_flows(SHARE, timeout=3.0, server=server(lab, family),
                        sources=sources(lab, family))
    ok = [r for r in res if r.ok]
    return sum(1 for r in ok if r.wan == BACKUP), len(ok), len(res)


def _takeover(lab: Lab, d: Any, run: TierRun, dead: tuple[str, ...]) -> None:
    """Kill `dead` at once across new flows of both versions; fill the takeover fields."""
    with RouteWatch(lab, family=4) as w4, RouteWatch(lab, family=6) as w6:
        t0, results = flows_across(lab, lambda: [lab.fault(w, "dead") for w in dead],
                                   INTERVAL, TAKEOVER_AFTER)
        watches = {4: w4, 6: w6}
        for f, res in results.items():
            run.takeover[f], window = new_flow_outage(res, t0)
            run.window = min(run.window or window, window)
            tl = watches[f].timeline()
            run.route_take[f] = _since(t0, stats.first_in(tl, BACKUP, t0) if run.tiered
                                       else stats.first_removal(tl, dead[0], t0))
            run.log_take[f] = (_logged(d, t0, [f"new IPv{f} flows: tier 2"])
                               if run.tiered else None)
            moved = run.route_take[f]
            if moved is not None and (late := [r for r in res if not r.ok and r.wall
                                               and r.wall > t0 + moved]):
                run.notes.append(f"IPv{f} failed after the route moved ({moved:.3f}s): "
                                 f"{_failures(late, t0)}")
    run.down_flush = _logged(d, t0, _removed(dead), FLUSH_WAIT)
    worst = max(run.takeover.values())
    if worst > TARGET:
        run.log = [f"t0{ts - t0:+.3f}s {level} {msg}" for ts, level, msg in stats.log_between(
            d.log(), t0 - 1.0, t0 + min(worst, TAKEOVER_AFTER) + 1.0)]


def _failback(lab: Lab, d: Any, run: TierRun, dead: tuple[str, ...], hold: int) -> None:
    """Long-lived flows of both versions (tier 1 dead), then heal `dead` across new flows
    of both versions; fill the failback fields."""
    held: dict[int, Any] = {}
    try:
        hold_both(lab, hold, held)
        with RouteWatch(lab, family=4) as w4, RouteWatch(lab, family=6) as w6:
            t1, results = flows_across(lab, lambda: [lab.heal(w) for w in dead],
                                       INTERVAL, FAILBACK_AFTER)
            watches = {4: w4, 6: w6}
            for f, res in results.items():
                run.back[f] = (left_after(res, t1, BACKUP) if run.tiered
                               else joined_after(res, t1, dead[0]))
                run.back_failed[f] = sum(1 for r in res if not r.ok)
                if run.back_failed[f]:
                    run.notes.append(f"IPv{f} across the heal: {_failures(res, t1)}")
                tl = watches[f].timeline()
                run.route_back[f] = _since(t1, stats.first_removal(tl, BACKUP, t1)
                                           if run.tiered else stats.first_in(tl, dead[0], t1))
                run.log_back[f] = (_logged(d, t1, [f"new IPv{f} flows: tier 1 again"])
                                   if run.tiered else None)
        if run.kind == "flush":
            run.flushed = _logged(d, t1, _removed([BACKUP]), FLUSH_WAIT)
        whole(lab, routed=set(TIER1) if run.tiered else set(NAMES))
        time.sleep(OBSERVE)  # an observation window, not a wait for a state
        for f in list(held):
            on = [r for r in held.pop(f).stop() if r.wan == BACKUP]
            run.held[f] = len(on)
            run.broken[f] = sum(1 for r in on if r.broken)
            run.broken_after[f] = [r.broken_wall - t1 for r in on
                                   if r.broken and r.broken_wall is not None]
    finally:
        for h in held.values():
            _stop_quietly(h)


def tier_run(lab: Lab, kind: str, hold: int) -> TierRun:
    """One daemon of `kind`: share, takeover, failback (see the module's docstring)."""
    run = TierRun(kind)
    routed = set(TIER1) if run.tiered else set(NAMES)
    dead = TIER1 if run.tiered else TIER1[:1]
    d = start_dual(lab, tier_config(lab, kind), cls=EpochEcmpd, routed=routed)
    try:
        for f in VERSIONS:
            run.share[f] = _share(lab, f)
        _takeover(lab, d, run, dead)
        _failback(lab, d, run, dead, hold)
    finally:
        for w in dead:
            lab.heal(w)
        stop_ecmpd(lab, d)
    return run


@dataclass
class Fig12:
    """Everything figure 12 measured; a run that failed has its error in `errors`."""

    runs: list[TierRun] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Kind -> the last error of its runs."""

    def of(self, kind: str) -> list[TierRun]:
        return [r for r in self.runs if r.kind == kind]

    def details(self) -> list[str]:
        out = [f"fig 12 {r.line()}" for r in self.runs]
        for r in self.runs:
            out += [f"fig 12 {r.kind} takeover > {TARGET:.1f}s, daemon log: {x}" for x in r.log]
        out += [f"fig 12 {kind}: ERROR {err}" for kind, err in self.errors.items()]
        return out
