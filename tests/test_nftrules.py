"""nftrules: the rendered table (pure) and — with root — that libnftables accepts it."""

import json
import os
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from ecmpd import nftrules
from ecmpd.configmodel import Config, Wan


def cfg(**kw) -> Config:
    wans = (Wan("isp_a", "ethA", IPv4Address("10.1.0.1"), 1, 1),
            Wan("isp_b", "ethB", IPv4Address("10.2.0.1"), 5, 7))
    return Config(lan_interfaces=("lan0",), wans=wans, **kw)


def rules_of(c: Config, chain: str):
    return [r for r in nftrules.render_rules(c) if r[0] == chain]


def test_masquerade_per_wan_interface():
    nat = rules_of(cfg(), "nat")
    assert [r[1] for r in nat] == [
        [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ethA"}},
         {"masquerade": None}],
        [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ethB"}},
         {"masquerade": None}],
    ]


def test_marks_live_under_the_mask_and_keep_other_bits():
    c = cfg(mark_mask=0x0000FF00)
    pin_b = rules_of(c, "pin_7")[0][1][0]["mangle"]
    assert pin_b["key"] == {"ct": {"key": "mark"}}
    assert pin_b["value"] == {"|": [{"&": [{"ct": {"key": "mark"}}, 0xFFFF00FF]}, 0x700]}
    restore_a = rules_of(c, "restore_1")[0][1][0]["mangle"]
    assert restore_a["key"] == {"meta": {"key": "mark"}}
    assert restore_a["value"] == {"|": [{"&": [{"meta": {"key": "mark"}}, 0xFFFF00FF]}, 0x100]}


def test_pinning_only_touches_unmarked_connections_by_interface():
    (chain, expr, _), = rules_of(cfg(), "postrouting")
    assert expr[0] == {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 0xFF0000]},
                                 "right": 0}}
    assert expr[1]["vmap"]["key"] == {"meta": {"key": "oifname"}}
    assert expr[1]["vmap"]["data"]["set"] == [["ethA", {"jump": {"target": "pin_1"}}],
                                              ["ethB", {"jump": {"target": "pin_7"}}]]
    pre = rules_of(cfg(), "prerouting")
    assert pre[1][1][1]["vmap"]["key"] == {"meta": {"key": "iifname"}}
    # restore in prerouting and output, keyed by the masked ct mark
    for chain in ("prerouting", "output"):
        restore = rules_of(cfg(), chain)[-1][1][0]["vmap"]
        assert restore["data"]["set"] == [[0x10000, {"jump": {"target": "restore_1"}}],
                                          [0x70000, {"jump": {"target": "restore_7"}}]]


SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
SADDR6 = {"payload": {"protocol": "ip6", "field": "saddr"}}
UNICAST = {"match": {"op": "==", "left": {"meta": {"key": "pkttype"}}, "right": "host"}}


def v4_only(family: str) -> dict:
    return {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": family}}


NOT_OWN = {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["saddr"]}},
                     "right": "local"}}
"""A SNAT rule leaves the box's own packets alone."""


def dual(**kw) -> Config:
    """isp_a dual-stack (global IPv6 gateway), isp_b IPv6-only (link-local gateway),
    isp_c IPv4-only."""
    wans = (Wan("isp_a", "ethA", IPv4Address("10.1.0.1"), 1, 1,
                gateway6=IPv6Address("2001:db8:1::1"), families=(4, 6)),
            Wan("isp_b", "ethB", None, 1, 2, gateway6=IPv6Address("fe80::1"), families=(6,)),
            Wan("isp_c", "ethC", IPv4Address("10.3.0.1"), 1, 3))
    return Config(lan_interfaces=("lan0",), wans=wans, **kw)


def test_arrivals_are_counted_first_in_prerouting_by_one_lookup():
    (chain, expr, comment), *_ = rules_of(cfg(), "prerouting")
    assert expr == [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": [
        ["ethA", {"jump": {"target": "rx_1"}}], ["ethB", {"jump": {"target": "rx_7"}}]]}}}]
    objs = nftrules.render_table(cfg())
    first = next(o["rule"] for o in objs if "rule" in o and o["rule"]["chain"] == "prerouting")
    assert first["expr"] == expr and first["comment"].startswith(nftrules.DIGEST_PREFIX)


