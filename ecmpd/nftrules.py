"""Render ecmpd's one nftables table (family inet: IPv4 and IPv6) as libnftables JSON — pure, no I/O.

The table is the seed's firewall export, done so that each connection keeps its WAN, for
both IP versions in one table (one transaction changes both):

* ``prerouting`` (filter, mangle priority): first, every unicast packet arriving on WAN
  X from a source other than X's gateway of that family adds to the named counter
  ``rx_<id>`` (IPv4) or ``rx6_<id>`` (IPv6): passive evidence that the WAN carries
  traffic beyond its gateway.  The gateway's own answers do not count, so a dead
  upstream behind a live gateway stays visible; nor do what only a router or host on the
  WAN's own segment sends: ICMP redirects, ICMPv6 router/neighbour discovery and
  redirects (types 133..137), and any IPv6 packet from a link-local source (fe80::/10;
  a link-local IPv6 gateway is therefore never named in the table).  Then a connection
  that arrives on WAN X and has no ecmpd mark yet gets ct mark X (inbound connections
  to the router, or DNAT'ed to a LAN host); then every packet of a marked connection
  gets its ct mark copied into the packet mark, so the fwmark rule sends it to WAN X's
  routing table.  Last, a new connection not from a WAN jumps to the policies
  (`ecmpd.policyrules`: named verdict maps, a counter and chain ``pol_<position>`` per
  policy), whose first match marks the first packet for its WAN set's routing table.
* ``output`` (route, mangle priority): the same restore for the router's own packets;
  a route-type chain re-runs the route lookup when the mark changes (the seed's
  ``mark-routing``).
* ``postrouting`` (filter, mangle priority): a not-yet-marked connection leaving by WAN
  X gets ct mark X — this is where a LAN connection is pinned to the WAN the multipath
  route (or its policy's routing table) picked for its first packet.
* ``nat`` (nat, srcnat priority): masquerade per WAN out-interface, both families
  (NAT66 for IPv6: the LAN may use a ULA or a delegated prefix alike), one rule per WAN;
  a WAN with `nat: none` or `{snat: ADDRESS}` for an IP version it carries masquerades
  only the other one (``meta nfproto``), or has no masquerade rule when none is left;
  each SNATed version gets ``oifname X meta nfproto ipvN fib saddr type != local snat
  ip[6] to ADDRESS``: what the box sends itself (probes) keeps its own address.

Every WAN gets both counters whatever families it carries (the table's shape does not
depend on them; an IPv4-only WAN's ``rx6_<id>`` merely counts what IPv6 arrives anyway,
with no gateway left out).  Marks are only ever read and written under ``mark_mask``;
the other bits of the packet and ct marks are left to whoever else uses them.  Per-WAN
decisions are verdict-map lookups (one by ``iifname`` per arriving packet for the
counters), so the cost per packet does not grow with the number of WANs.

An older ecmpd kept this table as ``table ip <name>`` (IPv4 only): the replace
transaction and `delete_commands` remove a family-``ip`` table of the same name too, so
the host never keeps both.
"""

from __future__ import annotations

import functools
import hashlib
import json
from ipaddress import IPv6Address, ip_address
from typing import Any

from . import policyrules
from .configmodel import Config, Wan
from .nftexpr import Json, ct_mark, match, meta, payload, set_under_mask, under_mask

DIGEST_PREFIX = "ecmpd:"
FAMILY = "inet"
"""The nftables family of ecmpd's table (both IP versions)."""
LEGACY_FAMILY = "ip"
"""The family an older ecmpd used for a table of the same name: removed on replace."""
RX_PREFIX = "rx_"
"""Name prefix of the per-WAN IPv4 arrival counters (and of the chains that feed both)."""
RX6_PREFIX = "rx6_"
"""Name prefix of the per-WAN IPv6 arrival counters."""
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit",
            "nd-neighbor-advert", "nd-redirect")
