"""Figure 11: IPv6 next to IPv4.  One dual-stack lab, one dual-stack ecmpd, and every
number measured for both IP versions in the same run: ecmpd's IPv4 is the in-run
baseline of its IPv6 (the seed has no IPv6 at all).

The lab has 3 WANs north / south / west (weights 1:2:3 for the fault, long-lived-flow,
distribution and one-version rows; 1:1:1 under load and for the CPU), each with its
IPv4 subnet and its ``2001:db8:<i>::/64`` (the ISP's ``::1`` the IPv6 gateway), the LAN
client with `plan.CLIENTS` + 1 addresses of each version, the inet server at
203.0.113.10 and ``2001:db8:feed::10`` (`lab.server6`).

* Faults (`fault_runs`): new flows of both versions, one every `flows.GAP` s each, run
  side by side across one fault of the whole ISP (``dead``, ``upstream`` with targets
  beyond the gateway, ``carrier``); each version's outage is `stats.settled_outage` of
  its flows (figure 1's), and when the WAN left each version's route is read from the
  kernel (``ip -4/-6 -ts monitor route``).  The ``dead`` runs also hold long-lived flows
  of both versions on every WAN (figure 2's count of broken healthy ones).
* Distribution (`distributions`): `plan.dist_flows` new flows per version, l4 hash.
* One version's outage (`family_outages`): ``lab.fault(wan, "dead", family=6)`` with
  long-lived flows of IPv4 running (and new IPv4 flows opened during the outage), then
  the reverse; what breaks of the other version.
* Under load (bench/ipv6load.py): saturation with load of both versions, an idle IPv6
  next to IPv4 load started and stopped, an IPv6-only outage on an IPv4-saturated line.
* CPU (`cpu`): the daemon idle with 2 targets per version and WAN (gateway + the ISP's
  upstream), then the same lab with an IPv4-only config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from lab import FlowResult, Lab
from lab.runner import Ecmpd, config_for
from lab.traffic import fault_offset

from bench import perf, stats
from bench.flows import (ECMPD_AFTER, FLOW_TIMEOUT, GAP, HELD_ECHO_TIMEOUT, OBSERVE, PRE,
                         SETTLE, FaultRun, distribution)
from bench.routers import start_ecmpd, stop_ecmpd, wait_routed, wait_until
from bench.underload import NAMES, RouteWatch

WEIGHTS = {"north": 1, "south": 2, "west": 3}
FAMILIES = (6, 4)
"""IPv6 first: it is the figure's subject, IPv4 its baseline."""
ECMPD_WAIT = 10.0
"""Seconds to wait for a WAN to leave a route."""
NEW_DURING = 100
"""New flows of the other version opened during a one-version outage (every 10 ms)."""


def server(lab: Lab, family: int) -> str:
    return lab.server6 if family == 6 else lab.spec.server_addresses[0]


def sources(lab: Lab, family: int) -> list[str]:
    return lab.clients6 if family == 6 else lab.clients


def dual_config(lab: Lab, weights: dict[str, int] | None = None, targets: str = "gateway",
                ipv6: bool = True) -> dict[str, Any]:
    """Defaults (both versions unless `ipv6` is False); ``targets="both"`` without a
    quorum key (a majority), as figure 9."""
    cfg = config_for(lab, weights=weights, targets=targets, ipv6=ipv6)
    if targets == "both":
        for wan in cfg["wans"].values():
            wan["probe"].pop("quorum", None)
    return cfg


def whole(lab: Lab, timeout: float = 30.0, routed: set[str] | None = None) -> None:
    """Wait until both versions' routes have `routed` (default every WAN; the kernel is
    polled)."""
    names = routed or {w.name for w in lab.spec.wans}
    for family in (4, 6):
        wait_routed(lab, names, timeout, family)


def start_dual(lab: Lab, config: dict[str, Any], cls: type[Ecmpd] = Ecmpd,
               routed: set[str] | None = None) -> Ecmpd:
    """`start_ecmpd`, then also wait for the IPv6 route over `routed` (default every
    WAN) and IPv6 UP."""
    d = start_ecmpd(lab, config=config, cls=cls, routed=routed)
    try:
        wait_routed(lab, routed or {w.name for w in lab.spec.wans}, 15, 6)
        wait_until(lambda: all((w.get("ipv6") or {}).get("state") == "up"
                               for w in d.status()["wans"].values()), 15, "every WAN's IPv6 UP",
                   step=0.2)
    except BaseException:
        stop_ecmpd(lab, d)
        raise
    return d


def _stop_quietly(held: Any) -> None:
    try:
        held.stop(timeout=5)
    except Exception:  # noqa: BLE001 - cleanup only; the lab kills what is left
        pass


# ------------------------------------------------------------------ faults of the whole ISP


