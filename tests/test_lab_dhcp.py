"""The lab's DHCP ISP (`lab.dhcp`): dnsmasq in the ISP, udhcpc + our script on the router."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Callable

import pytest

from lab import DhcpWan, Lab, seed_spec
from lab.dhcp import (MIN_LEASE_S, SCRIPT, dhcp_bcp38_script, dnsmasq_argv, parse_events,
                            udhcpc_argv)

MakeLab = Callable[..., Lab]


# ------------------------------------------------------------------ pure


def test_parse_events() -> None:
    text = (
        '{"event":"deconfig","ip":"","mask":"","router":"","lease":"","serverid":"",'
        '"error":"","t":1.5}\n'
        '{"event":"bound","ip":"10.111.0.2","mask":"24","router":"10.111.0.1 10.111.0.9",'
        '"lease":"120","serverid":"10.111.0.1","error":"","t":2.25}\n'
        '{"event":"renew","ip":"10.111.0.2","mask":"24","router":"","lease":"120",'
        '"serverid":"10.111.0.1","error":"RTNETLINK answers: File exists","t":3}\n'
        '{"event":"bou')  # a line being written
    d, b, r = parse_events(text)
    assert (d.kind, d.address, d.gateway, d.lease_s, d.applied) == (
        "deconfig", None, None, None, 1.5)
    assert (b.kind, b.address, b.ip, b.gateway, b.lease_s, b.server, b.error, b.applied) == (
        "bound", "10.111.0.2/24", "10.111.0.2", "10.111.0.1", 120, "10.111.0.1", None, 2.25)
    assert r.gateway is None and r.error == "RTNETLINK answers: File exists"


def test_bcp38_lets_dhcp_in_and_nothing_else_from_outside() -> None:
    s = dhcp_bcp38_script("10.111.0.0/24")
    accept = s.index("ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept")
    assert accept < s.index('iifname "cust" ip saddr != 10.111.0.0/24 counter drop')
    assert "table ip lab_bcp38" in s and "priority -300" in s


def test_argvs() -> None:
    argv = dnsmasq_argv("cust", "10.111.0.2", "10.111.0.2", "255.255.255.0", "10.111.0.1", 120,
                        "/t/leases", "/t/pid")
    for want in ("--port=0", "--conf-file=/dev/null", "--no-daemon", "--no-ping",
                 "--dhcp-range=10.111.0.2,10.111.0.2,255.255.255.0,120s",
                 "--dhcp-option=3,10.111.0.1", "--dhcp-leasefile=/t/leases", "--interface=cust"):
        assert want in argv
    assert udhcpc_argv("wlan1", "/t/s")[:6] == ["udhcpc", "-f", "-i", "wlan1", "-s", "/t/s"]
    assert "resolv" not in SCRIPT  # never the host's resolver files
    assert 'ip -4 route add 0.0.0.0/0 via "$gw"' in SCRIPT


def test_parameters_are_checked(tmp_path) -> None:
    lab = SimpleNamespace(spec=seed_spec())
    ok = DhcpWan(lab, "wlan1", workdir=tmp_path)  # type: ignore[arg-type]
    assert (ok.address, ok.gateway, ok.metric, ok.table) == ("10.111.0.2", "10.111.0.1", 0, "main")
    for kw in (dict(lease_s=MIN_LEASE_S - 1), dict(address="10.112.0.5"),
               dict(gateway="10.111.0.2"), dict(address="10.111.0.255"), dict(metric=-1)):
        with pytest.raises(ValueError):
            DhcpWan(lab, "wlan1", workdir=tmp_path, **kw)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        DhcpWan(lab, "nope", workdir=tmp_path)  # type: ignore[arg-type]


# ------------------------------------------------------------------ lab


@pytest.fixture
def dhcp_lab(dhcp_tools: None, make_lab: MakeLab) -> Lab:
    return make_lab()


def routes(d: DhcpWan) -> list[tuple[str, str | None, int, str]]:
    """(gateway, table, metric, proto) of the router's default routes on the WAN."""
    return [(r.get("gateway"), r.get("table", "main"), r.get("metric", 0), r.get("protocol"))
            for r in d.default_routes()]


def isp_addresses(lab: Lab, wan: str) -> list[str]:
    out = lab.run(lab.ns_isp(wan), "ip", "-4", "-o", "addr", "show", "dev", "cust").stdout
    return re.findall(r"inet (\S+)", out)


def pings(lab: Lab, ns: str, dst: str, *opts: str) -> bool:
    ping = lab.run(ns, "ping", "-n", "-c", "1", "-W", "0.5", *opts, dst, check=False)
    return ping.returncode == 0


def flows_from_router(lab: Lab) -> set[str | None]:
    res = lab.new_flows(2, timeout=1.0, from_ns=lab.ns_router)
    assert all(r.ok for r in res), res
    return {r.source for r in res}