"""ICMPv6 types 133..137: they prove the WAN's segment only, never the path beyond."""
LINK_LOCAL6 = ("fe80::", 10)
_COUNTS = ("packets", "bytes")

Rule = tuple[str, list[Json], str | None]


def gateways_of(cfg: Config) -> dict[str, str]:
    """WAN name → IPv4 gateway address, as the config has them (`gateway: auto` ones are
    learned: see `ecmpd.state.probe_gateways`)."""
    return {w.name: str(w.gateway) for w in cfg.wans if w.gateway is not None}


def gateways6_of(cfg: Config) -> dict[str, str]:
    """WAN name → IPv6 gateway address (no scope), as the config has them (`gateway6:
    auto` ones are learned)."""
    return {w.name: str(w.gateway6) for w in cfg.wans if w.gateway6 is not None}


def _rx(wan_id: int) -> str:
    return f"{RX_PREFIX}{wan_id}"


def _rx6(wan_id: int) -> str:
    return f"{RX6_PREFIX}{wan_id}"


def counter_name(family: int, wan_id: int) -> str:
    """The name of WAN `wan_id`'s arrival counter of IP version `family` (4 or 6)."""
    return _rx6(wan_id) if family == 6 else _rx(wan_id)


def _excluded6(address: str | None) -> str | None:
    """The IPv6 gateway the counter must leave out by name: None when unknown or
    link-local (every link-local source is left out anyway), scope dropped."""
    if not address:
        return None
    addr = ip_address(address.split("%", 1)[0])
    if not isinstance(addr, IPv6Address):
        raise ValueError(f"not an IPv6 gateway: {address!r}")
    return None if addr.is_link_local else str(addr)


def _count_rules(wan_id: int, gw4: str | None, gw6: str | None) -> list[Rule]:
    """The rules of chain ``rx_<id>``: what is no evidence returns, the rest is counted
    by family."""
    chain = _rx(wan_id)
    # a redirect (the ISP's router telling us of a better hop, e.g. while probes still
    # go to a gateway address it no longer has) proves nothing beyond it; neither does
    # IPv6 neighbour/router discovery, nor anything from a link-local address
    rules: list[Rule] = [
        (chain, [match(payload("icmp", "type"), "redirect"), {"return": None}], None),
        (chain, [match(payload("icmpv6", "type"), {"set": list(ND_TYPES)}),
                 {"return": None}], None),
        (chain, [match(payload("ip6", "saddr"),
                        {"prefix": {"addr": LINK_LOCAL6[0], "len": LINK_LOCAL6[1]}}),
                 {"return": None}], None),
    ]
    # unicast to the router only: broadcasts and multicast from neighbours on the
    # WAN's segment prove nothing about the path beyond the gateway
    unicast = match(meta("pkttype"), "host")
    for proto, nfproto, gw, counter in (("ip", "ipv4", gw4, _rx(wan_id)),
                                        ("ip6", "ipv6", gw6, _rx6(wan_id))):
        which = (match(payload(proto, "saddr"), gw, "!=") if gw
                 else match(meta("nfproto"), nfproto))
        rules.append((chain, [which, unicast, {"counter": counter}], None))
    return rules


