"""policyrules: the policies in ecmpd's nft table (pure), checked against a first-match
reference model."""

from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd import nftrules, policyrules
from ecmpd.configmodel import PORT_PROTOCOLS, Config, Policy, Wan

UDP, TCP, GRE = 17, 6, 47


def wans() -> tuple[Wan, ...]:
    return (Wan("isp_a", "ethA", IPv4Address("10.1.0.1"), 1, 1,
                gateway6=IPv6Address("2001:db8:1::1"), families=(4, 6)),
            Wan("isp_b", "ethB", None, 1, 2, gateway6=IPv6Address("fe80::1"), families=(6,),
                nat=((6, "none"),)),
            Wan("isp_c", "ethC", IPv4Address("10.3.0.1"), 3, 3))


def cfg(*policies: Policy, **kw) -> Config:
    return Config(lan_interfaces=("lan0",), wans=wans(), policies=policies, **kw)


def pol(position: int, route: int = 10, **kw) -> Policy:
    return Policy(position, ("isp_a",), route, **kw)


def chain(c: Config, name: str) -> list[tuple[list, str | None]]:
    return [(expr, comment) for ch, expr, comment in nftrules.render_rules(c) if ch == name]


def maps(c: Config) -> dict[str, dict]:
    return {m["name"]: m for m in nftrules.render_maps(c)}


def lookups(c: Config) -> list[tuple[object, str]]:
    """(key, map or goto) of each rule of chain ``policies``, in order."""
    out = []
    for expr, _ in chain(c, "policies"):
        (e,) = expr
        out.append((e["vmap"]["key"], e["vmap"]["data"]) if "vmap" in e
                   else (None, e["goto"]["target"]))
    return out


def targets(m: dict) -> list[str]:
    return [verdict["goto"]["target"] for _, verdict in m["elem"]]


DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
DADDR6 = {"payload": {"protocol": "ip6", "field": "daddr"}}
L4PROTO = {"meta": {"key": "l4proto"}}
DPORT = {"payload": {"protocol": "th", "field": "dport"}}
SPORT = {"payload": {"protocol": "th", "field": "sport"}}
IIF = {"meta": {"key": "iifname"}}


# ---- without policies: the table of before, byte for byte ------------------------------
def test_without_policies_the_table_is_byte_identical_to_before_them():
    # sha256 of the JSON transaction and the digest, as ecmpd rendered them before
    # policies existed (ff7bd77)
    before = {0xFF0000: ("689b5de40e15aa84", "989f98b76bca57056236403b"),
              0xFF00: ("1b0cfdc5f10c7fc5", "0f8bbad505b5f3129a6620b5")}
    for mask, (digest, blob) in before.items():
        c = cfg(mark_mask=mask) if mask == 0xFF0000 else \
            Config(lan_interfaces=("lan0",), wans=wans()[2:], mark_mask=mask)
        doc = json.dumps(nftrules.replace_commands(c), sort_keys=True)
        assert (nftrules.digest(c), hashlib.sha256(doc.encode()).hexdigest()[:24]) == \
            (digest, blob)
    c = cfg()
    assert policyrules.render_rules(c) == policyrules.render_chains(c) == \
        policyrules.render_counters(c) == policyrules.render_maps(c) == []
    assert not any("map" in o for o in nftrules.render_table(c))


# ---- where the policies hook in -----------------------------------------------------
def test_one_guarded_jump_after_the_restore_rule_for_new_connections_not_from_a_wan():
    c = cfg(pol(1, dst=("203.0.113.0/24",)))
    pre = chain(c, "prerouting")
    assert [comment for _, comment in pre][-2:] == [
        "restore the connection's WAN mark", "policies: new connections not from a WAN"]
    assert pre[-1][0] == [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
        {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 0xFF0000]}, "right": 0}},
        {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0xFF0000]},
                   "right": 0}},
        {"match": {"op": "!=", "left": IIF, "right": {"set": ["ethA", "ethB", "ethC"]}}},
        {"jump": {"target": "policies"}}]
    # nothing else of the table changes: the policies only add
    without = [r for r in nftrules.render_rules(cfg())]
    assert [r for r in nftrules.render_rules(c) if r not in without] == \
        policyrules.render_rules(c)


