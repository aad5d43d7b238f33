"""gateways: other programs' default routes, as a `gateway: auto` WAN learns from them
(pure parsing here; the reads run end to end in tests/test_dynamic_wans_lab.py)."""

from __future__ import annotations

import socket

import ecmpd.netlinkimport  # noqa: F401  (pyroute2 loaded the way ecmpd loads it)
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ecmpd.gateways import defaults_of
from ecmpd.state import Default

OURS = 236


def route(gateway: str | None = "192.0.2.1", oif: int = 11, proto: int = 16, metric: int = 0,
          dst_len: int = 0, kind: int = 1, multipath: list | None = None) -> rtmsg:
    m = rtmsg()
    m["family"], m["dst_len"], m["proto"], m["type"] = socket.AF_INET, dst_len, proto, kind
    attrs: list = [("RTA_TABLE", 254), ("RTA_PRIORITY", metric)]
    if multipath is not None:
        attrs.append(("RTA_MULTIPATH", multipath))
    else:
        attrs.append(("RTA_OIF", oif))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
    m["attrs"] = attrs
    return m


def test_a_dhcp_clients_route_and_a_device_route() -> None:
    assert defaults_of([route(metric=100), route(None, oif=20, proto=3)], OURS) == (
        Default(0, 20, ""), Default(100, 11, "192.0.2.1"))


def test_ecmpds_own_routes_other_prefixes_and_other_types_are_not_gateways() -> None:
    assert defaults_of([route(proto=OURS), route(dst_len=24), route(None, kind=7),
                        route(None, kind=6)], OURS) == ()


def test_every_nexthop_of_a_multipath_route_counts() -> None:
    hops = [{"oif": 11, "hops": 0, "attrs": [("RTA_GATEWAY", "192.0.2.1")]},
            {"oif": 12, "hops": 4, "attrs": [("RTA_GATEWAY", "198.51.100.1")]}]
    assert defaults_of([route(multipath=hops, metric=5)], OURS) == (
        Default(5, 11, "192.0.2.1"), Default(5, 12, "198.51.100.1"))


def test_an_onlink_route_is_learned_with_its_flag() -> None:
    onlink = route("203.0.113.1")
    onlink["flags"] = 4                       # RTNH_F_ONLINK: `default via X dev wan onlink`
    hops = [{"oif": 12, "hops": 0, "flags": 4, "attrs": [("RTA_GATEWAY", "198.51.100.1")]},
            {"oif": 13, "hops": 0, "flags": 0x10, "attrs": [("RTA_GATEWAY", "10.0.0.1")]}]
    assert defaults_of([onlink, route(multipath=hops, metric=5)], OURS) == (
        Default(0, 11, "203.0.113.1", True), Default(5, 12, "198.51.100.1", True),
        Default(5, 13, "10.0.0.1", False))    # linkdown (0x10) is no onlink