def render_rules(cfg: Config, gateways: dict[str, str] | None = None,
                 gateways6: dict[str, str] | None = None) -> list[Rule]:
    """(chain, expressions, comment) for every rule of the table, in order.

    `gateways` (WAN name → IPv4 address; default: the config's, `gateways_of`) and
    `gateways6` (WAN name → IPv6 address without scope; default: `gateways6_of`) are the
    sources the arrival counters of that family leave out; a WAN missing from one counts
    every arrival of that family (link-local IPv6 sources are never counted).
    """
    gws = gateways_of(cfg) if gateways is None else gateways
    gws6 = gateways6_of(cfg) if gateways6 is None else gateways6
    mask = cfg.mark_mask
    rules: list[Rule] = []
    for wan in cfg.wans:
        rules += _count_rules(wan.id, gws.get(wan.name), _excluded6(gws6.get(wan.name)))
    for wan in cfg.wans:
        mark = cfg.mark_of(wan)
        rules.append((f"restore_{wan.id}", [set_under_mask(meta("mark"), mask, mark)], None))
        rules.append((f"pin_{wan.id}", [set_under_mask(ct_mark(), mask, mark)], None))

    def by_name(key: str, wan_ifaces: dict[str, int]) -> list[Json]:
        return [
            {"match": {"op": "==", "left": under_mask(ct_mark(), mask), "right": 0}},
            {"vmap": {"key": meta(key), "data": {"set": [
                [iface, {"jump": {"target": f"pin_{wid}"}}] for iface, wid in wan_ifaces.items()
            ]}}},
        ]

    ifaces = {w.interface: w.id for w in cfg.wans}
    restore = [{"vmap": {"key": under_mask(ct_mark(), mask), "data": {"set": [
        [cfg.mark_of(w), {"jump": {"target": f"restore_{w.id}"}}] for w in cfg.wans
    ]}}}]
    # first in prerouting: counted before any other verdict; one lookup per packet
    rules.append(("prerouting", [{"vmap": {"key": meta("iifname"), "data": {"set": [
        [w.interface, {"jump": {"target": _rx(w.id)}}] for w in cfg.wans]}}}],
        "count arrivals per WAN"))
    rules.append(("prerouting", by_name("iifname", ifaces), "pin inbound connections"))
    rules.append(("prerouting", restore, "restore the connection's WAN mark"))
    rules += policyrules.render_rules(cfg)
    rules.append(("output", restore, "restore the connection's WAN mark"))
    rules.append(("postrouting", by_name("oifname", ifaces), "pin new connections"))
    for wan in cfg.wans:
        rules += _nat_rules(wan)
    return rules


def _nat_rules(wan: Wan) -> list[Rule]:
    """The WAN's rules of chain ``nat``: one `masquerade` for the versions it
    masquerades, one `snat` per version given a fixed address (`nat: {snat: ...}`)."""
    out: list[Rule] = []
    oif = match(meta("oifname"), wan.interface)
    masqueraded = [f for f in wan.families if wan.masquerades(f)]
    if masqueraded:
        # one rule for every version when the WAN masquerades all it carries
        only = ([] if len(masqueraded) == len(wan.families) else
                [match(meta("nfproto"), f"ipv{masqueraded[0]}")])
        out.append(("nat", [oif, *only, {"masquerade": None}], f"masquerade {wan.name}"))
    # the box's own packets keep their own source: an HA backup's probes must not
    # leave with the floating address, whose replies go to the master
    not_own = match({"fib": {"result": "type", "flags": ["saddr"]}}, "local", "!=")
    for f in wan.families:
        addr = wan.snat_address(f)
        if addr is not None:
            out.append(("nat", [oif, match(meta("nfproto"), f"ipv{f}"), not_own, {"snat": {
                "family": "ip" if f == 4 else "ip6", "addr": str(addr)}}],
                f"snat {wan.label(f)} to {addr}"))
    return out


def render_chains(cfg: Config) -> list[Json]:
    """The chain objects of the table (base chains first, then the per-WAN jump targets)."""
    base = [
        ("prerouting", "filter", "prerouting", -150),
        ("output", "route", "output", -150),
        ("postrouting", "filter", "postrouting", -150),
        ("nat", "nat", "postrouting", 100),
    ]
    chains: list[Json] = [
        {"family": FAMILY, "table": cfg.nft_table, "name": name, "type": ctype,
         "hook": hook, "prio": prio, "policy": "accept"}
        for name, ctype, hook, prio in base
    ]
    for wan in cfg.wans:
        for kind in ("restore", "pin"):
            chains.append({"family": FAMILY, "table": cfg.nft_table, "name": f"{kind}_{wan.id}"})
        chains.append({"family": FAMILY, "table": cfg.nft_table, "name": _rx(wan.id)})
    return chains + policyrules.render_chains(cfg)


