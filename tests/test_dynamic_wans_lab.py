"""Dynamic WANs end to end (`gateway: auto`): a DHCP WAN (dnsmasq in its ISP, udhcpc on
the router, which puts its own default route in table main at metric 0, as ifupdown +
dhclient do), a point-to-point WAN (a PPP-like tun link that appears on connect and
vanishes on disconnect, with a new address on every reconnect) and a static WAN, with the
real ecmpd in the router namespace and real TCP flows from the LAN.

Expectations are data (`lab.wait.expect`): a view of the status or the kernel is polled until it
equals what is wanted, with a deadline, and a failure shows the difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from lab import Lab, LabSpec, LabWan
from lab.runner import Ecmpd
from lab.wait import expect

pytestmark = pytest.mark.lab

SPEC = LabSpec(wans=(LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
                     LabWan("wlan2", "10.112.0.2/24", "10.112.0.1"),
                     LabWan("ppp0", "10.113.0.2/24", "10.113.0.1", kind="ptp")))
CONFIG: dict[str, Any] = {
    "lan": {"interfaces": ["Local"]},
    "wans": {"wlan1": {"interface": "wlan1", "gateway": "auto", "id": 1},
             "wlan2": {"interface": "wlan2", "gateway": "10.112.0.1", "id": 2},
             "ppp0": {"interface": "ppp0", "gateway": "auto", "id": 3}},
}


def wans_view(d: Ecmpd, *keys: str) -> Callable[[], dict[str, tuple]]:
    def view() -> dict[str, tuple]:
        return {n: tuple(w[k] for k in keys) for n, w in d.status()["wans"].items()}
    return view


def table_route(lab: Lab, table: int) -> list[tuple[str | None, str]]:
    """(gateway, dev) of the unicast default routes in `table`."""
    routes = json.loads(lab.run(lab.ns_router, "ip", "-j", "-4", "route", "show", "default",
                                "table", str(table)).stdout)
    return [(r.get("gateway"), r["dev"]) for r in routes if r.get("type", "unicast") == "unicast"]


def main_defaults(lab: Lab) -> list[tuple[str | None, str, str, int]]:
    routes = json.loads(lab.run(lab.ns_router, "ip", "-j", "-4", "route", "show", "default",
                                "table", "main").stdout)
    return [(r.get("gateway"), r.get("dev"), r.get("protocol"), r.get("metric", 0))
            for r in routes]


def conntrack_to(lab: Lab, address: str) -> int:
    """conntrack entries whose replies go to `address` (NATed to it, or from it)."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "--reply-dst", address, check=False)
    return sum(1 for line in out.stdout.splitlines() if line.strip())


@pytest.fixture
def dyn(dhcp_tools, make_lab):
    lab = make_lab(SPEC)
    dhcp = lab.dhcp("wlan1")         # default via 10.111.0.1 in main, metric 0, proto dhcp
    lab.start_servers()
    d = Ecmpd(lab, CONFIG)
    yield lab, dhcp, d
    d.stop()
    dhcp.stop()


def all_up_holding(lab: Lab, d: Ecmpd, flows: int) -> tuple[Any, Any]:
    """Connect ppp0, start ecmpd, wait for every WAN UP, then hold `flows` LAN flows."""
    ptp = lab.ptp("ppp0")
    d.start()
    d.wait_states({"wlan1": "up", "wlan2": "up", "ppp0": "up"})
    held = lab.hold_flows(flows, byte_interval=0.1)
    held.wait_established()
    return ptp, held


