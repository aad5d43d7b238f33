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
* chain ``policies``: without the layers (`policyboxes.ENABLED`, off by default) the
  grouped rules (`ecmpd.policygroups`), one lookup per group.  With them, at most two
  lookups that send the packet to the chain of its class (`ecmpd.policyboxes`):
  ``meta l4proto {tcp, udp, sctp, udplite} meta nfproto vmap`` to
  ``polc_4p``/``polc_6p``, then ``meta nfproto vmap`` to ``polc_4n``/``polc_6n``.
* chain ``polc_<class>``: with interface policies, one ``iifname vmap`` to the chain of
  the packet's interface (``polc_<class>_<n>``); then one lookup per layer, each a verdict
  map ``polmap_<n>`` keyed by the class's fields that its boxes use (``ip saddr . ip
  daddr . meta l4proto . th sport . th dport`` at most).  Elements ``goto`` the chain of
  the policy that owns them; a packet that matches none falls through.
* the tail (`ecmpd.policygroups`), when the list is over the element budget: chain
  ``poltail``, one lookup per group; each class chain ends with ``goto poltail``.
* per policy, counter and chain ``pol_<position>``: the chain counts the packet and sets
  the mark.  `goto` leaves the policies' chains for good, so the first match decides.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Iterable

from .configmodel import PROTOCOL_NAMES, Config, Policy
from .nftexpr import FULL, Json, ct_mark, match, meta, payload, set_under_mask, under_mask
from . import policyboxes
from .policyboxes import PORT_PROTOS, Box, Klass, Layer, compile_policies
from .policygroups import plan

FAMILY = "inet"
CHAIN = "policies"
"""The regular chain the prerouting rule jumps to: the class dispatch."""
TAIL = "poltail"
"""The chain of the tail's groups (when the head has layers)."""
CLASS_PREFIX = "polc_"
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
_TEXT_KEYS = {"src": "saddr", "dst": "daddr", "sport": "th sport", "dport": "th dport",
              "proto": "meta l4proto", "iif": "iifname"}


def _key(family: int, dim: str) -> Json:
    if dim in ("src", "dst"):
        return payload("ip6" if family == 6 else "ip", "saddr" if dim == "src" else "daddr")
    if dim in ("sport", "dport"):
        return payload("th", dim)
    return meta("l4proto" if dim == "proto" else "iifname")


def _text_key(family: int, dim: str) -> str:
    if dim in ("src", "dst"):
        return f"{'ip6' if family == 6 else 'ip'} {_TEXT_KEYS[dim]}"
    return _TEXT_KEYS[dim]


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


@functools.lru_cache(maxsize=65536)
def _span_value(family: int, dim: str, span: tuple[int, int]) -> Any:
    """A box's span as libnftables JSON: an address, prefix or range; a number or range
    (cached: spans repeat over a list's boxes; never change the result)."""
    lo, hi = span
    if dim not in ("src", "dst"):
        return lo if lo == hi else {"range": [lo, hi]}
    a, b = (str(IPv4Address(x) if family == 4 else IPv6Address(x)) for x in span)
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        bits = 32 if family == 4 else 128
        length = bits - size.bit_length() + 1
        return a if length == bits else {"prefix": {"addr": a, "len": length}}
    return {"range": [a, b]}


def _text_value(dim: str, value: Any) -> str:
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, dict) and "range" in value:
        return f"{value['range'][0]}-{value['range'][1]}"
    if dim == "proto":
        return PROTOCOL_NAMES.get(value, str(value))
    return f'"{value}"' if dim == "iif" else str(value)


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
    """The policies' chains in order, each with its rules (expressions, comment, the
    same in nft syntax), and the maps the rules look up."""

    chains: dict[str, list[tuple[list[Json], str | None, str]]] = field(default_factory=dict)
    maps: list[Map] = field(default_factory=list)

    def add(self, chain: str, expr: list[Json], comment: str | None, text: str) -> None:
        self.chains.setdefault(chain, []).append((expr, comment, text))

    def lookup(self, chain: str, family: int, dims: tuple[str, ...], interval: bool,
               elems: list[tuple[list[Any], int]]) -> None:
        m = Map(map_name(len(self.maps) + 1), family, dims, interval, elems)
        self.maps.append(m)
        key = _one_or_concat([_key(family, d) for d in dims])
        text = " . ".join(_text_key(family, d) for d in dims)
        comment = _positions(p for _, p in elems)
        self.add(chain, [{"vmap": {"key": key, "data": f"@{m.name}"}}], comment,
                 f"{text} vmap @{m.name}  # {comment}")


def _layer(out: Layout, chain: str, k: Klass, layer: Layer) -> None:
    full = [k.full(d) for d in k.dims]
    used = [i for i, f in enumerate(full) if any(b[i] != f for _, b in layer.boxes)]
    if not used:                                   # one box that holds everything
        (position, _), = layer.boxes
        out.add(chain, [_goto(counter_name(position))], _positions([position]),
                f"goto {counter_name(position)}  # {_positions([position])}")
        return
    boxes: list[tuple[int, Box]] = layer.boxes
    interval = any(b[i][0] != b[i][1] for _, b in boxes for i in used)
    out.lookup(chain, k.family, tuple(k.dims[i] for i in used), interval,
               [([_span_value(k.family, k.dims[i], b[i]) for i in used], p) for p, b in boxes])


