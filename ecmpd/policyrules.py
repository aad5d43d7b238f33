"""Render ecmpd's policies (`Config.policies`) as objects of its one nftables table —
pure, no I/O; `ecmpd.nftrules` puts them into the table and its one transaction.

A policy steers the *first* packet of a matching new LAN connection: that packet gets
the mark of the policy's WAN set (`Config.route_mark`, under `mark_mask`, the other bits
kept), and an ip rule on that mark sends it to the set's routing table.  The connection
is then pinned to the WAN it leaves by, as any other, by ``postrouting`` (ct mark by
out-interface): conntrack never holds a policy mark, and the later packets follow the
pin, not the policies.

Objects:

* one rule in ``prerouting``, after the pin and restore rules: a new connection
  (``ct state new``) that has no ecmpd ct mark, whose packet has no ecmpd mark, and that
  did not arrive on a WAN jumps to chain ``policies``.  Every other packet pays this one
  rule, however many policies there are.
* chain ``policies``: the grouped rules (`ecmpd.policygroups`), one verdict-map lookup
  ``polmap_<n>`` per group (or a plain ``goto`` for a policy that matches everything);
  elements ``goto`` the chain of the policy that owns them; a packet that matches none
  falls through.
* per policy, counter and chain ``pol_<position>``: the chain counts the packet and sets
  the mark.  `goto` leaves the policies' chains for good, so the first match decides.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

from .configmodel import Config, Policy
from .nftexpr import Json, ct_mark, match, meta, payload, set_under_mask, under_mask
from .policygroups import plan

FAMILY = "inet"
CHAIN = "policies"
"""The regular chain the prerouting rule jumps to: the groups' lookups."""
PREFIX = "pol_"
"""Name prefix of each policy's chain and named counter (``pol_<position>``)."""
MAP_PREFIX = "polmap_"
"""Name prefix of the verdict maps (``polmap_<n>``, n from 1 in rule order)."""
COUNTER_KEY = "policy"
"""First item of a policy counter's key in `nftrules.parse_counters`: (``"policy"``,
position)."""
_COMMENT_MAX = 120
"""Bytes of a rule comment (nft refuses more than 128)."""

Rule = tuple[str, list[Json], str | None]


def counter_name(position: int) -> str:
    """The name of policy `position`'s counter (and chain)."""
    return f"{PREFIX}{position}"


def map_name(n: int) -> str:
    """The name of the `n`-th verdict map (1-based, in rule order)."""
    return f"{MAP_PREFIX}{n}"


def _goto(target: str) -> Json:
    return {"goto": {"target": target}}