NOT_EVIDENCE = [
    [{"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}},
                "right": "redirect"}}, {"return": None}],
    [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                "right": {"set": ["nd-router-solicit", "nd-router-advert",
                                  "nd-neighbor-solicit", "nd-neighbor-advert",
                                  "nd-redirect"]}}}, {"return": None}],
    [{"match": {"op": "==", "left": SADDR6, "right": {"prefix": {"addr": "fe80::", "len": 10}}}},
     {"return": None}],
]


def rx_chain(c: Config, wan_id: int, *args) -> list:
    return [r[1] for r in nftrules.render_rules(c, *args) if r[0] == f"rx_{wan_id}"]


def test_the_gateways_own_packets_and_redirects_are_not_counted():
    assert rx_chain(cfg(), 1) == NOT_EVIDENCE + [
        [{"match": {"op": "!=", "left": SADDR, "right": "10.1.0.1"}}, UNICAST,
         {"counter": "rx_1"}],
        [v4_only("ipv6"), UNICAST, {"counter": "rx6_1"}]]     # no IPv6 gateway: all of it
    assert rx_chain(cfg(), 7)[3][0]["match"]["right"] == "10.2.0.1"
    counters = [o["counter"] for o in nftrules.render_table(cfg()) if "counter" in o]
    assert counters == [{"family": "inet", "table": "ecmpd", "name": n}
                        for n in ("rx_1", "rx6_1", "rx_7", "rx6_7")]
    chains = {c["name"] for c in nftrules.render_chains(cfg())}
    assert {"rx_1", "rx_7"} <= chains and not any(n.startswith("rx6") for n in chains)


def test_both_families_are_counted_for_every_wan_each_without_its_gateway():
    c = dual()
    assert nftrules.gateways6_of(c) == {"isp_a": "2001:db8:1::1", "isp_b": "fe80::1"}
    # dual-stack: each family leaves out its own gateway
    assert rx_chain(c, 1)[3:] == [
        [{"match": {"op": "!=", "left": SADDR, "right": "10.1.0.1"}}, UNICAST,
         {"counter": "rx_1"}],
        [{"match": {"op": "!=", "left": SADDR6, "right": "2001:db8:1::1"}}, UNICAST,
         {"counter": "rx6_1"}]]
    # IPv6-only, link-local gateway: every link-local source is left out already
    assert rx_chain(c, 2) == NOT_EVIDENCE + [
        [v4_only("ipv4"), UNICAST, {"counter": "rx_2"}],
        [v4_only("ipv6"), UNICAST, {"counter": "rx6_2"}]]
    # IPv4-only: its IPv6 counter counts whatever IPv6 arrives anyway
    assert rx_chain(c, 3)[3:] == [
        [{"match": {"op": "!=", "left": SADDR, "right": "10.3.0.1"}}, UNICAST,
         {"counter": "rx_3"}],
        [v4_only("ipv6"), UNICAST, {"counter": "rx6_3"}]]
    names = [o["counter"]["name"] for o in nftrules.render_table(c) if "counter" in o]
    assert names == ["rx_1", "rx6_1", "rx_2", "rx6_2", "rx_3", "rx6_3"]
    assert [nftrules.counter_name(f, 2) for f in (4, 6)] == ["rx_2", "rx6_2"]
    # still one lookup per packet: every WAN's arrivals go to its one rx chain
    (_, expr, _), *_ = rules_of(c, "prerouting")
    assert [e[1]["jump"]["target"] for e in expr[0]["vmap"]["data"]["set"]] == \
        ["rx_1", "rx_2", "rx_3"]
    # masquerade per WAN out-interface, whatever its families (NAT66 too)
    assert [r[1][0]["match"]["right"] for r in rules_of(c, "nat")] == ["ethA", "ethB", "ethC"]


