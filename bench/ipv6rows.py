"""Figure 11's table rows (IPv6 next to IPv4, bench/ipv6.py and bench/ipv6load.py):
`fig11` measures into a `Fig11`, `rows` turns the measurements into rows (pure).  The
baseline column of a row is ecmpd's IPv4 measured in the same run (the same daemon
where the row allows it), except for the IPv6-only outage on a saturated line, whose
baseline is the same outage on the idle line (same daemon, same run)."""

from __future__ import annotations

import textwrap
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from bench import ipv6, ipv6load, perf
from bench.figures import (_broken_cell, _count_cell, _error, _outage_cell, _outs_cell, _outs_ok,
                           _soak_cells)
from bench.plan import CLIENTS, Plan
from bench.stats import Row, fmt_summary, meets, verdict

if TYPE_CHECKING:
    from bench.plan import Bench

T = TypeVar("T")

LAB = "3 dual-stack WANs north/south/west"
LINES = (f"{LAB}, lines 20/40/60 Mbit/s down, a quarter up, 1 s buffers; 2 targets per "
         "version")
BASE = "; baseline column: ecmpd's IPv4 in the same run"
MODES = {
    "dead": ("ISP dead (both versions)", 1.0),
    "upstream": ("upstream dead behind a live gateway (probe targets beyond the gateway: "
                 "the ISP's upstream and the inet server, of each version)", 1.0),
    "carrier": ("carrier down", 0.3),
}
"""Mode -> (what, target in s)."""


@dataclass
class Fig11:
    """Everything figure 11 measured (`fig11`); a part that failed has its error in
    `errors`."""

    faults: dict[str, list[ipv6.DualRun]] = field(default_factory=dict)
    """Mode -> runs."""
    dist: dict[int, list[tuple[float, dict]]] = field(default_factory=dict)
    outages: list[ipv6.FamilyOutage] = field(default_factory=list)
    soak: ipv6load.DualSoak | None = None
    usage: dict[int, perf.Usage] = field(default_factory=dict)
    ramps: ipv6load.Ramps | None = None
    busy: list[ipv6load.BusyOutage] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Part ("dead", "upstream", "carrier", "dist", "outages", "soak", "cpu", "ramps",
    "busy") -> error."""

    def details(self) -> list[str]:
        out = []
        for mode, runs in self.faults.items():
            out += [f"fig 11 {mode}: {r.line()}" for r in runs]
        for f, runs in self.dist.items():
            out += [f"fig 11 distribution IPv{f}: max deviation {dev:.2f} pp, shares % {sh}"
                    for dev, sh in runs]
        out += [f"fig 11 {o.line()}" for o in self.outages]
        for part in (self.soak, self.ramps, *self.busy):
            out += [f"fig 11 {x}" for x in part.lines()] if part is not None else []
        for f, u in self.usage.items():
            out.append(f"fig 11 CPU {'dual-stack' if f == 6 else 'IPv4-only'}: % per window "
                       f"{[round(x, 2) for x in u.cpu]}, VmHWM MB "
                       f"{[round(x, 1) for x in u.hwm_mb]}")
        out += [f"fig 11 {part}: ERROR {err}" for part, err in self.errors.items()]
        return out


def route_cell(values: Sequence[float | None]) -> str:
    """Seconds from the fault to the WAN leaving the kernel route (None: not seen)."""
    seen = [v for v in values if v is not None]
    cell = "kernel route " + (fmt_summary(seen, "s", 2) if seen else "never changed")
    missing = len(values) - len(seen)
    return cell + (f", not out in {missing}/{len(values)} runs" if seen and missing else "")


def _err(figure: str, setup: str, error: str) -> Row:
    return Row(figure, setup, f"ERROR: {error}", result="**ERROR**")


def fault_rows(faults: dict[str, list[ipv6.DualRun]], errors: dict[str, str],
               hold: int) -> list[Row]:
    """Per mode the IPv6 new-flow outage; for ``dead`` runs with long-lived flows, the
    healthy flows broken."""
    out = []
    for mode, (what, target) in MODES.items():
        setup = f"{LAB} 1:2:3, defaults, {what}, new flows of each version every 20 ms{BASE}"
        runs = faults.get(mode)
        if not runs:
            out.append(_err("11 IPv6 new-flow outage", setup, errors.get(mode, "no run")))
            continue
        six = [r.runs[6] for r in runs]
        four = [r.runs[4] for r in runs]
        out.append(Row(
            "11 IPv6 new-flow outage", setup,
            f"{_outage_cell(six)}; {route_cell([r.route_out[6] for r in runs])}",
            f"IPv4: {_outage_cell(four)}; {route_cell([r.route_out[4] for r in runs])}",
            f"≤ {target:.1f} s", verdict(meets([r.outage for r in six], target))))
        if mode == "dead" and hold:
            out.append(Row(
                "11 healthy IPv6 flows broken",
                f"{LAB} 1:2:3, {hold} long-lived flows of each version (a byte every "
                f"100 ms), one WAN's ISP dead then healed{BASE}",
                _broken_cell(six), f"IPv4: {_broken_cell(four)}", "0",
                verdict(all(r.broken == 0 and r.healthy > 0 for r in six))))
    return out


def dist_row(dist: dict[int, list[tuple[float, dict]]], error: str | None, count: int) -> Row:
    setup = (f"{LAB} 1:2:3, l4, {count} new flows per version from {CLIENTS + 1} client "
             f"addresses{BASE}")
    if not dist.get(6) or not dist.get(4):
        return _err("11 IPv6 distribution vs weights", setup, error or "no run")
    six, four = [d for d, _ in dist[6]], [d for d, _ in dist[4]]
    return Row("11 IPv6 distribution vs weights", setup, "max dev " + fmt_summary(six, "pp", 2),
               "IPv4: max dev " + fmt_summary(four, "pp", 2), "± 3 pp",
               verdict(meets(six, 3.0)))


def _survivors(runs: Sequence[ipv6.FamilyOutage]) -> str:
    """What the surviving version's flows through the WAN saw in `runs` (one died)."""
    other, died = runs[0].other, runs[0].family
    held = [r.held for r in runs]
    span = f"{min(held)}–{max(held)}" if min(held) != max(held) else f"{held[0]}"
    new_ok = sum(r.new_ok for r in runs)
    new_total = sum(r.new_total for r in runs)
    on_wan = sum(r.new_on_wan for r in runs)
    outs = [r.out for r in runs]
    return (f"IPv{other} long-lived flows through the WAN broken "
            f"{_count_cell([r.broken for r in runs], f' of {span}')}, on every WAN "
            f"{sum(r.broken_all for r in runs)}; WAN out of the IPv{other} route "
            f"{sum(r.left_other for r in runs)}x; new IPv{other} flows greeted "
            f"{new_ok}/{new_total} ({on_wan} through the WAN); its IPv{died} left the "
            f"{route_cell(outs).removeprefix('kernel ')}")