def test_each_policy_counts_and_sets_its_mark_under_the_mask_keeping_other_bits():
    c = cfg(pol(1, route=10, name="voip", dst=("198.51.100.0/24",)),
            pol(2, route=11, src=("192.168.1.23/32",)), mark_mask=0x0000FF00)
    assert chain(c, "pol_1") == [([
        {"counter": "pol_1"},
        {"mangle": {"key": {"meta": {"key": "mark"}},
                    "value": {"|": [{"&": [{"meta": {"key": "mark"}}, 0xFFFF00FF]}, 0x0A00]}}},
    ], "voip")]
    assert chain(c, "pol_2")[0][0][1]["mangle"]["value"]["|"][1] == c.route_mark(11) == 0x0B00
    assert [o["name"] for o in nftrules.render_counters(c)][-2:] == ["pol_1", "pol_2"]
    names = [ch["name"] for ch in nftrules.render_chains(c)]
    assert names[-3:] == ["policies", "pol_1", "pol_2"]
    assert all(set(ch) == {"family", "table", "name"} for ch in nftrules.render_chains(c)[-3:])
    # objects before what names them: counters, chains, maps, then rules
    kinds = [next(iter(o)) for o in nftrules.render_table(c)]
    assert kinds.index("map") > max(i for i, k in enumerate(kinds) if k == "chain")
    assert kinds.index("rule") > max(i for i, k in enumerate(kinds) if k == "map")


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


def test_a_shape_change_starts_a_new_rule_and_the_order_is_kept():
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, src=("192.168.1.23/32",)),
            pol(3, dst=("198.51.100.0/24",)))
    assert lookups(c) == [(DADDR, "@polmap_1"), (SADDR, "@polmap_2"), (DADDR, "@polmap_3")]
    assert [targets(m) for m in maps(c).values()] == [["pol_1"], ["pol_2"], ["pol_3"]]
    assert maps(c)["polmap_2"]["elem"][0][0] == "192.168.1.23"     # a host: no prefix


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
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, proto=(GRE,)),
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
    assert policyrules.elements(pol(1, proto=(1,), dport=((1, 1),))) == []


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


def test_digest_changes_with_the_policies_and_their_order():
    a, b = pol(1, dst=("203.0.113.0/24",)), pol(2, src=("192.168.1.23/32",))
    digests = {nftrules.digest(c) for c in (
        cfg(), cfg(a), cfg(a, b), cfg(replace(b, position=1), replace(a, position=2)),
        cfg(a, replace(b, route=11)), cfg(a, mark_mask=0xFF00))}
    assert len(digests) == 6
    assert nftrules.digest(cfg(a, b)) == nftrules.digest(cfg(a, b))


def test_comments_stay_short():
    c = cfg(*(pol(i, dst=(f"10.{i // 256}.{i % 256}.0/24",)) for i in range(1, 2000, 2)),
            pol(2001, name="é" * 300))
    assert all(len((comment or "").encode()) <= 128
               for _, _, comment in nftrules.render_rules(c))
    assert chain(c, "policies")[0][1].startswith("policies 1, 3, 5, ")
    assert chain(c, "policies")[0][1].endswith(", ...")
    assert chain(c, "pol_2001")[0][1] == "é" * 60


# ---- the reference model: first match wins ------------------------------------------
V4 = ip_network("10.0.0.0/29")
V6 = ip_network("fd00::/125")


def prefixes(net) -> list[str]:
    """Every prefix inside `net` (a /29 or /125: down to single addresses)."""
    return [str(sub) for n in range(net.prefixlen, net.max_prefixlen + 1)
            for sub in net.subnets(new_prefix=n)]


PREFIXES = st.sampled_from(prefixes(V4) + prefixes(V6))
port_ranges = st.tuples(st.integers(1, 6), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1]))
policy_fields = st.fixed_dictionaries({}, optional={
    "src": st.lists(PREFIXES, min_size=1, max_size=2).map(tuple),
    "dst": st.lists(PREFIXES, min_size=1, max_size=2).map(tuple),
    "proto": st.lists(st.sampled_from([TCP, UDP, 1]), min_size=1, max_size=2).map(tuple),
    "sport": st.lists(port_ranges, min_size=1, max_size=2).map(tuple),
    "dport": st.lists(port_ranges, min_size=1, max_size=2).map(tuple),
    "iif": st.lists(st.sampled_from(["lan1", "lan2"]), min_size=1, max_size=2).map(tuple),
})


network = functools.lru_cache(maxsize=None)(ip_network)


