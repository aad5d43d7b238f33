#!/usr/bin/env python3
"""ecmpd at scale and under route churn (issue #16, items 6 and 7): one table.

    sudo .venv/bin/python bench/scale.py [--wans 64] [--base-wans 3] [--trees A,B]
                                         [--rates 100,1000] [--seconds 20] [--only churn,scale]
                                         [--profile DIR]

Every daemon is the real ecmpd (`lab.runner.Ecmpd`'s command line at its
defaults) of each checkout in --trees (default: this one; e.g. ``/tmp/base,.`` measures
the code before a change and after it in the same run, on the same labs):

* churn (a lab of --base-wans WANs): another program adds and deletes a default route in
  table main via wan1 (same gateway, metric 500, proto static) at each rate; ecmpd's
  CPU (% of a core, /proc/<pid>/stat), its reconcile passes, health transitions and
  log lines over the window.  Twice: every gateway fixed, and wan1 `gateway: auto`
  (learning from a metric-100 route in main, which stays).  Then the learned gateway
  itself moving at --move-rate (two addresses of wan1's ISP): NOTICE lines logged.
* scale (labs of --base-wans and --wans WANs, two targets per WAN: the gateway and the
  ISP's upstream, quorum 2): idle CPU, RSS (VmRSS, VmHWM), `ecmpctl status` wall time
  (a new process, median of 5) and the request alone (median of 20), and a dead ISP
  (silent customer link) on wan1 → its nexthop out of ecmpd's route in the kernel.

``--profile DIR`` runs each daemon under cProfile (DIR/<tree>-<case>.prof): for finding
where the time goes, not for the table (cProfile slows Python down).  Needs root;
creates and deletes its own network namespaces, nothing else.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bigfib import proc_stat, route_gateways, status_request, wait_route  # noqa: E402
from lab import Lab, make_spec, random_prefix, sweep  # noqa: E402
from lab.runner import Ecmpd, config_for  # noqa: E402
from lab.wait import until  # noqa: E402

CHURN_METRIC = 500
LEARN_METRIC = 100


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class TreeEcmpd(Ecmpd):
    """The daemon of checkout `tree` (optionally under cProfile, dumped at exit)."""

    def __init__(self, lab: Lab, config: dict[str, Any], tree: Path,
                 profile: str | None = None) -> None:
        super().__init__(lab, config)
        self.tree, self.profile = tree, profile

    def module(self, name: str, before: str) -> str:
        """`name`, or its name in a tree from before the modules were renamed (an
        editable install of this checkout would otherwise win the import)."""
        return name if (self.tree / "ecmpd" / f"{name}.py").is_file() else before

    def argv(self, *extra: str) -> list[str]:
        run = "sys.exit(main())"
        if self.profile:
            run = (f"import cProfile; p = cProfile.Profile(); p.enable()\ntry: main()\n"
                   f"finally: p.disable(); p.dump_stats({self.profile!r})")
        code = (f"import sys; sys.path.insert(0, {str(self.tree)!r}); "
                f"from ecmpd.{self.module('ecmpd_command', 'cli')} import main; "
                f"sys.argv[0] = 'ecmpd'\n{run}")
        return [sys.executable, "-c", code, "--config", str(self.config_path),
                "--socket", self.socket, *extra]

    def ctl_argv(self) -> list[str]:
        return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(self.tree)!r}); "
                f"from ecmpd.{self.module('ecmpctl_command', 'ctl')} import main; "
                "sys.exit(main())",
                "--socket", self.socket, "status"]


def start(lab: Lab, config: dict[str, Any], tree: Path, profile: str | None) -> TreeEcmpd:
    """Start a daemon; return once every WAN is UP and in the kernel's route."""
    d = TreeEcmpd(lab, config, tree, profile)
    d.start(timeout=60)
    gws = {w.gateway for w in lab.spec.wans}
    if wait_route(lab.ns_router, lambda g: g == gws, 60) == math.inf:
        d.stop()
        raise TimeoutError("not every WAN in the route after 60 s")
    try:
        until(lambda: all(w["state"] == "up" for w in d.status()["wans"].values()), 30,
              "not every WAN UP after 30 s", interval=0.3)
    except TimeoutError:
        d.stop()
        raise
    return d


