#!/usr/bin/env python3
"""What one scrape of /metrics costs the daemon's loop: the render of a snapshot into the
text exposition (`ecmpd.metrics.exposition`), for 3 and 100 dual-stack WANs with three
probe targets per IP version, next to `ecmpd.status.render` of the same snapshot.

    .venv/bin/python bench/metrics_render.py [--reps N]

No root, no lab: the snapshot is built here (every WAN up and in the route, every target
with a loss and an RTT).  The snapshot itself (one conntrack dump, the kernel's routes,
unchanged since the last pass most of the time) is what `ecmpctl status` takes too, and a
scrape takes at most one a second (`ecmpd.metrics.FRESH`).  Prints the median and the
95th percentile of the wall time and the median CPU time in milliseconds, and the size
of the exposition.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecmpd.configmodel import Config, ProbeSettings, Wan  # noqa: E402
from ecmpd.desired import MAIN_TABLE, Nexthop, RouteSpec  # noqa: E402
from ecmpd.events import Transition  # noqa: E402
from ecmpd.health import Health, Phase  # noqa: E402
from ecmpd.metrics import Counters, exposition  # noqa: E402
from ecmpd.state import Link, WanState, initial  # noqa: E402
from ecmpd.status import ProbeReading, Snapshot, TargetReading, render  # noqa: E402


def snapshot(n: int) -> Snapshot:
    """`n` dual-stack WANs, all up and in both routes, 3 targets per IP version."""
    wans = tuple(
        Wan(f"wan{i}", f"eth{i}", IPv4Address(f"10.{i // 250}.{i % 250}.1"), id=i,
            gateway6=IPv6Address(f"2001:db8:{i:x}::1"), families=(4, 6),
            probe=ProbeSettings(targets=("gateway", "192.0.2.1", "192.0.2.2",
                                         "2001:db8:ffff::1", "2001:db8:ffff::2")))
        for i in range(1, n + 1))
    cfg = Config(lan_interfaces=("lan0",), wans=wans)
    links = {"lan0": Link(1, True, True), **{w.interface: Link(100 + w.id, True, True)
                                            for w in wans}}
    up = Health(Phase.UP, 0, "after 5 good rounds")
    st = initial(cfg, links, {}, (), 0.0)
    st = dataclasses.replace(st, wans={w.name: WanState(up, 1.0) for w in wans},
                             wans6={w.name: WanState(up, 1.0) for w in wans})
    probes = {}
    for w in wans:
        probes[(w.name, 4)] = ProbeReading({t: TargetReading(1.5, 0.0123) for t in
                                            (str(w.gateway), "192.0.2.1", "192.0.2.2")})
        probes[(w.name, 6)] = ProbeReading({t: TargetReading(0.0, 0.0231) for t in
                                            (str(w.gateway6), "2001:db8:ffff::1",
                                             "2001:db8:ffff::2")})
    main = RouteSpec(MAIN_TABLE, tuple(Nexthop(str(w.gateway), 100 + w.id, 1) for w in wans), 0)
    main6 = RouteSpec(MAIN_TABLE, tuple(Nexthop(str(w.gateway6), 100 + w.id, 1)
                                        for w in wans), 0)
    return Snapshot(st, main, main6=main6, probes=probes,
                    connections={w.name: 1000 + w.id for w in wans})


def timed(f, reps: int) -> tuple[float, float, float]:
    """(median wall, p95 wall, median CPU) of `reps` calls of `f`, in milliseconds: the
    CPU time is the render's own, the wall time adds what other work on the host took."""
    f()                                        # imports, caches
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        f()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    wall.sort()
    return statistics.median(wall), wall[int(0.95 * (len(wall) - 1))], statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| WANs (dual-stack, 3 targets per IP version) | series | bytes | exposition ms: "
          "CPU median, wall median / p95 | status.render ms: CPU median, wall median / p95 |")
    print("|---|---|---|---|---|")
    for n in (3, 100):
        snap = snapshot(n)
        c = Counters()
        for w in snap.state.cfg.wans:
            c.transition(Transition(w.name, "up", "rising", "", 0.0, None, True, 4))
        for s in (0.003, 0.02, 0.4):
            c.reaction(s)
        text = exposition(snap, c)
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        med, p95, cpu = timed(lambda: exposition(snap, c), args.reps)
        smed, sp95, scpu = timed(lambda: render(snap), args.reps)
        print(f"| {n} | {series} | {len(text)} | {cpu:.2f}, {med:.2f} / {p95:.2f} | "
              f"{scpu:.2f}, {smed:.2f} / {sp95:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