def test_nat_none_leaves_out_its_version_and_the_common_case_stays_one_rule():
    a, b, c3 = dual().wans
    c = replace(dual(), wans=(replace(a, nat=((6, "none"),)), replace(b, nat=((6, "none"),)),
                              replace(c3, nat=((4, "none"),))))
    oif = {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ethA"}}
    # isp_a masquerades IPv4 only; isp_b (IPv6-only) and isp_c (IPv4-only) nothing at all
    assert [(r[1], r[2]) for r in rules_of(c, "nat")] == [
        ([oif, v4_only("ipv4"), {"masquerade": None}], "masquerade isp_a")]
    mixed = replace(dual(), wans=(replace(a, nat=((4, "none"),)), b, c3))
    assert [r[1][:-1] for r in rules_of(mixed, "nat")] == [
        [oif, v4_only("ipv6")],
        [{"match": {**oif["match"], "right": "ethB"}}],     # as before: one rule, any version
        [{"match": {**oif["match"], "right": "ethC"}}]]
    # nothing else changes: marks, pinning and counters are the same rules
    assert [r for r in nftrules.render_rules(c) if r[0] != "nat"] == \
        [r for r in nftrules.render_rules(dual()) if r[0] != "nat"]
    assert nftrules.digest(c) != nftrules.digest(dual())


def test_snat_to_a_fixed_address_per_version():
    """`nat: {snat: ...}`: one snat rule per SNATed version, the other version keeps
    its masquerade rule (with nfproto), nothing else in the table changes."""
    a, b, c3 = dual().wans
    snat6 = IPv6Address("2001:db8:1::10")
    c = replace(dual(), wans=(replace(a, nat=((4, "snat", IPv4Address("10.1.0.10")),)),
                              replace(b, nat=((6, "snat", snat6),)),
                              replace(c3, nat=((4, "snat", IPv4Address("10.3.0.10")),))))
    def oif(name: str) -> dict:
        return {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}}
    assert [(r[1], r[2]) for r in rules_of(c, "nat")] == [
        ([oif("ethA"), v4_only("ipv6"), {"masquerade": None}], "masquerade isp_a"),
        ([oif("ethA"), v4_only("ipv4"), NOT_OWN, {"snat": {"family": "ip", "addr": "10.1.0.10"}}],
         "snat isp_a IPv4 to 10.1.0.10"),
        ([oif("ethB"), v4_only("ipv6"), NOT_OWN, {"snat": {"family": "ip6", "addr": str(snat6)}}],
         "snat isp_b IPv6 to 2001:db8:1::10"),
        ([oif("ethC"), v4_only("ipv4"), NOT_OWN, {"snat": {"family": "ip", "addr": "10.3.0.10"}}],
         "snat isp_c to 10.3.0.10")]
    assert [r for r in nftrules.render_rules(c) if r[0] != "nat"] == \
        [r for r in nftrules.render_rules(dual()) if r[0] != "nat"]
    assert nftrules.digest(c) != nftrules.digest(dual())


def test_ipv6_gateways_passed_in_replace_the_configs():
    c = dual()
    assert nftrules.digest(c, None, nftrules.gateways6_of(c)) == nftrules.digest(c)
    learned6 = {"isp_a": "2001:db8:1::fe", "isp_c": "2001:db8:3::1%ethC"}  # scope dropped
    assert rx_chain(c, 1, None, learned6)[4][0]["match"]["right"] == "2001:db8:1::fe"
    assert rx_chain(c, 3, None, learned6)[4][0]["match"]["right"] == "2001:db8:3::1"
    assert nftrules.digest(c, None, learned6) != nftrules.digest(c)
    # a link-local gateway is never named: a new one changes nothing (no rewrite, no reset)
    assert nftrules.digest(c, None, {"isp_a": "2001:db8:1::1", "isp_b": "fe80::99"}) \
        == nftrules.digest(c)
    assert nftrules.digest(c, None, {"isp_a": "2001:db8:1::1"}) == nftrules.digest(c)
    with pytest.raises(ValueError):
        nftrules.render_rules(c, None, {"isp_a": "10.1.0.1"})
    cmds = json.dumps(nftrules.replace_commands(c, None, learned6))
    assert "2001:db8:1::fe" in cmds and "2001:db8:1::1\"" not in cmds


