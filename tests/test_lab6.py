"""The dual-stack lab: the IPv6 address plan (pure), and, with the router programmed by
hand (no ecmpd), IPv6 through the ISPs, IPv6 BCP38, per-family faults, router
advertisements, single-stack WANs and "same gateway" modems."""

from __future__ import annotations

import json
import re
from typing import Callable

import pytest

from lab import Lab, LabSpec, LabWan, driver, make_spec, modem_spec, seed_spec
from lab.isp import bcp38_6_script, bcp38_script, fault_script, heal_script, loss_script
from lab.ra import ra_argv
from lab.traffic import FlowResult
from lab.wait import expect, until, within

MakeLab = Callable[..., Lab]


# ------------------------------------------------------------------ pure: the plan


def test_seed_spec_is_dual_stack() -> None:
    spec = seed_spec()
    assert [(w.address6, w.gateway6, w.link_local6, w.isp_interface6) for w in spec.wans] == [
        ("2001:db8:1::2/64", "2001:db8:1::1", "fe80::1", "2001:db8:1::1/64"),
        ("2001:db8:2::2/64", "2001:db8:2::1", "fe80::1", "2001:db8:2::1/64")]
    assert (spec.lan_address6, spec.client_addresses6, spec.server_addresses6) == (
        "fd00::1/64", ("fd00::2/64",), ("2001:db8:feed::10",))
    assert str(spec.wan("wlan2").network6) == "2001:db8:2::/64"
    assert all(w.has4 and w.has6 and not w.modem_nat for w in spec.wans)


def test_make_spec_single_stack_wans_and_extras() -> None:
    spec = make_spec(3, ipv4_only=["wan2"], ipv6_only=["wan3"], client_extra=2)
    w1, w2, w3 = spec.wans
    assert (w1.has4, w1.has6, w2.has4, w2.has6, w3.has4, w3.has6) == (
        True, True, True, False, False, True)
    assert (w2.address6, w2.gateway6, w3.address, w3.gateway) == (None, None, None, None)
    assert w3.address6 == "2001:db8:3::2/64" and w3.gateway6 == "2001:db8:3::1"
    assert spec.client_addresses6 == ("fd00::2/64", "fd00::3/64", "fd00::4/64")
    with pytest.raises(ValueError):
        w3.interface  # noqa: B018 - no IPv4
    with pytest.raises(ValueError):
        w2.network6  # noqa: B018 - no IPv6
    lab = Lab(spec, prefix="eclx-")
    assert lab.clients6 == ["fd00::2", "fd00::3", "fd00::4"] and lab.server6 == "2001:db8:feed::10"
    assert lab.upstream_address6("wan2") == "2001:db8:ffff:2::2"  # transit is dual-stack
    assert lab.isp_link_local("wan1") == "fe80::1"


def test_modem_spec_shares_the_ipv4_subnet_and_the_link_local_gateway() -> None:
    spec = modem_spec(others=(LabWan("wlan3", "10.113.0.2/24", "10.113.0.1"),))
    m1, m2, w3 = spec.wans
    assert (m1.address, m1.gateway, m2.address, m2.gateway) == (
        "192.168.1.2/24", "192.168.1.1", "192.168.1.2/24", "192.168.1.1")
    assert (m1.gateway6, m2.gateway6, m1.modem_nat, w3.modem_nat) == (
        "fe80::1", "fe80::1", True, False)
    assert (m1.isp_interface6, m2.isp_interface6) == ("2001:db8:1::1/64", "2001:db8:2::1/64")
    assert [w.address for w in modem_spec(3, distinct=True).wans] == [
        "192.168.1.2/24", "192.168.1.3/24", "192.168.1.4/24"]
    lab = Lab(spec, prefix="eclx-")
    # A modem's customers are seen as the modem's transit address.
    assert [lab.wan_of_source(a) for a in (
        "100.64.1.1", "100.64.2.1", "2001:db8:ffff:2::1", "2001:db8:ffff:3::1", "100.64.3.2",
        "2001:db8:2::2", "2001:db8:3::2", "fd00::2", "10.113.0.2")] == [
        "modem1", "modem2", "modem2", None, None, "modem2", "wlan3", None, "wlan3"]


