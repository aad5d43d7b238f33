"""The lab's point-to-point ISP (`lab.ptp`): a PPP-like tun pair and its relay."""

from __future__ import annotations

import os
import re
import socket
import threading
from types import SimpleNamespace
from typing import Callable

import pytest

from lab import Lab, LabSpec, LabWan, PtpWan
from lab.ptp import PPPOE_MTU, _pump

MakeLab = Callable[..., Lab]


def ptp_spec() -> LabSpec:
    """wlan1 (Ethernet, static) and ppp0 (point-to-point, pool 10.113.0.0/24, ISP end .1)."""
    return LabSpec(wans=(LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
                         LabWan("ppp0", "10.113.0.2/24", "10.113.0.1", kind="ptp")))


# ------------------------------------------------------------------ pure


def test_kind_is_validated() -> None:
    assert ptp_spec().wan("ppp0").kind == "ptp" and ptp_spec().wan("wlan1").kind == "ether"
    with pytest.raises(ValueError, match="kind"):
        LabSpec(wans=(LabWan("ppp0", "10.113.0.2/24", "10.113.0.1", kind="pppoe"),))


def test_addresses_come_from_the_pool() -> None:
    lab = SimpleNamespace(spec=ptp_spec())
    link = PtpWan(lab, "ppp0")  # type: ignore[arg-type]
    assert link.mtu == PPPOE_MTU and not link.connected
    assert link.next_address() == "10.113.0.3"
    for bad in ("10.113.0.1", "10.113.0.255", "10.114.0.2"):
        with pytest.raises(ValueError):
            link._check_address(bad)
    with pytest.raises(ValueError, match="point-to-point"):
        PtpWan(lab, "wlan1")  # type: ignore[arg-type]


def test_pump_copies_whole_packets() -> None:
    a_out, a_in = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b_in, b_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    t = threading.Thread(target=_pump, args=(a_in.fileno(), b_in.fileno()), daemon=True)
    t.start()
    for pkt in (b"x" * 1492, b"\x45" * 40, b"y"):
        a_out.send(pkt)
        b_out.settimeout(2)
        assert b_out.recv(65536) == pkt
    a_out.close()  # end of file: the pump returns
    t.join(2)
    assert not t.is_alive()
    for s in (a_in, b_in, b_out):
        s.close()


# ------------------------------------------------------------------ lab


def router_setup(lab: Lab, dev: str = "ppp0") -> None:
    """What a test (later ecmpd) does: forwarding, masquerade on ppp0, default dev ppp0."""
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    lab.nft(lab.ns_router, "table ip labnat {\n chain post {\n"
            "  type nat hook postrouting priority 100;\n"
            f'  oifname "{dev}" masquerade\n }}\n}}\n')
    lab.run(lab.ns_router, "ip", "route", "replace", "default", "dev", dev)


def pings(lab: Lab, ns: str, dst: str, *opts: str) -> bool:
    ping = lab.run(ns, "ping", "-n", "-c", "1", "-W", "0.5", *opts, dst, check=False)
    return ping.returncode == 0


def bcp38_drops(lab: Lab, wan: str) -> int:
    out = lab.run(lab.ns_isp(wan), "nft", "list", "table", "ip", "lab_bcp38").stdout
    return int(re.search(r"packets (\d+)", out).group(1))  # type: ignore[union-attr]


@pytest.fixture
def ptp_lab(make_lab: MakeLab) -> Lab:
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")
    return make_lab(ptp_spec())


