"""Each figure: measure (with bench.flows / bench.perf) and turn the numbers into table
rows and detail lines.  `bench` is run.Bench: its labs, plan and notes."""

from __future__ import annotations

import statistics
import traceback
from typing import TYPE_CHECKING

from bench import flows, perf, stats
from bench.stats import Row, fmt_summary, meets, verdict

if TYPE_CHECKING:
    from bench.run import Bench

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
