"""Figure 11 under load (bench/ipv6.py has the lab and the rest of the figure): every
line shaped as figure 9's (20/40/60 Mbit/s down, a quarter up, tbf buffers of 1 s each
way), one dual-stack ecmpd with 2 targets per version and WAN (gateway + the ISP's
upstream, majority), its log stamped with epoch times.

Both IP versions of a WAN share its line and its queue: IPv4 load delays IPv6's probes
as much as its own, while no IPv6 traffic proves the line alive (ecmpd/prober.py: the
idle version's late rounds are SLOW while the other version's arrivals flow and its
replies do not overtake this version's).

* Saturation (`saturation`): iperf3 load of both versions, one download and one upload
  stream per line and version.
* Ramps (`ramps`): IPv4-only load (one download and one upload per line) started and
  stopped `count` times, `RAMP_LOAD` s each then `RAMP_IDLE` s idle: the queue's ramp-up
  and its decay are the moments an idle IPv6 could be taken for dead.  IPv6 has no
  traffic at all: a single packet of its own would prove its line alive.
* IPv6-only outage on a saturated line (`busy_outages`): per run one WAN (rotating) gets
  IPv4 load until its IPv4 srtt is `SRTT` s, then ``lab.fault(wan, "dead", family=6)``:
  how long until its IPv6 leaves the route, and whether its IPv4 stays.  The baseline is
  the same outage of the same WAN on its idle line just before (`ipv6.family_outage`),
  with the same daemon.

What leaves each route is read from the kernel (`RouteWatch`, ``ip -4/-6 -ts monitor
route``), never from the daemon; its status is only sampled for the srtt (details).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from lab import Lab, StreamResult
from lab.runner import Ecmpd

from bench import stats, underload
from bench.ipv6 import (ECMPD_WAIT, FAMILIES, FamilyOutage, dual_config, family_outage,
                        start_dual, whole)
from bench.routers import EpochEcmpd, stop_ecmpd
from bench.underload import FAULT_LOAD, NAMES, FaultOut, RouteWatch, Soak

STATUS_EVERY = 5.0
"""Seconds between two status samples during a saturation soak (details only)."""
RAMP_LOAD = 8.0
RAMP_IDLE = 4.0
"""Seconds of IPv4 load, then of idle line, per ramp."""
RAMP_EVERY = 2.0
"""Seconds between two status samples during a ramp's load (its peak srtt)."""
SRTT = 0.3
"""The IPv4 srtt (s) of the loaded WAN that makes its line saturated (queueing)."""
SRTT_WAIT = 30.0
"""Seconds of load to wait for `SRTT` (the outage comes anyway; the run says so)."""
LOAD_AFTER = 3.0
"""Seconds the IPv4 load goes on after the WAN left the IPv6 route (does IPv4 stay?)."""
WHY_BEFORE = 3.0
"""Seconds of the daemon's log shown before a removal nobody caused."""

Acc = dict[str, dict[str, float]]
"""``"<wan> IPv<f>"`` -> the largest srtt and timeout (ms) sampled."""


@contextmanager
def shaped_dual(lab: Lab, buffer_s: float = 1.0) -> Iterator[Ecmpd]:
    """Every line shaped with `buffer_s` and a dual-stack ecmpd (2 targets per version,
    epoch log) running; read its log inside: it is gone once stopped."""
    underload.shape_all(lab, buffer_s)
    try:
        d = start_dual(lab, dual_config(lab, targets="both"), cls=EpochEcmpd)
        try:
            yield d
        finally:
            stop_ecmpd(lab, d)
    finally:
        underload.unshape_all(lab)


def _sample(d: Ecmpd, acc: Acc) -> None:
    """Per WAN and version the largest srtt and timeout seen so far."""
    for name, w in d.status()["wans"].items():
        for f in FAMILIES:
            fam = w.get(f"ipv{f}") or {}
            a = acc.setdefault(f"{name} IPv{f}", {"srtt_ms": 0.0, "timeout_ms": 0.0})
            srtts = [t["srtt_ms"] for t in (fam.get("targets") or {}).values()
                     if t.get("srtt_ms") is not None]
            a["srtt_ms"] = max([a["srtt_ms"], *srtts])
            a["timeout_ms"] = max(a["timeout_ms"], fam.get("timeout_ms") or 0.0)


