"""Each figure: measure (with bench.flows, bench.perf, bench.underload) and turn the
numbers into table rows and detail lines.  `bench` is plan.Bench: its labs, plan and notes."""

from __future__ import annotations

import os
import statistics
import traceback
from typing import Any, Callable, TypeVar

from bench import dynamic, dynamicrows, flows, perf, stats, underload
from bench.plan import Bench
from bench.stats import Row, fmt_summary, meets, verdict

T = TypeVar("T")

SETUPS = (
    ("2", "2 WANs 1:1 (seed)", {"wlan1": 1, "wlan2": 1}),
    ("3", "3 WANs 1:2:3", {"wan1": 1, "wan2": 2, "wan3": 3}),
)
DIST_SETUPS = (
    ("2", "2 WANs 1:5 (the seed's weighted example)", {"wlan1": 1, "wlan2": 5}),
    ("3", "3 WANs 1:2:3", {"wan1": 1, "wan2": 2, "wan3": 3}),
)
MODES = {
    "dead": ("ISP dead", 1.0),
    "upstream": ("upstream dead behind a live gateway (ecmpd: probe targets beyond the "
                 "gateway; baseline: the gateway, as the seed)", 1.0),
    "carrier": ("carrier down", 0.3),
}


def _never_label(runs: list[flows.FaultRun]) -> str:
    lost = [r for r in runs if r.outage == float("inf")]
    return "never detected" if lost and all(r.took_out is False for r in lost) else "never recovered"


def _outage_cell(runs: list[flows.FaultRun]) -> str:
    values = [r.outage for r in runs]
    return fmt_summary(values, "s", 2, window=min(r.window for r in runs),
                       never=_never_label(runs))


def _broken_cell(runs: list[flows.FaultRun]) -> str:
    b = stats.summarize([float(r.broken) for r in runs])
    healthy = [r.healthy for r in runs]
    return (f"{b.min:.0f} / {b.median:.0f} / {b.max:.0f} of {min(healthy)}–{max(healthy)} "
            f"healthy (n={b.n})")


def _error(exc: BaseException) -> str:
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"ERROR: {type(exc).__name__}: {first}"


def fig12(bench: "Bench", want1: bool, want2: bool) -> dict[int, list[Row]]:
    """Figure 1 (every fault mode) and figure 2 (in the ``dead`` runs: long-lived flows
    kept across the fault and the heal).  A failing step gets an ERROR row; the others
    are still measured."""
    plan = bench.plan
    rows: dict[int, list[Row]] = {1: [], 2: []}
    for key, label, weights in SETUPS:
        lab = bench.lab(key)
        for mode in (MODES if want1 else ("dead",)):
            hold = plan.hold if want2 and mode == "dead" else 0
            what, target = MODES[mode]
            held = (f"{label}, {hold} long-lived flows (a byte every 100 ms), one WAN dead "
                    "then healed")
            bench.progress(f"  {label}: {mode}{f' with {hold} long-lived flows' if hold else ''}")
            try:
                mine = flows.ecmpd_fault_runs(lab, weights, mode, plan.reps, hold)
                base = flows.baseline_fault_runs(lab, weights, mode, plan.reps, hold)
            except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                bench.note(f"fig 1/2 {label} {mode}: {_error(exc)}")
                bench.details.extend(traceback.format_exc().splitlines())
                if want1:
                    rows[1].append(Row("1 new-flow outage", f"{label}, {what}", _error(exc),
                                       result="**ERROR**"))
                if hold:
                    rows[2].append(Row("2 healthy flows broken", held, _error(exc),
                                       result="**ERROR**"))
                continue
            for r in mine + base:
                bench.note(f"fig 1/2 {label}: {r.line()}")
            if want1:
                rows[1].append(Row(
                    "1 new-flow outage", f"{label}, {what}", _outage_cell(mine),
                    _outage_cell(base), f"≤ {target:.1f} s",
                    verdict(meets([r.outage for r in mine], target))))
            if hold:
                rows[2].append(Row("2 healthy flows broken", held, _broken_cell(mine),
                                   _broken_cell(base), "0",
                                   verdict(all(r.broken == 0 for r in mine))))
    return rows