def test_digest_is_stable_and_covers_both_families():
    assert nftrules.digest(dual()) == nftrules.digest(dual())
    assert nftrules.render_table(dual()) == nftrules.render_table(dual())
    assert nftrules.digest(dual()) != nftrules.digest(cfg())
    assert nftrules.digest(dual(), {"isp_a": "10.1.0.9"}) != nftrules.digest(dual())


def test_gateways_passed_in_replace_the_configs():
    c = cfg()
    assert nftrules.gateways_of(c) == {"isp_a": "10.1.0.1", "isp_b": "10.2.0.1"}
    assert nftrules.gateways6_of(c) == {}
    assert nftrules.render_rules(c, nftrules.gateways_of(c)) == nftrules.render_rules(c)
    assert nftrules.digest(c, nftrules.gateways_of(c)) == nftrules.digest(c)
    learned = {"isp_a": "10.1.0.254"}          # isp_b's gateway not known (yet)
    assert rx_chain(c, 1, learned)[3][0]["match"]["right"] == "10.1.0.254"
    assert rx_chain(c, 7, learned)[3] == [v4_only("ipv4"), UNICAST, {"counter": "rx_7"}]
    assert nftrules.digest(c, learned) != nftrules.digest(c)
    cmds = json.dumps(nftrules.replace_commands(c, learned))
    assert "10.1.0.254" in cmds and "10.2.0.1" not in cmds


def test_counter_values_do_not_make_a_listing_differ():
    def listing(packets: int) -> dict:
        return {"nftables": [
            {"metainfo": {"version": "1"}},
            {"table": {"family": "inet", "name": "ecmpd", "handle": 3}},
            {"counter": {"family": "inet", "name": "rx_1", "table": "ecmpd", "handle": 4,
                         "packets": packets, "bytes": 84 * packets}},
            {"rule": {"family": "inet", "table": "ecmpd", "chain": "rx_1", "handle": 9,
                      "expr": [{"match": {"op": "!=", "left": SADDR, "right": "10.1.0.1"}},
                               {"counter": "rx_1"}]}},
            {"rule": {"family": "inet", "table": "ecmpd", "chain": "nat", "handle": 10,
                      "expr": [{"counter": {"packets": packets, "bytes": 60 * packets}},
                               {"accept": None}]}},
            # an older ecmpd's table of the same name is not ecmpd's table now
            {"counter": {"family": "ip", "name": "rx_1", "table": "ecmpd", "packets": 1}},
        ]}
    norm = nftrules.normalize_listing(listing(0), "ecmpd")
    assert norm == nftrules.normalize_listing(listing(12345), "ecmpd")
    assert len(norm) == 4
    assert norm[1] == {"counter": {"family": "inet", "name": "rx_1", "table": "ecmpd"}}
    assert norm[2]["rule"]["expr"][1] == {"counter": "rx_1"}
    assert norm[3]["rule"]["expr"][0] == {"counter": {}}


def test_parse_counters_by_family_and_wan_and_policy():
    answer = {"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"counter": {"family": "inet", "name": "rx_1", "table": "ecmpd", "handle": 1,
                     "packets": 17, "bytes": 1428}},
        {"counter": {"family": "inet", "name": "rx6_1", "table": "ecmpd", "handle": 2,
                     "packets": 4, "bytes": 400}},
        {"counter": {"family": "inet", "name": "rx_200", "table": "ecmpd", "handle": 3,
                     "packets": 0, "bytes": 0}},
        {"counter": {"family": "inet", "name": "rx6_200", "table": "ecmpd", "packets": 9}},
        {"counter": {"family": "inet", "name": "other", "table": "ecmpd", "packets": 5}},
        {"counter": {"family": "inet", "name": "rx_x", "table": "ecmpd", "packets": 5}},
        {"counter": {"family": "inet", "name": "rx6_", "table": "ecmpd", "packets": 5}},
        {"counter": {"family": "inet", "name": "rx_2", "table": "elsewhere", "packets": 5}},
        {"counter": {"family": "ip", "name": "rx_3", "table": "ecmpd", "packets": 5}},
        # policies' counters: the connections each steered
        {"counter": {"family": "inet", "name": "pol_1", "table": "ecmpd", "packets": 4}},
        {"counter": {"family": "inet", "name": "pol_12", "table": "ecmpd", "packets": 0}},
        {"counter": {"family": "inet", "name": "pol_x", "table": "ecmpd", "packets": 5}},
    ]}
    assert nftrules.parse_counters(answer, "ecmpd") == {
        (4, 1): 17, (6, 1): 4, (4, 200): 0, (6, 200): 9, ("policy", 1): 4, ("policy", 12): 0}
    assert nftrules.parse_counters({}, "ecmpd") == {}
    assert nftrules.counters_command("t") == {
        "nftables": [{"list": {"counters": {"family": "inet", "table": "t"}}}]}


