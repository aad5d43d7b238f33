#!/usr/bin/env python3
"""ecmpd on a router that also carries a big routing table (a BGP feed): one table.

    sudo .venv/bin/python bench/bigfib.py [--routes 1000000] [--split half|main] [--reps 3]
                                          [--tree DIR]

For each FIB size (0 and --routes foreign /24 routes, by default half in table main and
half in table 100; ``--split main`` puts all of them in main, where a BGP table lives)
a fresh seed lab (2 WANs) is built, the routes are loaded into the router namespace
*before* ecmpd starts, and the real ecmpd (``lab.runner.Ecmpd``'s command line, at
its defaults) is measured:

* ``ecmpctl status`` wall time: a new process each time, median of 5;
* start: launch → ecmpd's route in the kernel carries every WAN;
* carrier / dead ISP: fault → the WAN's nexthop is out of ecmpd's route in the kernel
  (ecmpd's reaction), and the new-flow outage (new TCP flows every 10 ms from the LAN);
* peak RSS of the daemon (VmHWM) at the end;
* churn: ecmpd's CPU seconds while 100 000 foreign routes are added and removed, and
  how many times it lost events (ENOBUFS) and resynchronised.

The kernel is observed directly (a strict-checked rtnetlink dump of main's default
routes, `ecmpd.routereader.RouteReader`), never through ecmpd's status, so a slow status does
not slow the other figures.  Every step has a time limit (--timeout): a figure that is
not reached within it shows as "> limit".  ``--tree DIR`` runs the daemon and ecmpctl
of another checkout (e.g. one before a change) while this one observes.  Needs root;
creates and deletes its own network namespaces, nothing else.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecmpd import routereader, routing  # noqa: E402
from ecmpd.ecmpctl_command import CtlError, request  # noqa: E402
from lab import Lab, random_prefix, seed_spec, sweep  # noqa: E402
from lab.runner import Ecmpd, config_for  # noqa: E402
from lab.traffic import fault_offset, outage  # noqa: E402

PROTO = 236
GATEWAYS = {"wlan1": "10.111.0.1", "wlan2": "10.112.0.1"}
CHURN = 100_000


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# ---- the kernel, observed directly -----------------------------------------------------

def route_gateways(ns: str) -> set[str] | None:
    """Gateways of ecmpd's multipath route (proto 236, lowest metric, in its table
    `tables.base`, 1000), None when absent."""
    reader = routereader.RouteReader(routereader.socket_in_netns(ns))
    msgs = [m for m in reader.defaults(1000) if m["dst_len"] == 0 and m["proto"] == PROTO]
    if not msgs:
        return None
    msg = min(msgs, key=lambda m: m.get("priority") or 0)
    return {h.gateway for h in routing.nexthops_of(msg)}


def wait_route(ns: str, pred, timeout: float, since: float | None = None,
               period: float = 0.002) -> float:
    """Seconds from `since` (monotonic; default now) until pred(gateways) holds
    (math.inf: not within `timeout`)."""
    t0 = time.monotonic() if since is None else since
    while time.monotonic() - t0 < timeout:
        if pred(route_gateways(ns)):
            return time.monotonic() - t0
        time.sleep(period)
    return math.inf


def load_routes(lab: Lab, count: int, split: str, verb: str = "add",
                octets: tuple[int, int] = (11, 100)) -> float:
    """Add (or delete) `count` foreign /24 routes in the router, in table 100 from
    ``octets[0].0.0.0`` on and in main from ``octets[1].0.0.0`` on; seconds taken."""
    if count == 0:
        return 0.0
    in_main = count if split == "main" else count // 2
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        for i in range(count - in_main):
            f.write(f"route {verb} {octets[0] + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24 via "
                    f"10.111.0.1 table 100 proto bgp\n")
        for i in range(in_main):
            f.write(f"route {verb} {octets[1] + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24 via "
                    f"10.112.0.1 proto bgp\n")
        path = f.name
    try:
        t = time.monotonic()
        subprocess.run(["ip", "-n", lab.ns_router, "-batch", path], check=True,
                       capture_output=True, timeout=1800)
        return time.monotonic() - t
    finally:
        os.unlink(path)


# ---- the daemon ------------------------------------------------------------------------

def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def launch(d: Ecmpd) -> None:
    """Start the daemon without waiting on its status (it may be slow to answer)."""
    log = open(d.log_path, "ab")
    d.proc = d.lab.popen(d.lab.ns_router, *d.argv("--log-level", "info"), stdout=log,
                         stderr=subprocess.STDOUT)
    log.close()


def status_time(d: Ecmpd, timeout: float) -> tuple[float, str | None]:
    """(wall seconds of one `ecmpctl status --json`, its error or None)."""
    argv = [sys.executable, "-m", "ecmpd.ecmpctl_command", "--socket", d.socket, "status", "--json"]
    t = time.monotonic()
    try:
        r = d.lab.run(d.lab.ns_router, *argv, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return math.inf, f"no answer within {timeout:.0f}s"
    took = time.monotonic() - t
    if r.returncode != 0:
        return math.inf, f"exit {r.returncode} after {took:.1f}s: {r.stderr.strip()[:120]}"
    return took, None


def status_request(path: str, timeout: float) -> float:
    """Seconds for one status request on the control socket (the daemon's part of
    `ecmpctl status`, without starting a Python process); inf when it fails."""
    t = time.monotonic()
    try:
        if not request(path, {"cmd": "status"}, timeout).get("ok"):
            return math.inf
    except CtlError:
        return math.inf
    return time.monotonic() - t


@dataclass
class Figures:
    routes: int
    load_s: float = 0.0
    status: list[float] = field(default_factory=list)
    request: list[float] = field(default_factory=list)
    start: float = math.inf
    reaction: dict[str, list[float]] = field(default_factory=dict)
    outage: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: float = math.nan
    churn_cpu: float = math.nan
    churn_lost: int = 0
    notes: list[str] = field(default_factory=list)


def fault_run(lab: Lab, mode: str, timeout: float) -> tuple[float, float]:
    """(reaction, new-flow outage) of one fault of wlan1, then healed and back."""
    both = set(GATEWAYS.values())
    flows = lab.start_flows(int(6.0 / 0.01), interval=0.01, timeout=0.5)
    time.sleep(1.0)
    wall = time.time()
    t0 = time.monotonic()
    lab.fault("wlan1", mode)
    reaction = wait_route(lab.ns_router, lambda g: g is not None and "10.111.0.1" not in g,
                          timeout, since=t0)
    results = flows.result()
    lost = outage(results, fault_offset(results, wall))
    lab.heal("wlan1")
    back = wait_route(lab.ns_router, lambda g: g == both, timeout)
    if back == math.inf:
        raise TimeoutError(f"wlan1 not back in the route {timeout:.0f}s after the heal")
    return reaction, lost


def measure(size: int, args: argparse.Namespace, prefix: str) -> Figures:
    fig = Figures(size)
    lab = Lab(seed_spec(), prefix=f"{prefix}{size % 1000:03d}-")
    workdir = tempfile.mkdtemp(prefix="ecmpd-bigfib-")
    d = Ecmpd(lab, config_for(lab), workdir=workdir)
    try:
        lab.build()
        lab.start_servers()
        fig.load_s = load_routes(lab, size, args.split)
        progress(f"{size} foreign routes loaded in {fig.load_s:.1f}s; starting ecmpd")
        t = time.monotonic()
        launch(d)
        got = wait_route(lab.ns_router, lambda g: g == set(GATEWAYS.values()), args.timeout)
        fig.start = got if got == math.inf else time.monotonic() - t
        if fig.start == math.inf:
            fig.notes.append(f"start: no route with every WAN after {args.timeout:.0f}s")
            return fig
        progress(f"started in {fig.start:.2f}s; ecmpctl status")
        time.sleep(1.0)                                  # past the start-up's own work
        for _ in range(5):
            took, error = status_time(d, args.timeout)
            fig.status.append(took)
            if error is not None:
                fig.notes.append(f"ecmpctl status: {error}")
            if took > 10 and len(fig.status) >= 2:
                break
        if statistics.median(fig.status) < 10:
            fig.request = [status_request(d.socket, args.timeout) for _ in range(20)]
        for mode in ("carrier", "dead"):
            for rep in range(args.reps):
                progress(f"{mode} failover {rep + 1}/{args.reps}")
                try:
                    r, o = fault_run(lab, mode, args.timeout)
                except Exception as exc:  # noqa: BLE001 - keep the other figures
                    fig.notes.append(f"{mode}: {type(exc).__name__}: {exc}")
                    break
                fig.reaction.setdefault(mode, []).append(r)
                fig.outage.setdefault(mode, []).append(o)
        assert d.proc is not None
        progress(f"churn: {CHURN} foreign routes added and removed")
        cpu0, _ = proc_stat(d.proc.pid)
        lost0 = d.log().count("lost events")
        load_routes(lab, CHURN, "half", "add", octets=(60, 150))
        load_routes(lab, CHURN, "half", "del", octets=(60, 150))
        time.sleep(3.0)
        cpu1, fig.rss_mb = proc_stat(d.proc.pid)
        fig.churn_cpu = cpu1 - cpu0
        fig.churn_lost = d.log().count("lost events") - lost0
        errors = [line for line in d.log().splitlines() if " ERROR " in line]
        if errors:
            fig.notes.append(f"{len(errors)} ERROR lines; first: {errors[0][:160]}")
    finally:
        try:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                d.proc.wait(min(args.timeout, 60))
        except Exception:  # noqa: BLE001
            pass
        lab.teardown()
    return fig


# ---- the table -------------------------------------------------------------------------

def cell(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    if not values:
        return "—"
    fin = [v for v in values if v != math.inf]
    never = len(values) - len(fin)
    if not fin:
        return f"> limit ({never}×)"
    fmt = (lambda v: f"{v * scale:.1f}") if scale != 1.0 else (lambda v: f"{v:.2f}")
    text = fmt(statistics.median(fin)) if len(fin) == 1 else \
        f"{fmt(min(fin))} / {fmt(statistics.median(fin))} / {fmt(max(fin))}"
    return f"{text} {unit}" + (f" (+{never}× > limit)" if never else "")


def table(figs: list[Figures], args: argparse.Namespace) -> str:
    head = ["figure"] + [f"{f.routes:,} foreign routes" for f in figs] + ["target (at the big FIB)"]
    rows = [
        ["routes loaded in"] + [f"{f.load_s:.1f} s" for f in figs] + [""],
        ["`ecmpctl status` wall time (median of up to 5)"]
        + [cell([statistics.median(f.status)] if f.status else [], "ms", 1000)
           if not f.status or statistics.median(f.status) != math.inf
           else f"no answer ({len(f.status)}×)" for f in figs]
        + ["≤ 100 ms"],
        ["status request on the socket (median of 20)"]
        + [cell([statistics.median(f.request)] if f.request else [], "ms", 1000)
           for f in figs] + [""],
        ["start: launch → route with every WAN"] + [cell([f.start]) for f in figs] + ["≤ 2 s"],
    ]
    for mode, label, budget in (("carrier", "carrier down", "≤ 0.3 s"),
                                ("dead", "ISP dead", "≤ 1.0 s")):
        rows.append([f"{label}: fault → nexthop out of the kernel route"]
                    + [cell(f.reaction.get(mode, [])) for f in figs] + [""])
        rows.append([f"{label}: new-flow outage"]
                     + [cell(f.outage.get(mode, [])) for f in figs] + [budget])
    rows.append(["peak RSS (VmHWM)"] + [f"{f.rss_mb:.1f} MB" for f in figs] + ["≤ 40 MB"])
    rows.append([f"churn: CPU while {CHURN:,} routes come (and go)"]
                + [f"{f.churn_cpu:.2f} s, {f.churn_lost} lost-event resyncs" for f in figs]
                + [""])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    notes = [f"{f.routes:,}: {n}" for f in figs for n in f.notes]
    split = "half in table main, half in table 100" if args.split == "half" else "all in main"
    out.append("")
    out.append(f"Foreign routes: /24s, {split}, loaded before ecmpd starts.  Failovers: "
               f"{args.reps} repetition(s), min / median / max.  Churn: {CHURN:,} more "
               f"routes added and removed again while ecmpd runs; CPU counted until 3 s "
               f"after.")
    out += [f"note: {n}" for n in notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/bigfib.py", description=__doc__.split("\n")[0])
    p.add_argument("--routes", type=int, default=1_000_000, help="foreign routes (1000000)")
    p.add_argument("--split", choices=("half", "main"), default="half",
                   help="half in main and half in table 100 (default), or all in main")
    p.add_argument("--reps", type=int, default=3, help="failover repetitions (3)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="limit in seconds for each wait (180)")
    p.add_argument("--tree", default=str(ROOT),
                   help="the checkout whose ecmpd is measured (default: this one)")
    args = p.parse_args(argv)
    tree = Path(args.tree).resolve()
    if not (tree / "ecmpd" / "daemon.py").is_file():
        print(f"bench/bigfib.py: no ecmpd checkout at {tree}", file=sys.stderr)
        return 2
    # the daemon, ecmpctl and the lab's tools run it (`python -m` puts the working
    # directory first on its path, PYTHONPATH next)
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    if os.geteuid() != 0:
        print("bench/bigfib.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    prefix = random_prefix("ebf")
    figs: list[Figures] = []
    try:
        for size in (0, args.routes):
            progress(f"lab with {size:,} foreign routes")
            figs.append(measure(size, args, prefix))
    except KeyboardInterrupt:
        pass
    finally:
        sweep(prefix)
    print(f"ecmpd with a big routing table ({tree}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} CPUs)\n")
    print(table(figs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