def fig3(bench: "Bench") -> list[Row]:
    """Distribution of new flows by weight, l4 and l3; the baseline hashes L3."""
    plan = bench.plan
    rows = []
    for key, label, weights in DIST_SETUPS:
        lab = bench.lab(key)
        per: dict[str, list[tuple[float, dict]]] = {}
        for hash_ in ("l4", "l3"):
            per[hash_] = flows.ecmpd_distribution(lab, weights, hash_, plan.reps, plan.dist_flows)
        per["baseline"] = flows.baseline_distribution(lab, weights, plan.reps, plan.dist_flows)
        for name, runs in per.items():
            for dev, shares in runs:
                bench.note(f"fig 3 {label} {name}: max deviation {dev:.2f} pp, shares % {shares}")
        l4 = [d for d, _ in per["l4"]]
        l3 = [d for d, _ in per["l3"]]
        base = [d for d, _ in per["baseline"]]
        n = plan.dist_flows
        rows.append(Row("3 distribution vs weights", f"{label}, l4, {n} flows",
                        "max dev " + fmt_summary(l4, "pp", 2),
                        "n/a (the seed hashes src, dst only: see l3)", "± 3 pp",
                        verdict(meets(l4, 3.0))))
        rows.append(Row("3 distribution vs weights",
                        f"{label}, l3, {n} flows from {len(lab.clients)} client addresses "
                        "to 1 server", "max dev " + fmt_summary(l3, "pp", 2),
                        "max dev " + fmt_summary(base, "pp", 2), "— (l3: per address pair)",
                        "info"))
    return rows


def _gbit(values: list[float]) -> str:
    return f"{statistics.median(values) / 1e9:.2f} Gbit/s median"


def fig4(bench: "Bench") -> list[Row]:
    """Throughput: ecmpd (A) / one-masquerade NAT gateway (B), and A / plain routing (C)."""
    plan = bench.plan
    lab = bench.lab("2")
    tp = perf.throughput(lab, plan.tp_rounds, plan.tp_seconds)
    for i, (a, b, c) in enumerate(zip(tp.a, tp.b, tp.c), 1):
        bench.note(f"fig 4 round {i}: A ecmpd {a / 1e9:.3f}  B natgw {b / 1e9:.3f}  "
                   f"C plain {c / 1e9:.3f} Gbit/s  A/B {a / b:.3f}  A/C {a / c:.3f}")
    ab = [100 * x for x in stats.ratios(tp.a, tp.b)]
    ac = [100 * x for x in stats.ratios(tp.a, tp.c)]
    setup = (f"2 WANs (seed), LAN → internet, one iperf3 TCP stream, -t {plan.tp_seconds:g}, "
             f"{plan.tp_rounds} interleaved rounds (A B C / C B A)")
    return [
        Row("4 throughput, ecmpd / NAT gateway", setup,
            "A/B " + fmt_summary(ab, "%", 1) + f"; A {_gbit(tp.a)}",
            f"B (one default route + one masquerade rule): {_gbit(tp.b)}",
            "≥ 95 % (median of pair ratios)", verdict(meets(ab, 95.0, ">=", "median"))),
        Row("4 throughput, ecmpd / plain routing", setup + "; C: no nft, the ISP's BCP38 "
            "also admits the LAN subnet, return routes to the LAN",
            "A/C " + fmt_summary(ac, "%", 1), f"C (plain routing): {_gbit(tp.c)}", "—", "info"),
    ]


