#!/usr/bin/env python3
"""Where ecmpd's start-up time goes (issue #20): imports, then the daemon's phases.

    sudo .venv/bin/python bench/startup.py [--reps N]

Rows, each against `python -c pass` measured in the same run:
- import of ``ecmpd.daemon``, bytecode cached (as after ``pip install``, which compiles
  it) and not cached (every module compiled from source, as with
  PYTHONDONTWRITEBYTECODE and an empty cache); and where the cached import's time goes
  (``-X importtime`` self times summed per top-level package);
- the real ecmpd started in the router namespace of a 2-WAN lab with ``NOTIFY_SOCKET``
  pointing at a socket of this script: from exec to the control socket accepting a
  connection (polled every 2 ms), to each start-up ``STATUS=`` the daemon sends, and to
  ``READY=1`` (sent after the first probe verdicts are in the route).

Times come from this process's monotonic clock: exec of ``ip netns exec`` is included,
as systemd's exec is in a unit's start time.  Needs root for the lab part.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stats import Row, fmt_summary, render_table  # noqa: E402

if TYPE_CHECKING:
    from bench.plan import Bench
    from lab import Lab

TARGET = "ecmpd.daemon"
POLL = 0.002
"""Seconds between connection attempts to the control socket."""
START_TIMEOUT = 60.0


def python_env(cache: Path | None, tree: Path = ROOT) -> dict[str, str]:
    """The environment of a measured interpreter (run in `tree`: `-c` and `-m` put the
    working directory first on sys.path): `tree`'s ecmpd first; bytecode read
    from and written to `cache`, or (None) never written and found nowhere."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="ecmpd-nocache-")
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def wall(code: str, env: dict[str, str]) -> float:
    """Seconds from exec to exit of ``python -c code``."""
    return timed(code, env)[0]


def timed(code: str, env: dict[str, str], argv: list[str] | None = None
          ) -> tuple[float, float]:
    """(wall, CPU) seconds of ``python -c code`` (or of `argv`, output discarded): CPU
    time (user + system) varies less than wall time on a machine shared with other
    work.  Runs in the tree on `env`'s PYTHONPATH."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(argv or [sys.executable, "-c", code], env=env, check=True,
                   cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL if argv else None)
    elapsed = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class Imports:
    """Wall times (s) per repetition, CPU times (s) of the baseline and of the cached
    import, and the cached import's self time per package."""

    baseline: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    uncached: list[float] = field(default_factory=list)
    by_package: dict[str, float] = field(default_factory=dict)   # median ms
    baseline_cpu: list[float] = field(default_factory=list)
    cached_cpu: list[float] = field(default_factory=list)
    runs_by_package: dict[str, list[float]] = field(default_factory=dict)
    """Every run's self time (ms) per package; `by_package` holds their medians."""

    def extend(self, other: "Imports") -> None:
        """Add `other`'s repetitions (one tree measured in turns with another)."""
        for name in ("baseline", "cached", "uncached", "baseline_cpu", "cached_cpu"):
            getattr(self, name).extend(getattr(other, name))
        for pkg, ms in other.runs_by_package.items():
            self.runs_by_package.setdefault(pkg, []).extend(ms)
        self.by_package = {p: statistics.median(v) for p, v in self.runs_by_package.items()}


def self_times(importtime: str) -> dict[str, float]:
    """``-X importtime`` stderr -> self time (ms) summed per top-level package."""
    out: dict[str, float] = defaultdict(float)
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        selfus, _cum, name = line[len("import time:"):].split("|")
        out[name.strip().split(".")[0]] += int(selfus) / 1000
    return dict(out)


def measure_imports(reps: int, tree: Path = ROOT) -> Imports:
    res = Imports()
    cache = Path(tempfile.mkdtemp(prefix="ecmpd-pycache-"))
    cached = python_env(cache, tree)
    wall(f"import {TARGET}", cached)                     # fills the cache
    per_pkg: dict[str, list[float]] = defaultdict(list)
    for _ in range(reps):
        for into, cpu, code in ((res.baseline, res.baseline_cpu, "pass"),
                                (res.cached, res.cached_cpu, f"import {TARGET}")):
            w, c = timed(code, cached)
            into.append(w)
            cpu.append(c)
        res.uncached.append(wall(f"import {TARGET}", python_env(None, tree)))
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {TARGET}"],
                           env=cached, capture_output=True, text=True, check=True, cwd=tree)
        for pkg, ms in self_times(r.stderr).items():
            per_pkg[pkg].append(ms)
    res.runs_by_package = dict(per_pkg)
    res.by_package = {p: statistics.median(v) for p, v in per_pkg.items()}
    return res