def outage_row(outages: Sequence[ipv6.FamilyOutage], error: str | None, hold: int) -> Row:
    setup = (f"{LAB} 1:2:3, one version of one WAN dead (the other works), "
             f"{hold} long-lived flows and {ipv6.NEW_DURING} new flows of the other version; "
             f"IPv6 column: IPv4 dead, IPv6's flows; baseline column: IPv6 dead, IPv4's "
             "flows (same run)")
    v4_dead = [o for o in outages if o.family == 4]
    v6_dead = [o for o in outages if o.family == 6]
    if not v4_dead or not v6_dead:
        return _err("11 one version down: the other's flows broken", setup, error or "no run")
    return Row("11 one version down: the other's flows broken", setup, _survivors(v4_dead),
               _survivors(v6_dead), "0 and 0",
               verdict(all(o.clean for o in outages)))


def soak_rows(soak: ipv6load.DualSoak | None, error: str | None, seconds: float) -> list[Row]:
    setup = (f"{LINES}; iperf3 (reno) download + upload per line and version (IPv4 and IPv6 "
             f"load at once), {seconds:.0f} s (1 run){BASE}")
    if soak is None:
        return [_err("11 saturation, IPv4+IPv6 load: WANs out of the route", setup,
                     error or "no run")]
    s6, s4 = soak.soaks[6], soak.soaks[4]
    (l6, b6), (l4, b4) = _soak_cells([s6]), _soak_cells([s4])
    return [
        Row("11 saturation, IPv4+IPv6 load: WANs out of the route", setup,
            f"IPv6 route: {l6}", f"IPv4 route: {l4}", "0 (both)",
            verdict(not s6.removals and not s4.removals)),
        Row("11 saturation, IPv4+IPv6 load: transfers broken", setup,
            f"IPv6 streams: {b6}", f"IPv4 streams: {b4}", "0 (both)",
            verdict(bool(s6.streams) and bool(s4.streams) and s6.broken == 0
                    and s4.broken == 0)),
    ]


RAMPS = "11 idle IPv6 next to IPv4 saturation"