def cpu_seconds(d: Ecmpd) -> float:
    assert d.proc is not None
    return proc_stat(d.proc.pid)[0]


def sys_seconds(d: Ecmpd) -> float:
    """The kernel's part of `cpu_seconds` (stime: sends, and what the kernel does for
    them in the same call, e.g. the veth peer's receive)."""
    assert d.proc is not None
    with open(f"/proc/{d.proc.pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")


def rss(d: Ecmpd) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    assert d.proc is not None
    out = {}
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


# ---- the other program's route churn ----------------------------------------------------

DRIVER = r"""
import sys, time
from pyroute2 import IPRoute
dev, gw, metric, rate, seconds, alt = sys.argv[1:7]
rate, seconds, metric = float(rate), float(seconds), int(metric)
ipr = IPRoute()
idx = ipr.link_lookup(ifname=dev)[0]
gws = [gw] + ([alt] if alt != "-" else [])
n, t0 = 0, time.monotonic()
while True:
    due = t0 + n / rate
    now = time.monotonic()
    if due - t0 >= seconds:
        break
    if due > now:
        time.sleep(due - now)
    if alt == "-":    # add, delete, add, ... (the gateway never changes)
        ipr.route("add" if n % 2 == 0 else "del", dst="0.0.0.0/0", gateway=gw, oif=idx,
                  priority=metric, proto=4)
    else:             # the route's gateway moves between two addresses
        ipr.route("replace", dst="0.0.0.0/0", gateway=gws[n % 2], oif=idx,
                  priority=metric, proto=16)
    n += 1
if alt == "-" and n % 2:
    ipr.route("del", dst="0.0.0.0/0", gateway=gw, oif=idx, priority=metric, proto=4)
print(n, time.monotonic() - t0)
"""


def churn(lab: Lab, rate: float, seconds: float, alt: str = "-",
          metric: int = CHURN_METRIC) -> tuple[int, float]:
    """Another program's default-route changes on wan1 at `rate`/s; (changes, seconds)."""
    w = lab.spec.wans[0]
    r = lab.run(lab.ns_router, sys.executable, "-c", DRIVER, w.name, w.gateway, str(metric),
                str(rate), str(seconds), alt, timeout=seconds + 60)
    n, took = r.stdout.split()
    return int(n), float(took)


@dataclass
class ChurnRow:
    tree: str
    case: str
    rate: float
    changes: int = 0
    cpu: float = math.nan
    passes: int = 0
    transitions: int = 0
    notices: int = 0
    route_ok: bool = True


def _stats(d: Ecmpd) -> dict[str, Any]:
    return d.status().get("stats", {})


TRANSITION = re.compile(r": (INIT|UP|SLOW|FALLING|DOWN|RISING) -> [A-Z]+")


def _transitions(text: str) -> int:
    """Health transitions logged in `text`."""
    return len(TRANSITION.findall(text))


