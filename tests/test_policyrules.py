"""policyrules: the policies in ecmpd's nft table (pure): where they hook in, the group
lookups, and the rendered rules and maps run by a small interpreter against the
first-match model (tests/policymodel.py)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd import nftrules, policyrules
from ecmpd.configmodel import PORT_PROTOCOLS, Config, Policy, Wan
from tests.policymodel import PROBES, TCP, UDP, first_match, policy_fields


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


def test_the_grouped_rules():
    c = cfg(pol(1, dst=("203.0.113.0/24",)), pol(2, 11, src=("192.168.1.23/32",)))
    assert lookups(c) == [(DADDR, "@polmap_1"), (SADDR, "@polmap_2")]
    assert [ch["name"] for ch in nftrules.render_chains(c)][-3:] == ["policies", "pol_1",
                                                                     "pol_2"]


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


def test_digest_changes_with_the_policies_and_their_order():
    a, b = pol(1, dst=("203.0.113.0/24",)), pol(2, src=("192.168.1.23/32",))
    digests = {nftrules.digest(c) for c in (
        cfg(), cfg(a), cfg(a, b), cfg(replace(b, position=1), replace(a, position=2)),
        cfg(a, replace(b, route=11)), cfg(a, mark_mask=0xFF00))}
    assert len(digests) == 6
    assert nftrules.digest(cfg(a, b)) == nftrules.digest(cfg(a, b))




# ---- the rendered rules against the model --------------------------------------------
@settings(max_examples=80, deadline=None, database=None)
@given(fields=st.lists(policy_fields, min_size=1, max_size=12),
       routes=st.lists(st.sampled_from([10, 11, 12]), min_size=12, max_size=12))
def test_the_rendered_rules_do_what_first_match_wins_means(fields, routes):
    policies = tuple(Policy(i, ("isp_a",), r, **f)
                     for (i, f), r in zip(enumerate(fields, 1), routes))
    c = cfg(*policies)
    route = {p.position: p.route for p in policies}
    for packet_ in PROBES:
        assert route.get(run(c, packet_)) == route.get(first_match(policies, packet_)), packet_


def test_the_interleaved_bench_set_matches_behind_its_groups():
    c = cfg(*fwcost_like(1000))
    assert run(c, packet("10.0.0.2", "203.0.113.1", UDP, dport=9000, iif="lan0")) == 1000
    assert run(c, packet("10.200.0.1", "198.18.0.6", UDP, dport=9000)) == 2


# ---- an interpreter of the rendered rules and maps -----------------------------------
def fwcost_like(count: int, routes: tuple[int, ...] = (10, 11)) -> list[Policy]:
    """bench/fwcost.py's interleaved set: six shapes rotating over WAN sets `routes`,
    then one that matches."""
    out = []
    for i in range(count - 1):
        dst = f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}/32"
        lo = 1 + i * 11
        out.append(pol(i + 1, routes[i % len(routes)], **[
            {"dst": (dst,)}, {"src": (f"10.{200 + (i >> 16 & 7)}.{i >> 8 & 255}.{i & 255}/32",)},
            {"proto": (UDP,), "dport": ((1 + i, 1 + i),)},
            {"src": (f"172.{16 + (i >> 16 & 7)}.{i >> 8 & 255}.0/24",), "dst": (dst,)},
            {"proto": (TCP,), "sport": ((lo, lo + 10),)}, {"iif": ("lan0",), "dst": (dst,)},
        ][i % 6]))
    return out + [pol(count, routes[-1], src=tuple(f"10.0.0.{c}/32" for c in range(2, 27)))]


def packet(src: str, dst: str, proto: int, sport: int = 1000, dport: int = 1000,
           iif: str = "lan1") -> dict:
    return {"src": ip_address(src), "dst": ip_address(dst), "proto": proto, "sport": sport,
            "dport": dport, "iif": iif}


def lookups_of(c: Config, name: str) -> list[tuple[object, str]]:
    return [(e["vmap"]["key"], e["vmap"]["data"]) for expr, _ in chain(c, name) for e in expr
            if "vmap" in e and isinstance(e["vmap"]["data"], str)]


class _Miss(Exception):
    """A rule's expression does not match (nft goes on with the next rule)."""


def _value(key: dict, p: dict, with_proto: bool = False) -> Any:
    if "concat" in key:
        return [_value(k, p, L4PROTO in key["concat"]) for k in key["concat"]]
    if "meta" in key:
        return {"l4proto": p["proto"], "nfproto": f"ipv{p['src'].version}",
                "iifname": p["iif"]}[key["meta"]["key"]]
    proto, name = key["payload"]["protocol"], key["payload"]["field"]
    if proto == "th":
        # on another protocol th reads whatever its header holds (here: the probe's
        # ports): only a key with the protocol in it may read it there
        assert with_proto or p["proto"] in PORT_PROTOCOLS.values(), ("th alone", p)
        return p[name]
    if p["src"].version != (6 if proto == "ip6" else 4):
        raise _Miss                                  # nft's implicit nfproto dependency
    return p["src" if name == "saddr" else "dst"]


def _holds(spec: Any, v: Any) -> bool:
    if isinstance(v, (IPv4Address, IPv6Address)):
        if isinstance(spec, dict) and "prefix" in spec:
            return v in ip_network(f"{spec['prefix']['addr']}/{spec['prefix']['len']}")
        if isinstance(spec, dict) and "range" in spec:
            lo, hi = (ip_address(a) for a in spec["range"])
            return lo.version == v.version and lo <= v <= hi
        return ip_address(spec) == v
    if isinstance(spec, dict) and "range" in spec:
        return spec["range"][0] <= v <= spec["range"][1]
    return spec == v


def _element_holds(key: Any, value: Any) -> bool:
    if isinstance(value, list):
        return all(_holds(s, v) for s, v in zip(key["concat"], value))
    return _holds(key, value)


def _rule(expr: list[dict], p: dict, named: dict[str, dict]) -> str | None:
    """The goto target of a rule for packet `p`, None when it does not match."""
    try:
        for e in expr:
            if "goto" in e:
                return e["goto"]["target"]
            value, data = _value(e["vmap"]["key"], p), e["vmap"]["data"]
            elems = named[data[1:]]["elem"] if isinstance(data, str) else data["set"]
            hits = [v for k, v in elems if _element_holds(k, value)]
            assert len(hits) <= 1, ("overlapping elements", data, hits)   # nft refuses them
            if not hits:
                return None
            return hits[0]["goto"]["target"]
    except _Miss:
        return None
    raise AssertionError(f"a rule without a verdict: {expr}")


@functools.lru_cache(maxsize=2)
def _rendered(c: Config) -> tuple[dict[str, list], dict[str, dict]]:
    rules: defaultdict[str, list] = defaultdict(list)
    for name, expr, _ in nftrules.render_rules(c):
        rules[name].append(expr)
    return rules, {m["name"]: m for m in nftrules.render_maps(c)}


def run(c: Config, p: dict) -> int | None:
    """The policy whose chain the rendered rules reach for packet `p` (None: none)."""
    rules, named = _rendered(c)
    at = "policies"
    for _ in range(10):
        target = next((t for expr in rules[at] if (t := _rule(expr, p, named))), None)
        if target is None:
            return None
        if target.startswith("pol_"):
            return int(target.removeprefix("pol_"))
        at = target
    raise AssertionError("a goto loop")