def render_counters(cfg: Config) -> list[Json]:
    """The named counter objects: ``rx_<id>`` (IPv4) and ``rx6_<id>`` (IPv6) per WAN,
    then ``pol_<position>`` per policy."""
    return [{"family": FAMILY, "table": cfg.nft_table, "name": counter_name(f, w.id)}
            for w in cfg.wans for f in (4, 6)] + policyrules.render_counters(cfg)


def render_maps(cfg: Config) -> list[Json]:
    """The named verdict maps: the policies' (`ecmpd.policyrules`), none without any."""
    return policyrules.render_maps(cfg)


def digest(cfg: Config, gateways: dict[str, str] | None = None,
           gateways6: dict[str, str] | None = None) -> str:
    """A short digest of the rendered table, stored in a rule comment to recognise it.

    Remembered for the last few (config, gateways): the firewall asks for it on every
    reconfigure and apply, and with many policies a rendering costs a good fraction of
    a second."""
    return _digest(cfg, _frozen(gateways), _frozen(gateways6))


Frozen = tuple[tuple[str, str], ...] | None


def _frozen(gateways: dict[str, str] | None) -> Frozen:
    return None if gateways is None else tuple(sorted(gateways.items()))


@functools.lru_cache(maxsize=8)
def _digest(cfg: Config, gateways: Frozen, gateways6: Frozen) -> str:
    counters, chains, rules, maps = _rendered(cfg, gateways, gateways6)
    parts = [FAMILY, counters, chains, rules]
    if maps:                            # without policies: the digest of before them
        parts.append(maps)
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _rendered(cfg: Config, gateways: Frozen, gateways6: Frozen) -> tuple[list, list, list, list]:
    """The table's counters, chains, rules and maps, rendered once for the digest and the
    transaction of one (config, gateways) (never change the result)."""
    return (render_counters(cfg), render_chains(cfg),
            render_rules(cfg, None if gateways is None else dict(gateways),
                         None if gateways6 is None else dict(gateways6)),
            render_maps(cfg))


def render_table(cfg: Config, gateways: dict[str, str] | None = None,
                 gateways6: dict[str, str] | None = None) -> list[Json]:
    """The table's objects (table, counters, chains, maps, rules) without any command
    wrapper: a map's elements name chains, and rules name maps."""
    table = cfg.nft_table
    counters, chains, rules, maps = _rendered(cfg, _frozen(gateways), _frozen(gateways6))
    objs: list[Json] = [{"table": {"family": FAMILY, "name": table}}]
    objs += [{"counter": c} for c in counters]
    objs += [{"chain": c} for c in chains]
    objs += [{"map": m} for m in maps]
    mark_comment = DIGEST_PREFIX + digest(cfg, gateways, gateways6)
    first = True
    for chain, expr, comment in rules:
        rule: Json = {"family": FAMILY, "table": table, "chain": chain, "expr": expr}
        if chain == "prerouting" and first:
            rule["comment"] = mark_comment
            first = False
        elif comment:
            rule["comment"] = comment
        objs.append({"rule": rule})
    return objs


def _gone(family: str, table: str) -> list[Json]:
    """``add table`` + ``delete table``: the table is gone, whether it existed or not."""
    t = {"table": {"family": family, "name": table}}
    return [{"add": t}, {"delete": t}]


def replace_commands(cfg: Config, gateways: dict[str, str] | None = None,
                     gateways6: dict[str, str] | None = None) -> Json:
    """One libnftables transaction replacing ecmpd's table (and nothing else) atomically.

    ``add table`` + ``delete table`` first makes the delete succeed whether the table
    exists or not; the same for a ``table ip`` of the same name an older ecmpd left
    (`LEGACY_FAMILY`); then the table is created anew.  All of it is one kernel
    transaction: packets see either the old table(s) or the new one.
    """
    cmds = _gone(FAMILY, cfg.nft_table) + _gone(LEGACY_FAMILY, cfg.nft_table)
    cmds += [{"add": obj} for obj in render_table(cfg, gateways, gateways6)]
    return {"nftables": cmds}