def churn_case(lab: Lab, tree: Path, case: str, rates: list[float], seconds: float,
               move_rate: float, profile: str | None) -> list[ChurnRow]:
    w = lab.spec.wans[0]
    cfg = config_for(lab)
    alt = w.gateway.rsplit(".", 1)[0] + ".254"
    if case == "auto":
        cfg["wans"][w.name]["gateway"] = "auto"
        lab.run(lab.ns_router, "ip", "route", "replace", "default", "via", w.gateway, "dev",
                w.name, "metric", str(LEARN_METRIC), "proto", "dhcp")
        lab.run(lab.ns_isp(w.name), "ip", "addr", "replace", f"{alt}/24", "dev", "cust")
    d = start(lab, cfg, tree, profile)
    rows = []
    try:
        time.sleep(2.0)
        gws = {x.gateway for x in lab.spec.wans}
        plan = [(r, "-", CHURN_METRIC) for r in rates]
        if case == "auto":
            plan.append((move_rate, alt, LEARN_METRIC))
        for rate, a, metric in plan:
            row = ChurnRow(tree.name, case if a == "-" else "auto, gateway moves", rate)
            log0, passes0 = len(d.log()), _stats(d).get("reconciles", 0)
            c0, t0 = cpu_seconds(d), time.monotonic()
            row.changes, took = churn(lab, rate, seconds, a, metric)
            time.sleep(0.5)                       # what the burst left to do
            row.cpu = 100 * (cpu_seconds(d) - c0) / (time.monotonic() - t0)
            row.passes = _stats(d).get("reconciles", 0) - passes0
            text = d.log()[log0:]
            row.transitions = _transitions(text)
            row.notices = text.count(" NOTICE ")
            if a != "-":     # the learned gateway ends where it started
                lab.run(lab.ns_router, "ip", "route", "replace", "default", "via", w.gateway,
                        "dev", w.name, "metric", str(metric), "proto", "dhcp")
                time.sleep(1.0)
            row.route_ok = route_gateways(lab.ns_router) == gws
            progress(f"{tree.name} {row.case} {rate:.0f}/s: {row.changes} changes in "
                     f"{took:.1f}s, CPU {row.cpu:.1f}%, {row.passes} passes, "
                     f"{row.transitions} transitions, {row.notices} NOTICE")
            rows.append(row)
    finally:
        d.stop()
        if case == "auto":
            lab.run(lab.ns_router, "ip", "route", "del", "default", "via", w.gateway, "dev",
                    w.name, "metric", str(LEARN_METRIC), check=False)
            lab.run(lab.ns_isp(w.name), "ip", "addr", "del", f"{alt}/24", "dev", "cust",
                    check=False)
    return rows


# ---- scale ------------------------------------------------------------------------------

@dataclass
class ScaleRow:
    tree: str
    wans: int
    cpu: list[float] = field(default_factory=list)
    sys: list[float] = field(default_factory=list)
    rss: float = math.nan
    hwm: float = math.nan
    cli: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    """The same command line without ecmpctl (`python -c pass`): the interpreter's start."""
    request: list[float] = field(default_factory=list)
    dead: list[float] = field(default_factory=list)


def scale_case(lab: Lab, tree: Path, seconds: float, reps: int,
               profile: str | None) -> ScaleRow:
    row = ScaleRow(tree.name, len(lab.spec.wans))
    d = start(lab, config_for(lab, targets="both"), tree, profile)
    try:
        time.sleep(3.0)
        for _ in range(3):
            c0, s0, t0 = cpu_seconds(d), sys_seconds(d), time.monotonic()
            time.sleep(seconds / 3)
            took = time.monotonic() - t0
            row.cpu.append(100 * (cpu_seconds(d) - c0) / took)
            row.sys.append(100 * (sys_seconds(d) - s0) / took)
        for _ in range(5):
            t = time.monotonic()
            lab.run(lab.ns_router, *d.ctl_argv(), timeout=60)
            row.cli.append(1000 * (time.monotonic() - t))
            t = time.monotonic()
            lab.run(lab.ns_router, sys.executable, "-c", "pass", timeout=60)
            row.floor.append(1000 * (time.monotonic() - t))
        row.request = [1000 * status_request(d.socket, 30) for _ in range(20)]
        row.rss, row.hwm = rss(d)
        w = lab.spec.wans[0]
        gws = {x.gateway for x in lab.spec.wans}
        for _ in range(reps):
            time.sleep(1.0)
            t0 = time.monotonic()
            lab.fault(w.name, "dead")
            row.dead.append(wait_route(lab.ns_router, lambda g: g is not None and w.gateway
                                       not in g, 10, since=t0))
            lab.heal(w.name)
            wait_route(lab.ns_router, lambda g: g == gws, 30)
        progress(f"{tree.name} {row.wans} WANs: CPU {row.cpu}, RSS {row.rss:.0f} MB, "
                 f"cli {statistics.median(row.cli):.0f} ms, request "
                 f"{statistics.median(row.request):.1f} ms, dead {row.dead}")
    finally:
        d.stop()
    return row


