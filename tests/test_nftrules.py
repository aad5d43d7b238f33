"""nftrules: the rendered table (pure) and — with root — that libnftables accepts it."""

import json
import os
import subprocess
from ipaddress import IPv4Address

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
UNICAST = {"match": {"op": "==", "left": {"meta": {"key": "pkttype"}}, "right": "host"}}


def test_arrivals_are_counted_first_in_prerouting_by_one_lookup():
    (chain, expr, comment), *_ = rules_of(cfg(), "prerouting")
    assert expr == [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": [
        ["ethA", {"jump": {"target": "rx_1"}}], ["ethB", {"jump": {"target": "rx_7"}}]]}}}]
    objs = nftrules.render_table(cfg())
    first = next(o["rule"] for o in objs if "rule" in o and o["rule"]["chain"] == "prerouting")
    assert first["expr"] == expr and first["comment"].startswith(nftrules.DIGEST_PREFIX)


REDIRECT = ("rx_1", [{"match": {"op": "==", "left": {"payload": {"protocol": "icmp",
                                                                 "field": "type"}},
                                 "right": "redirect"}}, {"return": None}], None)


def test_the_gateways_own_packets_and_redirects_are_not_counted():
    assert rules_of(cfg(), "rx_1") == [REDIRECT, ("rx_1", [
        {"match": {"op": "!=", "left": SADDR, "right": "10.1.0.1"}}, UNICAST,
        {"counter": "rx_1"}], None)]
    assert rules_of(cfg(), "rx_7")[1][1][0]["match"]["right"] == "10.2.0.1"
    counters = [o["counter"] for o in nftrules.render_table(cfg()) if "counter" in o]
    assert counters == [{"family": "ip", "table": "ecmpd", "name": "rx_1"},
                        {"family": "ip", "table": "ecmpd", "name": "rx_7"}]
    chains = {c["name"] for c in nftrules.render_chains(cfg())}
    assert {"rx_1", "rx_7"} <= chains


def test_gateways_passed_in_replace_the_configs():
    c = cfg()
    assert nftrules.gateways_of(c) == {"isp_a": "10.1.0.1", "isp_b": "10.2.0.1"}
    assert nftrules.render_rules(c, nftrules.gateways_of(c)) == nftrules.render_rules(c)
    assert nftrules.digest(c, nftrules.gateways_of(c)) == nftrules.digest(c)
    learned = {"isp_a": "10.1.0.254"}          # isp_b's gateway not known (yet)
    rx = {r[0]: r[1] for r in nftrules.render_rules(c, learned) if r[0].startswith("rx_")}
    assert rx["rx_1"][0]["match"]["right"] == "10.1.0.254"
    assert rx["rx_7"] == [UNICAST, {"counter": "rx_7"}]  # counts every unicast arrival
    assert nftrules.digest(c, learned) != nftrules.digest(c)
    cmds = json.dumps(nftrules.replace_commands(c, learned))
    assert "10.1.0.254" in cmds and "10.2.0.1" not in cmds


def test_counter_values_do_not_make_a_listing_differ():
    def listing(packets: int) -> dict:
        return {"nftables": [
            {"metainfo": {"version": "1"}},
            {"table": {"family": "ip", "name": "ecmpd", "handle": 3}},
            {"counter": {"family": "ip", "name": "rx_1", "table": "ecmpd", "handle": 4,
                         "packets": packets, "bytes": 84 * packets}},
            {"rule": {"family": "ip", "table": "ecmpd", "chain": "rx_1", "handle": 9, "expr": [
                {"match": {"op": "!=", "left": SADDR, "right": "10.1.0.1"}},
                {"counter": "rx_1"}]}},
            {"rule": {"family": "ip", "table": "ecmpd", "chain": "nat", "handle": 10, "expr": [
                {"counter": {"packets": packets, "bytes": 60 * packets}}, {"accept": None}]}},
        ]}
    norm = nftrules.normalize_listing(listing(0), "ecmpd")
    assert norm == nftrules.normalize_listing(listing(12345), "ecmpd")
    assert norm[1] == {"counter": {"family": "ip", "name": "rx_1", "table": "ecmpd"}}
    assert norm[2]["rule"]["expr"][1] == {"counter": "rx_1"}
    assert norm[3]["rule"]["expr"][0] == {"counter": {}}


