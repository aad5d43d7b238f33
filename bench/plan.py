"""What a benchmark run measures (`Plan`) and what it measures in (`Bench`: its labs,
plan and notes); `bench/run.py` makes them, the figures (`bench.figures`) use them."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

from lab import Lab, make_spec, random_prefix, seed_spec, sweep

from bench import dynamic, tiers, underload

CLIENTS = 250
"""Extra client addresses in the 2- and 3-WAN labs (flows cycle over all of them)."""


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    reps: int = 3
    hold: int = 200
    dist_flows: int = 3000
    tp_rounds: int = 10
    tp_seconds: float = 3.0
    cpu_seconds: float = 60.0
    events: int = 50
    status_cli: int = 20
    status_requests: int = 100
    soak_seconds: float = 60.0
    """Figure 9: seconds of saturation, and of random loss, per run."""
    flood_seconds: float = 15.0
    """Figure 9: seconds of each ICMP flood."""
    ramps: int = 3
    """Figure 11: IPv4-only load ramps next to the idle IPv6 (bench/ipv6load.py)."""
    fwcost_rounds: int = 5
    """Figure 13: rounds of idle + every router (bench/fwcost.py)."""
    fwcost_seconds: float = 5.0
    """Figure 13: seconds of each window."""


FULL = Plan()
QUICK = Plan(reps=1, hold=150, tp_rounds=3, tp_seconds=1.0, cpu_seconds=15.0, events=10,
             status_cli=5, status_requests=20, soak_seconds=15.0, flood_seconds=5.0,
             ramps=2, fwcost_rounds=2, fwcost_seconds=4.0)

LAB_SPECS: dict[str, Callable[[], object]] = {
    "2": lambda: replace(seed_spec(), client_extra=CLIENTS),
    "3": lambda: make_spec(3, client_extra=CLIENTS),
    "8": lambda: make_spec(8),
    "32": lambda: make_spec(32),
    "9": lambda: make_spec(3, names=list(underload.NAMES)),
    "10": lambda: dynamic.SPEC,
    "11": lambda: make_spec(3, names=list(underload.NAMES), client_extra=CLIENTS),
    "12": lambda: make_spec(3, names=list(tiers.NAMES), client_extra=CLIENTS),
    "14": lambda: make_spec(2, names=["wlan1", "wlan2"], client_extra=2,
                            server_addresses=("203.0.113.10", *POLICY_SERVERS[4]),
                            server_addresses6=("2001:db8:feed::10", *POLICY_SERVERS[6])),
}
POLICY_SERVERS = {4: ("203.0.113.20", "203.0.113.30"),
                  6: ("2001:db8:feed::20", "2001:db8:feed::30")}
"""Figure 14's lab (bench/policyshares.py): per IP version, the VoIP provider and the
destination that must never use wlan1, besides the main server."""


class Bench:
    """Labs (built on first use, all torn down by `close`), the plan, the notes."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.prefix = random_prefix("ebn")
        self.labs: dict[str, Lab] = {}
        self.details: list[str] = []

    def lab(self, key: str) -> Lab:
        """The lab `key` (a key of `LAB_SPECS`), built on first use, servers running."""
        if key not in self.labs:
            lab = Lab(LAB_SPECS[key](), prefix=f"{self.prefix}{key}-")  # type: ignore[arg-type]
            self.labs[key] = lab
            t = time.monotonic()
            lab.build()
            self.progress(f"built lab {key} ({len(lab.spec.wans)} WANs) in "
                          f"{time.monotonic() - t:.1f}s")
        lab = self.labs[key]
        lab.start_servers()
        return lab

    def drop(self, key: str) -> None:
        """Tear lab `key` down (to free the machine)."""
        lab = self.labs.pop(key, None)
        if lab is not None:
            lab.teardown()

    def close(self) -> None:
        for key in list(self.labs):
            self.drop(key)
        sweep(self.prefix)

    def note(self, line: str) -> None:
        """A detail line: printed now and kept for results.md."""
        self.details.append(line)
        print("  " + line, file=sys.stderr, flush=True)

    @staticmethod
    def progress(line: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)
