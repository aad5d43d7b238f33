"""nftrules: the rendered table (pure) and — with root — that libnftables accepts it."""

import json
import os
import subprocess
import uuid
from ipaddress import IPv4Address

import pytest

from ecmpd import nftrules
from ecmpd.model import Config, Wan


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
    assert pre[0][1][1]["vmap"]["key"] == {"meta": {"key": "iifname"}}
    # restore in prerouting and output, keyed by the masked ct mark
    for chain in ("prerouting", "output"):
        restore = rules_of(cfg(), chain)[-1][1][0]["vmap"]
        assert restore["data"]["set"] == [[0x10000, {"jump": {"target": "restore_1"}}],
                                          [0x70000, {"jump": {"target": "restore_7"}}]]


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
def test_libnftables_accepts_and_lists_back_the_table():
    ns = "eclnft" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
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
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
