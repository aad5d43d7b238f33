"""Tiers end to end: the real ecmpd in a dual-stack lab with two tier-1 WANs and a
tier-2 backup (`lte`), real TCP flows of both IP versions.  The backup carries no new
flow while tier 1 works, takes every new flow once tier 1 is dead, gives new flows back
when tier 1 returns, and keeps (or with `failback: flush` loses) the flows it carries
then.  The takeover time is the bench's (figure 12); these tests hold the verdicts."""

from __future__ import annotations

import time

import pytest

from lab.runner import config_for
from lab.topology import make_spec
from lab.wait import until

pytestmark = pytest.mark.lab

NAMES = ["wlan1", "wlan2", "lte"]


def tiered(lab, failback: str = "keep") -> dict:
    cfg = config_for(lab, ipv6=True)
    cfg["wans"]["lte"].update(tier=2, failback=failback)
    return cfg


def servers(lab) -> dict[int, str]:
    return {4: lab.spec.server_addresses[0], 6: lab.server6}


def wans_of(lab, count: int, family: int) -> dict[str, int]:
    """New flows of `family`: WAN -> how many went through it (a failed one is 'failed')."""
    out: dict[str, int] = {}
    for r in lab.new_flows(count, timeout=1.0, server=servers(lab)[family]):
        key = r.wan if r.ok else "failed"
        out[key] = out.get(key, 0) + 1
    return out


def only_lte(lab) -> dict[int, dict[str, int]] | None:
    """Both versions' new flows all through lte (None until then)."""
    seen = {f: wans_of(lab, 10, f) for f in (4, 6)}
    return seen if all(s == {"lte": 10} for s in seen.values()) else None


@pytest.mark.parametrize("failback", ["keep", "flush"])
def test_the_backup_tier_takes_new_flows_only_while_tier_1_is_dead(make_lab, ecmpd_in,
                                                                    failback):
    lab = make_lab(make_spec(3, names=NAMES))
    lab.start_servers()
    d = ecmpd_in(lab, tiered(lab, failback))
    for f in (4, 6):
        d.wait_states({n: "up" for n in NAMES}, family=f)
    st = d.status()
    assert st["new_flows_tier"] == {"ipv4": 1, "ipv6": 1}
    assert st["wans"]["lte"]["standby"] and st["wans"]["lte"]["ipv6"]["standby"]
    # tier 1 works: the backup carries no new flow of either version
    for f in (4, 6):
        seen = wans_of(lab, 150, f)
        assert set(seen) == {"wlan1", "wlan2"}, (f, seen)
    # every tier-1 WAN dies: every new flow goes through the backup
    t0 = time.monotonic()
    lab.fault("wlan1", "dead")
    lab.fault("wlan2", "dead")
    until(lambda: only_lte(lab), timeout=10.0, message="new flows all through lte",
          interval=0.0)
    took = time.monotonic() - t0
    assert took <= 4.0, f"tier 2 took every new flow {took:.2f}s after tier 1 died"
    st = d.status()
    assert st["new_flows_tier"] == {"ipv4": 2, "ipv6": 2}
    assert "new IPv4 flows: tier 2 (lte): no WAN of tier 1 is usable" in d.log()
    held = {f: lab.hold_flows(20, byte_interval=0.1, server=servers(lab)[f]) for f in (4, 6)}
    for h in held.values():
        assert h.wait_established() == 20
    # tier 1 back: new flows leave the backup
    lab.heal("wlan1")
    lab.heal("wlan2")
    for f in (4, 6):
        d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=15, family=f)
        seen = wans_of(lab, 100, f)
        assert set(seen) == {"wlan1", "wlan2"}, (f, seen)
    assert "new IPv4 flows: tier 1 again (wlan" in d.log()
    if failback == "flush":
        for h in held.values():     # removed from conntrack: their next bytes fail
            h.wait_broken(timeout=10.0)
    else:
        time.sleep(1.5)             # a span of the held flows' traffic, not a wait for a state
    for f, h in held.items():
        results = h.stop()
        assert {r.wan for r in results} == {"lte"}, (f, results[:3])
        broken = [r for r in results if r.broken]
        assert len(broken) == (20 if failback == "flush" else 0), (f, failback, broken[:3])