def test_parse_counters():
    answer = {"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"counter": {"family": "ip", "name": "rx_1", "table": "ecmpd", "handle": 1,
                     "packets": 17, "bytes": 1428}},
        {"counter": {"family": "ip", "name": "rx_200", "table": "ecmpd", "handle": 2,
                     "packets": 0, "bytes": 0}},
        {"counter": {"family": "ip", "name": "other", "table": "ecmpd", "packets": 5}},
        {"counter": {"family": "ip", "name": "rx_x", "table": "ecmpd", "packets": 5}},
        {"counter": {"family": "ip", "name": "rx_2", "table": "elsewhere", "packets": 5}},
        {"counter": {"family": "inet", "name": "rx_3", "table": "ecmpd", "packets": 5}},
    ]}
    assert nftrules.parse_counters(answer, "ecmpd") == {1: 17, 200: 0}
    assert nftrules.parse_counters({}, "ecmpd") == {}
    assert nftrules.counters_command("t") == {
        "nftables": [{"list": {"counters": {"family": "ip", "table": "t"}}}]}


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
    assert cmds[0] == {"add": {"table": {"family": "ip", "name": "mine"}}}
    assert cmds[1] == {"delete": {"table": {"family": "ip", "name": "mine"}}}
    for cmd in cmds:
        (verb, obj), = cmd.items()
        assert verb in ("add", "delete")
        (_, body), = obj.items()
        assert body.get("table", body.get("name")) == "mine"
    assert not any("flush" in c for c in cmds)


def test_digest_changes_with_content_and_is_stable():
    assert nftrules.digest(cfg()) == nftrules.digest(cfg())
    assert nftrules.digest(cfg()) != nftrules.digest(cfg(mark_mask=0xFF00))
    objs = nftrules.render_table(cfg())
    comments = [o["rule"].get("comment") for o in objs if "rule" in o]
    assert nftrules.DIGEST_PREFIX + nftrules.digest(cfg()) in comments


def test_listing_helpers():
    listing = {"nftables": [
        {"metainfo": {"version": "1"}},
        {"table": {"family": "ip", "name": "ecmpd", "handle": 3}},
        {"chain": {"family": "ip", "table": "ecmpd", "name": "nat", "handle": 1}},
        {"rule": {"family": "ip", "table": "ecmpd", "chain": "nat", "handle": 9,
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
    doc = json.dumps(nftrules.replace_commands(cfg()))
    for _ in range(2):  # the replace works on an existing table as well
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"], input=doc,
                       text=True, check=True)
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"],
                         capture_output=True, text=True, check=True).stdout
    listing = json.loads(out)
    assert nftrules.listing_digest(listing) == nftrules.digest(cfg())
    tables = [o["table"]["name"] for o in listing["nftables"] if "table" in o]
    assert tables == ["ecmpd"]
    text = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "ecmpd"],
                          capture_output=True, text=True, check=True).stdout
    assert 'oifname "ethA" masquerade' in text
    assert "ct mark & 0x00ff0000 vmap" in text
    pre = text.split("chain prerouting {")[1].split("}\n")[0].splitlines()
    assert pre[2].strip().startswith(
        'iifname vmap { "ethA" : jump rx_1, "ethB" : jump rx_7 }')
    assert 'ip saddr != 10.1.0.1 meta pkttype host counter name "rx_1"' in text
    counters = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"],
                              input=json.dumps(nftrules.counters_command("ecmpd")),
                              capture_output=True, text=True, check=True).stdout
    assert nftrules.parse_counters(json.loads(counters), "ecmpd") == {1: 0, 7: 0}