@pytest.mark.parametrize("bad", [
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", address6="2001:db8:9::2/64"),
               LabWan("b", "10.2.0.2/24", "10.2.0.1", address6="2001:db8:9::3/64"))),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", gateway6="fe80::7"),)),  # not the ISP's
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", gateway6="2001:db8:5::1"),)),  # off-link
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", address6="fe80::2/64"),)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", link_local6="2001:db8:1::9"),)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", kind="ptp", address6="2001:db8:1::2/64"),)),
    dict(wans=(LabWan("a", None, None, address6=None),)),                    # no family at all
    dict(wans=(LabWan("a", None, "10.1.0.1"),)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), server_addresses6=("2001:db8:1::9",)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), client_address6="fd01::2/64"),
    # Only modems may share a subnet.
    dict(wans=(LabWan("a", "192.168.1.2/24", "192.168.1.1", modem_nat=True),
               LabWan("b", "192.168.1.3/24", "192.168.1.1"))),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"), LabWan("b", "10.1.0.3/24", "10.1.0.1"))),
    # public LAN prefixes: one ISP routes them, and they overlap nothing
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", routes_public=True),
               LabWan("b", "10.2.0.2/24", "10.2.0.1", routes_public=True))),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), lan_public=("10.1.0.129/25",)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), lan_public=("2001:db8:1::1/64",)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), lan_public=("203.0.113.1/24",)),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), lan_public=("203.0.113.65/32",)),
])
def test_bad_dual_stack_specs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        LabSpec(**bad)


def test_public_lan_prefixes_are_routed_and_accepted_by_one_isp() -> None:
    spec = LabSpec(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1", routes_public=True),),
                   lan_public=("203.0.113.65/26", "2001:db8:ff::1/64"))
    assert spec.client_public == ("203.0.113.66/26", "2001:db8:ff::2/64")
    assert seed_spec().client_public == ()
    assert "ip saddr != { 10.1.0.0/24, 203.0.113.64/26 } counter drop" in \
        bcp38_script("10.1.0.0/24", "203.0.113.64/26")
    assert "ip6 saddr != { 2001:db8:1::/64, 2001:db8:ff::/64, fe80::/10, ::/128 }" in \
        bcp38_6_script("2001:db8:1::/64", "2001:db8:ff::/64")


def test_ptp_wans_stay_ipv4_only() -> None:
    w = LabSpec(wans=(LabWan("ppp0", "10.1.0.2/24", "10.1.0.1", kind="ptp"),)).wans[0]
    assert (w.has6, w.address6, w.gateway6) == (False, None, None)


def test_isp_scripts_cover_both_families() -> None:
    s6 = bcp38_6_script("2001:db8:1::/64")
    assert "table ip6 lab_bcp38" in s6
    assert 'iifname "cust" ip6 saddr != { 2001:db8:1::/64, fe80::/10, ::/128 } counter drop' in s6
    assert "ip6 saddr { fe80::/10, ::/128 } counter drop" in s6  # never forwarded
    assert "ip6 saddr != { fe80::/10, ::/128 }" in bcp38_6_script(None)
    assert 'iifname "cust" counter drop' in bcp38_script(None)
    assert "table netdev lab_dead " in fault_script("dead") and "policy drop" in fault_script("dead")
    assert "meta protocol ip6 drop" in fault_script("dead", 6)
    assert "meta protocol { ip, arp } drop" in fault_script("dead", 4)
    assert "table inet lab_upstream " in fault_script("upstream")
    assert "meta nfproto ipv6 drop" in fault_script("upstream", 6)
    assert "table inet lab_upstream4" in fault_script("upstream", 4)
    for table in ("netdev lab_dead6", "inet lab_upstream4", "inet lab_upstream", "netdev lab_dead"):
        assert f"delete table {table}\n" in heal_script()
    assert "table inet lab_loss" in loss_script(10)
    with pytest.raises(ValueError):
        fault_script("dead", 5)