def test_base_chains_hooks_and_priorities():
    chains = {c["name"]: c for c in nftrules.render_chains(cfg())}
    assert (chains["prerouting"]["type"], chains["prerouting"]["hook"], chains["prerouting"]["prio"]) \
        == ("filter", "prerouting", -150)
    assert (chains["output"]["type"], chains["output"]["prio"]) == ("route", -150)
    assert (chains["nat"]["type"], chains["nat"]["hook"], chains["nat"]["prio"]) \
        == ("nat", "postrouting", 100)
    assert {"pin_1", "pin_7", "restore_1", "restore_7"} <= set(chains)


def test_replace_is_one_transaction_on_our_table_only():
    doc = nftrules.replace_commands(cfg(nft_table="mine"))
    cmds = doc["nftables"]
    inet, ip = ({"table": {"family": f, "name": "mine"}} for f in ("inet", "ip"))
    # ours of both families goes (an older ecmpd's `table ip mine` included), then the
    # inet one is made anew: one transaction, never both tables on the host
    assert cmds[:5] == [{"add": inet}, {"delete": inet}, {"add": ip}, {"delete": ip},
                        {"add": inet}]
    for cmd in cmds:
        (verb, obj), = cmd.items()
        assert verb in ("add", "delete")
        (_, body), = obj.items()
        assert body.get("table", body.get("name")) == "mine"
        assert body["family"] == ("ip" if obj == ip else "inet")
    assert not any("flush" in c for c in cmds)
    assert nftrules.delete_commands("mine") == {"nftables": [
        {"add": inet}, {"delete": inet}, {"add": ip}, {"delete": ip}]}


def test_table_families_and_listing_commands():
    answer = {"nftables": [{"metainfo": {}},
                           {"table": {"family": "ip", "name": "ecmpd", "handle": 1}},
                           {"table": {"family": "inet", "name": "ecmpd", "handle": 2}},
                           {"table": {"family": "ip6", "name": "other", "handle": 3}}]}
    assert nftrules.families_of(answer, "ecmpd") == {"ip", "inet"}
    assert nftrules.families_of(answer, "nope") == set()
    assert nftrules.tables_command() == {"nftables": [{"list": {"tables": None}}]}
    assert nftrules.list_command("t") == {
        "nftables": [{"list": {"table": {"family": "inet", "name": "t"}}}]}


def test_digest_changes_with_content_and_is_stable():
    assert nftrules.digest(cfg()) == nftrules.digest(cfg())
    assert nftrules.digest(cfg()) != nftrules.digest(cfg(mark_mask=0xFF00))
    objs = nftrules.render_table(cfg())
    comments = [o["rule"].get("comment") for o in objs if "rule" in o]
    assert nftrules.DIGEST_PREFIX + nftrules.digest(cfg()) in comments