@pytest.mark.lab
def test_connect_traffic_disconnect_reconnect_with_a_new_address(ptp_lab: Lab) -> None:
    lab = ptp_lab
    assert "ppp0" not in lab.run(lab.ns_router, "ip", "-o", "link").stdout  # not until connect
    assert pings(lab, lab.ns_router, "10.111.0.1")  # the Ethernet WAN is built as before
    link = lab.ptp("ppp0")
    s = link.session
    assert s is not None and (s.ifname, s.address, s.peer, s.mtu) == (
        "ppp0", "10.113.0.2", "10.113.0.1", 1492)
    show = lab.run(lab.ns_router, "ip", "-o", "-4", "addr", "show", "dev", "ppp0").stdout
    assert "inet 10.113.0.2 peer 10.113.0.1/32" in show
    flags = lab.run(lab.ns_router, "ip", "-o", "link", "show", "dev", "ppp0").stdout
    assert all(f in flags for f in ("POINTOPOINT", "NOARP", "LOWER_UP", "mtu 1492"))
    isp_routes = lab.run(lab.ns_isp("ppp0"), "ip", "route", "show", "10.113.0.2").stdout
    assert "dev cust" in isp_routes  # the ISP routes the customer to its end of the link

    router_setup(lab)
    lab.start_servers()
    res = lab.new_flows(3, timeout=1.0)
    assert [(r.ok, r.source, r.wan) for r in res] == [(True, "10.113.0.2", "ppp0")] * 3
    assert {r.source for r in lab.new_flows(2, from_ns=lab.ns_router)} == {"10.113.0.2"}

    link.disconnect()
    assert not link.connected and link.session is None
    assert not link.device_exists() and not link.device_exists("isp")
    assert lab.run(lab.ns_router, "ip", "route", "show", "default").stdout.strip() == ""
    assert not any(r.ok for r in lab.new_flows(2, timeout=0.5))

    s2 = link.reconnect(defaultroute=0)  # pppd's `defaultroute` this time
    assert s2.address == "10.113.0.3" != s.address
    assert "default dev ppp0" in lab.run(lab.ns_router, "ip", "route", "show", "default").stdout
    res = lab.new_flows(3, timeout=1.0)
    assert [(r.ok, r.source, r.wan) for r in res] == [(True, "10.113.0.3", "ppp0")] * 3
    s3 = link.reconnect("10.113.0.200")
    assert s3.address == "10.113.0.200" and link.connected
    with pytest.raises(RuntimeError, match="connected already"):
        link.connect()


@pytest.mark.lab
def test_bcp38_drops_all_but_the_session_address(ptp_lab: Lab) -> None:
    lab = ptp_lab
    lab.ptp("ppp0")
    lab.run(lab.ns_router, "ip", "route", "add", "default", "dev", "ppp0")
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # A pool address that is not this session's, and a LAN address (no masquerade).
    lab.run(lab.ns_router, "ip", "addr", "add", "10.113.0.99/32", "dev", "lo")
    lab.run(lab.ns_inet, "ip", "route", "add", "192.168.0.0/24", "via", "100.64.2.1")
    for net in ("192.168.0.0/24", "10.113.0.99"):  # a way back, so only BCP38 can stop them
        lab.run(lab.ns_isp("ppp0"), "ip", "route", "add", net, "dev", "cust")
    server = lab.spec.server_addresses[0]
    before = bcp38_drops(lab, "ppp0")
    assert not pings(lab, lab.ns_router, server, "-I", "10.113.0.99")
    lab.start_servers()
    assert not any(r.ok for r in lab.new_flows(2, timeout=0.5))
    assert bcp38_drops(lab, "ppp0") >= before + 3
    assert pings(lab, lab.ns_router, server)  # from 10.113.0.2, the session's address
    lab.run(lab.ns_isp("ppp0"), "nft", "delete", "table", "ip", "lab_bcp38")
    assert pings(lab, lab.ns_router, server, "-I", "10.113.0.99")  # only BCP38 stopped it


@pytest.mark.lab
def test_isp_faults_work_on_a_connected_session(ptp_lab: Lab) -> None:
    lab = ptp_lab
    lab.ptp("ppp0")
    lab.run(lab.ns_router, "ip", "route", "add", "default", "dev", "ppp0")
    server = lab.spec.server_addresses[0]
    assert pings(lab, lab.ns_router, server)
    lab.fault("ppp0", "upstream")
    assert pings(lab, lab.ns_router, "10.113.0.1") and not pings(lab, lab.ns_router, server)
    lab.heal("ppp0")
    assert pings(lab, lab.ns_router, server)