@dataclass
class DualRun:
    """One fault of a whole ISP, seen by new flows (and long-lived ones) of each version."""

    mode: str
    wan: str
    runs: dict[int, FaultRun]
    """Per version: figure 1's outage (and figure 2's broken long-lived flows)."""
    route_out: dict[int, float | None]
    """Per version: seconds from the fault to the WAN leaving that version's kernel route
    (None: not seen within the run)."""

    def line(self) -> str:
        outs = ", ".join(f"IPv{f} {'never' if v is None else f'{v:.3f}s'}"
                         for f, v in self.route_out.items())
        return (" | ".join(r.line() for r in self.runs.values())
                + f" | route out: {outs}")


def hold_both(lab: Lab, count: int, into: dict[int, Any]) -> None:
    """Start `count` long-lived flows of each version (a byte every 100 ms) into `into`
    (family -> `HeldFlows`; the caller stops them) and wait until they are up."""
    for family in FAMILIES:
        into[family] = lab.hold_flows(count, byte_interval=0.1, server=server(lab, family),
                                      sources=sources(lab, family),
                                      echo_timeout=HELD_ECHO_TIMEOUT)
    for family, h in into.items():
        if (got := h.wait_established(timeout=30)) < count:
            raise RuntimeError(f"only {got}/{count} long-lived IPv{family} flows came up")


def flows_across(lab: Lab, act: Callable[[], object], interval: float = GAP,
                 after: float = ECMPD_AFTER) -> tuple[float, dict[int, list[FlowResult]]]:
    """New flows of both versions side by side, one every `interval` s each, from `PRE`
    s before `act()` (a fault, a heal) to `after` s past it: (epoch of `act`, per version
    the flows' results).  `PRE` counts from the later of the two tools' first flows (a
    tool takes a while to come up on a busy machine)."""
    count = math.ceil((PRE + after) / interval)
    runs = {f: lab.start_flows(count, interval=interval, timeout=FLOW_TIMEOUT,
                               server=server(lab, f), sources=sources(lab, f))
            for f in FAMILIES}
    planned = max(r.wait_started() for r in runs.values()) + PRE
    time.sleep(max(0.0, planned - time.time()))  # the act's moment; measured below
    t_act = time.time()
    act()
    return t_act, {f: r.result() for f, r in runs.items()}


def new_flow_outage(results: list[FlowResult], t_fault: float) -> tuple[float, float]:
    """(figure 1's outage of `results` across a fault at epoch `t_fault`, seconds of new
    flows after it)."""
    offset = fault_offset(results, t_fault)
    return (stats.settled_outage(results, offset, SETTLE),
            max(r.t for r in results) - offset)


def dual_fault_run(lab: Lab, wan: str, mode: str, hold: int) -> DualRun:
    """New flows of both versions across one `mode` fault of `wan` (and first `hold`
    long-lived flows of each version); heal; with long-lived flows wait for both routes
    to be whole and count the broken ones on the healthy WANs."""
    held: dict[int, Any] = {}
    watches: dict[int, RouteWatch] = {}
    try:
        if hold:
            hold_both(lab, hold, held)
        watches = {f: RouteWatch(lab, family=f) for f in FAMILIES}
        t_fault, results = flows_across(lab, lambda: lab.fault(wan, mode))
        route_out = {}
        for f, w in watches.items():
            gone = stats.first_removal(w.timeline(), wan, t_fault)
            route_out[f] = None if gone is None else gone - t_fault
        lab.heal(wan)
        out: dict[int, FaultRun] = {}
        for f, res in results.items():
            outage, window = new_flow_outage(res, t_fault)
            out[f] = FaultRun(f"ecmpd IPv{f}", mode, wan, outage, window=window,
                              fault_wall=t_fault)
        if held:
            whole(lab)
            time.sleep(OBSERVE)  # an observation window, not a wait for a state
            for f in list(held):
                flows = held.pop(f).stop()
                healthy = [r for r in flows if r.wan is not None and r.wan != wan]
                out[f].healthy = len(healthy)
                out[f].broken = sum(1 for r in healthy if r.broken)
        return DualRun(mode, wan, out, route_out)
    finally:
        for h in held.values():
            _stop_quietly(h)
        for w in watches.values():
            w.close()


def fault_runs(lab: Lab, mode: str, reps: int, hold: int) -> list[DualRun]:
    """`reps` faults of `mode` with one dual-stack ecmpd at defaults (targets beyond the
    gateway for ``upstream``), weights 1:2:3, the faulted WAN rotating."""
    targets = "beyond" if mode == "upstream" else "gateway"
    d = start_dual(lab, dual_config(lab, WEIGHTS, targets))
    runs = []
    try:
        for k in range(reps):
            runs.append(dual_fault_run(lab, NAMES[k % len(NAMES)], mode, hold))
            whole(lab)
    finally:
        stop_ecmpd(lab, d)
    return runs


# ------------------------------------------------------------------ distribution


