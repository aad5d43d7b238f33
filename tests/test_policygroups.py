"""policygroups: policies of one shape in one verdict map wherever the order that matters
(overlapping policies that say otherwise) allows, checked against the first-match
model."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd import nftrules, policygroups
from ecmpd.configmodel import PORT_PROTOCOLS, Policy
from tests.policymodel import GRE, PROBES, TCP, UDP, first_match, looked_up, policy_fields
from tests.test_policyrules import (DADDR, DADDR6, L4PROTO, SADDR, SPORT, DPORT, IIF, cfg, chain,
                                    fwcost_like, lookups, maps, pol, targets)


# ---- grouping --------------------------------------------------------------------------
def test_consecutive_policies_of_one_shape_share_one_map_and_one_rule():
    c = cfg(*(pol(i, dst=(f"203.0.{i}.0/24",)) for i in range(1, 201)))
    assert lookups(c) == [(DADDR, "@polmap_1")]
    (m,) = maps(c).values()
    assert (m["type"], m["map"], m["flags"]) == ("ipv4_addr", "verdict", ["interval"])
    assert m["elem"][:2] == [
        [{"prefix": {"addr": "203.0.1.0", "len": 24}}, {"goto": {"target": "pol_1"}}],
        [{"prefix": {"addr": "203.0.2.0", "len": 24}}, {"goto": {"target": "pol_2"}}]]
    assert len(m["elem"]) == 200
    assert chain(c, "policies")[0][1] == "policies 1-200"


def test_a_shape_change_starts_a_new_rule_where_policies_overlap_and_say_otherwise():
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, 11, src=("192.168.1.23/32",)),
            pol(3, dst=("198.51.100.0/24",)))
    assert lookups(c) == [(DADDR, "@polmap_1"), (SADDR, "@polmap_2"), (DADDR, "@polmap_3")]
    assert [targets(m) for m in maps(c).values()] == [["pol_1"], ["pol_2"], ["pol_3"]]
    assert maps(c)["polmap_2"]["elem"][0][0] == "192.168.1.23"     # a host: no prefix
    # the same WANs: a packet both match goes the same way, so 3 may join 1's map
    same = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, src=("192.168.1.23/32",)),
               pol(3, dst=("198.51.100.0/24",)))
    assert lookups(same) == [(DADDR, "@polmap_1"), (SADDR, "@polmap_2")]
    assert targets(maps(same)["polmap_1"]) == ["pol_1", "pol_3"]
    # another fallback is another route: it says otherwise
    assert len(lookups(cfg(pol(1, dst=("203.0.113.0/24",)),
                           replace(pol(2, 11, src=("192.168.1.23/32",)), fallback="drop"),
                           pol(3, dst=("198.51.100.0/24",))))) == 3


def test_an_overlap_starts_a_new_rule_and_what_an_earlier_policy_holds_is_left_out():
    narrow, wide = pol(1, dst=("10.1.0.0/16",)), pol(2, dst=("10.0.0.0/8",))
    assert lookups(cfg(narrow, wide)) == [(DADDR, "@polmap_1"), (DADDR, "@polmap_2")]
    # the other way round the /16 can never be the first match
    c = cfg(replace(wide, position=1), replace(narrow, position=2))
    assert lookups(c) == [(DADDR, "@polmap_1")]
    assert targets(maps(c)["polmap_1"]) == ["pol_1"]
    assert {ch["name"] for ch in nftrules.render_chains(c)} >= {"pol_1", "pol_2"}  # counted 0


def test_policies_that_cannot_meet_share_a_map_across_other_shapes():
    # IPv4 and IPv6 never overlap; nor do elements that differ in a field both use
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, dst=("2001:db8:ff::/48",)),
            pol(3, dst=("198.51.100.0/24",)), pol(4, proto=(TCP,), dport=((443, 443),)),
            pol(5, dst=("192.0.2.0/24",), proto=(UDP,), dport=((53, 53),)),
            pol(6, proto=(UDP,), dport=((5060, 5060),)))
    assert lookups(c) == [(DADDR, "@polmap_1"), (DADDR6, "@polmap_2"),
                          ({"concat": [L4PROTO, DPORT]}, "@polmap_3"),
                          ({"concat": [DADDR, L4PROTO, DPORT]}, "@polmap_4")]
    assert targets(maps(c)["polmap_1"]) == ["pol_1", "pol_3"]
    assert targets(maps(c)["polmap_3"]) == ["pol_4", "pol_6"]
    # a family-agnostic policy in between does hold the IPv4 ones apart
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, 11, proto=(GRE,)),
            pol(3, dst=("198.51.100.0/24",)))
    assert len(lookups(c)) == 3


def test_a_policy_of_both_families_keys_each_on_its_own_header():
    c = cfg(pol(1, dst=("203.0.113.0/24", "2001:db8:ff::/48"), proto=(TCP,)),
            pol(2, src=("10.0.0.0/8",), dst=("2001:db8::/32",)))    # can never match
    assert lookups(c) == [({"concat": [DADDR, L4PROTO]}, "@polmap_1"),
                          ({"concat": [DADDR6, L4PROTO]}, "@polmap_2")]
    assert maps(c)["polmap_1"]["type"] == ["ipv4_addr", "inet_proto"]
    assert maps(c)["polmap_2"]["type"] == ["ipv6_addr", "inet_proto"]
    assert maps(c)["polmap_2"]["elem"] == [
        [{"concat": [{"prefix": {"addr": "2001:db8:ff::", "len": 48}}, TCP]},
         {"goto": {"target": "pol_1"}}]]


def test_ports_and_ranges_key_on_their_protocols():
    voip = pol(1, dst=("198.51.100.0/24",), proto=(UDP,), dport=((5060, 5060), (10000, 20000)))
    (m,) = maps(cfg(voip)).values()
    assert lookups(cfg(voip)) == [({"concat": [DADDR, L4PROTO, DPORT]}, "@polmap_1")]
    assert (m["type"], m["flags"]) == (["ipv4_addr", "inet_proto", "inet_service"],
                                       ["interval"])
    prefix = {"prefix": {"addr": "198.51.100.0", "len": 24}}
    assert sorted(json.dumps(k) for k, _ in m["elem"]) == sorted(json.dumps(k) for k in [
        {"concat": [prefix, UDP, 5060]}, {"concat": [prefix, UDP, {"range": [10000, 20000]}]}])
    # ports without a protocol: the four that have ports; a portless one is dropped
    sport = cfg(pol(1, sport=((1024, 65535),)), pol(2, proto=(UDP, 1), dport=((53, 53),)))
    assert lookups(sport)[0][0] == {"concat": [L4PROTO, SPORT]}
    assert [k["concat"][0] for k, _ in maps(sport)["polmap_1"]["elem"]] == \
        sorted(PORT_PROTOCOLS.values())
    assert [k["concat"][0] for k, _ in maps(sport)["polmap_2"]["elem"]] == [UDP]
    assert policygroups.elements(pol(1, proto=(1,), dport=((1, 1),))) == ()


def test_interfaces_and_protocols_alone_need_no_interval_map():
    c = cfg(pol(1, iif=("lan2", "lan3")), pol(2, proto=(GRE, 50)))
    assert lookups(c) == [(IIF, "@polmap_1"), (L4PROTO, "@polmap_2")]
    m = maps(c)
    assert m["polmap_1"]["type"] == "ifname" and "flags" not in m["polmap_1"]
    assert [k for k, _ in m["polmap_1"]["elem"]] == ["lan2", "lan3"]
    assert m["polmap_2"]["type"] == "inet_proto" and "flags" not in m["polmap_2"]


def test_a_policy_that_matches_everything_is_a_plain_goto():
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2), pol(3, dst=("198.51.100.0/24",)))
    assert lookups(c) == [(DADDR, "@polmap_1"), (None, "pol_2")]  # 3 never matches first


def test_comments_stay_short():
    c = cfg(*(pol(i, dst=(f"10.{i // 256}.{i % 256}.0/24",)) for i in range(1, 2000, 2)),
            pol(2001, name="é" * 300))
    assert all(len((comment or "").encode()) <= 128
               for _, _, comment in nftrules.render_rules(c))
    assert chain(c, "policies")[0][1].startswith("policies 1, 3, 5, ")
    assert chain(c, "policies")[0][1].endswith(", ...")
    assert chain(c, "pol_2001")[0][1] == "é" * 60




def check_plan(policies: tuple[Policy, ...], probes: list[dict] = PROBES) -> None:
    """The groups of `policies` against the model: one shape per map, no two keys of a
    map overlap (nft refuses them), and every probe goes the way (route) of its first
    match (which of two policies of one route counts a packet both match is open)."""
    plan = policygroups.plan(policies)
    route = {p.position: p.route for p in policies}
    for shape, elems in plan:
        # one shape per map, and no two keys of one map overlap (nft refuses them)
        assert all(e.shape == shape for e in elems)
        for i, a in enumerate(elems):
            for b in elems[i + 1:]:
                assert not all(x is None or x[0] <= y[1] and y[0] <= x[1]
                               for x, y in zip(a.spans, b.spans)), (a, b)
    for packet in probes:
        assert route.get(looked_up(plan, packet)) == route.get(first_match(policies, packet)), \
            packet


@settings(max_examples=200, deadline=None, database=None)
@given(fields=st.lists(policy_fields, min_size=1, max_size=12),
       routes=st.lists(st.sampled_from([10, 11, 12]), min_size=12, max_size=12))
def test_the_groups_do_what_first_match_wins_means(fields, routes):
    check_plan(tuple(Policy(i, ("isp_a",), r, **f)
                     for (i, f), r in zip(enumerate(fields, 1), routes)))


SMALL = [{"dst": ("10.0.0.0/30",)}, {"dst": ("10.0.0.2/31",)}, {"dst": ("10.0.0.4/30",)},
         {"src": ("10.0.0.4/30",)}, {"dst": ("10.0.0.0/29",), "proto": (UDP,)},
         {"proto": (UDP,), "dport": ((1, 3),)}, {"iif": ("lan1",)},
         {"dst": ("fd00::/126",), "proto": (UDP,)}, {}]


def test_every_order_of_few_small_policies_and_two_routes():
    """Exhaustive: every list of 3 of `SMALL` (repeats allowed, so a policy may overlap
    its own copy) over every assignment of 2 routes (the first one's fixed: swapping
    the two is the same case)."""
    probes = PROBES[:50]
    for picked in itertools.product(range(len(SMALL)), repeat=3):
        for routes in itertools.product((10,), (10, 11), (10, 11)):
            check_plan(tuple(Policy(i, ("isp_a",), r, **SMALL[k])
                             for i, (k, r) in enumerate(zip(picked, routes), 1)), probes)


def test_rules_grow_with_the_shape_changes_not_the_policies():
    same = tuple(pol(i, dst=(f"10.{i // 256}.{i % 256}.0/24",)) for i in range(1, 1001))
    assert len(policygroups.plan(same)) == 1
    mixed = tuple(pol(i, **({"dst": (f"10.{i // 256}.{i % 256}.0/24",)} if i <= 500 else
                           {"proto": (UDP,), "dport": ((i, i),)} if i <= 900 else
                           {"dst": (f"2001:db8:{i:x}::/48",)}))
                  for i in range(1, 1001))
    assert [len(elems) for _, elems in policygroups.plan(mixed)] == [500, 400, 100]


def test_interleaved_shapes_of_one_route_need_a_map_per_shape():
    """Figure 13's interleaved set: with its policies alternating two WAN sets, nearly
    every neighbour overlaps and says otherwise (a destination-only and a source-only
    policy meet), so the order takes a group each; with one WAN set, a group a shape."""
    one = policygroups.plan(tuple(fwcost_like(1000, routes=(10,))))
    assert len(one) == 6
    assert len(policygroups.plan(tuple(fwcost_like(1000)))) == 1000