@dataclass
class Start:
    """One daemon start: seconds from exec to each milestone."""

    socket: float = float("inf")
    ready: float = float("inf")
    status: list[tuple[float, str]] = field(default_factory=list)
    log: str = ""
    ctl: list[tuple[float, float]] = field(default_factory=list)
    """(wall, CPU) seconds of each `ecmpctl status` run against the ready daemon."""


def _connects(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


CTL_RUNS = 3
"""`ecmpctl status` runs timed after each start's READY."""


def start_once(lab: "Lab", cache: Path, tree: Path = ROOT) -> Start:
    """Start ecmpd in `lab`'s router namespace, time it to READY=1, stop it."""
    from lab.runner import config_for

    import yaml
    work = Path(tempfile.mkdtemp(prefix="ecmpd-startup-"))
    config = work / "ecmpd.yaml"
    config.write_text(yaml.safe_dump(config_for(lab), sort_keys=False))
    ctl, notify_path = str(work / "ecmpd.sock"), str(work / "notify")
    out = Start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        env = dict(python_env(cache, tree), NOTIFY_SOCKET=notify_path)
        log = open(work / "ecmpd.log", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns_router, sys.executable, "-m", "ecmpd.ecmpd_command",
             "--config", str(config), "--socket", ctl], env=env, stdout=log,
            stderr=subprocess.STDOUT, cwd=tree)
        log.close()
        try:
            while time.monotonic() - t0 < START_TIMEOUT and proc.poll() is None:
                if select.select([notify], [], [], POLL)[0]:
                    now = time.monotonic() - t0
                    fields = dict(ln.split("=", 1) for ln in
                                  notify.recv(4096).decode().splitlines() if "=" in ln)
                    if "STATUS" in fields:
                        out.status.append((now, fields["STATUS"]))
                    if fields.get("READY") == "1":
                        out.ready = now
                        break
                if out.socket == float("inf") and _connects(ctl):
                    out.socket = time.monotonic() - t0
            if out.ready < START_TIMEOUT:
                ctl_env = python_env(cache, tree)
                out.ctl = [timed("", ctl_env, [sys.executable, "-m", "ecmpd.ecmpctl_command",
                                               "--socket", ctl, "status"])
                           for _ in range(CTL_RUNS)]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.log = (work / "ecmpd.log").read_text(errors="replace")
    return out


def measure_starts(lab: "Lab", reps: int, tree: Path = ROOT) -> list[Start]:
    cache = Path(tempfile.mkdtemp(prefix="ecmpd-pycache-"))
    wall(f"import {TARGET}; import ecmpd.ecmpctl_command", python_env(cache, tree))
    return [start_once(lab, cache, tree) for _ in range(reps)]


def _phase_key(text: str) -> str:
    """A STATUS text without its numbers ("2/2 WANs active" -> "N/N WANs active")."""
    return "".join("N" if c.isdigit() else c for c in text)


def rows(imp: Imports, starts: list[Start]) -> list[Row]:
    """The table rows (pure)."""
    ms = [1000 * x for x in imp.baseline]
    base = fmt_summary(ms, "ms", 0)
    n = "15 start-up"
    top = sorted(imp.by_package.items(), key=lambda kv: -kv[1])[:6]
    out = [
        Row(f"{n}: import {TARGET}", "bytecode cached (as installed by pip)",
            fmt_summary([1000 * x for x in imp.cached], "ms", 0), base),
        Row(f"{n}: import {TARGET}, CPU time", "user + system, bytecode cached",
            fmt_summary([1000 * x for x in imp.cached_cpu], "ms", 0),
            fmt_summary([1000 * x for x in imp.baseline_cpu], "ms", 0)),
        Row(f"{n}: import {TARGET}", "no bytecode (every module compiled)",
            fmt_summary([1000 * x for x in imp.uncached], "ms", 0), base),
        Row(f"{n}: import self time by package", "-X importtime, cached, median ms",
            ", ".join(f"{p} {v:.0f}" for p, v in top)),
    ]
    if not starts:
        return out
    lab = "2-WAN lab, probe defaults, bytecode cached; from exec of `ip netns exec`"
    out.append(Row(f"{n}: exec → control socket listens", lab,
                   fmt_summary([1000 * s.socket for s in starts], "ms", 0), base))
    ctl = [c for s in starts for c in s.ctl]
    if ctl:
        out.append(Row(f"{n}: `ecmpctl status`, exec → exit", "against the ready daemon, "
                       "bytecode cached", fmt_summary([1000 * w for w, _ in ctl], "ms", 0), base))
        out.append(Row(f"{n}: `ecmpctl status`, CPU time", "user + system",
                       fmt_summary([1000 * c for _, c in ctl], "ms", 0),
                       fmt_summary([1000 * x for x in imp.baseline_cpu], "ms", 0)))
    phases: dict[str, list[float]] = defaultdict(list)
    for s in starts:
        for at, text in s.status:
            phases[_phase_key(text)].append(1000 * at)
    for text, values in phases.items():
        out.append(Row(f"{n}: exec → STATUS “{text}”", lab, fmt_summary(values, "ms", 0),
                       base))
    out.append(Row(f"{n}: exec → READY=1 (first verdicts in the route)", lab,
                   fmt_summary([1000 * s.ready for s in starts], "ms", 0), base,
                   target="< 30 s (TimeoutStartSec)",
                   result="pass" if all(s.ready < 30 for s in starts) else "**fail**"))
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratios(new: tuple[Imports, list[Start]], old: tuple[Imports, list[Start]],
           label: str) -> list[Row]:
    """This tree against `label`'s, measured in turns in one run: medians and their
    ratio (pure)."""
    def pick(imp: Imports, starts: list[Start]) -> dict[str, float]:
        ctl = [c for s in starts for c in s.ctl]
        return {
            "import ecmpd.daemon, CPU": _median(imp.cached_cpu),
            "import ecmpd.daemon, wall": _median(imp.cached),
            "exec → control socket listens": _median([s.socket for s in starts]),
            "exec → READY=1": _median([s.ready for s in starts]),
            "`ecmpctl status`, exec → exit": _median([w for w, _ in ctl]),
            "`ecmpctl status`, CPU": _median([c for _, c in ctl]),
            "`python -c pass`, CPU": _median(imp.baseline_cpu),
        }
    a, b = pick(*new), pick(*old)
    return [Row(f"15 start-up: {k}", f"this tree against {label}, in turns",
                f"{1000 * a[k]:.0f} ms", f"{1000 * b[k]:.0f} ms",
                result=f"× {a[k] / b[k]:.2f}" if b[k] else "—")
            for k in a if a[k] == a[k] and b[k] == b[k]]