def distributions(lab: Lab, reps: int, count: int) -> dict[int, list[tuple[float, dict]]]:
    """`reps` x `count` new flows of each version (alternating), weights 1:2:3, l4."""
    d = start_dual(lab, dual_config(lab, WEIGHTS))
    out: dict[int, list[tuple[float, dict]]] = {f: [] for f in FAMILIES}
    try:
        for _ in range(reps):
            for f in FAMILIES:
                out[f].append(distribution(lab, WEIGHTS, count, server(lab, f), sources(lab, f)))
    finally:
        stop_ecmpd(lab, d)
    return out


# ------------------------------------------------------------------ one version's outage


@dataclass
class FamilyOutage:
    """One version of one WAN dead (``fault(wan, "dead", family=...)``): what the other
    version's flows through that WAN saw."""

    wan: str
    family: int
    """The version that died."""
    out: float | None
    """Seconds until the WAN left that version's route (None: not within the wait)."""
    held: int = 0
    """The other version's long-lived flows through the WAN."""
    broken: int = 0
    """How many of those broke."""
    held_all: int = 0
    broken_all: int = 0
    """The same over every WAN."""
    left_other: int = 0
    """How often the WAN left the other version's route meanwhile."""
    new_ok: int = 0
    new_total: int = 0
    new_on_wan: int = 0
    """The other version's new flows opened during the outage: greeted, opened, and
    greeted through the WAN."""

    @property
    def other(self) -> int:
        return 10 - self.family

    @property
    def clean(self) -> bool:
        """Nothing of the other version was hurt (and the fault was real)."""
        return (self.out is not None and self.held > 0 and self.broken == 0
                and self.broken_all == 0 and self.left_other == 0
                and self.new_ok == self.new_total and self.new_on_wan > 0)

    def line(self) -> str:
        out = "never" if self.out is None else f"{self.out:.3f}s"
        return (f"IPv{self.family}-only outage of {self.wan}: out of the IPv{self.family} "
                f"route after {out}; IPv{self.other} long-lived flows through it broken "
                f"{self.broken}/{self.held} (all WANs {self.broken_all}/{self.held_all}); "
                f"left the IPv{self.other} route {self.left_other}x; new IPv{self.other} "
                f"flows during the outage {self.new_ok}/{self.new_total} greeted, "
                f"{self.new_on_wan} through {self.wan}")


def family_outage(lab: Lab, wan: str, family: int, hold: int) -> FamilyOutage:
    other = 10 - family
    held = lab.hold_flows(hold, byte_interval=0.1, server=server(lab, other),
                          sources=sources(lab, other), echo_timeout=HELD_ECHO_TIMEOUT)
    flows = None
    try:
        if (got := held.wait_established(timeout=30)) < hold:
            raise RuntimeError(f"only {got}/{hold} long-lived IPv{other} flows came up")
        with RouteWatch(lab, family=family) as dead, RouteWatch(lab, family=other) as live:
            t = time.time()
            lab.fault(wan, "dead", family=family)
            gone = dead.wait_out(wan, t, ECMPD_WAIT)
            new = lab.new_flows(NEW_DURING, interval=0.01, timeout=FLOW_TIMEOUT,
                                server=server(lab, other), sources=sources(lab, other))
            # the other version's flows are watched as long as figure 2 watches them
            time.sleep(max(0.0, (gone or time.time()) + OBSERVE - time.time()))
            lab.heal(wan)
            wait_routed(lab, {w.name for w in lab.spec.wans}, 30, family)
            left = [d for _, d in stats.removals(live.timeline(), t) if d == wan]
        flows = held.stop()
    finally:
        if flows is None:
            _stop_quietly(held)
    res = FamilyOutage(wan, family, None if gone is None else gone - t)
    mine = [r for r in flows if r.wan == wan]
    res.held, res.broken = len(mine), sum(1 for r in mine if r.broken)
    res.held_all, res.broken_all = len(flows), sum(1 for r in flows if r.broken)
    res.left_other = len(left)
    res.new_total, res.new_ok = len(new), sum(1 for r in new if r.ok)
    res.new_on_wan = sum(1 for r in new if r.ok and r.wan == wan)
    return res


def family_outages(lab: Lab, reps: int, hold: int) -> list[FamilyOutage]:
    """`reps` rounds, the WAN rotating: its IPv6 dead, healed, then its IPv4 dead."""
    d = start_dual(lab, dual_config(lab, WEIGHTS))
    out = []
    try:
        for k in range(reps):
            wan = NAMES[k % len(NAMES)]
            for family in FAMILIES:
                out.append(family_outage(lab, wan, family, hold))
                whole(lab)
    finally:
        stop_ecmpd(lab, d)
    return out


# ------------------------------------------------------------------ CPU


def cpu(lab: Lab, seconds: float) -> dict[int, perf.Usage]:
    """The daemon idle for `seconds` (3 windows) with 2 targets per version and WAN
    (key 6: dual-stack), then with the IPv4-only config of the same lab (key 4)."""
    return {6: perf.usage(lab, seconds, config=dual_config(lab, targets="both")),
            4: perf.usage(lab, seconds, config=dual_config(lab, targets="both", ipv6=False))}
