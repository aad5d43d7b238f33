"""IPv6 end to end, next to IPv4: the real ecmpd in a dual-stack lab (ISPs with IPv6
BCP38, NAT66 on the router).  Shares by weight, failover of one version alone, IPv4-only
and IPv6-only WANs side by side, two WANs behind the same gateways (192.168.1.1 and
fe80::1), `gateway6: auto` from router advertisements, inbound replies by the ingress
WAN."""

from __future__ import annotations

from collections import Counter

import pytest

from lab.runner import config_for
from lab.topology import LabSpec, LabWan, modem_spec, seed_spec
from lab.wait import within

pytestmark = pytest.mark.lab


def shares(results) -> dict[str, float]:
    count = Counter(r.wan for r in results)
    return {wan: 100.0 * n / len(results) for wan, n in count.items()}


def assert_shares(results, weights: dict[str, int], tolerance: float = 3.0) -> None:
    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} flows failed, e.g. {failed[:3]}"
    got, total = shares(results), sum(weights.values())
    want = {w: round(100.0 * n / total, 1) for w, n in weights.items()}
    off = {w: round(got.get(w, 0.0), 1) for w in weights
           if abs(got.get(w, 0.0) - want[w]) > tolerance}
    assert not off, f"shares {off} vs wanted {want}"


def test_ipv6_flows_are_balanced_by_weight_and_natted_per_wan(make_lab, ecmpd_in):
    lab = make_lab()
    weights = {"wlan1": 1, "wlan2": 5}
    d = ecmpd_in(lab, weights=weights, ipv6=True)
    st = d.wait_states({"wlan1": "up", "wlan2": "up"}, family=6)
    assert {h["interface"] for h in st["route6"]["nexthops"]} == {"wlan1", "wlan2"}
    assert st["wans"]["wlan1"]["families"] == ["ipv4", "ipv6"]
    lab.start_servers()
    # the ISPs drop what does not come from their customer's prefix: a flow that
    # arrives is NAT66'ed to the WAN it left by
    assert_shares(lab.new_flows(3000, timeout=3.0, server=lab.server6), weights)
    assert_shares(lab.new_flows(600, timeout=3.0), weights, tolerance=5.0)
    route6 = lab.run(lab.ns_router, "ip", "-6", "route", "show", "table", "1000").stdout
    assert "weight 1" in route6 and "weight 5" in route6, route6


def test_an_ipv6_outage_takes_out_only_ipv6_and_the_other_way_round(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, ipv6=True)
    d.wait_states({"wlan1": "up", "wlan2": "up"}, family=6)
    # the IPv6 probes rest on the prompt IPv4 replies (ecmpd.prober), never the other
    # way round: the IPv6-only outage below is found by the IPv6 rounds that probe
    st = d.wait_for(lambda s: all(w["ipv6"]["rested_rounds"] > 0 for w in s["wans"].values()),
                    10, "IPv6 rounds rested")
    assert all(w["ipv4"]["rested_rounds"] == 0 for w in st["wans"].values())
    lab.start_servers()
    held4 = lab.hold_flows(40, byte_interval=0.1)
    held6 = lab.hold_flows(40, byte_interval=0.1, server=lab.server6)
    held4.wait_established()
    held6.wait_established()
    lab.fault("wlan1", "dead", family=6)
    st = d.wait_states({"wlan1": "down"}, family=6)
    assert st["wans"]["wlan1"]["state"] == "up" and st["wans"]["wlan1"]["active"]
    assert {h["interface"] for h in st["route"]["nexthops"]} == {"wlan1", "wlan2"}
    assert {h["interface"] for h in st["route6"]["nexthops"]} == {"wlan2"}
    new6 = lab.new_flows(60, timeout=3.0, server=lab.server6)
    assert all(r.ok for r in new6) and {r.wan for r in new6} == {"wlan2"}
    lab.heal("wlan1")
    d.wait_states({"wlan1": "up"}, family=6)
    lab.fault("wlan2", "dead", family=4)
    st = d.wait_states({"wlan2": "down"}, family=4)
    assert st["wans"]["wlan2"]["ipv6"]["state"] == "up"
    lab.heal("wlan2")
    d.wait_states({"wlan2": "up"}, family=4)
    results4, results6 = held4.stop(), held6.stop()
    assert {r.wan for r in results4} == {"wlan1", "wlan2"} == {r.wan for r in results6}
    broken4 = [r for r in results4 if r.broken and r.wan == "wlan1"]
    broken6 = [r for r in results6 if r.broken and r.wan == "wlan2"]
    # IPv4 through wlan1 went on while its IPv6 was out, IPv6 through wlan2 while its
    # IPv4 was out
    assert not broken4, broken4[:3]
    assert not broken6, broken6[:3]


