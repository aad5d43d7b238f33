#!/usr/bin/env python3
"""ecmpd's benchmark: one table, every figure measured in this run, in network-namespace
labs, against a baseline measured in the same lab (bench/baseline.py: the seed's
MikroTik export translated literally to Linux, with a check-gateway=ping emulation).

    sudo .venv/bin/python bench/run.py [--quick] [--only 1,4] [--reps N] [--out FILE]

Figures: 1 new-flow outage per fault mode, 2 healthy long-lived flows broken across a
fault and heal, 3 distribution of new flows by weight, 4 forwarding throughput, 5 CPU and
peak RSS, 6 reaction latency, 7 ``ecmpctl status`` wall time, 9 health under load
(saturated lines, a dead ISP on a busy line, loss, a carrier flap, an ICMP flood, CPU with
two targets per WAN; bench/underload.py; ~13 min of the run), 10 dynamic WANs (a DHCP
gateway move, a PPP reconnect with a new address, a DHCP client's route in main;
bench/dynamic.py), 11 IPv6 next to IPv4 (one dual-stack lab: new-flow outage per fault
mode, healthy flows broken, distribution, one version down while the other works,
saturated lines with IPv4+IPv6 load, CPU dual-stack vs IPv4-only, an idle IPv6 next to
IPv4 load started and stopped, an IPv6-only outage on an IPv4-saturated line against the
idle line; the baseline column is ecmpd's IPv4 in the same run; bench/ipv6.py and
bench/ipv6load.py; 8 min with 3 repetitions, ``--quick --only 11`` 3.3 min; its table:
bench/results-ipv6.md), 12 tiers (wlan1, wlan2 at tier 1, lte at tier 2: the takeover when
tier 1 dies, the backup's share while tier 1 works, failback with keep and flush; the
baseline column is an untiered ecmpd in the same run; bench/tiers.py; 5.5 min with 3
repetitions; its table: bench/results-tiers.md), 13 forwarding cost (kernel CPU per
forwarded packet at 20 000 pps over many flows, interleaved: a bare kernel router, the
seed's recipe, ecmpd with 0 and 3 sets of 1 000 policies; bench/fwcost.py; 7 min with 5
rounds; its table: bench/results-fwcost.md), 15 start-up time (import of ecmpd.daemon with and
without bytecode, exec to the control socket, to each start phase and to READY=1, against
``python -c pass``; bench/startup.py, which also runs alone), 16 HA pair takeover (two
routers with keepalived + conntrackd: the master killed under 100 NATed flows, new-flow
outage, flows broken, WAN and ct mark kept; the baseline column is a takeover without
conntrackd; bench/hapair.py, which also runs alone; ~1 min).
Row "log" reports the daemons' ERROR lines.
The table is printed and written to bench/results.md with the command line and the date.
Needs root; touches nothing outside the namespaces it creates (and deletes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import figures, fwcostrows, ipv6rows, policyshares, routers, stats, tiersrows  # noqa: E402,E501
from bench import hapair, startup, underload  # noqa: E402
from bench.plan import CLIENTS, FULL, QUICK, Bench, Plan  # noqa: E402

RESULTS = ROOT / "bench" / "results.md"
FIGURES = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16)
"""Figure numbers (there is no figure 8)."""
LOG_ROW = 100
"""The key of the row that reports the daemons' ERROR log lines (sorts last)."""


def parse_only(text: str | None) -> list[int]:
    """"1,4" or "1 4" -> [1, 4]; None -> every figure."""
    if not text:
        return list(FIGURES)
    out = sorted({int(x) for x in text.replace(",", " ").split()})
    bad = [x for x in out if x not in FIGURES]
    if bad:
        raise ValueError(f"no figure {bad[0]} (figures are 1..7 and 9..16)")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 repetition, fewer rounds and events, 15 s of CPU, "
                        "15 s soaks and 5 s floods (figure 9), 2 load ramps (figure 11)")
    p.add_argument("--only", help="figure numbers to measure, e.g. 1,4 (default: all)")
    p.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    p.add_argument("--out", default=str(RESULTS), help="where to write the table")
    return p