def checkout(rev: str) -> Path:
    """`rev` of this repository as a plain directory tree (``git archive``)."""
    where = Path(tempfile.mkdtemp(prefix="ecmpd-against-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def figure15(bench: "Bench") -> list[Row]:
    """Figure 15 of bench/run.py: start-up time."""
    reps = max(3, bench.plan.reps)
    imp = measure_imports(reps)
    starts = measure_starts(bench.lab("2"), reps)
    for s in starts:
        bench.note(f"fig 15 start: socket {s.socket:.3f}s, READY {s.ready:.3f}s, status "
                   + "; ".join(f"{t:.3f}s {x}" for t, x in s.status))
    return rows(imp, starts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/startup.py", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--imports-only", action="store_true", help="no lab (needs no root)")
    p.add_argument("--against", metavar="REV",
                   help="also measure git revision REV, in turns with this tree, and print "
                        "the ratios")
    args = p.parse_args(argv)
    if args.against:
        return against(args.against, args.reps, args.imports_only)
    imp = measure_imports(args.reps)
    starts: list[Start] = []
    if not args.imports_only:
        if os.geteuid() != 0:
            print("bench/startup.py: the lab part needs root (--imports-only does not)",
                  file=sys.stderr)
            return 2
        from lab import Lab, random_prefix, seed_spec, sweep
        prefix = random_prefix("est")
        lab = Lab(seed_spec(), prefix=prefix)
        try:
            lab.build()
            starts = measure_starts(lab, args.reps)
        finally:
            lab.teardown()
            sweep(prefix)
        for s in starts:
            print(f"start: socket {s.socket:.3f}s READY {s.ready:.3f}s "
                  + "; ".join(f"{t:.3f}s {x}" for t, x in s.status), file=sys.stderr)
            if s.ready == float("inf"):
                print(s.log, file=sys.stderr)
    print(render_table(rows(imp, starts)))
    return 0


def against(rev: str, reps: int, imports_only: bool) -> int:
    """This tree and `rev`'s, one repetition of each in turn (the machine's state moves
    both alike), then both tables and the ratios."""
    if not imports_only and os.geteuid() != 0:
        print("bench/startup.py: the lab part needs root (--imports-only does not)",
              file=sys.stderr)
        return 2
    trees = {"this tree": ROOT, rev: checkout(rev)}
    got: dict[str, tuple[Imports, list[Start]]] = {k: (Imports(), []) for k in trees}
    lab = None
    if not imports_only:
        from lab import Lab, random_prefix, seed_spec, sweep
        prefix = random_prefix("est")
        lab = Lab(seed_spec(), prefix=prefix)
    try:
        if lab is not None:
            lab.build()
        for _ in range(reps):
            for name, tree in trees.items():
                got[name][0].extend(measure_imports(1, tree))
                if lab is not None:
                    got[name][1].extend(measure_starts(lab, 1, tree))
    finally:
        if lab is not None:
            lab.teardown()
            sweep(prefix)
    for name in trees:
        print(f"\n{name}:\n\n{render_table(rows(*got[name]))}")
    print(f"\nratios:\n\n{render_table(ratios(got['this tree'], got[rev], rev))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
