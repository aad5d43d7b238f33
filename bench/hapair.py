#!/usr/bin/env python3
"""Figure 16: an ecmpd HA pair's takeover (lab.hapair: keepalived + conntrackd).

    sudo .venv/bin/python bench/hapair.py [--runs N] [--held N]

One pair; each run holds `held` NATed TCP flows over both WANs, starts new flows every
20 ms, kills the master (SIGKILL to keepalived, conntrackd and ecmpd, links down) and
measures: when the backup held every floating address, the new-flow outage, how many
held flows broke, and how many kept their WAN and ct mark in the new master's kernel.
The dead box then comes back (reboot, links, daemons) as backup, and the next run kills
the other one.  The baseline column is one more takeover with the backup's conntrackd killed first (the
notify script's commit fails): what the state sync is worth.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stats import Row, fmt_summary, meets, render_table, verdict  # noqa: E402
from lab import driver, hapair, netns  # noqa: E402
from lab.traffic import fault_offset, outage  # noqa: E402
from lab.wait import until  # noqa: E402

if TYPE_CHECKING:
    from bench.plan import Bench

MAX_OUTAGE = 1.0


@dataclass(frozen=True)
class Takeover:
    """One killed master."""

    moved: float
    """Seconds from the kill to the backup holding every floating address."""
    outage: float
    """New-flow outage (s)."""
    held: int
    broken: int
    kept: int
    """Held flows whose WAN and ct mark in the new master's kernel are those they had."""


def takeover(p: hapair.HaPair, held: int, sync: bool = True) -> Takeover:
    """Kill the master under `held` flows and new ones; bring it back as backup."""
    master = p.master()
    if master is None:
        raise RuntimeError("no master")
    backup = next(b for b in hapair.BOXES if b != master)
    # entries of earlier runs' flows may linger (a killed box sent no FIN): not ours
    stale = set(p.pinned(master))

    def pinned_here() -> dict[int, tuple[str, str]]:
        return {port: v for port, v in p.pinned(master).items() if port not in stale}

    hold = driver.start_hold(p.ns("cl"), hapair.SERVER, held, byte_interval=0.1,
                             echo_timeout=3.0, wan_of=hapair.wan_of)
    try:
        if hold.wait_established(15) != held:
            raise RuntimeError("not every held flow was established")
        until(lambda: len(pinned_here()) >= held, 5, "flows in the master's table")
        if sync:
            until(lambda: p.synced(backup) >= held, 5, "flows in the backup's cache")
        else:   # the baseline: the backup has no conntrackd to commit anything
            p.kill_conntrackd(backup)
        before = pinned_here()
        flows = driver.start_flows(p.ns("cl"), hapair.SERVER, 150, interval=0.02,
                                   timeout=1.0, wan_of=hapair.wan_of)
        flows.wait_started()
        time.sleep(1.0)
        killed = p.kill(master)
        until(lambda: p.holds_all(backup), 5, f"{backup} holding every floating address")
        moved = time.time() - killed
        results = flows.result()
        lost = outage(results, fault_offset(results, killed))
        time.sleep(1.0)
        after = p.pinned(backup)
        kept = sum(1 for port, v in before.items() if after.get(port) == v)
        broken = sum(1 for r in hold.stop() if r.broken)
    finally:
        if hold.proc.poll() is None:
            hold.proc.kill()
    p.reboot(master)
    p.mend(master)
    p.start(master)
    until(lambda: "BACKUP" in p.notify_log(master).split("MASTER")[-1], 10, "back as backup")
    return Takeover(moved, lost, held, broken, kept)


def rows(runs: list[Takeover], base: list[Takeover]) -> list[Row]:
    """The table rows of figure 16 (`base`: runs without conntrackd's sync)."""
    def cell(xs: list[Takeover], what: str) -> str:
        if not xs:
            return "—"
        if what == "moved":
            return fmt_summary([t.moved for t in xs], "s", 2)
        if what == "outage":
            return fmt_summary([t.outage for t in xs], "s", 2)
        if what == "broken":
            return f"{sum(t.broken for t in xs)} of {sum(t.held for t in xs)} (n={len(xs)})"
        return f"{sum(t.kept for t in xs)} of {sum(t.held for t in xs)} (n={len(xs)})"
    setup = (f"2 routers, keepalived VRRPv3 advert 0.1 s + conntrackd FTFW, 2 WANs SNAT to "
             f"floating addresses, {runs[0].held if runs else 0} held flows + a new flow "
             f"every 20 ms; master SIGKILLed, links down")
    return [
        Row("16 HA takeover: floating addresses moved", setup, cell(runs, "moved"),
            cell(base, "moved"), "—", "info"),
        Row("16 HA takeover: new-flow outage", setup, cell(runs, "outage"),
            cell(base, "outage"), f"≤ {MAX_OUTAGE} s",
            verdict(bool(runs) and meets([t.outage for t in runs], MAX_OUTAGE))),
        Row("16 HA takeover: held flows broken", setup, cell(runs, "broken"),
            cell(base, "broken"), "0", verdict(bool(runs) and not any(t.broken for t in runs))),
        Row("16 HA takeover: WAN and ct mark kept", setup, cell(runs, "kept"),
            cell(base, "kept"), "all",
            verdict(bool(runs) and all(t.kept == t.held for t in runs))),
    ]


def measure(prefix: str, runs: int, held: int, baseline: bool = True,
            note: Callable[[str], None] = print) -> tuple[list[Takeover], list[Takeover]]:
    """`runs` takeovers with sync, then (with `baseline`) one without."""
    p = hapair.HaPair(prefix=prefix).build()
    try:
        p.start_pair(server_port=hapair.PORT)
        done = []
        for i in range(runs):
            t = takeover(p, held)
            note(f"fig 16 run {i + 1}: {t}")
            done.append(t)
        base = []
        if baseline:
            t = takeover(p, held, sync=False)
            note(f"fig 16 without sync: {t}")
            base.append(t)
        return done, base
    finally:
        p.teardown()


def figure16(bench: "Bench") -> list[Row]:
    """Figure 16 of bench/run.py: the HA pair's takeover."""
    runs, base = measure(f"{bench.prefix}ha-", max(3, bench.plan.reps), 100,
                         note=bench.note)
    return rows(runs, base)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/hapair.py", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--held", type=int, default=100)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args(argv)
    runs, base = measure(netns.random_prefix("ehb"), args.runs, args.held,
                         not args.no_baseline)
    print(render_table(rows(runs, base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