def fig5(bench: "Bench") -> list[Row]:
    """ecmpd's CPU and peak RSS at defaults, 2, 8 and 32 WANs, no traffic."""
    plan = bench.plan
    rows = []
    for key in ("2", "8", "32"):
        lab = bench.lab(key)
        u = perf.usage(lab, plan.cpu_seconds)
        if key != "2":
            bench.drop(key)
        bench.note(f"fig 5 {u.wans} WANs: CPU % per {plan.cpu_seconds / 3:.0f}s window "
                   f"{[round(x, 2) for x in u.cpu]}, VmHWM MB {[round(x, 1) for x in u.hwm_mb]}, "
                   f"VmRSS at the end {u.rss_mb:.1f} MB")
        setup = (f"{u.wans} WANs, defaults, all up, no traffic, {plan.cpu_seconds:.0f} s "
                 "in 3 windows")
        two = key == "2"
        rows.append(Row("5 CPU (% of a core)", setup, fmt_summary(u.cpu, "%", 2),
                        target="≤ 1 %" if two else "—",
                        result=verdict(meets(u.cpu, 1.0)) if two else "info"))
        rows.append(Row("5 peak RSS (VmHWM)", setup, fmt_summary(u.hwm_mb, "MB", 1),
                        target="≤ 40 MB" if two else "—",
                        result=verdict(meets(u.hwm_mb, 40.0)) if two else "info"))
    return rows


def fig6(bench: "Bench") -> list[Row]:
    """Reaction latency over `plan.events` dead/heal cycles on the seed lab."""
    plan = bench.plan
    lab = bench.lab("2")
    r = perf.reaction(lab, plan.events)
    bench.note(f"fig 6 inside (ms): {[round(x, 2) for x in r.inside]}")
    bench.note(f"fig 6 outside (ms): {[round(x, 2) for x in r.outside]}")
    setup = (f"2 WANs (seed), defaults, {len(r.inside)} DOWN decisions (ISP dead, then "
             "healed, alternating WANs)")
    rows = [Row("6 reaction: decision → route (ecmpd's stats.reaction_ms)", setup,
                fmt_summary(r.inside, "ms", 2) + f"; p99 {stats.percentile(r.inside, 99):.2f} ms",
                target="≤ 10 ms median", result=verdict(meets(r.inside, 10.0, "<=", "median")))]
    if r.outside:
        rows.append(Row("6 reaction, outside: log line (µs) → ip -ts monitor", setup,
                        fmt_summary(r.outside, "ms", 2)
                        + f"; p99 {stats.percentile(r.outside, 99):.2f} ms", result="info"))
    return rows


def fig7(bench: "Bench") -> list[Row]:
    """`ecmpctl status` wall time (a new process each time) and the request alone."""
    plan = bench.plan
    lab = bench.lab("2")
    st = perf.status_times(lab, plan.status_cli, plan.status_requests)
    bench.note(f"fig 7 ecmpctl status (ms): {[round(x, 1) for x in st.cli]}")
    bench.note(f"fig 7 status request with {st.entries} conntrack entries (ms): "
               f"{[round(x, 1) for x in st.loaded]}; ecmpd VmHWM {st.hwm_mb[0]:.1f} MB before, "
               f"{st.hwm_mb[1]:.1f} MB after")
    return [
        Row("7 `ecmpctl status` wall time", "2 WANs (seed), the installed ecmpctl command "
            "(a new process each time), text output", fmt_summary(st.cli, "ms", 1),
            result="info"),
        Row("7 status request alone", "2 WANs (seed), one request on the control socket "
            "from a running process", fmt_summary(st.request, "ms", 2), result="info"),
        Row("7 status request alone, loaded", f"as above, {st.entries} conntrack entries in "
            "the router (status counts them per WAN)", fmt_summary(st.loaded, "ms", 1)
            + f"; ecmpd VmHWM {st.hwm_mb[0]:.0f} → {st.hwm_mb[1]:.0f} MB", result="info"),
    ]


# ------------------------------------------------------------------ figure 9

LINES9 = "3 WANs north/south/west, lines 20/40/60 Mbit/s down, a quarter up"


def _count_cell(values: list[int], what: str = "") -> str:
    s = stats.summarize([float(v) for v in values])
    return f"{s.min:.0f} / {s.median:.0f} / {s.max:.0f}{what} (n={s.n})"


