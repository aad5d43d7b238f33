"""Render ecmpd's one nftables table (family ip) as libnftables JSON — pure, no I/O.

The table is the seed's firewall export, done so that each connection keeps its WAN:

* ``prerouting`` (filter, mangle priority): a connection that arrives on WAN X and has
  no ecmpd mark yet gets ct mark X (inbound connections to the router, or DNAT'ed to a
  LAN host); then every packet of a marked connection gets its ct mark copied into the
  packet mark, so the fwmark rule sends it to WAN X's routing table.
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

from .model import Config

FULL = 0xFFFFFFFF
DIGEST_PREFIX = "ecmpd:"

Json = dict[str, Any]


def _ct_mark() -> Json:
    return {"ct": {"key": "mark"}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _set_under_mask(key: Json, mask: int, value: int) -> Json:
    """`<key> set <key> & ~mask | value`."""
    return {"mangle": {"key": key, "value": {"|": [{"&": [key, FULL & ~mask]}, value]}}}


def _ours(mask: int) -> Json:
    return {"&": [_ct_mark(), mask]}


def render_rules(cfg: Config) -> list[tuple[str, list[Json], str | None]]:
    """(chain, expressions, comment) for every rule of the table, in order."""
    mask = cfg.mark_mask
    rules: list[tuple[str, list[Json], str | None]] = []
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
    return chains


def digest(cfg: Config) -> str:
    """A short digest of the rendered table, stored in a rule comment to recognise it."""
    blob = json.dumps([render_chains(cfg), render_rules(cfg)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_table(cfg: Config) -> list[Json]:
    """The table's objects (table, chains, rules) without any command wrapper."""
    table = cfg.nft_table
    objs: list[Json] = [{"table": {"family": "ip", "name": table}}]
    objs += [{"chain": c} for c in render_chains(cfg)]
    mark_comment = DIGEST_PREFIX + digest(cfg)
    first = True
    for chain, expr, comment in render_rules(cfg):
        rule: Json = {"family": "ip", "table": table, "chain": chain, "expr": expr}
        if chain == "prerouting" and first:
            rule["comment"] = mark_comment
            first = False
        elif comment:
            rule["comment"] = comment
        objs.append({"rule": rule})
    return objs


def replace_commands(cfg: Config) -> Json:
    """One libnftables transaction replacing ecmpd's table (and nothing else) atomically.

    ``add table`` + ``delete table`` first makes the delete succeed whether the table
    exists or not; then the table is created anew.  All of it is one kernel transaction:
    packets see either the old table or the new one.
    """
    table = {"table": {"family": "ip", "name": cfg.nft_table}}
    cmds: list[Json] = [{"add": table}, {"delete": table}]
    cmds += [{"add": obj} for obj in render_table(cfg)]
    return {"nftables": cmds}


def delete_commands(table: str) -> Json:
    """Remove ecmpd's table if it exists (add+delete makes a missing table no error)."""
    t = {"table": {"family": "ip", "name": table}}
    return {"nftables": [{"add": t}, {"delete": t}]}


def normalize_listing(listing: Json, table: str) -> list[Json]:
    """The objects of `table` from a `list table` JSON answer, without handles/metainfo."""
    out: list[Json] = []
    for item in listing.get("nftables", []):
        (kind, body), = item.items()
        if kind == "metainfo":
            continue
        if body.get("table", body.get("name")) != table and kind != "table":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        out.append({kind: body})
    return out


def listing_digest(listing: Json) -> str | None:
    """The digest stored in a listed table's rule comment, if any."""
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(DIGEST_PREFIX):
            return str(rule["comment"])[len(DIGEST_PREFIX):]
    return None
