"""Render ecmpd's one nftables table (family ip) as libnftables JSON — pure, no I/O.

The table is the seed's firewall export, done so that each connection keeps its WAN:

* ``prerouting`` (filter, mangle priority): first, every unicast packet arriving on WAN
  X from a source other than X's gateway adds to the named counter ``rx_<id>`` (passive
  evidence that the WAN carries traffic beyond its gateway; the gateway's own answers
  do not count, so a dead upstream behind a live gateway stays visible; nor do ICMP
  redirects, which only a router on the WAN's own segment sends).  Then a
  connection that arrives on WAN X and has no ecmpd mark yet gets ct mark X (inbound
  connections to the router, or DNAT'ed to a LAN host); then every packet of a marked
  connection gets its ct mark copied into the packet mark, so the fwmark rule sends it
  to WAN X's routing table.
* ``output`` (route, mangle priority): the same restore for the router's own packets;
  a route-type chain re-runs the route lookup when the mark changes (the seed's
  ``mark-routing``).
* ``postrouting`` (filter, mangle priority): a not-yet-marked connection leaving by WAN
  X gets ct mark X — this is where a LAN connection is pinned to the WAN the multipath
  route picked for its first packet.
* ``nat`` (nat, srcnat priority): masquerade per WAN out-interface.

Marks are only ever read and written under ``mark_mask``; the other bits of the packet
and ct marks are left to whoever else uses them.  Per-WAN decisions are verdict-map
lookups, so the cost per packet does not grow with the number of WANs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .configmodel import Config

FULL = 0xFFFFFFFF
DIGEST_PREFIX = "ecmpd:"
RX_PREFIX = "rx_"
"""Name prefix of the per-WAN arrival counters (and of the chains that feed them)."""
_COUNTS = ("packets", "bytes")

Json = dict[str, Any]
Rule = tuple[str, list[Json], str | None]


def _ct_mark() -> Json:
    return {"ct": {"key": "mark"}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _set_under_mask(key: Json, mask: int, value: int) -> Json:
    """`<key> set <key> & ~mask | value`."""
    return {"mangle": {"key": key, "value": {"|": [{"&": [key, FULL & ~mask]}, value]}}}


def _ours(mask: int) -> Json:
    return {"&": [_ct_mark(), mask]}


def gateways_of(cfg: Config) -> dict[str, str]:
    """WAN name → gateway address, as the config has them (`gateway: auto` ones are
    learned: see `ecmpd.state.probe_gateways`)."""
    return {w.name: str(w.gateway) for w in cfg.wans if w.gateway is not None}


def _rx(wan_id: int) -> str:
    return f"{RX_PREFIX}{wan_id}"


def render_rules(cfg: Config, gateways: dict[str, str] | None = None) -> list[Rule]:
    """(chain, expressions, comment) for every rule of the table, in order.

    `gateways` (WAN name → address; default: the config's) are the sources the arrival
    counters leave out; a WAN missing from it counts every arrival.
    """
    gws = gateways_of(cfg) if gateways is None else gateways
    mask = cfg.mark_mask
    rules: list[Rule] = []
    for wan in cfg.wans:
        # unicast to the router only: broadcasts and multicast from neighbours on the
        # WAN's segment prove nothing about the path beyond the gateway
        count: list[Json] = [
            {"match": {"op": "==", "left": _meta("pkttype"), "right": "host"}},
            {"counter": _rx(wan.id)},
        ]
        if wan.name in gws:
            saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
            count.insert(0, {"match": {"op": "!=", "left": saddr, "right": gws[wan.name]}})
        # a redirect (the ISP's router telling us of a better hop, e.g. while probes
        # still go to a gateway address it no longer has) proves nothing beyond it
        rules.append((_rx(wan.id), [
            {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}},
                       "right": "redirect"}},
            {"return": None}], None))
        rules.append((_rx(wan.id), count, None))
    for wan in cfg.wans:
        mark = cfg.mark_of(wan)
        rules.append((f"restore_{wan.id}", [_set_under_mask(_meta("mark"), mask, mark)], None))
        rules.append((f"pin_{wan.id}", [_set_under_mask(_ct_mark(), mask, mark)], None))

    def by_name(key: str, wan_ifaces: dict[str, int]) -> list[Json]:
        return [
            {"match": {"op": "==", "left": _ours(mask), "right": 0}},
            {"vmap": {"key": _meta(key), "data": {"set": [
                [iface, {"jump": {"target": f"pin_{wid}"}}] for iface, wid in wan_ifaces.items()
            ]}}},
        ]

    ifaces = {w.interface: w.id for w in cfg.wans}
    restore = [{"vmap": {"key": _ours(mask), "data": {"set": [
        [cfg.mark_of(w), {"jump": {"target": f"restore_{w.id}"}}] for w in cfg.wans
    ]}}}]
    # first in prerouting: counted before any other verdict; one lookup per packet
    rules.append(("prerouting", [{"vmap": {"key": _meta("iifname"), "data": {"set": [
        [w.interface, {"jump": {"target": _rx(w.id)}}] for w in cfg.wans]}}}],
        "count arrivals per WAN"))
    rules.append(("prerouting", by_name("iifname", ifaces), "pin inbound connections"))
    rules.append(("prerouting", restore, "restore the connection's WAN mark"))
    rules.append(("output", restore, "restore the connection's WAN mark"))
    rules.append(("postrouting", by_name("oifname", ifaces), "pin new connections"))
    for wan in cfg.wans:
        rules.append(("nat", [
            {"match": {"op": "==", "left": _meta("oifname"), "right": wan.interface}},
            {"masquerade": None},
        ], f"masquerade {wan.name}"))
    return rules


def render_chains(cfg: Config) -> list[Json]:
    """The chain objects of the table (base chains first, then the per-WAN jump targets)."""
    base = [
        ("prerouting", "filter", "prerouting", -150),
        ("output", "route", "output", -150),
        ("postrouting", "filter", "postrouting", -150),
        ("nat", "nat", "postrouting", 100),
    ]
    chains: list[Json] = [
        {"family": "ip", "table": cfg.nft_table, "name": name, "type": ctype,
         "hook": hook, "prio": prio, "policy": "accept"}
        for name, ctype, hook, prio in base
    ]
    for wan in cfg.wans:
        for kind in ("restore", "pin"):
            chains.append({"family": "ip", "table": cfg.nft_table, "name": f"{kind}_{wan.id}"})
        chains.append({"family": "ip", "table": cfg.nft_table, "name": _rx(wan.id)})
    return chains


def render_counters(cfg: Config) -> list[Json]:
    """The named counter objects ``rx_<id>``, one per WAN."""
    return [{"family": "ip", "table": cfg.nft_table, "name": _rx(w.id)} for w in cfg.wans]


def digest(cfg: Config, gateways: dict[str, str] | None = None) -> str:
    """A short digest of the rendered table, stored in a rule comment to recognise it."""
    blob = json.dumps([render_counters(cfg), render_chains(cfg), render_rules(cfg, gateways)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_table(cfg: Config, gateways: dict[str, str] | None = None) -> list[Json]:
    """The table's objects (table, counters, chains, rules) without any command wrapper."""
    table = cfg.nft_table
    objs: list[Json] = [{"table": {"family": "ip", "name": table}}]
    objs += [{"counter": c} for c in render_counters(cfg)]
    objs += [{"chain": c} for c in render_chains(cfg)]
    mark_comment = DIGEST_PREFIX + digest(cfg, gateways)
    first = True
    for chain, expr, comment in render_rules(cfg, gateways):
        rule: Json = {"family": "ip", "table": table, "chain": chain, "expr": expr}
        if chain == "prerouting" and first:
            rule["comment"] = mark_comment
            first = False
        elif comment:
            rule["comment"] = comment
        objs.append({"rule": rule})
    return objs


def replace_commands(cfg: Config, gateways: dict[str, str] | None = None) -> Json:
    """One libnftables transaction replacing ecmpd's table (and nothing else) atomically.

    ``add table`` + ``delete table`` first makes the delete succeed whether the table
    exists or not; then the table is created anew.  All of it is one kernel transaction:
    packets see either the old table or the new one.
    """
    table = {"table": {"family": "ip", "name": cfg.nft_table}}
    cmds: list[Json] = [{"add": table}, {"delete": table}]
    cmds += [{"add": obj} for obj in render_table(cfg, gateways)]
    return {"nftables": cmds}


def delete_commands(table: str) -> Json:
    """Remove ecmpd's table if it exists (add+delete makes a missing table no error)."""
    t = {"table": {"family": "ip", "name": table}}
    return {"nftables": [{"add": t}, {"delete": t}]}


def _without_counts(value: Any) -> Any:
    """`value` with packets/bytes removed from every counter (object or statement)."""
    if isinstance(value, list):
        return [_without_counts(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _without_counts(v) for k, v in value.items()}
    if isinstance(out.get("counter"), dict):
        out["counter"] = {k: v for k, v in out["counter"].items() if k not in _COUNTS}
    return out


def normalize_listing(listing: Json, table: str) -> list[Json]:
    """The objects of `table` from a `list table` JSON answer, without handles/metainfo.

    Counter values are left out too: they change with every packet, and a listing that
    differs only in them is the same table (no rewrite, no lost counts).
    """
    out: list[Json] = []
    for item in listing.get("nftables", []):
        (kind, body), = item.items()
        if kind == "metainfo":
            continue
        if body.get("table", body.get("name")) != table and kind != "table":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        out.append(_without_counts({kind: body}))
    return out


def counters_command(table: str) -> Json:
    """One libnftables command listing the named counters of `table` (for `parse_counters`)."""
    return {"nftables": [{"list": {"counters": {"family": "ip", "table": table}}}]}


def parse_counters(answer: Json, table: str) -> dict[int, int]:
    """WAN id → packets of its ``rx_<id>`` counter, from a `counters_command` answer."""
    out: dict[int, int] = {}
    for item in answer.get("nftables", []):
        c = item.get("counter")
        if not isinstance(c, dict) or c.get("table") != table or c.get("family") != "ip":
            continue
        name = str(c.get("name", ""))
        wid = name[len(RX_PREFIX):]
        if name.startswith(RX_PREFIX) and wid.isdigit():
            out[int(wid)] = int(c.get("packets", 0))
    return out


def listing_digest(listing: Json) -> str | None:
    """The digest stored in a listed table's rule comment, if any."""
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(DIGEST_PREFIX):
            return str(rule["comment"])[len(DIGEST_PREFIX):]
    return None
