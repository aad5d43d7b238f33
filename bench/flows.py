"""Figures 1–3: what flows see.  Outage of new flows across a fault, long-lived flows on
the healthy WANs across a fault and heal, and the distribution of new flows by weight —
ecmpd and the baseline, one after the other in the same lab.

Every run starts from a router programmed afresh (ecmpd or the baseline) with every WAN
up, an empty conntrack table and no fault.  Flows are spread over all of the client's
addresses so that the baseline's L3 (src, dst) hash spreads them over the WANs too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from lab import Lab
from lab.traffic import fault_offset

from bench import stats
from bench.routers import Baseline, start_ecmpd, stop_ecmpd, wait_routed

GAP = 0.02
"""One new TCP flow every 20 ms."""
FLOW_TIMEOUT = 1.0
"""A new flow that is not greeted within this is failed (TCP retransmits the SYN at 1 s)."""
PRE = 1.0
"""Seconds of new flows before the fault."""
ECMPD_AFTER = 5.0
"""Seconds of new flows after the fault, ecmpd (its detection takes < 1 s)."""
BASELINE_MARGIN = 3.0
"""Seconds of new flows past the baseline's latest possible reaction."""
SETTLE = 1.0
"""A recovery counts when every new flow of at least the last SETTLE s succeeded."""
HELD_ECHO_TIMEOUT = 2.0
"""A long-lived flow is broken when a byte is not echoed within this."""
OBSERVE = HELD_ECHO_TIMEOUT + 1.5
"""Seconds to keep long-lived flows after the route is whole again, so moved ones break."""


@dataclass
class FaultRun:
    """One fault on one WAN: what new flows and (for a hold run) long-lived flows saw."""

    router: str
    mode: str
    wan: str
    outage: float
    """Seconds (math.inf: not recovered within `window`)."""
    window: float
    """Seconds of new flows after the fault."""
    healthy: int = 0
    """Long-lived flows on the other WANs (0: no hold run)."""
    broken: int = 0
    """How many of those broke."""
    fault_wall: float = 0.0
    """Epoch of the fault."""
    took_out: bool | None = None
    """Baseline only: whether its check-gateway took any WAN out of the route."""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        held = f", healthy flows broken {self.broken}/{self.healthy}" if self.healthy else ""
        out = "never" if math.isinf(self.outage) else f"{self.outage:.3f}s"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"{self.router} {self.mode} on {self.wan}: outage {out} "
                f"(window {self.window:.1f}s){held}{extra}")


def fault_run(lab: Lab, router: str, wan: str, mode: str, after: float, hold: int,
              fault_at: Callable[[float], float], wait_whole: Callable[[], None]) -> FaultRun:
    """Open new flows (and first `hold` long-lived ones), fault `wan`, read the outage,
    heal; with long-lived flows wait for the route to be whole again and count the
    broken ones on the healthy WANs.

    `fault_at(now)` says when (epoch; at least `PRE` s from now) to inject the fault,
    and new flows go on until `after` s past that moment; `wait_whole()`
    returns once the router's route has every WAN again.
    """
    held = None
    if hold:
        held = lab.hold_flows(hold, byte_interval=0.1, sources=lab.clients,
                              echo_timeout=HELD_ECHO_TIMEOUT)
        got = held.wait_established(timeout=30)
        if got < hold:
            raise RuntimeError(f"only {got}/{hold} long-lived flows came up")
    now = time.time()
    planned = max(fault_at(now), now + PRE)
    count = math.ceil((planned - now + after) / GAP)
    run = lab.start_flows(count, interval=GAP, timeout=FLOW_TIMEOUT, sources=lab.clients)
    delay = planned - time.time()
    if delay > 0:
        time.sleep(delay)  # the fault's moment is chosen; it is measured below, not assumed
    t_fault = time.time()
    lab.fault(wan, mode)
    results = run.result()
    offset = fault_offset(results, t_fault)
    res = FaultRun(router, mode, wan, stats.settled_outage(results, offset, SETTLE),
                   window=max(r.t for r in results) - offset, fault_wall=t_fault)
    lab.heal(wan)
    if held is not None:
        wait_whole()
        time.sleep(OBSERVE)  # an observation window, not a wait for a state
        flows = held.stop()
        healthy = [r for r in flows if r.wan is not None and r.wan != wan]
        res.healthy = len(healthy)
        res.broken = sum(1 for r in healthy if r.broken)
    return res