def test_an_ipv4_only_and_an_ipv6_only_wan_side_by_side(make_lab, ecmpd_in):
    spec = LabSpec(wans=(LabWan("wlan1", "10.111.0.2/24", "10.111.0.1", address6=None,
                                gateway6=None),
                         LabWan("wlan2", None, None)))
    lab = make_lab(spec)
    d = ecmpd_in(lab, ipv6=True)
    st = d.wait_states({"wlan2": "up"}, family=6)
    assert st["wans"]["wlan1"]["ipv6"] is None and st["wans"]["wlan2"]["ipv4"] is None
    assert st["wans"]["wlan2"]["families"] == ["ipv6"]
    lab.start_servers()
    r4 = lab.new_flows(40, timeout=3.0)
    r6 = lab.new_flows(40, timeout=3.0, server=lab.server6)
    assert all(r.ok for r in r4 + r6)
    assert {r.wan for r in r4} == {"wlan1"} and {r.wan for r in r6} == {"wlan2"}


def test_two_wans_behind_the_same_gateways_balance_and_fail_over_apart(make_lab, ecmpd_in):
    lab = make_lab(modem_spec(2))
    gws = {(w.gateway, w.gateway6) for w in lab.spec.wans}
    assert gws == {("192.168.1.1", "fe80::1")}, gws
    names = [w.name for w in lab.spec.wans]
    d = ecmpd_in(lab, ipv6=True)
    d.wait_states({n: "up" for n in names}, family=6)
    lab.start_servers()
    for server in (None, lab.server6):
        res = lab.new_flows(200, timeout=3.0, server=server)
        assert all(r.ok for r in res) and {r.wan for r in res} == set(names), shares(res)
    lab.fault(names[0], "dead")
    d.wait_states({names[0]: "down"}, family=4)
    d.wait_states({names[0]: "down"}, family=6)
    st = d.status()
    assert [h["interface"] for h in st["route6"]["nexthops"]] == [names[1]]
    for server in (None, lab.server6):
        res = lab.new_flows(60, timeout=3.0, server=server)
        assert all(r.ok for r in res) and {r.wan for r in res} == {names[1]}


def test_gateway6_auto_is_learned_from_router_advertisements_and_followed(make_lab,
                                                                          ecmpd_in):
    lab = make_lab(seed_spec())
    cfg = config_for(lab, ipv6=True)
    cfg["wans"]["wlan2"]["gateway6"] = "auto"
    ra = lab.ra("wlan2")
    d = ecmpd_in(lab, cfg)
    st = d.wait_states({"wlan2": "up"}, family=6, timeout=20)
    six = st["wans"]["wlan2"]["ipv6"]
    assert six["gateway_source"] == "learned" and six["gateway"] == "fe80::1", six
    # ecmpd made the forwarding router take router advertisements on that WAN
    assert lab.run(lab.ns_router, "sysctl", "-n",
                   "net.ipv6.conf.wlan2.accept_ra").stdout.strip() == "2"
    ra.change_link_local("fe80::99")
    d.wait_for(lambda s: s["wans"]["wlan2"]["ipv6"]["gateway"] == "fe80::99",
               timeout=30, what="the new RA gateway")
    d.wait_states({"wlan2": "up"}, family=6)
    lab.start_servers()
    res = lab.new_flows(120, timeout=3.0, server=lab.server6)
    assert all(r.ok for r in res) and {r.wan for r in res} == {"wlan1", "wlan2"}