def test_gateways_are_learned_and_main_default_routes_are_left_alone(dyn) -> None:
    lab, dhcp, d = dyn
    # ppp0 does not exist yet: ecmpd starts, the WAN waits
    d.start()
    expect(wans_view(d, "state", "gateway", "nexthop"), {
        "wlan1": ("up", "10.111.0.1", "via 10.111.0.1 dev wlan1"),
        "wlan2": ("up", "10.112.0.1", "via 10.112.0.1 dev wlan2"),
        "ppp0": ("down", None, None)})
    assert d.status()["wans"]["ppp0"]["reason"] == "interface missing"
    # the session connects: the device is the nexthop (no gateway), the peer is probed
    lab.ptp("ppp0")
    expect(wans_view(d, "state", "gateway", "nexthop", "address"), {
        "wlan1": ("up", "10.111.0.1", "via 10.111.0.1 dev wlan1", "10.111.0.2"),
        "wlan2": ("up", "10.112.0.1", "via 10.112.0.1 dev wlan2", "10.112.0.2"),
        "ppp0": ("up", None, "dev ppp0", "10.113.0.2")})
    st = d.status()
    assert list(st["wans"]["ppp0"]["targets"]) == ["10.113.0.1"]
    assert {(h["gateway"], h["interface"]) for h in st["route"]["nexthops"]} == {
        ("10.111.0.1", "wlan1"), ("10.112.0.1", "wlan2"), (None, "ppp0")}
    # the DHCP client's metric-0 route in main is untouched, and shadowed: new flows
    # from the LAN spread over all three WANs, NATed to each WAN's address
    assert main_defaults(lab) == [("10.111.0.1", "wlan1", "dhcp", 0)]
    res = lab.new_flows(60, timeout=3.0)
    assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
    assert {r.wan for r in res} == {"wlan1", "wlan2", "ppp0"}
    assert "error" not in d.log().lower()
    # the address goes from under the client: the kernel drops its route silently (no
    # route event); the address back, the gateway is not known until a lease says so
    lab.run(lab.ns_router, "ip", "addr", "flush", "dev", "wlan1")
    expect(lambda: (d.status()["wans"]["wlan1"]["state"],
                    d.status()["wans"]["wlan1"]["gateway"]), ("down", None), timeout=5.0)
    lab.run(lab.ns_router, "ip", "addr", "add", "10.111.0.2/24", "dev", "wlan1")
    expect(lambda: (d.status()["wans"]["wlan1"]["reason"],
                    d.status()["wans"]["wlan1"]["gateway"]), ("waiting for a gateway", None))
    assert table_route(lab, 1001) == []
    dhcp.renew()
    expect(wans_view(d, "state", "gateway"), {
        "wlan1": ("up", "10.111.0.1"), "wlan2": ("up", "10.112.0.1"), "ppp0": ("up", None)})


def test_a_moved_dhcp_gateway_is_followed_and_other_wans_flows_live_on(dyn) -> None:
    lab, dhcp, d = dyn
    ptp, held = all_up_holding(lab, d, 60)
    # the ISP moves its gateway; the old one goes at once, the lease renews
    lease = dhcp.move_gateway("10.111.0.254")
    assert lease.gateway == "10.111.0.254"
    expect(lambda: table_route(lab, 1001), [("10.111.0.254", "wlan1")], timeout=1.0)
    expect(wans_view(d, "state", "gateway"), {
        "wlan1": ("up", "10.111.0.254"), "wlan2": ("up", "10.112.0.1"), "ppp0": ("up", None)})
    assert main_defaults(lab) == [("10.111.0.254", "wlan1", "dhcp", 0)]
    assert list(d.status()["wans"]["wlan1"]["targets"]) == ["10.111.0.254"]
    # new flows through wlan1 (from its address) leave by the new gateway
    res = lab.new_flows(4, timeout=2.0, from_ns=lab.ns_router, sources=["10.111.0.2"])
    assert all(r.ok and r.wan == "wlan1" for r in res), res
    results = held.stop()
    others = [r for r in results if r.wan in ("wlan2", "ppp0")]
    assert len(others) > 20
    assert not [r for r in others if r.broken]
    assert "wlan1: gateway 10.111.0.1 -> 10.111.0.254" in d.log()
    ptp.disconnect()


def test_a_ppp_reconnect_with_a_new_address(dyn) -> None:
    lab, dhcp, d = dyn
    ptp, held = all_up_holding(lab, d, 90)
    assert conntrack_to(lab, "10.113.0.2") > 0
    ptp.reconnect("10.113.0.7")
    expect(wans_view(d, "state", "address", "nexthop"), {
        "wlan1": ("up", "10.111.0.2", "via 10.111.0.1 dev wlan1"),
        "wlan2": ("up", "10.112.0.2", "via 10.112.0.1 dev wlan2"),
        "ppp0": ("up", "10.113.0.7", "dev ppp0")})
    # connections NATed to the old address cannot work any more: gone
    expect(lambda: conntrack_to(lab, "10.113.0.2"), 0, timeout=2.0)
    res = lab.new_flows(60, timeout=3.0)
    assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
    assert {r.source for r in res if r.wan == "ppp0"} == {"10.113.0.7"}
    results = held.stop()
    others = [r for r in results if r.wan in ("wlan1", "wlan2")]
    assert len(others) > 30
    assert not [r for r in others if r.broken]
    ptp.disconnect()
    expect(wans_view(d, "state"), {"wlan1": ("up",), "wlan2": ("up",), "ppp0": ("down",)})
    assert d.status()["wans"]["ppp0"]["reason"] == "interface missing"
