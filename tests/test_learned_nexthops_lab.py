"""Learned gateways the kernel must be told about or refuses, end to end: the real
ecmpd in the lab's router namespace, real TCP/UDP flows from the LAN.

* wlan1 has a /32 lease, its client installed ``default via 10.111.0.1 dev wlan1
  onlink`` in main (as ISPs with /32 leases have it): ecmpd's routes via it carry the
  onlink flag and traffic;
* wlan3's client keeps its gateway (10.99.0.1, outside wlan3's subnet) and the host
  route to it in a table of its own: the kernel takes that route there, and refuses
  ecmpd's via the same gateway (no route to 10.99.0.1 in ecmpd's tables or main);
* wlan2 is static.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lab import Lab, LabSpec, LabWan
from lab.runner import Ecmpd, kernel_hops
from lab.wait import within

pytestmark = pytest.mark.lab

SPEC = LabSpec(wans=(LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
                     LabWan("wlan2", "10.112.0.2/24", "10.112.0.1"),
                     LabWan("wlan3", "10.113.0.2/24", "10.113.0.1")))
CONFIG: dict[str, Any] = {
    "lan": {"interfaces": ["Local"]},
    "wans": {"wlan1": {"interface": "wlan1", "gateway": "auto", "id": 1},
             "wlan2": {"interface": "wlan2", "gateway": "10.112.0.1", "id": 2},
             "wlan3": {"interface": "wlan3", "gateway": "auto", "id": 3}},
}
REFUSED = "the kernel refuses the route via 10.99.0.1 dev wlan3: Network is unreachable"


def ip(lab: Lab, *args: str) -> str:
    return lab.run(lab.ns_router, "ip", *args).stdout


@pytest.fixture
def learned(make_lab):
    lab = make_lab(SPEC)
    # wlan1: a /32 lease, the gateway reached onlink
    ip(lab, "addr", "flush", "dev", "wlan1")
    ip(lab, "addr", "add", "10.111.0.2/32", "dev", "wlan1")
    ip(lab, "route", "add", "default", "via", "10.111.0.1", "dev", "wlan1", "onlink",
       "proto", "dhcp")
    # wlan3: the client's own table (looked up by a rule of its own) holds its gateway
    ip(lab, "route", "add", "10.99.0.1", "dev", "wlan3", "scope", "link", "table", "100")
    ip(lab, "route", "add", "default", "via", "10.99.0.1", "dev", "wlan3", "table", "100",
       "proto", "dhcp")
    ip(lab, "rule", "add", "from", "10.113.0.2", "lookup", "100", "priority", "30000")
    lab.start_servers()
    d = Ecmpd(lab, CONFIG)
    yield lab, d
    d.stop()


def table_route(lab: Lab, table: int) -> list[dict[str, Any]]:
    return [r for r in json.loads(ip(lab, "-j", "-4", "route", "show", "default", "table",
                                     str(table))) if r.get("type", "unicast") == "unicast"]


def test_an_onlink_gateway_carries_traffic(learned) -> None:
    lab, d = learned
    d.start()
    st = d.wait_states({"wlan1": "up", "wlan2": "up", "wlan3": "down"})
    w1 = st["wans"]["wlan1"]
    assert (w1["gateway"], w1["nexthop"]) == ("10.111.0.1", "via 10.111.0.1 dev wlan1 onlink")
    assert [(r["gateway"], r["dev"], r["flags"]) for r in table_route(lab, 1001)] == [
        ("10.111.0.1", "wlan1", ["onlink"])]
    assert {(h["gateway"], h["interface"], h["onlink"]) for h in st["route"]["nexthops"]} == {
        ("10.111.0.1", "wlan1", True), ("10.112.0.1", "wlan2", False)}
    # real flows from the LAN, TCP and UDP, through both WANs, wlan1 among them
    for proto in ("tcp", "udp"):
        res = lab.new_flows(40, timeout=3.0, proto=proto)
        assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
        assert {r.wan for r in res} == {"wlan1", "wlan2"}, proto
    # and the router's own flows from wlan1's address leave by it
    res = lab.new_flows(4, timeout=2.0, from_ns=lab.ns_router, sources=["10.111.0.2"])
    assert all(r.ok and r.wan == "wlan1" for r in res), res
    # the client's route is left alone
    assert "default via 10.111.0.1 dev wlan1 proto dhcp onlink" in ip(lab, "route", "show")


def test_a_refused_nexthop_blocks_no_other_wans_change(learned) -> None:
    lab, d = learned
    d.start()
    st = d.wait_states({"wlan1": "up", "wlan2": "up", "wlan3": "down"})
    assert st["wans"]["wlan3"]["reason"] == REFUSED
    assert st["wans"]["wlan3"]["gateway"] == "10.99.0.1"
    assert st["wans"]["wlan3"]["active"] is False
    assert REFUSED in d.ctl("status").stdout
    assert kernel_hops(lab) == {("10.111.0.1", "wlan1", 1), ("10.112.0.1", "wlan2", 1)}
    # wlan2's ISP dies: its nexthop leaves the kernel's route in the usual time
    lab.fault("wlan2", "dead")
    t0 = time.monotonic()
    within(lambda: ("10.112.0.1", "wlan2", 1) not in kernel_hops(lab), 3.0, interval=0.02)
    took = time.monotonic() - t0
    assert kernel_hops(lab) == {("10.111.0.1", "wlan1", 1)}
    assert took < 1.5, took
    print(f"wlan2 dead -> out of the kernel's route: {took:.3f} s")
    st = d.wait_states({"wlan1": "up", "wlan2": "down", "wlan3": "down"})
    assert st["wans"]["wlan3"]["reason"] == REFUSED
    res = lab.new_flows(20, timeout=2.0)
    assert all(r.ok and r.wan == "wlan1" for r in res), [r for r in res if not r.ok][:3]
    # the cause goes (a route to the gateway in main, the ISP answering there): a later
    # reconcile installs wlan3's route, and wlan3 earns its place with its probes
    lab.run(lab.ns_isp("wlan3"), "ip", "addr", "add", "10.99.0.1/32", "dev", "cust")
    ip(lab, "route", "add", "10.99.0.1", "dev", "wlan3", "scope", "link")
    lab.heal("wlan2")
    d.wait_states({"wlan1": "up", "wlan2": "up", "wlan3": "up"})
    assert kernel_hops(lab) == {("10.111.0.1", "wlan1", 1), ("10.112.0.1", "wlan2", 1),
                                ("10.99.0.1", "wlan3", 1)}
    # the refusal was warned about once, not on every reconcile
    assert d.log().count(f"WARNING wlan3: {REFUSED}") == 1, d.log()[-3000:]