def test_ra_argv() -> None:
    argv = ra_argv("cust", "/t", 3, interval=4, lifetime=0)
    for want in ("--no-daemon", "--port=0", "--enable-ra", "--conf-file=/dev/null",
                 "--dhcp-range=::,constructor:cust,ra-stateless,64", "--pid-file=/t/dnsmasq.pid.3",
                 "--dhcp-leasefile=/t/dnsmasq.leases.3", "--ra-param=cust,4,0"):
        assert want in argv
    assert not any(a.startswith("--ra-param") for a in ra_argv("cust", "/t", 1))


# ------------------------------------------------------------------ helpers (root)


def masquerade(lab: Lab, wans: list[str] | None = None) -> None:
    """nft ``inet`` masquerade (NAT44 and NAT66) on the router's WANs (default all)."""
    names = ", ".join(f'"{n}"' for n in (wans or [w.name for w in lab.spec.wans]))
    lab.nft(lab.ns_router, "table inet labnat {\n chain post {\n"
            "  type nat hook postrouting priority 100;\n"
            f"  oifname {{ {names} }} masquerade\n }}\n}}\n")


def forward(lab: Lab, family: int = 6) -> None:
    key = "net.ipv6.conf.all.forwarding" if family == 6 else "net.ipv4.ip_forward"
    lab.run(lab.ns_router, "sysctl", "-q", "-w", f"{key}=1")


def route6_via(lab: Lab, wan: str, nat: bool = True) -> None:
    """Program the router by hand for IPv6: forwarding, default via `wan`'s static
    gateway6 (with its device: it may be link-local), masquerade on every WAN."""
    forward(lab, 6)
    lab.run(lab.ns_router, "ip", "-6", "route", "replace", "default",
            "via", lab.spec.wan(wan).gateway6, "dev", wan)  # type: ignore[arg-type]
    if nat:
        masquerade(lab)


def route4_via(lab: Lab, wan: str) -> None:
    forward(lab, 4)
    lab.run(lab.ns_router, "ip", "-4", "route", "replace", "default",
            "via", lab.spec.wan(wan).gateway, "dev", wan)  # type: ignore[arg-type]


def flows_ok(lab: Lab, timeout: float = 10.0, **kw: object) -> list[FlowResult]:
    """Poll with new flows until every one succeeds; the successful batch."""
    res: list[FlowResult] = []

    def batch() -> list[FlowResult] | None:
        res[:] = lab.new_flows(3, timeout=0.5, **kw)  # type: ignore[arg-type]
        return list(res) if all(r.ok for r in res) else None

    return until(batch, timeout, lambda _: f"flows still failing: {res}", interval=0)


def flows_fail(lab: Lab, **kw: object) -> bool:
    return not any(r.ok for r in lab.new_flows(3, timeout=0.5, **kw))  # type: ignore[arg-type]


def pings(lab: Lab, ns: str, dst: str, *opts: str) -> bool:
    return lab.run(ns, "ping", "-n", "-c", "1", "-W", "0.5", *opts, dst, check=False).returncode == 0


def sysctl(lab: Lab, ns: str, key: str) -> str:
    return lab.run(ns, "sysctl", "-n", key).stdout.strip()


def ra_defaults(lab: Lab, wan: str) -> list[tuple[str, str]]:
    """(gateway, protocol) of the router's IPv6 default routes on `wan` in table main."""
    out = lab.run(lab.ns_router, "ip", "-6", "-j", "route", "show", "default", "dev", wan).stdout
    return sorted((r.get("gateway", ""), r.get("protocol", "")) for r in json.loads(out or "[]"))


def counter(lab: Lab, ns: str, family: str, table: str) -> int:
    text = lab.run(ns, "nft", "list", "table", family, table).stdout
    return sum(int(n) for n in re.findall(r"packets (\d+)", text))


# ------------------------------------------------------------------ the built lab


@pytest.mark.lab
def test_traffic_tool_serves_both_families(make_netns: Callable[[str], str]) -> None:
    ns = make_netns("lo6")
    server = driver.start_server(ns, 5000)
    try:
        for proto in ("tcp", "udp"):
            for dst in ("127.0.0.1", "::1"):
                res = driver.run_flows(ns, dst, 2, proto=proto)
                assert [(r.ok, r.source) for r in res] == [(True, dst)] * 2, (proto, res)
        held = driver.start_hold(ns, "::1", 2, byte_interval=0.02)
        assert held.wait_established() == 2
        assert [(h.broken, h.source) for h in held.stop()] == [(False, "::1")] * 2
    finally:
        server.terminate()
        server.wait()