def sample_for(d: Ecmpd, acc: Acc, seconds: float, every: float) -> None:
    """`_sample` every `every` s for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() + every < end:
        time.sleep(every)  # a sampling period, not a wait for a state
        _sample(d, acc)


def fmt_acc(acc: Acc) -> str:
    return "max srtt / timeout: " + "; ".join(
        f"{k} {a['srtt_ms']:.0f} / {a['timeout_ms']:.0f} ms" for k, a in sorted(acc.items()))


def falls(log: str, start: float, end: float, family: int, wan: str = "") -> int:
    """How often a WAN's IPv`family` (`wan`'s; default any) fell to FALLING (a failed
    round) from `start` to `end`."""
    return sum(1 for _, _, msg in stats.log_between(log, start, end, wan)
               if f" IPv{family}: " in msg and "-> FALLING" in msg)


def why(log: str, removals: list[tuple[float, str]], family: int) -> list[str]:
    """Per removal from the IPv`family` route, the daemon's lines about that WAN's
    version in the `WHY_BEFORE` s before it (the rounds' reasons)."""
    return [f"IPv{family} {dev} out at {ts:.3f}: " + underload.log_note(
        log, ts, ts - WHY_BEFORE, ts + 0.05, f"{dev} IPv{family}") for ts, dev in removals]


# ------------------------------------------------------------------ saturation


@dataclass
class DualSoak:
    """Saturated lines with load of both versions: per version what left its route and
    its streams."""

    soaks: dict[int, Soak]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [s.line() for s in self.soaks.values()] + self.notes


def saturation(lab: Lab, seconds: float, buffer_s: float = 1.0) -> DualSoak:
    """Every line shaped with `buffer_s`; iperf3 load of both versions (one download,
    one upload per line and version) for `seconds`; ecmpd with 2 targets per version."""
    acc: Acc = {}
    with shaped_dual(lab, buffer_s) as d:
        with RouteWatch(lab, family=4) as w4, RouteWatch(lab, family=6) as w6:
            t0 = time.time()
            loads = {4: lab.load(seconds=math.ceil(seconds), streams_per_wan=1)}
            try:
                loads[6] = lab.load(seconds=math.ceil(seconds), streams_per_wan=1, family=6)
            except BaseException:
                loads[4].stop()
                raise
            try:
                sample_for(d, acc, seconds, STATUS_EVERY)
            finally:
                streams: dict[int, list[StreamResult]] = {f: loads[f].wait()
                                                          for f in FAMILIES}
            t1 = time.time()
            soaks = {f: Soak(f"ecmpd IPv{f}", f"saturation, {buffer_s:g} s buffers, "
                             "IPv4+IPv6 load", seconds, t0,
                             stats.removals(w.timeline(), t0, t1), streams[f])
                     for f, w in ((6, w6), (4, w4))}
        log = d.log()
    res = DualSoak(soaks, [fmt_acc(acc), underload._transitions(log, t0, t1 + 1.0)])
    for f, s in soaks.items():
        res.notes += why(log, s.removals, f)
    return res


# ------------------------------------------------------------------ ramps


@dataclass
class Ramps:
    """IPv4-only load started and stopped on every line, IPv6 idle: per version one
    `Soak` per ramp (its load and the idle time after it)."""

    per: dict[int, list[Soak]]
    peaks: dict[int, list[float]]
    """Per version and ramp the largest srtt (s) sampled on the least queued line."""
    falls: dict[int, list[int]]
    """Per version and ramp how often a WAN fell to FALLING (`falls`)."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [s.line() for f in FAMILIES for s in self.per[f]] + self.notes


def ramps(lab: Lab, count: int, load_s: float = RAMP_LOAD, idle_s: float = RAMP_IDLE,
          buffer_s: float = 1.0) -> Ramps:
    """`count` ramps of IPv4-only load (one download, one upload per line) of `load_s`
    s, each followed by `idle_s` s idle; what left each version's route."""
    res = Ramps({f: [] for f in FAMILIES}, {f: [] for f in FAMILIES}, {})
    with shaped_dual(lab, buffer_s) as d:
        with RouteWatch(lab, family=4) as w4, RouteWatch(lab, family=6) as w6:
            for k in range(count):
                acc: Acc = {}
                t0 = time.time()
                load = lab.load(seconds=math.ceil(load_s), streams_per_wan=1)
                running = time.time() - t0
                try:
                    sample_for(d, acc, load_s, RAMP_EVERY)
                finally:
                    streams = load.wait()
                ended = time.time() - t0
                time.sleep(idle_s)  # the queue's decay, watched: a duration
                t1 = time.time()
                what = (f"ramp {k + 1}/{count}, IPv4-only load {load_s:g} s + idle "
                        f"{idle_s:g} s, {buffer_s:g} s buffers")
                for f, w in ((6, w6), (4, w4)):
                    res.per[f].append(Soak(f"ecmpd IPv{f}", what, t1 - t0, t0,
                                           stats.removals(w.timeline(), t0, t1),
                                           streams if f == 4 else []))
                    res.peaks[f].append(min((a["srtt_ms"] for n, a in acc.items()
                                             if n.endswith(f"IPv{f}")), default=0.0) / 1000)
                res.notes.append(f"ramp {k + 1}: load running +{running:.1f}s, ended "
                                 f"+{ended:.1f}s; {fmt_acc(acc)}")
        log = d.log()
    for k, s in enumerate(res.per[6]):  # the state changes, stamped from the ramp's start
        res.notes.append(f"ramp {k + 1} " + underload.log_note(
            log, s.start, s.start, s.start + s.seconds, ""))
    res.falls = {f: [falls(log, s.start, s.start + s.seconds, f) for s in res.per[f]]
                 for f in FAMILIES}
    for f in FAMILIES:
        res.notes += why(log, [r for s in res.per[f] for r in s.removals], f)
    return res


# ------------------------------------------------------------------ IPv6 dead on a busy line


@dataclass
class BusyOutage:
    """One WAN's IPv6 dead while IPv4 load fills its line, and the same outage on its
    idle line just before (the baseline)."""

    idle: FamilyOutage
    busy: FaultOut
    """``out``: seconds from the fault to the WAN leaving the IPv6 route (math.inf: not
    within the window; None: it was out of it before the fault)."""
    srtt: dict[int, float]
    """Per version the WAN's largest target srtt (s) at the fault."""
    left4: list[tuple[float, str]]
    """Removals from the IPv4 route from the load's start to its end."""
    left6_before: list[tuple[float, str]]
    """Removals from the IPv6 route during the load before the fault."""
    streams: list[StreamResult]
    fell_before: int = 0
    """How often the WAN's IPv6 fell to FALLING during the load before the fault."""

    @property
    def saturated(self) -> bool:
        return self.srtt.get(4, 0.0) >= SRTT

    @property
    def broken(self) -> int:
        return sum(1 for s in self.streams if s.broken)

    @property
    def ratio(self) -> float | None:
        """Saturated over idle line (None: either never out)."""
        b, i = self.busy.out, self.idle.out
        if b is None or i is None or math.isinf(b) or i <= 0:
            return None
        return b / i

    def lines(self) -> list[str]:
        srtt = ", ".join(f"IPv{f} {v:.3f}s" for f, v in self.srtt.items())
        return [f"{self.busy.line()}; srtt at the fault {srtt}"
                f"{'' if self.saturated else f' (NOT >= {SRTT}s)'}; before the fault IPv6 "
                f"fell {self.fell_before}x, left the route {len(self.left6_before)}x; IPv4 "
                f"removals {len(self.left4)} "
                f"({', '.join(d for _, d in self.left4) or 'none'}); IPv4 load streams "
                f"broken {self.broken}/{len(self.streams)}",
                f"idle-line baseline: {self.idle.line()}"]


def _srtt(st: dict[str, Any], wan: str) -> dict[int, float]:
    w = st["wans"][wan]
    return {f: max((t.get("srtt_ms") or 0.0 for t in
                    ((w.get(f"ipv{f}") or {}).get("targets") or {}).values()),
                   default=0.0) / 1000 for f in FAMILIES}


def _wait_srtt(d: Ecmpd, wan: str) -> dict[int, float]:
    """Poll status until `wan`'s IPv4 srtt is `SRTT` s (at most `SRTT_WAIT` s); the srtt
    of each version then."""
    end = time.monotonic() + SRTT_WAIT
    while True:
        srtt = _srtt(d.status(), wan)
        if srtt[4] >= SRTT or time.monotonic() > end:
            return srtt
        time.sleep(0.5)


def busy_outage(lab: Lab, d: Ecmpd, wan: str, idle: FamilyOutage) -> BusyOutage:
    """IPv4 load on `wan`'s line until its srtt is `SRTT`, then its IPv6 dead; heal."""
    with RouteWatch(lab, family=4) as w4, RouteWatch(lab, family=6) as w6:
        t0 = time.time()
        load = lab.load(wans=[wan], seconds=FAULT_LOAD, streams_per_wan=1)
        try:
            srtt = _wait_srtt(d, wan)
            t = time.time()
            was_in = wan in w6.now()
            lab.fault(wan, "dead", family=6)
            gone = w6.wait_out(wan, t, ECMPD_WAIT)
            time.sleep(LOAD_AFTER)  # the load goes on: a duration
        finally:
            try:
                streams = load.stop()
            finally:
                lab.heal(wan)
        t1 = time.time()
        out = None if not was_in else math.inf if gone is None else gone - t
        run = FaultOut("ecmpd IPv6", "IPv6-only dead, IPv4 load on its line", wan, t, out,
                       ECMPD_WAIT)
        res = BusyOutage(idle, run, srtt, stats.removals(w4.timeline(), t0, t1),
                         stats.removals(w6.timeline(), t0, t), streams)
    log = d.log()
    # from the load's start: a state change before the fault is the load's doing
    end = t + (out if out is not None and not math.isinf(out) else ECMPD_WAIT) + 0.1
    run.notes.append(underload.log_note(log, t, t0, end, f"{wan} IPv"))
    run.notes += why(log, res.left6_before, 6) + why(log, res.left4, 4)
    res.fell_before = falls(log, t0, t, 6, wan)
    return res


def busy_outages(lab: Lab, reps: int, hold: int) -> list[BusyOutage]:
    """`reps` runs, the WAN rotating: its IPv6 dead on its idle line (`hold` long-lived
    IPv4 flows, `ipv6.family_outage`), healed, then dead on its IPv4-saturated line."""
    out = []
    with shaped_dual(lab) as d:
        for k in range(reps):
            wan = NAMES[k % len(NAMES)]
            idle = family_outage(lab, wan, 6, hold)
            whole(lab)
            out.append(busy_outage(lab, d, wan, idle))
            whole(lab)
    return out