def run_figures(bench: Bench, only: list[int]) -> dict[int, list[stats.Row]]:
    """Measure the figures in `only`; a figure that fails gets an ERROR row."""
    rows: dict[int, list[stats.Row]] = {}
    steps: list[tuple[tuple[int, ...], Callable[[], dict[int, list[stats.Row]]]]] = [
        ((3,), lambda: {3: figures.fig3(bench)}),
        ((1, 2), lambda: figures.fig12(bench, 1 in only, 2 in only)),
        ((6,), lambda: {6: figures.fig6(bench)}),
        ((7,), lambda: {7: figures.fig7(bench)}),
        ((4,), lambda: {4: figures.fig4(bench)}),
        ((5,), lambda: {5: figures.fig5(bench)}),
        ((9,), lambda: {9: figures.fig9(bench)}),
        ((10,), lambda: {10: figures.fig10(bench)}),
        ((11,), lambda: {11: ipv6rows.fig11(bench)}),
        ((12,), lambda: {12: tiersrows.figure12(bench)}),
        ((13,), lambda: {13: fwcostrows.figure13(bench)}),
        ((14,), lambda: {14: policyshares.figure14(bench)}),
        ((15,), lambda: {15: startup.figure15(bench)}),
        ((16,), lambda: {16: hapair.figure16(bench)}),
    ]
    for numbers, step in steps:
        wanted = [n for n in numbers if n in only]
        if not wanted:
            continue
        bench.progress(f"figure {'+'.join(map(str, wanted))}")
        t = time.monotonic()
        try:
            rows.update({k: v for k, v in step().items() if k in wanted})
        except Exception as exc:  # noqa: BLE001 - one figure's failure must not hide the rest
            bench.note(f"figure {wanted}: ERROR {type(exc).__name__}: {exc}")
            bench.details.extend(traceback.format_exc().splitlines())
            for n in wanted:
                rows[n] = [stats.Row(str(n), "—", f"ERROR: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                                     result="**ERROR**")]
        bench.progress(f"figure {'+'.join(map(str, wanted))} took {time.monotonic() - t:.0f}s")
    return rows


def errors_row() -> stats.Row:
    """Whether any daemon of the run logged an ERROR (each listed in the details)."""
    errs = routers.DAEMON_ERRORS
    first = f"; first: {errs[0].split(' ', 3)[-1][:160]}" if errs else ""
    return stats.Row("log", "ecmpd's logs over every daemon of this run",
                     f"{len(errs)} ERROR line(s){first}", target="0",
                     result=stats.verdict(not errs))


def tree_id() -> str:
    """The commit and a digest of the ecmpd sources measured (the tree may be dirty)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "ecmpd").rglob("*.py")):
        digest.update(path.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return f"commit {head or '?'}, ecmpd/*.py sha256 {digest.hexdigest()[:12]}"


def report(command: str, plan: Plan, rows: dict[int, list[stats.Row]], details: list[str],
           seconds: float) -> str:
    """results.md: the command, the date, the table, how to read it, the details."""
    table = stats.render_table([r for n in sorted(rows) for r in rows[n]])
    host = f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs"
    return (
        "# ecmpd benchmark\n\n"
        f"Command: `{command}`  \n"
        f"Date: {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}  \n"
        f"Code: {tree_id()}  \n"
        f"Host: {host}; the whole run took {seconds / 60:.1f} min; "
        f"{plan.reps} repetition(s) per figure unless stated.\n\n"
        f"{table}\n"
        "How to read it: the ecmpd and baseline columns give min / median / max over the\n"
        "repetitions (n = how many).  A target passes when every repetition meets it, except\n"
        "where the target names the statistic (median).  \"never\" runs are kept out of the\n"
        "numbers and counted separately with the length of the window that was watched.\n"
        "Labs: the seed's 2 WANs (1:1; 1:5 for figure 3) and 3 WANs (1:2:3), client with\n"
        f"{CLIENTS + 1} addresses (every flow tool cycles over them, so the baseline's L3 hash\n"
        "spreads flows too); the faulted WAN rotates over the repetitions; figure 1's\n"
        "ISP-dead runs also carry figure 2's long-lived flows.  ecmpd runs at its defaults\n"
        "(probe every 0.2 s, timeout 0.25 s, DOWN after 3 failed rounds, UP after 5, l4 hash;\n"
        "for upstream-dead its probe targets are beyond the gateway).  The baseline is\n"
        "bench/baseline.py: the seed translated literally (L3 hash, masquerade per WAN, input\n"
        "ct mark -> output routing mark, ping each gateway every 10 s, out after 2 misses,\n"
        "back after 1 answer), its check phase stratified over the repetitions.  The bench\n"
        "waits on the kernel's route (ip route), not on ecmpd's status, so the observer\n"
        "stays out of the daemon's loop; status is read only to get stats.reaction_ms.\n\n"
        + (fig9_note(plan) if 9 in rows else "")
        + (fig10_note() if 10 in rows else "")
        + (ipv6rows.note() if 11 in rows else "")
        + (tiersrows.note() if 12 in rows else "")
        + (fwcostrows.note() if 13 in rows else "")
        + (policyshares.note() if 14 in rows else "") +
        "## Details\n\n" + "\n".join(f"    {d}" for d in details) + "\n"
    )


def fig9_note(plan: Plan) -> str:
    """How to read figure 9 (for results.md)."""
    return textwrap.fill(
        "Figure 9 (bench/underload.py): its own lab of 3 WANs north/south/west; shaped "
        "lines are 20/40/60 Mbit/s down and a quarter of that up, a tbf of 1 s or 2 s of "
        "buffer each way (lab.lines); the load is iperf3 (reno), one download and one "
        "upload stream per loaded line, each pinned to it; the other rows run on idle, "
        "unshaped lines.  ecmpd: defaults, probe targets the gateway and the ISP's upstream, "
        "no quorum key (majority: 2).  The baseline hashes L4 here (so that the load can be "
        "placed on each line; the seed's L3 hash would put the one client's streams on one "
        "WAN), its check-gateway is unchanged; in the dead-ISP rows its first ping is the "
        "one after the fault, the phase stratified as in figure 1.  Saturation and loss "
        f"rows are one run of {plan.soak_seconds:.0f} s per router (all three lines at "
        "once); the fault rows rotate the dead WAN over the repetitions; a loaded own line "
        "dies once its download queue is half full (at most "
        f"{underload.FILL_MAX:.0f} s of load), an idle one after "
        f"{underload.FILL_OTHERS:.0f} s of load on the others.  \"Out of the route\" is "
        "read from the kernel (ip -ts monitor route in the router namespace); \"stopped "
        "delivering\" is the last rise of the router's rx_packets of that WAN, polled every "
        "20 ms in its namespace.", 88) + "\n\n"


def fig10_note() -> str:
    """How to read figure 10 (for results.md)."""
    return (textwrap.fill(
        "Figure 10 (bench/dynamic.py): its own lab of 3 WANs, wlan1 a DHCP WAN (dnsmasq "
        "in its ISP, busybox udhcpc on the router putting default via the gateway in table "
        "main at metric 0, proto dhcp, as ifupdown + dhclient do; `gateway: auto`), wlan2 "
        "static, ppp0 a point-to-point link (a tun pair; a new address on every "
        "reconnect; `gateway: auto`); ecmpd at its defaults, no baseline (the seed has no "
        "dynamic WANs).  Times of routes are read from the kernel (ip -ts monitor route "
        "in the router namespace).  The gateway move alternates between 10.111.0.1 and "
        "10.111.0.254; both are addresses of the same ISP interface, so packets sent via "
        "the old gateway still pass while its neighbour entry is cached: the new-flow time "
        "counts from flows started after table 1001 moved.  The lease time is "
        "DhcpEvent.applied (the client script's clock after it changed the routes).", 88)
            + "\n\n")


def _on_sigterm(main_pid: int) -> Callable[..., None]:
    """SIGTERM ends the run like ^C (the labs are torn down).  A forked child that
    inherited the handler (pyroute2's netns helper is a fork of this process, and is
    ended with SIGTERM) just exits: it must not run the parent's teardown."""
    def handler(*_: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signal.SIGTERM)
        raise KeyboardInterrupt()
    return handler


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        only = parse_only(args.only)
    except ValueError as exc:
        print(f"bench/run.py: {exc}", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    if args.reps is not None:
        plan = replace(plan, reps=max(1, args.reps))
    command = " ".join(shlex.quote(a) for a in ["python", "bench/run.py", *sys.argv[1:]])
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    bench = Bench(plan)
    start = time.monotonic()
    try:
        rows = run_figures(bench, only)
    finally:
        bench.close()
    for line in routers.DAEMON_ERRORS:
        bench.details.append(f"ecmpd ERROR: {line}")
    rows[LOG_ROW] = [errors_row()]
    text = report(command, plan, rows, bench.details, time.monotonic() - start)
    Path(args.out).write_text(text)
    print(stats.render_table([r for n in sorted(rows) for r in rows[n]]))
    print(f"(written to {args.out})")
    return 1 if any(r.result == "**ERROR**" for v in rows.values() for r in v) else 0


if __name__ == "__main__":
    sys.exit(main())
