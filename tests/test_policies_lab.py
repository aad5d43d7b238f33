"""Policies end to end: the real ecmpd in a dual-stack lab with two WANs, real TCP flows
of both IP versions.  A policy routes every matching connection via its WANs (VoIP to a
provider's prefix via one WAN; one host only via the metered WAN; a destination that
must never use a WAN), falls back as configured when they are down, and leaves
non-matching traffic balanced by weight."""

from __future__ import annotations

import pytest

from lab.runner import config_for
from lab.topology import make_spec

pytestmark = pytest.mark.lab

PROVIDER = ("203.0.113.20", "2001:db8:feed::20")
"""A second server per version: the 'VoIP provider'."""
NEVER = ("203.0.113.30", "2001:db8:feed::30")
"""A destination that must never use wlan1."""


def lab_with_servers(make_lab):
    lab = make_lab(make_spec(
        2, names=["wlan1", "wlan2"], client_extra=2,
        server_addresses=("203.0.113.10", PROVIDER[0], NEVER[0]),
        server_addresses6=("2001:db8:feed::10", PROVIDER[1], NEVER[1])))
    lab.start_servers()
    return lab


def config(lab, voip_fallback: str = "balance") -> dict:
    cfg = config_for(lab, ipv6=True)
    metered = [lab.clients[2], lab.clients6[2]]
    cfg["policies"] = [
        {"name": "voip", "dst": [f"{PROVIDER[0]}/32", f"{PROVIDER[1]}/128"], "proto": "tcp",
         "dport": [5000, "6000-6100"], "use": ["wlan2"], "fallback": voip_fallback},
        {"name": "metered host", "src": metered, "use": ["wlan1"], "fallback": "drop"},
        {"name": "never wlan1", "dst": [NEVER[0], NEVER[1]], "use": ["wlan2"]},
    ]
    return cfg


def spread(results) -> dict[str | None, int]:
    out: dict[str | None, int] = {}
    for r in results:
        key = r.wan if r.ok else "failed"
        out[key] = out.get(key, 0) + 1
    return out


def flows(lab, count: int, server: str, source: str | None = None):
    return lab.new_flows(count, timeout=1.5, server=server,
                         sources=[source] if source else None)


def test_policies_route_matching_flows_and_leave_the_rest_balanced(make_lab, ecmpd_in):
    lab = lab_with_servers(make_lab)
    d = ecmpd_in(lab, config(lab))
    for f in (4, 6):
        d.wait_states({"wlan1": "up", "wlan2": "up"}, family=f)
    for i, family in enumerate((4, 6)):
        main = (lab.spec.server_addresses[0], lab.server6)[i]
        client = (lab.clients, lab.clients6)[i]
        # every matching flow via the policy's WAN
        assert spread(flows(lab, 100, PROVIDER[i], client[0])) == {"wlan2": 100}, family
        assert spread(flows(lab, 100, NEVER[i], client[0])) == {"wlan2": 100}, family
        assert spread(flows(lab, 100, main, client[2])) == {"wlan1": 100}, family
        # the rest is balanced as before: weights 1:1 (3 sigma of 600 flows: ~6 pp)
        rest = spread(flows(lab, 600, main, client[0]))
        assert set(rest) == {"wlan1", "wlan2"}, (family, rest)
        assert abs(rest["wlan1"] - 300) <= 36, (family, rest)   # in flows: no float edge
    # status lists the policies with their counters
    st = d.status()
    pols = st["policies"]
    assert [p["name"] for p in pols] == ["voip", "metered host", "never wlan1"]
    assert all(p["packets"] > 0 for p in pols), pols


@pytest.mark.parametrize("fallback", ["balance", "drop"])
def test_a_policy_whose_wans_are_down_falls_back_as_configured(make_lab, ecmpd_in, fallback):
    lab = lab_with_servers(make_lab)
    d = ecmpd_in(lab, config(lab, voip_fallback=fallback))
    for f in (4, 6):
        d.wait_states({"wlan1": "up", "wlan2": "up"}, family=f)
    lab.fault("wlan2", "dead")
    for f in (4, 6):
        d.wait_states({"wlan2": "down"}, family=f)
    for i in (0, 1):
        got = spread(flows(lab, 40, PROVIDER[i], (lab.clients, lab.clients6)[i][0]))
        assert got == ({"wlan1": 40} if fallback == "balance" else {"failed": 40}), (i, got)
        # the metered host's policy (drop) is untouched: its WAN is up
        assert spread(flows(lab, 20, lab.spec.server_addresses[0] if i == 0 else lab.server6,
                            (lab.clients, lab.clients6)[i][2])) == {"wlan1": 20}
    lab.heal("wlan2")
    for f in (4, 6):
        d.wait_states({"wlan2": "up"}, timeout=15, family=f)
    assert spread(flows(lab, 40, PROVIDER[0], lab.clients[0])) == {"wlan2": 40}