def _dispatch(targets: dict[int, str]) -> Json:
    return {"vmap": {"key": meta("nfproto"), "data": {"set": [
        [f"ipv{f}", _goto(c)] for f, c in sorted(targets.items())]}}}


def _tail(out: Layout, chain: str, tail: tuple[Policy, ...]) -> None:
    for shape, elems in plan(tail):
        if not shape.dims:                          # matches everything
            p = elems[0].position
            out.add(chain, [_goto(counter_name(p))], _positions([p]),
                    f"goto {counter_name(p)}  # {_positions([p])}")
            continue
        out.lookup(chain, shape.family, shape.dims, shape.interval(),
                   [([_group_value(v) for v in e.values], e.position) for e in elems])


def layout(policies: tuple[Policy, ...]) -> Layout:
    """Chains ``policies``, ``polc_*``, ``poltail`` with their lookups, and the maps
    (cached: the table is rendered several times a reload; never change the result)."""
    return _layout(policies, policyboxes.MAX_ELEMENTS if policyboxes.ENABLED else 0)


@functools.lru_cache(maxsize=4)
def _layout(policies: tuple[Policy, ...], budget: int) -> Layout:
    out = Layout()
    out.chains[CHAIN] = []
    if not policies:
        return out
    compiled = compile_policies(policies, budget)
    if not compiled.parts:
        _tail(out, CHAIN, compiled.tail)           # all over budget: the groups alone
        return out
    ends = ([_goto(TAIL)], None, f"goto {TAIL}") if compiled.tail else None
    chains = {k: f"{CLASS_PREFIX}{k.name}" for k in compiled.parts}
    ported = {k.family: c for k, c in chains.items() if k.ported}
    portless = {k.family: c for k, c in chains.items() if not k.ported}
    protos = ", ".join(PROTOCOL_NAMES[p] for p in PORT_PROTOS)
    if ported:
        out.add(CHAIN, [match(meta("l4proto"), {"set": list(PORT_PROTOS)}), _dispatch(ported)],
                "protocols with ports", f"meta l4proto {{ {protos} }} meta nfproto vmap "
                "{ " + ", ".join(f"ipv{f} : goto {c}" for f, c in sorted(ported.items())) + " }")
    if portless:
        out.add(CHAIN, [_dispatch(portless)], "other protocols", "meta nfproto vmap { " +
                ", ".join(f"ipv{f} : goto {c}" for f, c in sorted(portless.items())) + " }")
    if ends:
        out.add(CHAIN, *ends)
    for k, parts in compiled.parts.items():
        chain = chains[k]
        out.chains.setdefault(chain, [])
        named = [p for p in parts if p.iif is not None]
        if named:
            subs = {p.iif: f"{chain}_{n}" for n, p in enumerate(named, 1)}
            out.add(chain, [{"vmap": {"key": meta("iifname"), "data": {"set": [
                [name, _goto(c)] for name, c in subs.items()]}}}], "interface policies",
                "iifname vmap { " + ", ".join(f'"{n}" : goto {c}' for n, c in subs.items())
                + " }")
            for p in named:
                out.chains.setdefault(subs[p.iif], [])
                for layer in p.layers:
                    _layer(out, subs[p.iif], k, layer)
                if ends:
                    out.add(subs[p.iif], *ends)
        for p in parts:
            if p.iif is None:
                for layer in p.layers:
                    _layer(out, chain, k, layer)
        if ends:
            out.add(chain, *ends)
    if compiled.tail:
        out.chains[TAIL] = []
        _tail(out, TAIL, compiled.tail)
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
        rules += [(chain, expr, comment) for expr, comment, _ in items]
    for p in cfg.policies:
        rules.append((counter_name(p.position), [
            {"counter": counter_name(p.position)},
            set_under_mask(meta("mark"), mask, cfg.route_mark(p.route)),
        ], _comment(p.name) or None))
    return rules


def describe(cfg: Config) -> list[str]:
    """The policies' part of ecmpd's table in nft syntax (what `render_maps`,
    `render_chains` and `render_rules` hold as JSON), for ``--dry-run``."""
    if not cfg.policies:
        return []
    mask = cfg.mark_mask
    wans = ", ".join(f'"{w.interface}"' for w in cfg.wans)
    out = [f"# policies in nft syntax (table inet {cfg.nft_table}; first match wins):",
           f"#   prerouting: ct state new ct mark & {mask:#010x} == 0 meta mark & {mask:#010x}"
           f" == 0 iifname != {{ {wans} }} jump {CHAIN}"]
    lay = layout(cfg.policies)
    for chain, items in lay.chains.items():
        out.append(f"#   chain {chain} {{")
        out += [f"#     {text}" for _, _, text in items]
        out.append("#   }")
    for m in lay.maps:
        types = " . ".join(_type(m.family, d) for d in m.dims)
        flags = "; flags interval" if m.interval else ""
        out.append(f"#   map {m.name} {{ type {types} : verdict{flags}; elements = {{")
        out += [f"#     {' . '.join(_text_value(d, v) for d, v in zip(m.dims, values))}"
                f" : goto {counter_name(p)}," for values, p in m.elements]
        out.append("#   } }")
    for p in cfg.policies:
        out.append(f"#   chain {counter_name(p.position)} {{ counter name "
                   f"{counter_name(p.position)}; meta mark set meta mark & "
                   f"{FULL & ~mask:#010x} | {cfg.route_mark(p.route):#010x} }}  # {p.label}")
    return out