def _one_or_concat(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else {"concat": items}


def _positions(positions: Iterable[int]) -> str:
    """``policies 1-3, 7`` (cut to fit a comment)."""
    ps = sorted(set(positions))
    runs: list[str] = []
    for _, run in itertools.groupby(enumerate(ps), lambda t: t[1] - t[0]):
        items = [p for _, p in run]
        runs.append(str(items[0]) if len(items) == 1 else f"{items[0]}-{items[-1]}")
    text = ("policy " if len(ps) == 1 else "policies ") + ", ".join(runs)
    return text if len(text) <= _COMMENT_MAX else _comment(text[:_COMMENT_MAX - 5]
                                                           .rsplit(",", 1)[0] + ", ...")


def _comment(text: str) -> str:
    """`text` cut to `_COMMENT_MAX` bytes of UTF-8 (nft takes 128 at most)."""
    return text.encode()[:_COMMENT_MAX].decode(errors="ignore")


# ---- fields as nft keys, types and values ------------------------------------------
def _key(family: int, dim: str) -> Json:
    if dim in ("src", "dst"):
        return payload("ip6" if family == 6 else "ip", "saddr" if dim == "src" else "daddr")
    if dim in ("sport", "dport"):
        return payload("th", dim)
    return meta("l4proto" if dim == "proto" else "iifname")


def _type(family: int, dim: str) -> str:
    if dim in ("src", "dst"):
        return "ipv6_addr" if family == 6 else "ipv4_addr"
    return {"proto": "inet_proto", "sport": "inet_service", "dport": "inet_service",
            "iif": "ifname"}[dim]


def _group_value(value: Any) -> Any:
    """A group element's value (`policygroups._field`) as libnftables JSON."""
    if isinstance(value, tuple):
        kind, a, b = value
        return {"prefix": {"addr": a, "len": b}} if kind == "prefix" else {"range": [a, b]}
    return value


# ---- the layout: chains, maps and lookups, from the policies alone -----------------
@dataclass
class Map:
    """One verdict map: its key fields and elements ((values per field), position)."""

    name: str
    family: int
    dims: tuple[str, ...]
    interval: bool
    elements: list[tuple[list[Any], int]]


@dataclass
class Layout:
    """The policies' chains in order, each with its rules (expressions, comment), and
    the maps the rules look up."""

    chains: dict[str, list[tuple[list[Json], str | None]]] = field(default_factory=dict)
    maps: list[Map] = field(default_factory=list)

    def add(self, chain: str, expr: list[Json], comment: str | None) -> None:
        self.chains.setdefault(chain, []).append((expr, comment))

    def lookup(self, chain: str, family: int, dims: tuple[str, ...], interval: bool,
               elems: list[tuple[list[Any], int]]) -> None:
        m = Map(map_name(len(self.maps) + 1), family, dims, interval, elems)
        self.maps.append(m)
        key = _one_or_concat([_key(family, d) for d in dims])
        self.add(chain, [{"vmap": {"key": key, "data": f"@{m.name}"}}],
                 _positions(p for _, p in elems))


@functools.lru_cache(maxsize=4)
def layout(policies: tuple[Policy, ...]) -> Layout:
    """Chain ``policies`` with its lookups, and the maps (cached: the table is rendered
    several times a reload; never change the result)."""
    out = Layout()
    out.chains[CHAIN] = []
    for shape, elems in plan(policies):
        if not shape.dims:                          # matches everything
            p = elems[0].position
            out.add(CHAIN, [_goto(counter_name(p))], _positions([p]))
            continue
        out.lookup(CHAIN, shape.family, shape.dims, shape.interval(),
                   [([_group_value(v) for v in e.values], e.position) for e in elems])
    return out


# ---- the objects ---------------------------------------------------------------------
def render_counters(cfg: Config) -> list[Json]:
    """``pol_<position>`` per policy: the first packets of the connections it steered."""
    return [{"family": FAMILY, "table": cfg.nft_table, "name": counter_name(p.position)}
            for p in cfg.policies]


def render_chains(cfg: Config) -> list[Json]:
    """The policies' chains and ``pol_<position>`` per policy (none without policies)."""
    if not cfg.policies:
        return []
    names = list(layout(cfg.policies).chains) + [counter_name(p.position) for p in cfg.policies]
    return [{"family": FAMILY, "table": cfg.nft_table, "name": n} for n in names]


def render_maps(cfg: Config) -> list[Json]:
    """The verdict maps ``polmap_<n>`` with their elements."""
    maps: list[Json] = []
    for m in layout(cfg.policies).maps if cfg.policies else []:
        types = [_type(m.family, d) for d in m.dims]
        obj: Json = {"family": FAMILY, "table": cfg.nft_table, "name": m.name,
                     "type": types[0] if len(types) == 1 else types, "map": "verdict"}
        if m.interval:
            obj["flags"] = ["interval"]
        obj["elem"] = [[_one_or_concat(values), _goto(counter_name(p))]
                       for values, p in m.elements]
        maps.append(obj)
    return maps


def render_rules(cfg: Config) -> list[Rule]:
    """(chain, expressions, comment) of the policies' rules, in order: the jump from
    ``prerouting`` (to follow its restore rule), the lookups, one rule per policy chain.
    None without policies."""
    if not cfg.policies:
        return []
    mask = cfg.mark_mask
    rules: list[Rule] = [("prerouting", [
        match({"ct": {"key": "state"}}, "new", "in"),
        match(under_mask(ct_mark(), mask), 0),
        match(under_mask(meta("mark"), mask), 0),
        *([match(meta("iifname"), {"set": [w.interface for w in cfg.wans]}, "!=")]
          if cfg.wans else []),
        {"jump": {"target": CHAIN}},
    ], "policies: new connections not from a WAN")]
    for chain, items in layout(cfg.policies).chains.items():
        rules += [(chain, expr, comment) for expr, comment in items]
    for p in cfg.policies:
        rules.append((counter_name(p.position), [
            {"counter": counter_name(p.position)},
            set_under_mask(meta("mark"), mask, cfg.route_mark(p.route)),
        ], _comment(p.name) or None))
    return rules