def all_routed(lab: Lab) -> Callable[[], None]:
    """A `wait_whole` that polls the kernel (not the router under test)."""
    names = {w.name for w in lab.spec.wans}
    return lambda: wait_routed(lab, names, 30)


def ecmpd_fault_runs(lab: Lab, weights: dict[str, int], mode: str, reps: int,
                     hold: int) -> list[FaultRun]:
    """`reps` faults of `mode` with ecmpd at defaults (probe targets beyond the gateway
    for ``upstream``), rotating the faulted WAN; one daemon for all of them."""
    names = [w.name for w in lab.spec.wans]
    d = start_ecmpd(lab, weights, targets="beyond" if mode == "upstream" else "gateway")
    runs = []
    try:
        for k in range(reps):
            wan = names[k % len(names)]
            runs.append(fault_run(lab, "ecmpd", wan, mode, ECMPD_AFTER, hold,
                                  lambda now: now + PRE, all_routed(lab)))
            all_routed(lab)()
    finally:
        stop_ecmpd(lab, d)
    return runs


def baseline_fault_runs(lab: Lab, weights: dict[str, int], mode: str, reps: int,
                        hold: int, interval: float = 10.0) -> list[FaultRun]:
    """`reps` faults of `mode` with the baseline, rotating the faulted WAN.

    The fault's phase in the 10 s check-gateway cycle is stratified over the runs
    (run k: the next ping comes (k + 0.5) / reps * interval after the fault).  New flows
    last until `BASELINE_MARGIN` s after the latest moment the emulation can act on a
    fault (the second ping after it, plus the ping's 1 s timeout).
    """
    names = [w.name for w in lab.spec.wans]
    setup = 0.5 + (1.5 if hold else 0.0)  # room for the held flows to come up
    runs = []
    for k in range(reps):
        wan = names[k % len(names)]
        phase = (k + 0.5) / reps * interval
        base = Baseline(lab, weights, interval=interval, first_delay=setup + PRE + phase).start()
        try:
            fault_time = base.first_ping - phase
            after = phase + interval + 1.0 + BASELINE_MARGIN
            run = fault_run(lab, "baseline", wan, mode, after, hold,
                            lambda now: fault_time, all_routed(lab))
            late = max(0.0, run.fault_wall - base.first_ping)
            next_ping = base.first_ping + math.ceil(late / interval) * interval
            run.notes.append(f"next ping {next_ping - run.fault_wall:.1f}s after the fault")
        finally:
            lines = base.stop()
        outs = [x for x in lines if x.startswith("out ")]
        run.took_out = bool(outs)
        run.notes.append(f"took out: {', '.join(x.split()[1] for x in outs) or 'nothing'}")
        runs.append(run)
    return runs


# ------------------------------------------------------------------ figure 3


def distribution(lab: Lab, weights: dict[str, int], count: int, server: str | None = None,
                 sources: list[str] | None = None) -> tuple[float, dict]:
    """`count` new flows over every client address (`sources`, default the IPv4 ones)
    to `server` (default the first IPv4 one): (max deviation in pp, shares)."""
    results = lab.new_flows(count, timeout=3.0, server=server,
                            sources=lab.clients if sources is None else sources)
    failed = sum(1 for r in results if not r.ok)
    if failed:
        raise RuntimeError(f"{failed}/{count} flows failed during the distribution run")
    labels = [r.wan for r in results]
    shares = {k: round(v, 1) for k, v in stats.shares_pct(labels).items()}
    return stats.max_deviation_pp(labels, weights), shares


def ecmpd_distribution(lab: Lab, weights: dict[str, int], hash_: str, reps: int,
                       count: int) -> list[tuple[float, dict]]:
    d = start_ecmpd(lab, weights, hash=hash_)
    try:
        return [distribution(lab, weights, count) for _ in range(reps)]
    finally:
        stop_ecmpd(lab, d)


def baseline_distribution(lab: Lab, weights: dict[str, int], reps: int,
                          count: int) -> list[tuple[float, dict]]:
    base = Baseline(lab, weights, first_delay=3600).start()  # no check needed here
    try:
        return [distribution(lab, weights, count) for _ in range(reps)]
    finally:
        base.stop()