@pytest.mark.lab
def test_lease_applied_default_route_in_main_at_metric_0(dhcp_lab: Lab) -> None:
    lab = dhcp_lab
    t0 = time.time()
    d = lab.dhcp("wlan1")
    lease = d.lease
    assert lease is not None and lease.error is None
    assert (lease.kind, lease.address, lease.gateway, lease.lease_s) == (
        "bound", "10.111.0.2/24", "10.111.0.1", MIN_LEASE_S)
    assert lease.applied - t0 < 3.0
    assert d.router_addresses() == ["10.111.0.2/24"]  # the static one went first
    assert routes(d) == [("10.111.0.1", "main", 0, "dhcp")]
    assert len(d.server_leases()) == 1 and " 10.111.0.2 " in d.server_leases()[0]
    lab.start_servers()
    assert flows_from_router(lab) == {"10.111.0.2"}
    # A plain renewal keeps address and route.
    renewed = d.renew()
    assert (renewed.kind, renewed.address, renewed.gateway) == (
        "renew", "10.111.0.2/24", "10.111.0.1")
    assert routes(d) == [("10.111.0.1", "main", 0, "dhcp")]


@pytest.mark.lab
def test_gateway_move_installs_the_new_route_and_removes_the_old(dhcp_lab: Lab) -> None:
    lab = dhcp_lab
    d = lab.dhcp("wlan1")
    lab.start_servers()
    t0 = time.time()
    lease = d.move_gateway("10.111.0.254")  # the old address goes at once: the client rebinds
    assert lease.gateway == "10.111.0.254" and lease.error is None
    assert lease.applied - t0 < 5.0
    assert routes(d) == [("10.111.0.254", "main", 0, "dhcp")]
    assert isp_addresses(lab, "wlan1") == ["10.111.0.254/24"]
    assert not pings(lab, lab.ns_router, "10.111.0.1")
    assert flows_from_router(lab) == {"10.111.0.2"}
    t0 = time.time()
    lease = d.move_gateway("10.111.0.1", keep_old=True)  # old removed after the renewal
    assert lease.gateway == "10.111.0.1" and lease.applied - t0 < 2.0
    assert routes(d) == [("10.111.0.1", "main", 0, "dhcp")]
    assert isp_addresses(lab, "wlan1") == ["10.111.0.1/24"]
    assert flows_from_router(lab) == {"10.111.0.2"}


@pytest.mark.lab
def test_address_change_release_and_start_over(dhcp_lab: Lab) -> None:
    lab = dhcp_lab
    d = lab.dhcp("wlan1")
    lab.start_servers()
    lease = d.change_address("10.111.0.77")  # NAK, deconfig, discover
    assert (lease.kind, lease.address, lease.gateway) == ("bound", "10.111.0.77/24", "10.111.0.1")
    assert [e.kind for e in d.events()][-3:] == ["nak", "deconfig", "bound"]
    assert d.router_addresses() == ["10.111.0.77/24"]
    assert routes(d) == [("10.111.0.1", "main", 0, "dhcp")]
    assert flows_from_router(lab) == {"10.111.0.77"}
    d.release()
    assert d.lease is None and d.default_routes() == [] and d.router_addresses() == []
    assert d.server_leases() == []  # dnsmasq got the RELEASE
    assert d.renew().address == "10.111.0.77/24"  # SIGUSR1 after a release: start over
    assert routes(d) == [("10.111.0.1", "main", 0, "dhcp")]


@pytest.mark.lab
def test_own_table_and_metric_and_a_conflict_at_metric_0(dhcp_lab: Lab) -> None:
    lab = dhcp_lab
    d1 = lab.dhcp("wlan1", table=101, metric=100, lifetimes=True)  # NetworkManager-like
    assert routes(d1) == [("10.111.0.1", "101", 100, "dhcp")]
    addr = lab.run(lab.ns_router, "ip", "-4", "-o", "addr", "show", "dev", "wlan1").stdout
    lft = re.search(r"dynamic.*valid_lft (\d+)sec", addr)  # expires with the lease
    assert lft is not None and 100 < int(lft.group(1)) <= MIN_LEASE_S, addr
    d2 = lab.dhcp("wlan2")  # dhclient-like: main, metric 0
    assert routes(d2) == [("10.112.0.1", "main", 0, "dhcp")]
    assert lab.run(lab.ns_router, "ip", "route", "show", "default").stdout.split()[:3] == [
        "default", "via", "10.112.0.1"]
    # A second dhclient-like client: its default at main/0 collides, as with dhclient.
    d1.stop()  # killed, not released: its address and table-101 route stay
    assert routes(d1) == [("10.111.0.1", "101", 100, "dhcp")]
    d3 = lab.dhcp("wlan1")
    assert d3.lease is not None and "File exists" in (d3.lease.error or "")
    assert d3.router_addresses() == ["10.111.0.2/24"]
    assert routes(d2) == [("10.112.0.1", "main", 0, "dhcp")]  # never replaced


@pytest.mark.lab
def test_bcp38_still_drops_unnatted_lan_traffic(dhcp_lab: Lab) -> None:
    lab = dhcp_lab
    d = lab.dhcp("wlan1")
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    lab.run(lab.ns_inet, "ip", "route", "add", "192.168.0.0/24", "via", "100.64.1.1")
    assert d.lease is not None and d.lease.ip is not None
    lab.run(lab.ns_isp("wlan1"), "ip", "route", "add", "192.168.0.0/24", "via", d.lease.ip)
    lab.start_servers()
    assert not any(r.ok for r in lab.new_flows(2, timeout=0.5))
    counter = lab.run(lab.ns_isp("wlan1"), "nft", "list", "table", "ip", "lab_bcp38").stdout
    assert int(re.search(r"packets (\d+)", counter).group(1)) > 0  # type: ignore[union-attr]
    assert d.renew().error is None  # DHCP itself still passes