def test_an_inbound_ipv6_connection_is_answered_by_its_ingress_wan(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, ipv6=True, weights={"wlan1": 1, "wlan2": 1})
    d.wait_states({"wlan1": "up", "wlan2": "up"}, family=6)
    lab.start_servers(lab.ns_router)
    for w in lab.spec.wans:
        address = str(w.interface6.ip)
        # from the internet host, to the router's address on that WAN: the ISP drops a
        # reply that leaves by the other WAN (BCP38), so only the ingress WAN answers
        res = lab.new_flows(20, timeout=3.0, server=address, from_ns=lab.ns_inet)
        assert all(r.ok for r in res), (w.name, [r for r in res if not r.ok][:3])


def test_learned_gateways_of_both_versions_outlive_a_restart_until_the_address_goes(
        make_lab, ecmpd_in):
    lab = make_lab(seed_spec())
    cfg = config_for(lab, ipv6=True)
    cfg["wans"]["wlan2"].update(gateway="auto", gateway6="auto")
    # what a DHCP client and the ISP's router advertisements give wlan2
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.112.0.1", "dev",
            "wlan2", "proto", "dhcp")
    ra = lab.ra("wlan2")
    d = ecmpd_in(lab, cfg)
    d.wait_states({"wlan2": "up"}, family=6, timeout=20)
    d.stop()
    # gone while ecmpd is down: the client's route (between two leases), the RA route
    # (the ISP's router said goodbye); the interface and its addresses stay
    lab.run(lab.ns_router, "ip", "route", "del", "default", "via", "10.112.0.1", "dev",
            "wlan2")
    ra.stop(goodbye=True)
    routes6 = lambda: lab.run(lab.ns_router, "ip", "-6", "route", "show", "default").stdout  # noqa: E731
    within(lambda: "wlan2" not in routes6(), 10)
    d.start()
    st = d.wait_states({"wlan2": "up"})
    st = d.wait_states({"wlan2": "up"}, family=6)
    wan = st["wans"]["wlan2"]
    assert (wan["gateway"], wan["gateway_source"]) == ("10.112.0.1", "learned")
    assert (wan["ipv6"]["gateway"], wan["ipv6"]["gateway_source"]) == ("fe80::1", "learned")
    lab.start_servers()
    for server in (None, lab.server6):
        res = lab.new_flows(60, timeout=3.0, server=server)
        assert all(r.ok for r in res) and {r.wan for r in res} == {"wlan1", "wlan2"}
    # a new address means a new lease: the remembered gateway goes with the old one
    lab.run(lab.ns_router, "ip", "addr", "flush", "dev", "wlan2", "scope", "global")
    st = d.wait_for(lambda s: s["wans"]["wlan2"]["gateway"] is None
                    and s["wans"]["wlan2"]["ipv6"]["gateway"] is None, what="forgotten")
    assert st["wans"]["wlan2"]["state"] == "down"


def test_healthy_ipv6_flows_survive_another_wans_fault_and_heal(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, ipv6=True, weights={"wlan1": 1, "wlan2": 1})
    d.wait_states({"wlan1": "up", "wlan2": "up"}, family=6)
    lab.start_servers()
    held = lab.hold_flows(80, byte_interval=0.1, server=lab.server6)
    held.wait_established()
    lab.fault("wlan2", "dead")
    d.wait_states({"wlan2": "down"}, family=6)
    lab.heal("wlan2")
    d.wait_states({"wlan2": "up"}, family=6)
    results = held.stop()
    healthy = [r for r in results if r.wan == "wlan1"]
    assert len(healthy) > 10 and {r.wan for r in results} == {"wlan1", "wlan2"}
    # the failed WAN's IPv6 flows were flushed on purpose; the healthy WAN's went on
    assert not [r for r in healthy if r.broken], [r for r in healthy if r.broken][:3]