def test_listing_helpers():
    listing = {"nftables": [
        {"metainfo": {"version": "1"}},
        {"table": {"family": "inet", "name": "ecmpd", "handle": 3}},
        {"chain": {"family": "inet", "table": "ecmpd", "name": "nat", "handle": 1}},
        {"rule": {"family": "inet", "table": "ecmpd", "chain": "nat", "handle": 9,
                  "comment": "ecmpd:abc", "expr": []}},
    ]}
    norm = nftrules.normalize_listing(listing, "ecmpd")
    assert all("handle" not in next(iter(o.values())) for o in norm)
    assert len(norm) == 3
    assert nftrules.listing_digest(listing) == "abc"
    assert nftrules.listing_digest({"nftables": []}) is None


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_libnftables_accepts_and_lists_back_the_table(make_netns):
    ns = make_netns("nft")

    def nft(*args: str, doc: str | None = None) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=doc,
                              capture_output=True, text=True, check=True).stdout

    # an older ecmpd's table of the same name, and a foreign one of another family
    nft("-f", "-", doc="table ip ecmpd {\n chain c {\n type filter hook input priority 0;\n"
                       " }\n}\ntable ip6 ecmpd {\n}\n")
    for c in (cfg(), dual()):
        doc = json.dumps(nftrules.replace_commands(c))
        for _ in range(2):  # the replace works on an existing table as well
            nft("-j", "-f", "-", doc=doc)
        listing = json.loads(nft("-j", "list", "ruleset"))
        assert nftrules.listing_digest(listing) == nftrules.digest(c)
        tables = sorted((o["table"]["family"], o["table"]["name"])
                        for o in listing["nftables"] if "table" in o)
        assert tables == [("inet", "ecmpd"), ("ip6", "ecmpd")]   # the ip one went
    text = nft("list", "table", "inet", "ecmpd")
    assert 'oifname "ethA" masquerade' in text
    a, *others = dual().wans
    no_nat6 = replace(dual(), wans=(replace(a, nat=((6, "none"),)), *others))
    nft("-j", "-f", "-", doc=json.dumps(nftrules.replace_commands(no_nat6)))
    nat = nft("list", "chain", "inet", "ecmpd", "nat")
    assert 'oifname "ethA" meta nfproto ipv4 masquerade' in nat
    assert 'oifname "ethB" masquerade' in nat
    # snat to a fixed address, both families; the listing reads back to the same digest
    snat = replace(dual(), wans=(replace(a, nat=((4, "snat", IPv4Address("10.1.0.10")),
                                                  (6, "snat", IPv6Address("2001:db8:1::10")))),
                                 *others))
    nft("-j", "-f", "-", doc=json.dumps(nftrules.replace_commands(snat)))
    nat = nft("list", "chain", "inet", "ecmpd", "nat")
    assert 'oifname "ethA" meta nfproto ipv4 fib saddr type != local snat ip to 10.1.0.10' in nat
    assert 'oifname "ethA" meta nfproto ipv6 fib saddr type != local snat ip6 to 2001:db8:1::10' in nat
    assert nftrules.listing_digest(json.loads(nft("-j", "list", "ruleset"))) == \
        nftrules.digest(snat)
    nft("-j", "-f", "-", doc=json.dumps(nftrules.replace_commands(dual())))
    assert "ct mark & 0x00ff0000 vmap" in text
    pre = text.split("chain prerouting {")[1].split("}\n")[0].splitlines()
    assert pre[2].strip().startswith(
        'iifname vmap { "ethA" : jump rx_1, "ethB" : jump rx_2, "ethC" : jump rx_3 }')
    assert 'ip saddr != 10.1.0.1 meta pkttype host counter name "rx_1"' in text
    assert 'ip6 saddr != 2001:db8:1::1 meta pkttype host counter name "rx6_1"' in text
    assert 'meta nfproto ipv6 meta pkttype host counter name "rx6_2"' in text
    assert "ip6 saddr fe80::/10 return" in text
    assert "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, " \
           "nd-neighbor-advert, nd-redirect } return" in text
    counters = nft("-j", "-f", "-", doc=json.dumps(nftrules.counters_command("ecmpd")))
    assert nftrules.parse_counters(json.loads(counters), "ecmpd") == {
        (f, w): 0 for w in (1, 2, 3) for f in (4, 6)}
    nft("-j", "-f", "-", doc=json.dumps(nftrules.delete_commands("ecmpd")))
    nft("-j", "-f", "-", doc=json.dumps(nftrules.delete_commands("ecmpd")))  # gone: no error
    assert "ecmpd" not in nft("list", "tables").replace("table ip6 ecmpd", "")