@pytest.mark.lab
def test_dual_stack_build(make_lab: MakeLab) -> None:
    lab = make_lab()
    rtr, isp = lab.ns_router, lab.ns_isp("wlan1")
    for ns in lab.namespaces:
        assert sysctl(lab, ns, "net.ipv6.conf.all.accept_dad") == "0"
        assert sysctl(lab, ns, "net.ipv6.conf.default.accept_dad") == "0"
    assert sysctl(lab, rtr, "net.ipv6.conf.all.forwarding") == "0"  # a plain host, as for IPv4
    assert sysctl(lab, rtr, "net.ipv6.conf.wlan1.forwarding") == "0"
    assert sysctl(lab, isp, "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(lab, lab.ns_inet, "net.ipv6.conf.all.forwarding") == "1"
    assert lab.run(rtr, "ip", "-6", "route", "show", "default").stdout.strip() == ""
    addrs = lab.run(rtr, "ip", "-6", "-o", "addr", "show").stdout
    assert "fd00::1/64" in addrs and "2001:db8:1::2/64" in addrs and "tentative" not in addrs
    cust = json.loads(lab.run(isp, "ip", "-6", "-j", "addr", "show", "dev", "cust").stdout)
    assert sorted(a["local"] for a in cust[0]["addr_info"]) == ["2001:db8:1::1", "fe80::1"]
    assert pings(lab, rtr, "2001:db8:1::1") and pings(lab, rtr, "fe80::1%wlan1")
    assert pings(lab, rtr, "fe80::1%wlan2") and pings(lab, lab.ns_lan, "fd00::1")
    assert pings(lab, isp, lab.server6) and pings(lab, isp, lab.upstream_address6("wlan1"))
    # Without forwarding on the router, the LAN goes nowhere.
    lab.start_servers()
    assert flows_fail(lab, server=lab.server6)


@pytest.mark.lab
def test_ipv6_flows_leave_by_the_chosen_wan_with_its_address(make_lab: MakeLab) -> None:
    lab = make_lab()
    lab.start_servers()
    route4_via(lab, "wlan1")
    for wan, src in (("wlan1", "2001:db8:1::2"), ("wlan2", "2001:db8:2::2")):
        route6_via(lab, wan)
        # the first ping waits for neighbour discovery of the new gateway
        within(lambda: pings(lab, lab.ns_router, lab.upstream_address6(wan)), 5)
        for proto in ("tcp", "udp"):
            res = flows_ok(lab, server=lab.server6, proto=proto)
            assert {(r.source, r.wan) for r in res} == {(src, wan)}
    # Both families at once; the LAN's IPv6 sources bind as asked.
    v6 = lab.new_flows(2, server=lab.server6, sources=lab.clients6)
    v4 = lab.new_flows(2)
    assert [(r.ok, r.bind, r.wan) for r in v6] == [(True, "fd00::2", "wlan2")] * 2
    assert [(r.ok, r.source, r.wan) for r in v4] == [(True, "10.111.0.2", "wlan1")] * 2
    held = lab.hold_flows(2, byte_interval=0.02, server=lab.server6)
    assert held.wait_established() == 2
    assert [(h.broken, h.wan) for h in held.stop()] == [(False, "wlan2")] * 2


@pytest.mark.lab
def test_ipv6_bcp38_drops_unnatted_and_spoofed_sources(make_lab: MakeLab) -> None:
    lab = make_lab()
    route6_via(lab, "wlan1", nat=False)
    isp = lab.ns_isp("wlan1")
    # Give the LAN's ULA a way back, so only BCP38 can stop it.
    lab.run(lab.ns_inet, "ip", "-6", "route", "add", "fd00::/64", "via", "2001:db8:ffff:1::1")
    lab.run(isp, "ip", "-6", "route", "add", "fd00::/64", "via", "2001:db8:1::2")
    lab.start_servers()
    assert flows_fail(lab, server=lab.server6)
    assert counter(lab, isp, "ip6", "lab_bcp38") > 0
    # The router's own packets: its wlan1 address and link-local pass, wlan2's does not.
    assert pings(lab, lab.ns_router, lab.upstream_address6("wlan1"))
    assert pings(lab, lab.ns_router, "fe80::1%wlan1")
    assert not pings(lab, lab.ns_router, lab.upstream_address6("wlan1"), "-I", "2001:db8:2::2")
    lab.run(isp, "nft", "delete", "table", "ip6", "lab_bcp38")
    res = flows_ok(lab, server=lab.server6)
    assert {r.source for r in res} == {"fd00::2"} and {r.wan for r in res} == {None}


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["dead", "upstream"])
@pytest.mark.parametrize("family", [4, 6])
def test_per_family_fault_blocks_only_its_family(make_lab: MakeLab, mode: str,
                                                 family: int) -> None:
    lab = make_lab()
    route4_via(lab, "wlan1")
    route6_via(lab, "wlan1")
    lab.start_servers()
    servers = {4: lab.spec.server_addresses[0], 6: lab.server6}
    gateways = {4: "10.111.0.1", 6: "2001:db8:1::1"}
    other = 10 - family
    flows_ok(lab, server=servers[4])
    flows_ok(lab, server=servers[6])
    lab.fault("wlan1", mode, family=family)
    assert lab.active_faults("wlan1") == {f"{mode}{family}"}
    assert flows_fail(lab, server=servers[family])
    assert pings(lab, lab.ns_router, gateways[family]) == (mode == "upstream")
    assert {r.wan for r in flows_ok(lab, server=servers[other])} == {"wlan1"}
    assert pings(lab, lab.ns_router, gateways[other])
    lab.heal("wlan1")
    assert lab.active_faults("wlan1") == frozenset()
    assert {r.wan for r in flows_ok(lab, server=servers[family])} == {"wlan1"}


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["dead", "upstream", "carrier"])
def test_whole_faults_and_loss_cover_ipv6(make_lab: MakeLab, mode: str) -> None:
    lab = make_lab()
    route6_via(lab, "wlan1")
    lab.start_servers()
    flows_ok(lab, server=lab.server6)
    lab.fault("wlan1", mode)
    assert flows_fail(lab, server=lab.server6)
    assert not pings(lab, lab.ns_router, lab.upstream_address6("wlan1"))
    assert pings(lab, lab.ns_router, "fe80::1%wlan1") == (mode == "upstream")
    assert pings(lab, lab.ns_router, "fe80::1%wlan2")  # the other ISP is untouched
    lab.heal("wlan1")
    flows_ok(lab, server=lab.server6)
    # heal gave the ISP back its link-local (a link down drops it)
    until(lambda: pings(lab, lab.ns_router, "fe80::1%wlan1"), 5, "the ISP's link-local")
    lab.set_loss("wlan1", 100)
    assert not pings(lab, lab.ns_router, "2001:db8:1::1")
    lab.set_loss("wlan1", 0)
    assert pings(lab, lab.ns_router, "2001:db8:1::1")


