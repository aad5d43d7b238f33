"""Read ecmpd's own routes and rules from the kernel, diff them with the desired state,
and change only what differs (pyroute2 AsyncIPRoute, in the daemon's loop).

Only objects that are provably ecmpd's are ever read back as "ours": routes with
ecmpd's ``proto`` (default routes in table main or in ecmpd's table range) and rules
in ecmpd's priority range that point at table main or at ecmpd's tables.  Anything
else is never changed or removed.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from .netlinkimport import AsyncIPRoute, NetlinkError

from .desired import (MAIN_TABLE, UNICAST, UNREACHABLE, Desired, Nexthop, RouteSpec, RuleSpec,
                      rule_range, table_range)
from .model import Config

log = logging.getLogger("ecmpd")

RTN_UNICAST, RTN_UNREACHABLE = 1, 7
_KINDS = {RTN_UNICAST: UNICAST, RTN_UNREACHABLE: UNREACHABLE}


@dataclass
class Actual:
    """ecmpd's objects as the kernel has them now."""

    routes: dict[tuple[int, int], RouteSpec] = field(default_factory=dict)
    """(table, metric) → route."""
    rules: set[RuleSpec] = field(default_factory=set)
    foreign_main: str | None = None
    """Description of a foreign default route sitting where ecmpd's main route goes."""


def _nexthops(msg) -> tuple[Nexthop, ...]:
    mp = msg.get("multipath")
    if mp:
        hops = []
        for nh in mp:
            gw = dict(nh.get("attrs", [])).get("RTA_GATEWAY") if "attrs" in nh else None
            gw = gw or nh.get("gateway")
            hops.append(Nexthop(str(gw), int(nh["oif"]), int(nh.get("hops", 0)) + 1))
        return tuple(sorted(hops))
    gw = msg.get("gateway")
    if gw is None:
        return ()
    return (Nexthop(str(gw), int(msg.get("oif") or 0), 1),)


async def read_actual(ipr: AsyncIPRoute, cfg: Config) -> Actual:
    """Dump ecmpd's routes and rules (and notice a foreign route in its place)."""
    actual = Actual()
    tables = table_range(cfg)
    async for msg in await ipr.route("dump", family=socket.AF_INET):
        table = msg.get("table")
        if msg["dst_len"] != 0 or not (table == MAIN_TABLE or table in tables):
            continue
        metric = msg.get("priority") or 0
        if msg["proto"] != cfg.route_proto:
            if table == MAIN_TABLE and metric == cfg.route_metric:
                hops = _nexthops(msg)
                via = ", ".join(h.gateway for h in hops) or "no gateway"
                actual.foreign_main = f"default via {via} proto {msg['proto']} metric {metric}"
            continue
        if table == MAIN_TABLE and metric != cfg.route_metric:
            continue  # ours is the one at route.metric; others with our proto are left alone
        rtype = msg.get("type", RTN_UNICAST)
        # another type under our proto (e.g. someone's blackhole) differs from every
        # desired kind, so it is replaced or removed like any other difference
        kind = _KINDS.get(rtype, f"type {rtype}")
        actual.routes[(table, metric)] = RouteSpec(table, _nexthops(msg), metric, kind)
    prios = rule_range(cfg)
    async for msg in await ipr.rule("dump", family=socket.AF_INET):
        prio = msg.get("priority") or 0
        table = msg.get("table")
        # ours: in our priority range and pointing at one of our tables, or our one
        # `lookup main` rule at exactly the base priority
        if prio not in prios or not (table in tables or
                                     (table == MAIN_TABLE and prio == cfg.rule_priority)):
            continue
        src = msg.get("src")
        suppress = msg.get("suppress_prefixlen")
        actual.rules.add(RuleSpec(
            prio, table,
            fwmark=msg.get("fwmark") if msg.get("fwmark") else None,
            fwmask=msg.get("fwmask") if msg.get("fwmark") else None,
            src=str(src) if src else None,
            # the kernel reports FRA_SUPPRESS_PREFIXLEN 0xffffffff (-1) on every rule without one
            suppress_prefixlen=None if suppress in (None, -1, 0xFFFFFFFF) else suppress,
        ))
    return actual