def delete_commands(table: str) -> Json:
    """Remove ecmpd's table of that name if it exists, of both families (``inet`` and an
    older ecmpd's ``ip``), in one transaction; a missing one is no error."""
    return {"nftables": _gone(FAMILY, table) + _gone(LEGACY_FAMILY, table)}


def list_command(table: str, family: str = FAMILY) -> Json:
    """One libnftables command listing ``table <family> <table>`` (rc != 0: no such table)."""
    return {"nftables": [{"list": {"table": {"family": family, "name": table}}}]}


def tables_command() -> Json:
    """One libnftables command listing every table (names and families only)."""
    return {"nftables": [{"list": {"tables": None}}]}


def families_of(answer: Json, table: str) -> set[str]:
    """The families of the tables named `table` in a `tables_command` answer."""
    return {str(t["family"]) for item in answer.get("nftables", [])
            if isinstance(t := item.get("table"), dict) and t.get("name") == table}


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
    """The objects of ``table inet <table>`` from a `list table` JSON answer, without
    handles/metainfo (objects of another family are left out).

    Counter values are left out too: they change with every packet, and a listing that
    differs only in them is the same table (no rewrite, no lost counts).
    """
    out: list[Json] = []
    for item in listing.get("nftables", []):
        (kind, body), = item.items()
        if kind == "metainfo" or body.get("family") != FAMILY:
            continue
        if body.get("table", body.get("name")) != table and kind != "table":
            continue
        body = {k: v for k, v in body.items() if k != "handle" and
                not (kind == "counter" and k in _COUNTS)}
        # counts are in counter objects and rules' counter statements; a map's elements
        # (thousands with many policies) are taken as they are, not walked
        out.append({kind: _without_counts(body) if kind == "rule" else body})
    return out


def counters_command(table: str) -> Json:
    """One libnftables command listing the named counters of `table` (for `parse_counters`)."""
    return {"nftables": [{"list": {"counters": {"family": FAMILY, "table": table}}}]}


CounterKey = tuple[int | str, int]
"""(4 or 6, WAN id) for a WAN's arrival counter of that IP version; (``"policy"``,
position) for a policy's counter."""


def counter_key(name: str) -> CounterKey | None:
    """The key of ecmpd's named counter `name`: ``rx_<id>`` is (4, id), ``rx6_<id>`` (6,
    id), ``pol_<position>`` (``"policy"``, position); None for any other name."""
    for key, prefix in ((6, RX6_PREFIX), (4, RX_PREFIX),
                        (policyrules.COUNTER_KEY, policyrules.PREFIX)):
        number = name[len(prefix):]
        if name.startswith(prefix) and number.isdigit():
            return key, int(number)
    return None


def parse_counters(answer: Json, table: str) -> dict[CounterKey, int]:
    """(family, WAN id) → packets, from a `counters_command` answer: family 4 is the
    ``rx_<id>`` counter (IPv4 arrivals), 6 the ``rx6_<id>`` one (IPv6 arrivals); and
    (``"policy"``, position) → the packets policy `position` marked (``pol_<position>``:
    the first packet of each connection it steered).  Only the counters of ``table inet
    <table>`` count."""
    out: dict[CounterKey, int] = {}
    for item in answer.get("nftables", []):
        c = item.get("counter")
        if not isinstance(c, dict) or c.get("table") != table or c.get("family") != FAMILY:
            continue
        if (key := counter_key(str(c.get("name", "")))) is not None:
            out[key] = int(c.get("packets", 0))
    return out


def listing_digest(listing: Json) -> str | None:
    """The digest stored in a listed table's rule comment, if any."""
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(DIGEST_PREFIX):
            return str(rule["comment"])[len(DIGEST_PREFIX):]
    return None