@pytest.mark.lab
def test_router_advertisements_install_and_follow_the_link_local(make_lab: MakeLab) -> None:
    lab = make_lab()
    rtr = lab.ns_router
    # What ecmpd does for a `gateway6: auto` WAN: accept_ra=2 first, then forwarding.
    lab.run(rtr, "sysctl", "-q", "-w", "net.ipv6.conf.wlan1.accept_ra=2")
    forward(lab, 6)
    assert sysctl(lab, rtr, "net.ipv6.conf.wlan1.forwarding") == "1"
    ra = lab.ra("wlan1")
    expect(lambda: ra_defaults(lab, "wlan1"), [("fe80::1", "ra")], 10, "RA default route")
    assert ra.advertisements() >= 1
    assert ra_defaults(lab, "wlan2") == []  # no RA there
    masquerade(lab)
    lab.start_servers()
    res = flows_ok(lab, server=lab.server6)  # the learned route carries traffic
    assert {r.wan for r in res} == {"wlan1"}
    # The ISP's router changes: goodbye from fe80::1, then advertisements from fe80::2.
    ra.change_link_local("fe80::2")
    assert lab.isp_link_local("wlan1") == "fe80::2"
    expect(lambda: ra_defaults(lab, "wlan1"), [("fe80::2", "ra")], 10, "the new RA route")
    assert not pings(lab, rtr, "fe80::1%wlan1") and pings(lab, rtr, "fe80::2%wlan1")
    flows_ok(lab, server=lab.server6)
    lab.fault("wlan1", "carrier")
    lab.heal("wlan1")  # the ISP keeps its current link-local across a carrier fault
    until(lambda: pings(lab, rtr, "fe80::2%wlan1"), 5, "fe80::2 after the heal")
    ra.stop(goodbye=True)
    expect(lambda: ra_defaults(lab, "wlan1"), [], 10, "no RA route after the goodbye")
    assert not ra.running
    ra.close()


