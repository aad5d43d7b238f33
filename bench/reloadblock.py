"""How long a reload with many policies blocks ecmpd's event loop (not a figure of
bench/run.py; run it alone, as root):

    .venv/bin/python -m bench.reloadblock [--policies 1000] [--kind sorted] [--reps 3]
                                          [--profile]

ecmpd runs in the seed's 2-WAN lab with one of figure 13's policy sets
(`bench.fwcost.policies`; by default six shapes in blocks, a few maps).  A client in this process pings the daemon's control
socket every 2 ms, one request at a time, and keeps each answer's latency: the
longest one while the daemon reloads is how long its loop did not run (a slow
answer can only wait for the loop).  Per case, `reps` reloads (``ecmpctl
reload``, which answers once the reload is done): the same file again, a weight
changed (the policies as they were), one policy changed.  The idle line is the
same client without a reload.  ``--profile`` runs the daemon under cProfile and
prints its top functions by cumulative time after the reloads.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from ipaddress import IPv4Interface
from typing import Any

from lab import Lab, random_prefix, seed_spec, sweep
from lab.runner import Ecmpd, config_for

from bench import fwcost, routers


class Pinger:
    """Pings the control socket from a thread; `window` gives the latencies between
    two calls."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._file = self._sock.makefile("rb")
        self._lat: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                self._sock.sendall(b'{"cmd": "ping"}\n')
                if not self._file.readline():
                    return
            except OSError:
                return
            with self._lock:
                self._lat.append(time.perf_counter() - t)
            time.sleep(0.002)

    def window(self) -> list[float]:
        """The latencies since the last call (s)."""
        with self._lock:
            out, self._lat = self._lat, []
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class Profiled(Ecmpd):
    """ecmpd under cProfile (its stats are printed to stderr at exit by the wrapper)."""

    def argv(self, *extra: str) -> list[str]:
        wrapper = ("import cProfile, pstats, sys, signal\n"
                   "from ecmpd import ecmpd_command\n"
                   "p = cProfile.Profile(); p.enable()\n"
                   "try:\n    ecmpd_command.main(sys.argv[1:])\n"
                   "except SystemExit:\n    pass\n"
                   "finally:\n    p.disable(); pstats.Stats(p, stream=sys.stderr)"
                   ".sort_stats('cumulative').print_stats(45)\n")
        return [sys.executable, "-c", wrapper, "--config", str(self.config_path),
                "--socket", self.socket, *extra]


def _cases(cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    weight = json.loads(json.dumps(cfg))
    weight["wans"][next(iter(weight["wans"]))]["weight"] = 2
    policy = json.loads(json.dumps(cfg))
    policy["policies"][500]["dst"] = "198.19.255.1/32"
    return [("the same file", cfg), ("a weight changed", weight),
            ("one policy changed", policy)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kind", default="sorted", choices=("sorted", "mixed", "mixed1"),
                    help="figure 13's policy set (sorted: six shapes in blocks)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    fwcost.POLICIES = args.policies
    prefix = random_prefix("erb")
    lab = Lab(seed_spec(), prefix=prefix)
    try:
        lab.build()
        cfg = config_for(lab)
        cfg["policies"] = fwcost.policies(
            args.kind, [str(IPv4Interface(a).ip) for a in lab.spec.client_addresses],
            lab.spec.lan_interface, [w.name for w in lab.spec.wans])
        d = routers.start_ecmpd(lab, config=cfg, start_timeout=120.0,
                                cls=Profiled if args.profile else Ecmpd)
        try:
            pinger = Pinger(d.socket)
            time.sleep(2.0)
            pinger.window()
            time.sleep(3.0)
            idle = pinger.window()
            print(f"idle 3 s: {len(idle)} pings, longest {max(idle) * 1e3:.1f} ms, "
                  f"median {statistics.median(idle) * 1e3:.2f} ms")
            for name, case in _cases(cfg):
                for r in range(args.reps):
                    d.write_config(case if r % 2 == 0 else cfg)
                    pinger.window()
                    t = time.perf_counter()
                    out = d.ctl("reload", check=False)
                    took = time.perf_counter() - t
                    time.sleep(0.5)
                    lat = pinger.window()
                    print(f"{name} ({'to it' if r % 2 == 0 else 'back'}): reload "
                          f"{took * 1e3:.0f} ms ({out.stdout.strip() or out.stderr.strip()}); "
                          f"longest ping {max(lat) * 1e3:.1f} ms over {len(lat)} pings",
                          flush=True)
                d.write_config(cfg)
                d.ctl("reload", check=False)
            pinger.close()
            # PYTHONASYNCIODEBUG=1 in the environment: the daemon's loop names its steps
            # that took over 0.1 s
            for line in d.log().splitlines():
                if "Executing" in line and "took" in line:
                    print("  slow step:", line[-300:])
        finally:
            routers.stop_ecmpd(lab, d) if not args.profile else _stop_profiled(lab, d)
    finally:
        lab.teardown()
        sweep(prefix)
    return 0


def _stop_profiled(lab: Lab, d: Ecmpd) -> None:
    d.stop(timeout=60.0)
    text = d.log()
    at = text.find("function calls")
    print(text[max(0, at - 200):] if at >= 0 else text[-3000:])
    routers.flush_conntrack(lab)


if __name__ == "__main__":
    sys.exit(main())
