"""Figure 11's table rows (IPv6 next to IPv4, bench/ipv6.py): `fig11` measures, `rows`
turns the measurements into rows (pure).  The baseline column of every row is ecmpd's
IPv4 measured in the same run (the same daemon where the row allows it)."""

from __future__ import annotations

import textwrap
import traceback
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from bench import ipv6
from bench.figures import _broken_cell, _count_cell, _error, _outage_cell, _soak_cells
from bench.plan import CLIENTS, Plan
from bench.stats import Row, fmt_summary, meets, verdict

if TYPE_CHECKING:
    from bench.plan import Bench

T = TypeVar("T")

LAB = "3 dual-stack WANs north/south/west"
BASE = "; baseline column: ecmpd's IPv4 in the same run"
MODES = {
    "dead": ("ISP dead (both versions)", 1.0),
    "upstream": ("upstream dead behind a live gateway (probe targets beyond the gateway: "
                 "the ISP's upstream and the inet server, of each version)", 1.0),
    "carrier": ("carrier down", 0.3),
}
"""Mode -> (what, target in s)."""


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


def soak_rows(soak: ipv6.DualSoak | None, error: str | None, seconds: float) -> list[Row]:
    setup = (f"{LAB}, lines 20/40/60 Mbit/s down, a quarter up, 1 s buffers; iperf3 (reno) "
             "download + upload per line and version (IPv4 and IPv6 load at once), "
             f"{seconds:.0f} s, 2 targets per version (1 run){BASE}")
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


def cpu_row(usage: dict, error: str | None, seconds: float) -> Row:
    setup = (f"3 WANs × 2 targets per version (gateway + the ISP's upstream), defaults, "
             f"idle lines, {seconds:.0f} s in 3 windows; baseline column: the same lab with "
             "an IPv4-only config (3 WANs × 2 targets), same run")
    if 6 not in usage or 4 not in usage:
        return _err("11 CPU, dual-stack (% of a core)", setup, error or "no run")
    six, four = usage[6].cpu, usage[4].cpu
    return Row("11 CPU, dual-stack (% of a core)", setup, fmt_summary(six, "%", 2),
               "IPv4 only: " + fmt_summary(four, "%", 2), "≤ 1.5 %", verdict(meets(six, 1.5)))


def rows(res: ipv6.Fig11, plan: Plan) -> list[Row]:
    """Figure 11's rows from its measurements."""
    e = res.errors.get
    return [*fault_rows(res.faults, res.errors, plan.hold),
            dist_row(res.dist, e("dist"), plan.dist_flows),
            outage_row(res.outages, e("outages"), plan.hold),
            *soak_rows(res.soak, e("soak"), plan.soak_seconds),
            cpu_row(res.usage, e("cpu"), plan.cpu_seconds)]


def fig11(bench: "Bench") -> list[Row]:
    """Measure figure 11 in its own lab (each part even when another failed)."""
    plan = bench.plan
    lab = bench.lab("11")
    res = ipv6.Fig11()

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
        res.soak = attempt("soak", lambda: ipv6.saturation(lab, plan.soak_seconds))
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
        "(lab.load(family=6): iperf3 -6 to 2001:db8:feed::10), both routes watched.  CPU: "
        "2 targets per version and WAN (gateway + upstream, majority), then the same lab "
        "IPv4-only.", 88) + "\n\n"