def ramp_rows(r: ipv6load.Ramps | None, error: str | None, count: int) -> list[Row]:
    """What left each route while IPv4-only load came and went (n = ramps), and whether
    the load's transfers broke."""
    setup = (f"{LINES}; IPv4-only iperf3 (reno) download + upload per line, started and "
             f"stopped {count}x ({ipv6load.RAMP_LOAD:g} s load, {ipv6load.RAMP_IDLE:g} s "
             "idle: the queue's ramp-up and decay), IPv6 without traffic of its own; n = "
             f"ramps, counted over the load and the idle after it{BASE}")
    if r is None or not r.per[4]:
        return [_err(f"{RAMPS}: WANs out of the route", setup, error or "no run")]
    (l6, _), (l4, b4) = _soak_cells(r.per[6]), _soak_cells(r.per[4])
    peak = {f: "; peak srtt of the least queued line " + fmt_summary(r.peaks[f], "s", 2)
            + "; WANs fallen to FALLING (a failed round) " + _count_cell(r.falls[f])
            for f in ipv6.FAMILIES}
    streams = r.per[4]
    return [
        Row(f"{RAMPS}: WANs out of the route", setup, f"IPv6 route: {l6}{peak[6]}",
            f"IPv4 route: {l4}{peak[4]}", "0 (both)",
            verdict(not any(s.removals for f in ipv6.FAMILIES for s in r.per[f]))),
        Row(f"{RAMPS}: transfers broken", setup,
            "IPv6: none to break (idle by design: one IPv6 packet from beyond the gateway "
            "proves the line alive to its prober)", f"IPv4 load streams: {b4}", "0",
            verdict(all(s.streams for s in streams) and all(s.broken == 0 for s in streams))),
    ]


BUSY = "11 IPv6-only outage on an IPv4-saturated line"


def busy_rows(runs: Sequence[ipv6load.BusyOutage], error: str | None, hold: int) -> list[Row]:
    """How long the WAN's IPv6 took to leave the route with IPv4 queueing on its line,
    against the same outage on the idle line; what the IPv4 of the WAN suffered."""
    setup = (f"{LINES}; per run one WAN (rotating): IPv4-only iperf3 download + upload on "
             f"its line until its IPv4 srtt ≥ {ipv6load.SRTT:g} s, then lab.fault(wan, "
             f"'dead', family=6), the load going on {ipv6load.LOAD_AFTER:g} s after the "
             "removal; baseline column: the same IPv6-only outage of the same WAN on its "
             f"idle line just before (no queue; {hold} long-lived IPv4 flows, as the "
             "one-version row), same daemon")
    if not runs:
        return [_err(f"{BUSY}: IPv6 out of the route", setup, error or "no run")]
    busy = [r.busy for r in runs]
    ratios = [x for r in runs if (x := r.ratio) is not None]
    cold = sum(1 for r in runs if not r.saturated)
    srtt = {f: fmt_summary([r.srtt[f] for r in runs], "s", 2) for f in ipv6.FAMILIES}
    out = (f"saturated line: {_outs_cell(busy)}; ratio to the idle line (same WAN) "
           f"{fmt_summary(ratios, '×', 1)}; srtt at the fault IPv4 {srtt[4]}, IPv6 {srtt[6]}; "
           f"IPv6 fell to FALLING under the load before the fault in "
           f"{sum(1 for r in runs if r.fell_before)}/{len(runs)} runs"
           + (f"; IPv4 srtt < {ipv6load.SRTT:g} s at the fault in {cold}/{len(runs)} runs "
              "(the load did not queue: no verdict)" if cold else ""))
    left4 = _count_cell([len(r.left4) for r in runs])
    broken = _count_cell([r.broken for r in runs], f" of {len(runs[0].streams)}")
    return [
        Row(f"{BUSY}: IPv6 out of the route", setup, out,
            f"idle line: {route_cell([r.idle.out for r in runs])}", "≤ 4 s",
            verdict(None if cold else _outs_ok(busy, 4.0))),
        Row(f"{BUSY}: IPv4 hurt", setup,
            f"WAN out of the IPv4 route {left4}; IPv4 load streams broken {broken}; WAN out "
            f"of the IPv6 route before the fault {sum(len(r.left6_before) for r in runs)}x",
            f"idle line: {_survivors([r.idle for r in runs])}", "0 (both)",
            verdict(all(not r.left4 and not r.left6_before and r.broken == 0
                        and r.idle.clean for r in runs))),
    ]