@pytest.mark.lab
def test_a_rude_router_change_leaves_the_stale_route(make_lab: MakeLab) -> None:
    lab = make_lab()
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv6.conf.wlan2.accept_ra=2")
    forward(lab, 6)
    ra = lab.ra("wlan2", interval=4, lifetime=60)
    expect(lambda: ra_defaults(lab, "wlan2"), [("fe80::1", "ra")], 10, "RA default route")
    ra.change_link_local("fe80::3", goodbye=False)
    expect(lambda: ra_defaults(lab, "wlan2"), [("fe80::1", "ra"), ("fe80::3", "ra")], 10,
           "the old and the new RA route")
    with pytest.raises(ValueError):
        lab.set_isp_link_local("wlan2", "2001:db8:2::9")


@pytest.mark.lab
def test_single_stack_wans(make_lab: MakeLab) -> None:
    lab = make_lab(make_spec(2, ipv4_only=["wan1"], ipv6_only=["wan2"]))
    rtr = lab.ns_router
    lab.start_servers()
    # wan1: IPv4 only, nothing IPv6 answers on its link.
    assert pings(lab, rtr, "10.101.0.1") and not pings(lab, rtr, "fe80::1%wan1")
    assert "inet6" not in lab.run(lab.ns_isp("wan1"), "ip", "addr", "show", "dev", "cust").stdout
    # wan2: IPv6 only: no IPv4 address, and the ISP drops any IPv4 from the link.
    assert "inet " not in lab.run(rtr, "ip", "addr", "show", "dev", "wan2").stdout
    route4_via(lab, "wan1")
    route6_via(lab, "wan2")
    assert {r.wan for r in flows_ok(lab)} == {"wan1"}
    assert {r.wan for r in flows_ok(lab, server=lab.server6)} == {"wan2"}
    lab.run(rtr, "ip", "addr", "add", "10.102.0.2/24", "dev", "wan2")
    lab.run(lab.ns_isp("wan2"), "ip", "addr", "add", "10.102.0.1/24", "dev", "cust")
    assert not pings(lab, rtr, "10.102.0.1")
    assert counter(lab, lab.ns_isp("wan2"), "ip", "lab_bcp38") > 0
    with pytest.raises(ValueError):
        lab.ra("wan1")


@pytest.mark.lab
@pytest.mark.parametrize("distinct", [False, True])
def test_same_gateway_modems_work_through_each(make_lab: MakeLab, distinct: bool) -> None:
    lab = make_lab(modem_spec(2, distinct=distinct))
    rtr = lab.ns_router
    assert pings(lab, rtr, "192.168.1.1", "-I", "modem2")
    assert pings(lab, rtr, "fe80::1%modem1") and pings(lab, rtr, "fe80::1%modem2")
    masquerade(lab)
    lab.start_servers()
    for i, wan in enumerate(("modem1", "modem2"), start=1):
        route4_via(lab, wan)  # default via 192.168.1.1 dev <wan>
        route6_via(lab, wan)  # default via fe80::1 dev <wan>
        res4 = flows_ok(lab)
        res6 = flows_ok(lab, server=lab.server6, proto="udp")
        # The modem masquerades: inet sees the modem's transit address.
        assert {(r.source, r.wan) for r in res4} == {(f"100.64.{i}.1", wan)}
        assert {(r.source, r.wan) for r in res6} == {(f"2001:db8:ffff:{i}::1", wan)}
    # inet has no route to the customers of a modem.
    assert "192.168.1.0" not in lab.run(lab.ns_inet, "ip", "route").stdout