def first_match(policies: tuple[Policy, ...], packet: dict) -> int | None:
    """What the policies mean, straight from the model: the first one that matches."""
    def within(prefixes: tuple[str, ...], address) -> bool:
        return not prefixes or any(address.version == network(p).version
                                   and address in network(p) for p in prefixes)

    for p in policies:
        ported = bool(p.sport or p.dport)
        if (within(p.src, packet["src"]) and within(p.dst, packet["dst"])
                and (not p.proto or packet["proto"] in p.proto)
                and (not ported or packet["proto"] in PORT_PROTOCOLS.values())
                and (not p.sport or any(a <= packet["sport"] <= b for a, b in p.sport))
                and (not p.dport or any(a <= packet["dport"] <= b for a, b in p.dport))
                and (not p.iif or packet["iif"] in p.iif)):
            return p.position
    return None


def looked_up(plan, packet: dict) -> int | None:
    """What the rendered chain does: the first group with an element that matches."""
    value = {"src": int(packet["src"]), "dst": int(packet["dst"]), "proto": packet["proto"],
             "sport": packet["sport"], "dport": packet["dport"], "iif": packet["iif"]}
    for shape, elems in plan:
        if shape.family and shape.family != packet["src"].version:
            continue
        for e in elems:
            if all(span is None or span[0] <= value[d] <= span[1]
                   for d, span in zip(policyrules.DIMS, e.spans)):
                return e.position
    return None


def probes(count: int, seed: int = 19) -> list[dict]:
    """Packets of both families over the small domain the policies are drawn from."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        net = rnd.choice((V4, V6))
        src, dst = (ip_address(int(net.network_address) + rnd.randrange(8)) for _ in "sd")
        out.append({"src": src, "dst": dst, "proto": rnd.choice((TCP, UDP, 1, GRE)),
                    "sport": rnd.randrange(1, 11), "dport": rnd.randrange(1, 11),
                    "iif": rnd.choice(("lan1", "lan2", "lan3"))})
    return out


PROBES = probes(200)


@settings(max_examples=150, deadline=None, database=None)
@given(fields=st.lists(policy_fields, min_size=1, max_size=12))
def test_the_groups_do_what_first_match_wins_means(fields):
    policies = tuple(Policy(i, ("isp_a",), 10, **f) for i, f in enumerate(fields, 1))
    plan = policyrules.plan(policies)
    for shape, elems in plan:
        # one shape per map, and no two keys of one map overlap (nft refuses them)
        assert all(e.shape == shape for e in elems)
        for i, a in enumerate(elems):
            for b in elems[i + 1:]:
                assert not all(x is None or x[0] <= y[1] and y[0] <= x[1]
                               for x, y in zip(a.spans, b.spans)), (a, b)
    for packet in PROBES:
        assert looked_up(plan, packet) == first_match(policies, packet), packet


def test_rules_grow_with_the_shape_changes_not_the_policies():
    same = tuple(pol(i, dst=(f"10.{i // 256}.{i % 256}.0/24",)) for i in range(1, 1001))
    assert len(policyrules.plan(same)) == 1
    mixed = tuple(pol(i, **({"dst": (f"10.{i // 256}.{i % 256}.0/24",)} if i <= 500 else
                           {"proto": (UDP,), "dport": ((i, i),)} if i <= 900 else
                           {"dst": (f"2001:db8:{i:x}::/48",)}))
                  for i in range(1, 1001))
    assert [len(elems) for _, elems in policyrules.plan(mixed)] == [500, 400, 100]


def test_dry_run_shows_the_policies_in_nft_syntax():
    c = cfg(pol(1, 255, name="voip", dst=("198.51.100.0/24",), proto=(17,),
                dport=((5060, 5060), (10000, 20000))),
            pol(2, 254, src=("2001:db8:5::/48",), iif=("lan0",)))
    text = "\n".join(policyrules.describe(c))
    assert "ip daddr . meta l4proto . th dport vmap @polmap_1  # policy 1" in text
    assert "198.51.100.0/24 . udp . 5060 : goto pol_1," in text
    assert "198.51.100.0/24 . udp . 10000-20000 : goto pol_1," in text
    assert "ip6 saddr . iifname vmap @polmap_2" in text
    assert '2001:db8:5::/48 . "lan0" : goto pol_2,' in text
    assert "type ipv4_addr . inet_proto . inet_service : verdict; flags interval" in text
    assert f"| {c.route_mark(255):#010x} }}  # voip" in text
    assert policyrules.describe(cfg()) == []
