"""Figure 14, policies leave other traffic alone: the shares of new connections that
match no policy, over two WANs of weight 1:1, with the issue's example policies present
and, measured in the same run, the same lab without them.  The matching connections of
the same run must all take their policy's WAN.

`figure14` measures, `rows` turns the counts into rows (pure).  Target (issue #19): the
non-matching shares within ±3 pp of the weights (3 sigma of `FLOWS` flows at 1:1 is
2.7 pp: a fair hash passes).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lab.runner import config_for

from bench.figures import _error
from bench.ipv6 import start_dual
from bench.plan import POLICY_SERVERS
from bench.routers import stop_ecmpd
from bench.stats import Row, verdict

if TYPE_CHECKING:
    from lab import Lab

    from bench.plan import Bench

FLOWS = 3000
"""Non-matching new connections per IP version and variant."""
MATCHING = 100
"""Connections that match the VoIP policy, per IP version (all must take wlan2)."""
TOLERANCE = 0.03
PROVIDER = (POLICY_SERVERS[4][0], POLICY_SERVERS[6][0])
NEVER = (POLICY_SERVERS[4][1], POLICY_SERVERS[6][1])
VERSIONS = (4, 6)
VARIANTS = ("without policies", "with policies")


def config(lab: "Lab", policies: bool) -> dict[str, Any]:
    """Defaults, both versions; with `policies`, tests/test_policies_lab.py's three."""
    cfg = config_for(lab, ipv6=True)
    if policies:
        metered = [lab.clients[2], lab.clients6[2]]
        cfg["policies"] = [
            {"name": "voip", "dst": [f"{PROVIDER[0]}/32", f"{PROVIDER[1]}/128"],
             "proto": "tcp", "dport": [5000, "6000-6100"], "use": ["wlan2"]},
            {"name": "metered host", "src": metered, "use": ["wlan1"], "fallback": "drop"},
            {"name": "never wlan1", "dst": [NEVER[0], NEVER[1]], "use": ["wlan2"]},
        ]
    return cfg


@dataclass
class Shares:
    """Per variant and IP version: {WAN or "failed": new connections}."""

    rest: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    matching: dict[int, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _spread(results: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        key = r.wan if r.ok else "failed"
        out[key] = out.get(key, 0) + 1
    return out


BATCH = 300
"""Connections per run of the flow tool (its deadline is per run: a busy machine opens
3 000 in one run too slowly)."""


def _flows(lab: "Lab", count: int, server: str, source: str) -> list[Any]:
    out: list[Any] = []
    while len(out) < count:
        out += lab.new_flows(min(BATCH, count - len(out)), timeout=3.0, server=server,
                             sources=[source])
    return out


def measure(bench: "Bench") -> Shares:
    lab = bench.lab("14")
    m = Shares()
    for variant in VARIANTS:
        try:
            d = start_dual(lab, config(lab, variant == "with policies"))
            try:
                for i, family in enumerate(VERSIONS):
                    main = (lab.spec.server_addresses[0], lab.server6)[i]
                    client = (lab.clients, lab.clients6)[i][0]
                    m.rest[(variant, family)] = _spread(_flows(lab, FLOWS, main, client))
                    if variant == "with policies":
                        m.matching[family] = _spread(_flows(lab, MATCHING, PROVIDER[i],
                                                            client))
            finally:
                stop_ecmpd(lab, d)
        except Exception as exc:  # noqa: BLE001 - a variant's failure is a row
            m.errors[variant] = _error(exc).removeprefix("ERROR: ")
            bench.note(f"figure 14 {variant}: {m.errors[variant]}")
    return m


def _share(counts: dict[str, int]) -> float | None:
    total = sum(counts.values())
    return counts.get("wlan1", 0) / total if total else None


def _cell(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{w} {100 * counts.get(w, 0) / total:.1f} %" for w in ("wlan1", "wlan2")]
    failed = f", {counts['failed']} failed" if counts.get("failed") else ""
    return f"{' / '.join(parts)} of {total} new connections{failed}"


def rows(m: Shares) -> list[Row]:
    """Per IP version: the non-matching shares with policies (baseline: without), and
    the matching connections' WAN."""
    setup = ("2 dual-stack WANs wlan1, wlan2, weights 1:1, l4 hash, defaults; policies: VoIP "
             "to a provider's prefix via wlan2, one host via wlan1 (drop), a destination "
             f"never via wlan1; {FLOWS} new TCP connections per version from a client "
             "that matches none, to a server that matches none")
    out = []
    for family in VERSIONS:
        name = f"14 non-matching shares with policies, IPv{family}"
        with_ = m.rest.get(("with policies", family))
        without = m.rest.get(("without policies", family))
        if with_ is None:
            out.append(Row(name, setup, f"ERROR: {m.errors.get('with policies', 'no data')}",
                           result="**ERROR**"))
            continue
        share = _share(with_)
        ok = (share is not None and abs(share - 0.5) <= TOLERANCE
              and not with_.get("failed"))
        base = (f"without policies: {_cell(without)}" if without is not None else
                f"ERROR: {m.errors.get('without policies', 'no data')}")
        matching = m.matching.get(family, {})
        text = (f"{_cell(with_)} (wlan1 {100 * (share or 0) - 50:+.1f} pp); matching "
                f"connections via wlan2: {matching.get('wlan2', 0)}/{sum(matching.values())}")
        out.append(Row(name, setup, text, base,
                       f"wlan1 50 % ± {100 * TOLERANCE:.0f} pp, 0 failed; matching "
                       "100 % via wlan2",
                       verdict(ok and matching.get("wlan2", 0) == MATCHING)))
    return out


def figure14(bench: "Bench") -> list[Row]:
    return rows(measure(bench))


def note() -> str:
    """How to read figure 14 (for results.md)."""
    return textwrap.fill(
        "Figure 14 (bench/policyshares.py): the same 2-WAN dual-stack lab with and without "
        "the issue's example policies, started afresh each; every non-matching connection "
        "is a new TCP connection from one client address to one server (the l4 hash spreads "
        "them by source port).  The baseline column is the same run without policies.", 88
    ) + "\n\n"