def cpu_row(usage: dict, error: str | None, seconds: float) -> Row:
    setup = (f"3 WANs × 2 targets per version (gateway + the ISP's upstream), defaults, "
             f"idle lines, {seconds:.0f} s in 3 windows; baseline column: the same lab with "
             "an IPv4-only config (3 WANs × 2 targets), same run")
    if 6 not in usage or 4 not in usage:
        return _err("11 CPU, dual-stack (% of a core)", setup, error or "no run")
    six, four = usage[6].cpu, usage[4].cpu
    return Row("11 CPU, dual-stack (% of a core)", setup, fmt_summary(six, "%", 2),
               "IPv4 only: " + fmt_summary(four, "%", 2), "≤ 1.5 %", verdict(meets(six, 1.5)))


def rows(res: Fig11, plan: Plan) -> list[Row]:
    """Figure 11's rows from its measurements."""
    e = res.errors.get
    return [*fault_rows(res.faults, res.errors, plan.hold),
            dist_row(res.dist, e("dist"), plan.dist_flows),
            outage_row(res.outages, e("outages"), plan.hold),
            *soak_rows(res.soak, e("soak"), plan.soak_seconds),
            cpu_row(res.usage, e("cpu"), plan.cpu_seconds),
            *ramp_rows(res.ramps, e("ramps"), plan.ramps),
            *busy_rows(res.busy, e("busy"), plan.hold)]


def fig11(bench: "Bench") -> list[Row]:
    """Measure figure 11 in its own lab (each part even when another failed)."""
    plan = bench.plan
    lab = bench.lab("11")
    res = Fig11()

    def attempt(part: str, fn: Callable[[], T]) -> T | None:
        bench.progress(f"  fig 11: {part}")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - report it, measure the rest
            res.errors[part] = _error(exc).removeprefix("ERROR: ")
            bench.details.extend(traceback.format_exc().splitlines())
            for w in lab.spec.wans:
                lab.heal(w.name)
            return None

    try:
        res.dist = attempt("dist", lambda: ipv6.distributions(
            lab, plan.reps, plan.dist_flows)) or {}
        for mode in MODES:
            runs = attempt(mode, lambda: ipv6.fault_runs(
                lab, mode, plan.reps, plan.hold if mode == "dead" else 0))
            if runs is not None:
                res.faults[mode] = runs
        res.outages = attempt("outages", lambda: ipv6.family_outages(
            lab, plan.reps, plan.hold)) or []
        res.usage = attempt("cpu", lambda: ipv6.cpu(lab, plan.cpu_seconds)) or {}
        res.soak = attempt("soak", lambda: ipv6load.saturation(lab, plan.soak_seconds))
        res.ramps = attempt("ramps", lambda: ipv6load.ramps(lab, plan.ramps))
        res.busy = attempt("busy", lambda: ipv6load.busy_outages(
            lab, plan.reps, plan.hold)) or []
    finally:
        bench.drop("11")
    for line in res.details():
        bench.note(line)
    return rows(res, plan)


def note() -> str:
    """How to read figure 11 (for the report)."""
    return textwrap.fill(
        "Figure 11 (bench/ipv6.py): IPv6 next to IPv4 in one dual-stack lab of 3 WANs "
        "north/south/west (each with its IPv4 subnet and 2001:db8:<i>::/64, the ISP's ::1 "
        "the IPv6 gateway; NAT66 on the router), one dual-stack ecmpd at defaults per part; "
        "the baseline column is ecmpd's IPv4, measured in the same run (the seed has no "
        "IPv6).  New flows of both versions run side by side across each fault (one every "
        "20 ms each, outage as figure 1), and when the WAN left each version's route is "
        "read from the kernel (ip -4/-6 -ts monitor route).  One version down: "
        "lab.fault(wan, 'dead', family=6) then family=4, the WAN rotating; the other "
        "version's long-lived flows through it must not break, nor its new flows fail.  "
        "Saturation: figure 9's lines (1 s buffers) with IPv4 and IPv6 iperf3 load at once "
        "(lab.load(family=6): iperf3 -6 to 2001:db8:feed::10), both routes watched.  Idle "
        "IPv6 next to IPv4 saturation (bench/ipv6load.py): the same lines, IPv4-only load "
        "started and stopped, no IPv6 traffic at all (its probes wait in the IPv4 queue "
        "with nothing of their own version to prove the line alive); \"peak srtt\" is the "
        "largest srtt sampled (every 2 s) on the least queued line, per ramp.  IPv6-only "
        "outage on an IPv4-saturated line: the WAN's line loaded with IPv4 until its IPv4 "
        "srtt is 0.3 s, then its IPv6 dead; the baseline is the same outage of the same WAN "
        "on its idle line just before, with the same daemon; the ratio is per run.  CPU: "
        "2 targets per version and WAN (gateway + upstream, majority), then the same lab "
        "IPv4-only.", 88) + "\n\n"