def _soak_cells(runs: list[underload.Soak]) -> tuple[str, str]:
    """(left the route, transfers broken) cells of soak runs."""
    per = {n: sum(underload.wan_counts(r.removals)[n] for r in runs) for n in underload.NAMES}
    left = _count_cell([len(r.removals) for r in runs]) + " — " + ", ".join(
        f"{n} {c}" for n, c in per.items())
    streams = [len(r.streams) for r in runs]
    broken = _count_cell([r.broken for r in runs], f" of {min(streams)}–{max(streams)} streams"
                         if min(streams) != max(streams) else f" of {streams[0]} streams")
    return left, broken


def _outs(runs: list[underload.FaultOut], attr: str = "out") -> list[float | None]:
    return [getattr(r, attr) for r in runs]


def _outs_cell(runs: list[underload.FaultOut], attr: str = "out") -> str:
    if attr == "stop_out":
        known = [r.stop_out for r in runs if r.stop_out is not None]
        missing = len(runs) - len(known)
        cell = stats.fmt_summary(known, "s", 2) if known else ""
        if missing:
            cell += ("; " if cell else "") + f"not measured in {missing}/{len(runs)} runs " \
                    "(not out, or out before the fault)"
        return cell
    return stats.fmt_fault_outs(_outs(runs), "s", 2, window=min(r.window for r in runs))


def _outs_ok(runs: list[underload.FaultOut], target: float, attr: str = "out") -> bool:
    values = [getattr(r, attr) for r in runs]
    return bool(values) and all(v is not None and v <= target for v in values)