# ---- the table --------------------------------------------------------------------------

def _mmm(values: list[float], fmt: str = "{:.1f}") -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "—"
    return " / ".join(fmt.format(x) for x in (min(v), statistics.median(v), max(v)))


def table(churns: list[ChurnRow], scales: list[ScaleRow]) -> str:
    out = []
    if churns:
        out += ["| tree | case | rate /s (done) | ecmpd CPU % | reconciles | transitions "
                "| NOTICE lines | route whole |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r.tree} | {r.case} | {r.rate:.0f} ({r.changes}) | {r.cpu:.1f} | "
                f"{r.passes} | {r.transitions} | {r.notices} | {'yes' if r.route_ok else 'NO'} |"
                for r in churns]
        out.append("")
    if scales:
        out += ["| tree | WANs × 2 targets | idle CPU % (min/med/max) | of it system % "
                "| RSS / HWM MB | ecmpctl status ms | of it python start ms | request ms "
                "| dead ISP → out of route s |", "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r.tree} | {r.wans} | {_mmm(r.cpu, '{:.2f}')} | "
                f"{statistics.median(r.sys):.2f} | {r.rss:.0f} / {r.hwm:.0f} "
                f"| {_mmm(r.cli, '{:.0f}')} | {_mmm(r.floor, '{:.0f}')} | {_mmm(r.request)} "
                f"| {_mmm(r.dead, '{:.2f}')} |"
                for r in scales]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.split("\n")[0])
    p.add_argument("--wans", type=int, default=64)
    p.add_argument("--base-wans", type=int, default=3)
    p.add_argument("--trees", default=str(ROOT), help="checkouts to measure, comma-separated")
    p.add_argument("--rates", default="100,1000")
    p.add_argument("--move-rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=20.0, help="each measured window")
    p.add_argument("--reps", type=int, default=3, help="dead-ISP repetitions")
    p.add_argument("--only", default="churn,scale")
    p.add_argument("--profile", help="run the daemons under cProfile, stats into this dir")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/scale.py: needs root", file=sys.stderr)
        return 2
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    only = set(args.only.split(","))
    rates = [float(r) for r in args.rates.split(",")]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    def prof(tree: Path, case: str) -> str | None:
        return os.path.join(args.profile, f"{tree.name}-{case}.prof") if args.profile else None

    prefix = random_prefix("esc")
    churns: list[ChurnRow] = []
    scales: list[ScaleRow] = []
    labs: list[Lab] = []
    try:
        base = Lab(make_spec(args.base_wans), prefix=f"{prefix}b-")
        labs.append(base)
        base.build()
        if "churn" in only:
            for case in ("fixed", "auto"):
                for tree in trees:
                    churns += churn_case(base, tree, case, rates, args.seconds,
                                         args.move_rate, prof(tree, f"churn-{case}"))
        if "scale" in only:
            for tree in trees:
                scales.append(scale_case(base, tree, args.seconds, args.reps,
                                         prof(tree, f"idle{args.base_wans}")))
            big = Lab(make_spec(args.wans), prefix=f"{prefix}s-")
            labs.append(big)
            t = time.monotonic()
            big.build()
            progress(f"built a lab of {args.wans} WANs in {time.monotonic() - t:.0f}s")
            for tree in trees:
                scales.append(scale_case(big, tree, args.seconds, args.reps,
                                         prof(tree, f"idle{args.wans}")))
    finally:
        for lab in labs:
            lab.teardown()
        sweep(prefix)
    print(f"bench/scale.py {' '.join(sys.argv[1:])}  ({time.strftime('%Y-%m-%d %H:%M')})")
    print(table(churns, scales))
    return 0


if __name__ == "__main__":
    sys.exit(main())