def _route_args(cfg: Config, spec: RouteSpec) -> dict:
    args: dict = {"dst": "0.0.0.0/0", "table": spec.table, "proto": cfg.route_proto,
                  "priority": spec.metric}
    if spec.kind != UNICAST:
        args["type"] = spec.kind
    elif len(spec.nexthops) == 1:
        nh = spec.nexthops[0]
        args.update(gateway=nh.gateway, oif=nh.oif)
    else:
        args["multipath"] = [{"gateway": h.gateway, "oif": h.oif, "hops": h.weight - 1}
                             for h in spec.nexthops]
    return args


def _rule_args(spec: RuleSpec) -> dict:
    args: dict = {"priority": spec.priority, "table": spec.table, "family": socket.AF_INET}
    if spec.fwmark is not None:
        args.update(fwmark=spec.fwmark, fwmask=spec.fwmask)
    if spec.src is not None:
        args.update(src=spec.src, src_len=32)
    if spec.suppress_prefixlen is not None:
        args["suppress_prefixlen"] = spec.suppress_prefixlen
    return args


async def apply(ipr: AsyncIPRoute, cfg: Config, desired: Desired,
                actual: Actual | None = None) -> int:
    """Make the kernel match `desired`; returns the number of netlink changes made."""
    if actual is None:
        actual = await read_actual(ipr, cfg)
    changes = 0
    want: dict[tuple[int, int], RouteSpec] = {(t.table, t.metric): t for t in desired.tables}
    if desired.main is not None:
        if actual.foreign_main is not None:
            log.error("a default route that is not ecmpd's occupies table main metric %d (%s):"
                      " leaving it alone; remove it or set route.metric",
                      cfg.route_metric, actual.foreign_main)
        else:
            want[(MAIN_TABLE, desired.main.metric)] = desired.main
    for key, spec in want.items():
        have = actual.routes.get(key)
        if have is not None and have.same_as(spec):
            continue
        try:
            await ipr.route("replace", **_route_args(cfg, spec))
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot set route %s: %s", spec, exc)
    for key, have in actual.routes.items():
        if key in want:
            continue
        try:
            await ipr.route("del", dst="0.0.0.0/0", table=have.table, proto=cfg.route_proto,
                            priority=have.metric)
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot remove route %s: %s", have, exc)
    wanted_rules = set(desired.rules)
    for rule in sorted(actual.rules - wanted_rules):
        try:
            await ipr.rule("del", **_rule_args(rule))
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot remove rule %s: %s", rule, exc)
    for rule in sorted(wanted_rules - actual.rules):
        try:
            await ipr.rule("add", **_rule_args(rule))
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot add rule %s: %s", rule, exc)
    return changes


async def remove_all(ipr: AsyncIPRoute, cfg: Config) -> int:
    """Remove every route and rule of ecmpd's (on stop); returns the count removed."""
    return await apply(ipr, cfg, Desired(main=None))


IFF_UP, IFF_LOWER_UP = 0x1, 0x10000


def link_state(msg) -> dict:
    """{index, up, carrier} of a link from its netlink message (dump or event)."""
    flags = msg.get("flags", 0)
    up = bool(flags & IFF_UP)
    return {"index": msg["index"], "up": up, "carrier": up and bool(flags & IFF_LOWER_UP)}


def primary_address(links: dict[str, dict], addresses: dict[int, list[tuple[str, int]]],
                    ifname: str) -> str | None:
    """The primary IPv4 address on interface `ifname` (None: no such link or address)."""
    link = links.get(ifname)
    addrs = addresses.get(link["index"], []) if link else []
    return addrs[0][0] if addrs else None


async def read_links(ipr: AsyncIPRoute) -> dict[str, dict]:
    """Interface name → {index, up, carrier} for every link."""
    return {msg.get("ifname"): link_state(msg) async for msg in await ipr.link("dump")}


async def read_addresses(ipr: AsyncIPRoute) -> dict[int, list[tuple[str, int]]]:
    """Interface index → its IPv4 (address, prefixlen) list, primary first."""
    out: dict[int, list[tuple[str, int]]] = {}
    secondary: dict[int, list[tuple[str, int]]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET):
        addr = msg.get("local") or msg.get("address")
        if addr:
            entry = (str(addr), msg["prefixlen"])
            # primaries in the kernel's order (the first one is the interface's address)
            into = secondary if msg["flags"] & 0x01 else out  # IFA_F_SECONDARY
            into.setdefault(msg["index"], []).append(entry)
    for index, extra in secondary.items():
        out.setdefault(index, []).extend(extra)
    return out