def fig9(bench: "Bench") -> list[Row]:
    """Health under load (bench/underload.py): each part is measured even when another
    failed (which then gets an ERROR row)."""
    plan = bench.plan
    lab = bench.lab("9")
    rows: list[Row] = []
    soak, reps = plan.soak_seconds, plan.reps

    def attempt(label: str, fn: Callable[[], T]) -> T | None:
        bench.progress(f"  fig 9: {label}")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - report it, measure the rest
            bench.note(f"fig 9 {label}: {_error(exc)}")
            bench.details.extend(traceback.format_exc().splitlines())
            return None

    def err_row(figure: str, setup: str, what: str) -> Row:
        return Row(figure, setup, f"ERROR in {what} (see the details)", result="**ERROR**")

    # 1. saturation, 1 s and 2 s buffers
    sat: dict[float, tuple[underload.Soak | None, underload.Soak | None]] = {}
    fault_rows: list[Row] = []
    for buf in (1.0, 2.0):
        mine = attempt(f"saturation {buf:g} s, ecmpd",
                       lambda: underload.ecmpd_saturation(lab, buf, soak))
        base = attempt(f"saturation {buf:g} s, baseline",
                       lambda: underload.baseline_saturation(lab, buf, soak))
        sat[buf] = (mine, base)
        for r in (mine, base):
            if r is not None:
                bench.note(f"fig 9 {r.line()}")
        if buf == 1.0:  # 2 and 3 on the same 1 s lines, before the 2 s ones
            fault_rows = _fault_rows(bench, lab, attempt)
    for buf, (mine, base) in sat.items():
        setup = (f"{LINES9}, {buf:g} s buffers, download and upload saturated on every line "
                 f"for {soak:.0f} s (1 run each)")
        if mine is None:
            rows += [err_row("9 saturation: WANs out of the route", setup, "ecmpd's run")]
            continue
        m_left, m_broken = _soak_cells([mine])
        b_left, b_broken = _soak_cells([base]) if base is not None else ("ERROR", "ERROR")
        rows.append(Row("9 saturation: WANs out of the route", setup, m_left, b_left, "0",
                        verdict(not mine.removals)))
        rows.append(Row("9 saturation: transfers broken", setup + " (iperf3 streams, reno)",
                        m_broken, b_broken, "0",
                        verdict(bool(mine.streams) and mine.broken == 0)))
    rows += fault_rows

    # 8. CPU and RSS, 3 WANs x 2 targets, idle
    setup8 = (f"3 WANs × 2 targets (gateway + upstream), defaults, idle lines, "
              f"{plan.cpu_seconds:.0f} s in 3 windows")
    u = attempt("CPU, 3 WANs x 2 targets",
                lambda: perf.usage(lab, plan.cpu_seconds, config=underload.ecmpd_config(lab)))
    if u is None:
        rows.append(err_row("9 CPU (% of a core)", setup8, "the CPU run"))
    else:
        bench.note(f"fig 9 CPU 3 WANs x 2 targets: CPU % per window "
                   f"{[round(x, 2) for x in u.cpu]}, VmHWM MB {[round(x, 1) for x in u.hwm_mb]}, "
                   f"VmRSS at the end {u.rss_mb:.1f} MB; host load average (1 min) at the end "
                   f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        rows.append(Row("9 CPU (% of a core)", setup8, fmt_summary(u.cpu, "%", 2),
                        target="≤ 1 %", result=verdict(meets(u.cpu, 1.0))))
        rows.append(Row("9 peak RSS (VmHWM)", setup8, fmt_summary(u.hwm_mb, "MB", 1),
                        target="≤ 40 MB", result=verdict(meets(u.hwm_mb, 40.0))))

    # 4, 6, 7, 5: idle lines, one daemon; then the baseline's loss run
    idle = attempt("idle lines: upstream, carrier, flap, flood, loss (ecmpd)",
                   lambda: underload.ecmpd_idle(lab, reps, plan.flood_seconds, soak))
    base_loss = attempt("loss, baseline", lambda: underload.baseline_loss(lab, soak))
    rows += _idle_rows(bench, idle, base_loss, soak)
    bench.drop("9")
    return rows


def _fault_rows(bench: "Bench", lab: Any, attempt: Callable[..., Any]) -> list[Row]:
    """Rows 2 and 3: a dead ISP on the 1 s lines, its own line or the others loaded."""
    reps = bench.plan.reps
    rows = []
    for own in (True, False):
        tag = "own" if own else "others"
        mine = attempt(f"dead ISP, {tag} saturated, ecmpd",
                       lambda: underload.ecmpd_dead_on_load(lab, own, reps))
        base = attempt(f"dead ISP, {tag} saturated, baseline",
                       lambda: underload.baseline_dead_on_load(lab, own, reps))
        for r in (mine or []) + (base or []):
            bench.note(f"fig 9 {r.line()}")
        loaded = (f"its own line loaded both ways until its download queue is half full (at "
                  f"most {underload.FILL_MAX:.0f} s; the fill at the fault: details)" if own else
                  f"the two other lines loaded both ways for {underload.FILL_OTHERS:.0f} s, "
                  "its own idle")
        setup = (f"{LINES9}, 1 s buffers, {loaded}, then its ISP dead (silent both ways); "
                 "the dead WAN rotates")
        name = "9 dead ISP, own line saturated" if own else "9 dead ISP, other lines saturated"
        if mine is None:
            rows.append(Row(f"{name}: fault → out", setup, "ERROR (see the details)",
                            result="**ERROR**"))
            continue

        def bcell(attr: str = "out") -> str:
            return _outs_cell(base, attr) if base else "ERROR (see the details)"

        target = 1.5 if own else 1.0
        rows.append(Row(f"{name}: fault → out of the route", setup, _outs_cell(mine),
                        bcell(), f"≤ {target:.1f} s", verdict(_outs_ok(mine, target))))
        if own:
            rows.append(Row(f"{name}: line stopped delivering → out of the route",
                            setup + "; stop = the last rise of the router's WAN rx_packets "
                            "(polled every 20 ms)", _outs_cell(mine, "stop_out"),
                            bcell("stop_out"), "≤ 0.5 s",
                            verdict(_outs_ok(mine, 0.5, "stop_out"))))
    return rows


def _idle_rows(bench: "Bench", idle: Any, base_loss: Any, soak: float) -> list[Row]:
    rows: list[Row] = []
    fig1 = "not run here: figure 1 (idle lines) compares it"
    if idle is None:
        return [Row("9 idle lines (upstream, carrier, flap, flood, loss)", "idle lines",
                    "ERROR (see the details)", result="**ERROR**")]
    for part, text in idle.errors.items():
        bench.note(f"fig 9 idle {part}: ERROR {text}")
    for r in idle.upstream + idle.carrier + idle.flap_dead:
        bench.note(f"fig 9 {r.line()}")
    for f in idle.floods:
        bench.note(f"fig 9 {f.line()}")
    if idle.loss is not None:
        bench.note(f"fig 9 {idle.loss.line()}")
    if base_loss is not None:
        bench.note(f"fig 9 {base_loss.line()}")

    def fault_row(name: str, runs: list[underload.FaultOut], part: str, setup: str,
                  target: float, base: str) -> Row:
        if part in idle.errors or not runs:
            return Row(name, setup, f"ERROR: {idle.errors.get(part, 'no run')}",
                       result="**ERROR**")
        return Row(name, setup, _outs_cell(runs), base, f"≤ {target:.1f} s",
                   verdict(_outs_ok(runs, target)))

    idle_setup = "3 WANs north/south/west, idle unshaped lines, targets gateway + upstream"
    rows.append(fault_row("9 upstream dead behind a live gateway: fault → out", idle.upstream,
                          "upstream", idle_setup + ", no quorum key (majority: 2)", 1.0, fig1))
    rows.append(fault_row("9 carrier down: fault → out", idle.carrier, "carrier", idle_setup,
                          0.3, fig1))
    rows.append(fault_row("9 carrier flap, then ISP dead: fault → out", idle.flap_dead, "flap",
                          idle_setup + "; carrier down, healed, back UP, then the ISP dead",
                          1.0, "—"))
    if "flood" in idle.errors or not idle.floods:
        rows.append(Row("9 ICMP flood at a WAN address", idle_setup,
                        f"ERROR: {idle.errors.get('flood', 'no run')}", result="**ERROR**"))
    else:
        fl = idle.floods
        reached = stats.summarize([f.router_pps / 1000 for f in fl])
        fsetup = (f"{idle_setup}; {underload.FLOOD_PPS // 1000}k echo replies/s (random "
                  f"identifier) at the WAN address for {fl[0].seconds:.0f} s; reached the "
                  f"router: {reached.min:.0f} / {reached.median:.0f} / {reached.max:.0f} "
                  "kpps; the flooded WAN rotates")
        rows.append(Row("9 ICMP flood: WANs out of the route", fsetup,
                        _count_cell([len(f.removals) for f in fl]), "—", "0",
                        verdict(all(not f.removals for f in fl))))
        cpu = [f.cpu_pct for f in fl]
        rows.append(Row("9 ICMP flood: daemon CPU (% of a core)", fsetup,
                        fmt_summary(cpu, "%", 2), "—", "≤ 10 %", verdict(meets(cpu, 10.0))))
    lsetup = (f"{idle_setup}; {underload.LOSS_PCT:g} % random loss each way on every line for "
              f"{soak:.0f} s (1 run each)")
    if idle.loss is None:
        rows.append(Row("9 random loss: WANs out of the route", lsetup,
                        f"ERROR: {idle.errors.get('loss', 'no run')}", result="**ERROR**"))
    else:
        b = _soak_cells([base_loss])[0] if base_loss is not None else "ERROR"
        rows.append(Row("9 random loss: WANs out of the route", lsetup,
                        _soak_cells([idle.loss])[0], b, "0", verdict(not idle.loss.removals)))
    return rows


# ------------------------------------------------------------------ figure 10


def fig10(bench: "Bench") -> list[Row]:
    """Dynamic WANs (bench/dynamic.py): a DHCP gateway move (old gateway gone at once,
    and kept until the renewal), a PPP reconnect with a new address, a DHCP client's
    metric-0 route in main; one saturated-line move."""
    lab = bench.lab("10")
    try:
        res = dynamic.measure(lab, bench.plan.reps, progress=bench.progress)
    finally:
        bench.drop("10")
    for line in dynamicrows.details(res):
        bench.note(line)
    return dynamicrows.rows(res, bench.plan.reps)
