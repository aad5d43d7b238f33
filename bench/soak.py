#!/usr/bin/env python3
"""A soak: the real ecmpd in a 3-WAN lab for N minutes while faults toggle and status is
polled; prints RSS and open descriptors over time and whether they level off.

    sudo .venv/bin/python bench/soak.py [--minutes 10] [--warmup 2] [--out FILE]

Every few seconds one WAN gets a fault (dead, upstream, carrier, 20 % loss) or is healed,
in a fixed rotation; `ecmpctl status --json` runs every second and the daemon's VmRSS,
the resident part of its brk heap (glibc's main arena: `[heap]` in smaps; Python's own
pymalloc arenas are separate mappings), its resident file pages (RssFile: code of the
interpreter and libraries, touched once per code path) and its fd count are sampled
every 10 s.  The
first `--warmup` minutes are shown but not judged.  The verdict: "flat" when the RSS
slope after the warm-up is under 0.05 MB/min over its second half (the first half's
slope is shown too) and the fd count ends where it started.  Touches only the
namespaces it creates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import Lab, make_spec  # noqa: E402
from lab.runner import Ecmpd, config_for  # noqa: E402

FAULTS = ("dead", "upstream", "carrier", "loss")
STEP = 4.0
"""Seconds between two fault changes."""


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A kB field of /proc/PID/status: VmRSS = RssAnon + RssFile (+ RssShmem)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith(field + ":"))


def heap_kb(pid: int) -> int:
    """Resident kB of the process's brk heap (glibc's main arena)."""
    with open(f"/proc/{pid}/smaps") as f:
        inside = False
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith("[heap]")
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, kB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 0.0 if den == 0 else sum((t - mt) * (v - mv) for t, v in samples) / den * 60 / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0,
                   help="minutes at the start shown but left out of the verdict")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/soak.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    spec = make_spec(3, names=["north", "south", "west"])
    lines: list[str] = []
    with Lab(spec) as lab:
        d = Ecmpd(lab, config_for(lab, targets="both"))
        d.start()
        try:
            d.wait_states({w.name: "up" for w in spec.wans})
            pid = d.proc.pid
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            samples: list[tuple[float, int, int, int, int]] = []
            statuses = failures = changes = 0
            next_fault, next_sample, k = t0, t0, 0
            active: tuple[str, str] | None = None
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_fault:
                    if active is not None:
                        wan, mode = active
                        lab.set_loss(wan, 0) if mode == "loss" else lab.heal(wan)
                        active = None
                    else:
                        wan = spec.wans[k % 3].name
                        mode = FAULTS[(k // 3) % len(FAULTS)]
                        lab.set_loss(wan, 20) if mode == "loss" else lab.fault(wan, mode)
                        active = (wan, mode)
                        k += 1
                    changes += 1
                    next_fault = now + STEP
                if now >= next_sample:
                    samples.append((now - t0, rss_kb(pid), fds(pid), heap_kb(pid),
                                    rss_kb(pid, "RssFile")))
                    next_sample = now + 10
                try:
                    d.status()
                    statuses += 1
                except Exception:
                    failures += 1
                time.sleep(1.0)
            samples.append((time.monotonic() - t0, rss_kb(pid), fds(pid), heap_kb(pid),
                            rss_kb(pid, "RssFile")))
            errors = [x for x in d.log().splitlines() if " ERROR " in x or "Traceback" in x]
        finally:
            d.stop()
    judged = [x for x in samples if x[0] >= args.warmup * 60] or samples
    half = judged[len(judged) // 2:]
    first = judged[: len(judged) // 2 + 1]
    slope2 = slope_mb_per_min([(t, v) for t, v, *_ in half])
    slope1 = slope_mb_per_min([(t, v) for t, v, *_ in first])
    heap2 = slope_mb_per_min([(t, h) for t, _, _, h, _ in half])
    fd_start, fd_end = samples[0][2], samples[-1][2]
    flat = slope2 < 0.05 and fd_end <= fd_start
    lines += [
        f"soak: {args.minutes:g} min, 3 WANs (gateway + upstream targets), {changes} fault "
        f"changes (every {STEP:g} s: {', '.join(FAULTS)} and heal), {statuses} status calls "
        f"({failures} failed), {len(errors)} ERROR/traceback log lines",
        "",
        "| t (s) | VmRSS (MB) | of it brk heap (MB) | of it file pages (MB) | open fds |",
        "|---|---|---|---|---|",
        *(f"| {t:.0f}{' (warm-up)' if t < args.warmup * 60 else ''} | {v / 1024:.1f} | "
          f"{h / 1024:.1f} | {fl / 1024:.1f} | {n} |" for t, v, n, h, fl in samples),
        "",
        f"RSS slope after the {args.warmup:g} min warm-up: first half {slope1:+.3f} MB/min, "
        f"second half {slope2:+.3f} MB/min (brk heap {heap2:+.3f}); fds {fd_start} -> "
        f"{fd_end}: {'flat' if flat else 'NOT flat'}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if flat and not failures and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
