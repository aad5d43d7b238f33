"""The dataplane, end to end: the real ecmpd in a lab's router namespace, real traffic.

Balancing by weight (l4 and l3), inbound connections and DNAT port-forwards answered by
the WAN they came in on (the ISPs drop spoofed sources, so a wrong-WAN reply fails),
pinned flows surviving nexthop removal/restore, idempotent re-apply, foreign objects
untouched, clean stop.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from lab.runner import Ecmpd, config_for, kernel_dump, nft_table
from lab.topology import make_spec

pytestmark = pytest.mark.lab


def shares(results) -> dict[str, float]:
    count = Counter(r.wan for r in results)
    return {wan: 100.0 * n / len(results) for wan, n in count.items()}


def assert_distribution(lab, results, weights: dict[str, int]) -> None:
    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} flows failed, e.g. {failed[:3]}"
    got = shares(results)
    total = sum(weights.values())
    for wan, weight in weights.items():
        want = 100.0 * weight / total
        assert abs(got.get(wan, 0.0) - want) <= 3.0, f"{wan}: {got.get(wan, 0):.1f}% vs {want:.1f}%"


def test_seed_two_wans_1_to_5_l4(make_lab, ecmpd_in):
    lab = make_lab()
    weights = {"wlan1": 1, "wlan2": 5}
    ecmpd_in(lab, weights=weights)
    lab.start_servers()
    assert_distribution(lab, lab.new_flows(3000, timeout=3.0), weights)


def test_three_wans_1_2_3_other_names(make_lab, ecmpd_in):
    lab = make_lab(make_spec(3, names=["alpha", "bravo", "charlie"]))
    weights = {"alpha": 1, "bravo": 2, "charlie": 3}
    d = ecmpd_in(lab, weights=weights)
    route = d.route()
    assert "weight 1" in route and "weight 2" in route and "weight 3" in route
    lab.start_servers()
    assert_distribution(lab, lab.new_flows(3000, timeout=3.0), weights)


def test_l3_hash_keeps_a_client_server_pair_on_one_wan(make_lab, ecmpd_in):
    from dataclasses import replace
    from lab.topology import seed_spec
    lab = make_lab(replace(seed_spec(), client_extra=40))
    ecmpd_in(lab, weights={"wlan1": 1, "wlan2": 1}, hash="l3")
    lab.start_servers()
    single = lab.new_flows(200, timeout=3.0)
    assert all(r.ok for r in single)
    assert len({r.wan for r in single}) == 1, Counter(r.wan for r in single)
    # many sources: both WANs are used, each source always on the same one
    many = lab.new_flows(400, timeout=3.0, sources=lab.clients)
    assert all(r.ok for r in many)
    assert {r.wan for r in many} == {"wlan1", "wlan2"}


def test_inbound_to_router_answered_by_the_same_wan(lab3, ecmpd_in):
    lab = lab3
    ecmpd_in(lab)
    lab.start_servers(ns=lab.ns_router)
    for w in lab.spec.wans:
        addr = w.address.split("/")[0]
        res = lab.new_flows(30, timeout=3.0, server=addr, from_ns=lab.ns_inet)
        assert all(r.ok for r in res), (w.name, [r for r in res if not r.ok][:3])


DNAT = """
table ip portfwd {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
%s
  }
}
"""


def test_dnat_port_forward_answered_by_the_same_wan(lab3, ecmpd_in):
    lab = lab3
    ecmpd_in(lab)
    client = lab.clients[0]
    rules = "\n".join(f'    iifname "{w.name}" tcp dport {8000 + i} dnat to {client}:5000'
                      for i, w in enumerate(lab.spec.wans, 1))
    lab.nft(lab.ns_router, DNAT % rules)
    lab.start_servers(ns=lab.ns_lan)
    for i, w in enumerate(lab.spec.wans, 1):
        addr = w.address.split("/")[0]
        res = lab.new_flows(40, timeout=3.0, server=addr, port=8000 + i, from_ns=lab.ns_inet)
        bad = [r for r in res if not r.ok]
        assert not bad, f"{w.name}: {len(bad)} of 40 port-forwarded connections failed"
    # our own table was untouched by ecmpd
    assert "dnat to" in lab.run(lab.ns_router, "nft", "list", "table", "ip", "portfwd").stdout


def test_pinned_flows_survive_nexthop_removal_and_restore(lab3, ecmpd_in):
    lab = lab3
    d = ecmpd_in(lab)
    lab.start_servers()
    held = lab.hold_flows(90, byte_interval=0.1)
    held.wait_established()
    for _ in range(2):
        d.ctl("disable", "wan2")
        d.wait_for(lambda st: not st["wans"]["wan2"]["active"], what="wan2 out of the route")
        assert "10.102.0.1" not in d.route()
        lab.new_flows(50, timeout=3.0)          # new flows meanwhile
        d.ctl("enable", "wan2")
        d.wait_for(lambda st: st["wans"]["wan2"]["active"], what="wan2 back in the route")
    results = held.stop()
    by_wan = Counter(r.wan for r in results)
    assert set(by_wan) == {"wan1", "wan2", "wan3"}, by_wan
    broken = [r for r in results if r.broken]
    assert not broken, f"{len(broken)} held flows broke: {broken[:3]}"


def test_reapply_changes_nothing(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab)
    before = d.status()["stats"]
    kernel = kernel_dump(lab)
    d.signal(signal.SIGHUP)
    d.ctl("reload")
    after = d.wait_for(lambda st: st["stats"]["reconciles"] >= before["reconciles"] + 2,
                       what="two more reconciles")["stats"]
    assert after["changes"] == before["changes"]
    assert after["nft_writes"] == before["nft_writes"]
    assert kernel_dump(lab) == kernel


FOREIGN_NFT = """
table inet filter {
  chain input { type filter hook input priority 0; policy accept; tcp dport 22 counter accept; }
}
table ip nat {
  chain post { type nat hook postrouting priority 100; policy accept; oifname "wlan1" ip saddr 10.9.0.0/16 masquerade; }
}
"""


def test_foreign_objects_survive_start_reload_stop(make_lab):
    lab = make_lab()
    r = lambda *cmd: lab.run(lab.ns_router, *cmd)
    lab.nft(lab.ns_router, FOREIGN_NFT)
    r("ip", "rule", "add", "priority", "1100", "from", "10.9.0.0/16", "lookup", "77")
    r("ip", "rule", "add", "priority", "500", "fwmark", "0x5", "lookup", "78")
    r("ip", "route", "add", "10.99.0.0/16", "via", "10.111.0.1", "proto", "static")
    r("ip", "route", "add", "default", "via", "10.112.0.1", "table", "77")
    snap = lambda: (r("nft", "-j", "list", "table", "inet", "filter").stdout,
                    r("nft", "-j", "list", "table", "ip", "nat").stdout,
                    [x for x in json.loads(r("ip", "-j", "rule").stdout)
                     if x.get("priority") in (500, 1100)],
                    r("ip", "route", "show", "10.99.0.0/16").stdout,
                    r("ip", "route", "show", "table", "77").stdout)
    before = snap()
    d = Ecmpd(lab, config_for(lab))
    d.start()
    try:
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        d.ctl("reload")
        assert snap() == before
    finally:
        assert d.stop() == 0
    assert snap() == before
    # and ecmpd's own objects are gone
    assert "proto 236" not in r("ip", "route", "show", "table", "all").stdout
    assert "ecmpd" not in r("nft", "list", "tables").stdout
    assert not [x for x in json.loads(r("ip", "-j", "rule").stdout)
                if 1000 <= x.get("priority", 0) < 1512 and x.get("priority") != 1100]


def test_keep_on_exit_leaves_the_dataplane_and_a_restart_adopts_it(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, keep_on_exit=True)
    route, nft = d.route(), nft_table(lab)
    assert d.stop() == 0
    assert d.route() == route
    d2 = ecmpd_in(lab, keep_on_exit=True)
    assert d2.status()["stats"]["nft_writes"] == 0     # adopted, not rewritten
    assert d2.route() == route
    assert nft_table(lab) == nft


def test_dry_run_prints_the_plan_and_changes_nothing(make_lab):
    lab = make_lab()
    d = Ecmpd(lab, config_for(lab, weights={"wlan1": 1, "wlan2": 5}))
    out = lab.run(lab.ns_router, *d.argv("--dry-run")).stdout
    assert "nexthop via 10.111.0.1" in out and "weight 5" in out
    assert "fwmark 0x10000/0xff0000 lookup 1001" in out
    assert 'meta oifname "wlan1" masquerade' in out          # the nft table in nft syntax
    assert lab.run(lab.ns_router, "ip", "route", "show", "default").stdout == ""
    assert lab.run(lab.ns_router, "nft", "list", "ruleset").stdout.strip() == ""
    # a WAN learning its gateway: the plan uses what the kernel's default routes say
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.111.0.1", "proto", "dhcp")
    auto = config_for(lab)
    for w in auto["wans"].values():
        w["gateway"] = "auto"
        del w["address"]
    d.write_config(auto)
    out = lab.run(lab.ns_router, *d.argv("--dry-run")).stdout
    assert "# wlan1: gateway auto: 10.111.0.1" in out
    assert "# wlan2: gateway auto: none known yet" in out
    assert "route default table 1001 via 10.111.0.1" in out and "table 1002 via" not in out


def test_reload_with_other_tables_and_priorities_leaves_no_orphans(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab)
    d.write_config(config_for(lab, tables={"base": 2000}, rules={"priority": 3000},
                              route={"proto": 237}, nft={"table": "ecmpd_b"}))
    d.ctl("reload")
    d.wait_states({"wlan1": "up", "wlan2": "up"})
    # the renamed nft table replaced the old one (written first, then the old one went)
    assert lab.run(lab.ns_router, "nft", "list", "tables").stdout.split() == [
        "table", "inet", "ecmpd_b"]
    rules = json.loads(lab.run(lab.ns_router, "ip", "-j", "rule").stdout)
    prios = sorted(r["priority"] for r in rules if r["priority"] not in (0, 32766, 32767))
    assert prios == [3000, 3001, 3002, 3257, 3258, 3512]
    routes = lab.run(lab.ns_router, "ip", "route", "show", "table", "all").stdout
    assert "proto 236" not in routes and "table 1001" not in routes
    assert "table 2001" in routes and "table 2002" in routes
    assert "default proto 237" in d.route()
    lab.start_servers()
    assert all(r.ok for r in lab.new_flows(100, timeout=3.0))


def test_udp_flows_are_balanced_and_masqueraded(make_lab, ecmpd_in):
    lab = make_lab(make_spec(3, names=["red", "green", "blue"]))
    weights = {"red": 1, "green": 2, "blue": 3}
    ecmpd_in(lab, weights=weights)
    lab.start_servers()
    res = lab.new_flows(3000, interval=0.001, timeout=3.0, proto="udp")  # no burst: UDP has no retransmit
    # every datagram's answer came back (through the same WAN, or the ISP would have
    # dropped the wrong source), and the spread follows the weights like TCP's
    assert_distribution(lab, res, weights)
