"""`nat:` per WAN and IP version with the real ecmpd: a LAN with public prefixes of both
versions that wan1's ISP routes to the router (and accepts from it: BCP38), next to
wan2, whose ISP accepts only its customer subnet.  A server reports the source it saw:
the client's public address means the flow left unNATed, and only wan1's ISP lets such a
flow through (wan2's drops it), so it left by wan1; a WAN's own address means it was
masqueraded to that WAN."""

from __future__ import annotations

from collections import Counter

import pytest

from lab.runner import config_for
from lab.topology import LabSpec, LabWan
from lab.wait import until

pytestmark = pytest.mark.lab

PUBLIC = ("203.0.113.65/26", "2001:db8:ff::1/64")
"""The router's addresses in the LAN's public prefixes (the client is .66 and ::2)."""


def sources(lab, server: str, source: str, count: int = 60) -> Counter:
    """The source addresses the server saw for `count` new flows from the client's
    `source`, each flow answered."""
    results = lab.new_flows(count, timeout=3.0, server=server, sources=[source])
    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} flows failed, e.g. {failed[:3]}"
    return Counter(r.source for r in results)


def tracked(lab, marks: dict[str, int]) -> dict[str, int]:
    """TCP conntrack entries per IP version and WAN mark (``4 wan1`` ...), as counted from
    `conntrack -L` (the flows of `sources` stay in TIME_WAIT for minutes)."""
    out = {}
    for family in (4, 6):
        text = lab.run(lab.ns_router, "conntrack", "-L", "-p", "tcp", "-f", f"ipv{family}",
                       check=False).stdout
        for name, mark in marks.items():
            out[f"{family} {name}"] = sum(f"mark={mark} " in line for line in text.splitlines())
    return out


def test_nat_none_leaves_the_public_lan_unnatted_per_wan_and_version(make_lab, ecmpd_in):
    lab = make_lab(LabSpec(wans=(
        LabWan("wan1", "10.101.0.2/24", "10.101.0.1", routes_public=True),
        LabWan("wan2", "10.102.0.2/24", "10.102.0.1")), lan_public=PUBLIC))
    pub4, pub6 = lab.clients_public
    wan1, wan2 = lab.spec.wans
    cfg = config_for(lab, ipv6=True)
    cfg["wans"]["wan1"]["nat"] = "none"
    d = ecmpd_in(lab, cfg)
    st = d.wait_states({"wan1": "up", "wan2": "up"}, family=6)
    assert [st["wans"][w]["nat"] for w in ("wan1", "wan2")] == [
        {"ipv4": "none", "ipv6": "none"}, {"ipv4": "masquerade", "ipv6": "masquerade"}]
    assert "  nat: ipv4 none, ipv6 none\n" in d.ctl("status", "-v").stdout
    lab.start_servers()
    # through wan1 unchanged, through wan2 masqueraded; each WAN takes some of them
    assert set(sources(lab, lab.spec.server_addresses[0], pub4)) == \
        {pub4, str(wan2.interface.ip)}
    assert set(sources(lab, lab.server6, pub6)) == {pub6, str(wan2.interface6.ip)}

    # wan1 masquerades IPv4 again, IPv6 still leaves unchanged (a reload rewrites the
    # table): wan1's IPv4 connections go (their unNATed mappings would live on), its
    # IPv6 ones and wan2's stay
    marks = {w: int(st["wans"][w]["mark"], 16) for w in ("wan1", "wan2")}
    before = tracked(lab, marks)
    assert all(before.values()), before
    cfg["wans"]["wan1"]["nat"] = {"ipv6": "none"}
    d.write_config(cfg)
    assert d.ctl("reload").returncode == 0
    want, seen = {**before, "4 wan1": 0}, {}
    until(lambda: seen.update(tracked(lab, marks)) or seen == want, 5,
          lambda _: f"conntrack after the reload: {seen}, want {want}")
    assert "wan1 IPv4: nat none -> masquerade: removing its IPv4 connections" in d.log()
    assert "in a child failed" not in d.log()     # parsed and written apart
    assert d.status()["wans"]["wan1"]["nat"] == {"ipv4": "masquerade", "ipv6": "none"}
    text = d.ctl("status", "-v").stdout
    assert "  nat: ipv6 none\n" in text and text.count("  nat: ") == 1
    assert set(sources(lab, lab.spec.server_addresses[0], pub4)) == \
        {str(wan1.interface.ip), str(wan2.interface.ip)}
    assert set(sources(lab, lab.server6, pub6)) == {pub6, str(wan2.interface6.ip)}
