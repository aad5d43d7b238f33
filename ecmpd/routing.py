"""Read ecmpd's own routes and rules from the kernel, diff them with the desired state,
and change only what differs (pyroute2 AsyncIPRoute, in the daemon's loop).

Only objects that are provably ecmpd's are ever read back as "ours": routes with
ecmpd's ``proto`` (default routes in ecmpd's table range, or in table main at
``route.metric``, where earlier versions kept the multipath route: it is removed once
the one in ecmpd's table is in place) and rules in ecmpd's priority range that point at
table main or at ecmpd's tables.  Anything else is never changed or removed.

IPv4 and IPv6 are read and changed apart (the kernel keeps tables and rules per
version, under the same numbers): every function takes the version, from its `family`
argument or from the `Desired` it applies; `remove_all` and `handover` do both.

Reading only what is ecmpd's (a router may also carry a full BGP table, ~1M routes):
ecmpd's tables and the default routes of table main are read with kernel-filtered dumps
(`ecmpd.routereader`), never the whole FIB.  Without strict checking (an old kernel) the
reads fall back to one full dump through ``ipr``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .netlinkimport import AsyncIPRoute, NetlinkError

from .desired import (BALANCE_RULE, MAIN_TABLE, UNICAST, UNREACHABLE, Desired,
                      Nexthop, Owned, RouteSpec, RuleSpec, Step, plan_handover, policy_routes,
                      translate)
from .configmodel import FAMILIES, Config
from .interfaces import AF
from .refused import Refused, install_main, refused_single
from .routereader import RouteReader, StrictUnsupported

log = logging.getLogger("ecmpd")

RTN_UNICAST, RTN_UNREACHABLE = 1, 7
_ANY = {4: "0.0.0.0/0", 6: "::/0"}
_HOST = {4: 32, 6: 128}
RTNH_F_ONLINK = 4
_KINDS = {RTN_UNICAST: UNICAST, RTN_UNREACHABLE: UNREACHABLE}


@dataclass
class Actual:
    """ecmpd's objects as the kernel has them now."""

    routes: dict[tuple[int, int], RouteSpec] = field(default_factory=dict)
    """(table, metric) → route."""
    family: int = 4
    rules: set[RuleSpec] = field(default_factory=set)
    foreign_main: str | None = None
    """Description of a foreign default route sitting where ecmpd's main route goes."""
    stray_main: tuple[RouteSpec, ...] = ()
    """Default routes in table main with ecmpd's proto at another metric than
    route.metric: not touched (another ecmpd, or one from before a metric change that
    left no record), but worth a warning (`stray_warnings`): one at a lower metric
    outranks ecmpd's route and never fails over."""


_strict_missing_logged = False


def nexthops_of(msg) -> tuple[Nexthop, ...]:
    """The nexthops of a route message (gateway ``""``: a device nexthop)."""
    mp = msg.get("multipath")
    if mp:
        hops = []
        for nh in mp:
            gw = dict(nh.get("attrs", [])).get("RTA_GATEWAY") if "attrs" in nh else None
            gw = gw or nh.get("gateway")
            hops.append(Nexthop(str(gw) if gw else "", int(nh["oif"]),
                                int(nh.get("hops", 0)) + 1, _onlink(nh, gw)))
        return tuple(sorted(hops))
    gw, oif = msg.get("gateway"), msg.get("oif")
    if gw is None and (not oif or msg.get("type", RTN_UNICAST) != RTN_UNICAST):
        return ()
    # a single nexthop's flags are the route's (rtm_flags)
    return (Nexthop(str(gw) if gw else "", int(oif or 0), 1, _onlink(msg, gw)),)


def _onlink(msg, gateway) -> bool:
    """RTNH_F_ONLINK on a nexthop with a gateway (a device nexthop needs none)."""
    return bool(gateway) and bool((msg.get("flags") or 0) & RTNH_F_ONLINK)


def _kind(msg) -> str:
    rtype = msg.get("type", RTN_UNICAST)
    # another type under our proto (e.g. someone's blackhole) differs from every
    # desired kind, so it is replaced or removed like any other difference
    return _KINDS.get(rtype, f"type {rtype}")


def _describe_route(msg) -> str:
    hops = nexthops_of(msg)
    via = ", ".join(h.gateway or f"dev {h.oif}" for h in hops) or "no gateway"
    return f"default via {via} proto {msg['proto']} metric {msg.get('priority') or 0}"


_RULE_ATTRS = frozenset({"FRA_TABLE", "FRA_PRIORITY", "FRA_FWMARK", "FRA_FWMASK", "FRA_SRC",
                         "FRA_SUPPRESS_PREFIXLEN", "FRA_PROTOCOL"})
"""What ecmpd's rules carry (the kernel adds FRA_PROTOCOL and FRA_SUPPRESS_PREFIXLEN)."""
FIB_RULE_INVERT, FR_ACT_TO_TBL = 0x2, 1


def _other_selectors(msg, family: int = 4) -> bool:
    """Whether the rule says more than ecmpd's rules do (`RuleSpec.other`)."""
    return bool(msg.get("flags", 0) & FIB_RULE_INVERT or msg.get("action", FR_ACT_TO_TBL)
                != FR_ACT_TO_TBL or msg.get("dst_len") or msg.get("tos")
                or msg.get("src_len") not in (None, 0, _HOST[family])
                or any(name not in _RULE_ATTRS for name, *_ in msg.get("attrs", ())))


def _rule_of(msg, family: int = 4) -> RuleSpec:
    src = msg.get("src")
    suppress = msg.get("suppress_prefixlen")
    return RuleSpec(
        msg.get("priority") or 0, msg.get("table"),
        fwmark=msg.get("fwmark") if msg.get("fwmark") else None,
        fwmask=msg.get("fwmask") if msg.get("fwmark") else None,
        src=str(src) if src else None,
        # the kernel reports FRA_SUPPRESS_PREFIXLEN 0xffffffff (-1) on every rule without one
        suppress_prefixlen=None if suppress in (None, -1, 0xFFFFFFFF) else suppress,
        other=_other_selectors(msg, family),
        family=family,
    )


def is_ours(rule: RuleSpec, owned: Owned) -> bool:
    """Whether `rule` is one ecmpd makes under `owned` (`desired.build_desired`'s
    layout, P = ``rules.priority``, B = ``tables.base``): ``P: lookup main
    suppress_prefixlength 0``, ``P+id: fwmark … lookup B+id`` (a WAN id's, or a policy
    WAN set's `route`), ``P+256+id: from … lookup B+id``, ``P+512: lookup B``.  Nothing
    else in ecmpd's priority span is its own: never a rule looking up local, default or
    plain main, nor one whose table does not match its priority."""
    off = rule.priority - owned.rule_priority
    if rule.other:
        return False
    if rule.table == MAIN_TABLE:
        return (off == 0 and rule.suppress_prefixlen == 0 and rule.fwmark is None
                and rule.src is None)
    if not owned.owns_table(rule.table) or rule.suppress_prefixlen is not None:
        return False
    wan = rule.table - owned.table_base
    if off == BALANCE_RULE:
        return wan == 0 and rule.fwmark is None and rule.src is None
    if 1 <= off <= 255:
        return (wan == off and rule.fwmark is not None and rule.fwmask == owned.mark_mask
                and rule.src is None)
    if 257 <= off <= 511:
        return wan == off - 256 and rule.src is not None and rule.fwmark is None
    return False


async def read_rules(ipr: AsyncIPRoute, owned: Owned, family: int = 4) -> set[RuleSpec]:
    """ecmpd's rules of IP version `family` under `owned` (`is_ours`)."""
    out: set[RuleSpec] = set()
    async for msg in await ipr.rule("dump", family=AF[family]):
        if is_ours(rule := _rule_of(msg, family), owned):
            out.add(rule)
    return out


def _add_main(actual: Actual, owned: Owned, msg) -> None:
    """Sort one default route of table main into `actual`: other programs' are theirs
    (shadowed by ecmpd's rules, never touched); ecmpd's at `route.metric` is an earlier
    version's multipath route (ours: removed), at other metrics a stray."""
    metric = msg.get("priority") or 0
    if msg["proto"] != owned.route_proto:
        return
    spec = RouteSpec(MAIN_TABLE, nexthops_of(msg), metric, _kind(msg), actual.family)
    if metric == owned.route_metric:
        actual.routes[(MAIN_TABLE, metric)] = spec
    else:
        actual.stray_main += (spec,)


def _add_route(actual: Actual, owned: Owned, table: int, msg) -> None:
    """Sort one default route of one of ecmpd's tables into `actual`: a foreign one
    where the multipath route goes blocks it (`foreign_main`), others are ignored."""
    metric = msg.get("priority") or 0
    if msg["proto"] == owned.route_proto:
        actual.routes[(table, metric)] = RouteSpec(table, nexthops_of(msg), metric, _kind(msg),
                                                   actual.family)
    elif table == owned.table_base and metric == owned.route_metric:
        actual.foreign_main = _describe_route(msg)


async def read_actual(ipr: AsyncIPRoute, cfg: Config | Owned,
                      tables: Iterable[int] = (), family: int = 4) -> Actual:
    """ecmpd's routes and rules of IP version `family` under `cfg`'s numbers (and a
    foreign route in its place).

    Routes are read from the WAN tables of `cfg`'s WANs, from every table one of
    ecmpd's rules points at (a removed WAN's table keeps its rules until they are
    removed with it), from `tables`, and the default routes of table main — each with a
    kernel-filtered dump (see the module docstring), never the whole FIB."""
    owned = Owned.of(cfg).for_family(family)
    actual = Actual(family=family)
    actual.rules = await read_rules(ipr, owned, family)
    wanted = sorted(t for t in {*owned.wan_tables(), *tables, *(r.table for r in actual.rules)}
                    if owned.owns_table(t))
    try:
        reader = RouteReader.like(ipr)
    except StrictUnsupported as exc:
        global _strict_missing_logged
        if not _strict_missing_logged:
            log.warning("%s: reading the whole routing table on every reconcile", exc)
            _strict_missing_logged = True
        return await _read_full(ipr, owned, actual)
    with reader:
        for table in wanted:
            # the multipath table: any proto (a foreign route there blocks ecmpd's)
            proto = 0 if table == owned.table_base else owned.route_proto
            for msg in reader.dump(table, proto, AF[family]):
                if msg["dst_len"] == 0:
                    _add_route(actual, owned, table, msg)
        if family == 4:   # no version of ecmpd kept an IPv6 route in main
            for msg in reader.defaults(MAIN_TABLE):
                if msg["dst_len"] == 0:
                    _add_main(actual, owned, msg)
    return actual


async def _read_full(ipr: AsyncIPRoute, owned: Owned, actual: Actual) -> Actual:
    """The fallback without strict checking: one full dump, filtered here."""
    async for msg in await ipr.route("dump", family=AF[actual.family]):
        table = msg.get("table")
        if msg["dst_len"] != 0 or not (table == MAIN_TABLE or owned.owns_table(table)):
            continue
        if table == MAIN_TABLE:
            if actual.family == 6:
                continue
            _add_main(actual, owned, msg)
        else:
            _add_route(actual, owned, table, msg)
    return actual


def stray_warnings(actual: Actual, cfg: Config | Owned) -> list[str]:
    """One warning line per default route in table main with ecmpd's proto at another
    metric (`Actual.stray_main`), for the log and for status."""
    owned = Owned.of(cfg)
    out = []
    for r in actual.stray_main:
        via = ", ".join(h.gateway or f"dev {h.oif}" for h in r.nexthops) or r.kind
        rank = "outranks" if r.metric < owned.route_metric else "sits below"
        out.append(f"a default route with ecmpd's proto {owned.route_proto} at metric "
                   f"{r.metric} (via {via}) {rank} ecmpd's route at route.metric "
                   f"{owned.route_metric}: left alone (another ecmpd, or an older one with "
                   f"another route.metric?); if it is not in use, remove it: ip route del "
                   f"default proto {owned.route_proto} metric {r.metric}")
    return out


def _route_args(proto: int, spec: RouteSpec) -> dict:
    args: dict = {"dst": _ANY[spec.family], "family": AF[spec.family], "table": spec.table,
                  "proto": proto, "priority": spec.metric}
    if spec.kind != UNICAST:
        args["type"] = spec.kind
    elif len(spec.nexthops) == 1:
        nh = spec.nexthops[0]
        args.update(_hop(nh))
    else:
        args["multipath"] = [{**_hop(h), "hops": h.weight - 1} for h in spec.nexthops]
    return args


def _hop(h: Nexthop) -> dict:
    """A nexthop's netlink arguments: via its gateway, or the device alone."""
    if not h.gateway:
        return {"oif": h.oif}
    return {"gateway": h.gateway, "oif": h.oif, **({"flags": RTNH_F_ONLINK} if h.onlink else {})}


def _rule_args(spec: RuleSpec) -> dict:
    args: dict = {"priority": spec.priority, "table": spec.table, "family": AF[spec.family]}
    if spec.fwmark is not None:
        args.update(fwmark=spec.fwmark, fwmask=spec.fwmask)
    if spec.src is not None:
        args.update(src=spec.src, src_len=_HOST[spec.family])
    if spec.suppress_prefixlen is not None:
        args["suppress_prefixlen"] = spec.suppress_prefixlen
    return args


async def apply(ipr: AsyncIPRoute, cfg: Config, desired: Desired,
                actual: Actual | None = None, refused: Refused | None = None) -> int:
    """Make the kernel match `desired`; returns the number of netlink changes made.
    The multipath route, and each policy WAN set's, goes in without the nexthops the
    kernel refuses (`ecmpd.refused`); `refused` receives them: (gateway, oif) -> the
    kernel's error."""
    family = desired.family
    if actual is None:
        actual = await read_actual(ipr, cfg, family=family)
    refused = {} if refused is None else refused
    changes = 0
    want: dict[tuple[int, int], RouteSpec] = {(t.table, t.metric): t for t in desired.tables}
    if desired.main is not None:
        if actual.foreign_main is not None:
            log.error("a default route that is not ecmpd's occupies table %d metric %d (%s):"
                      " leaving it alone; remove it or set tables.base", desired.main.table,
                      cfg.route_metric, actual.foreign_main)
        else:
            want[(desired.main.table, desired.main.metric)] = desired.main
    async def put(spec: RouteSpec) -> None:
        await ipr.route("replace", **_route_args(cfg.route_proto, spec))

    main_key = None if desired.main is None else (desired.main.table, desired.main.metric)
    # `remove_all` passes ownership numbers alone (and installs nothing)
    sets = {cfg.table_base + r for r in policy_routes(cfg)} if isinstance(cfg, Config) else ()
    # make before break: new and changed routes (the WAN tables' first: a nexthop the
    # kernel refuses there stays out of the multipath routes), new rules, then what goes
    for key, spec in want.items():
        have = actual.routes.get(key)
        if key == main_key or (key[0] in sets and spec.kind == UNICAST):
            changes += await install_main(spec, have, refused, put)
            continue
        if have is not None and have.same_as(spec):
            continue
        try:
            await put(spec)
            changes += 1
        except NetlinkError as exc:
            # a refused nexthop is reported once, by the state it makes DOWN
            level = logging.DEBUG if refused_single(spec, exc, refused) else logging.WARNING
            log.log(level, "cannot set route %s: %s", spec, exc)
    wanted_rules = set(desired.rules)
    for rule in sorted(wanted_rules - actual.rules):
        try:
            await ipr.rule("add", **_rule_args(rule))
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot add rule %s: %s", rule, exc)
    for rule in sorted(actual.rules - wanted_rules):
        try:
            await ipr.rule("del", **_rule_args(rule))
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot remove rule %s: %s", rule, exc)
    for key, have in actual.routes.items():
        if key in want:
            continue
        try:
            await ipr.route("del", dst=_ANY[family], family=AF[family], table=have.table,
                            proto=cfg.route_proto, priority=have.metric)
            changes += 1
        except NetlinkError as exc:
            log.warning("cannot remove route %s: %s", have, exc)
    return changes


async def remove_all(ipr: AsyncIPRoute, cfg: Config | Owned) -> int:
    """Remove every route and rule of ecmpd's, both versions (on stop); returns the
    count removed."""
    return sum([await apply(ipr, cfg, Desired(main=None, family=f))  # type: ignore[arg-type]
                for f in FAMILIES])


async def run_steps(ipr: AsyncIPRoute, steps: Iterable[Step]) -> int:
    """Carry out handover steps in order; returns the number of changes made.  A step
    that finds its work done (a rule already there, an object already gone) is no error;
    any other failure is logged and the next steps still run."""
    changes = 0
    for step in steps:
        try:
            if step.op == "route":
                assert step.route is not None
                await ipr.route("replace", **_route_args(step.proto, step.route))
            elif step.op == "unroute":
                assert step.route is not None
                await ipr.route("del", dst=_ANY[step.route.family], family=AF[step.route.family],
                                table=step.route.table, proto=step.proto,
                                priority=step.route.metric)
            elif step.op == "rule":
                assert step.rule is not None
                await ipr.rule("add", **_rule_args(step.rule))
            else:
                assert step.rule is not None
                await ipr.rule("del", **_rule_args(step.rule))
            changes += 1
        except NetlinkError as exc:
            done = ((step.op == "rule" and exc.code == errno.EEXIST)
                    or (step.op in ("unroute", "unrule")
                        and exc.code in (errno.ESRCH, errno.ENOENT)))
            if not done:
                log.warning("handover: cannot %s: %s", step, exc)
    return changes


async def handover(ipr: AsyncIPRoute, old: Config | Owned, new: Config | Owned,
                   desired: Desired | None = None) -> int:
    """Move ecmpd's routes and rules from `old`'s ownership numbers (route proto and
    metric, tables base, rule priority) to `new`'s, making before breaking: the new
    objects are installed before the old ones go, so a packet always finds a route
    (`desired.plan_handover` orders the steps).

    `desired`: the new state (under `new`'s numbers); None: what is installed under
    `old`, renumbered (`desired.translate`) — the next reconcile then makes it the
    desired state, again with atomic replaces.  Only objects recognised under `old` are
    removed, and only those the new state does not have.  A foreign default route at
    `new`'s main metric is left alone, and then so is the old main route (better an
    orphan than no route; `stray_warnings` reports it).  Returns the changes made."""
    o, n = Owned.of(old), Owned.of(new)
    if o.routing_numbers() == n.routing_numbers():
        return 0
    if why := o.problem() or n.problem():
        log.error("not handing ecmpd's routes over from %s to %s: %s", o, n, why)
        return 0
    changes = 0
    for family in FAMILIES:
        mine = desired if desired is not None and desired.family == family else None
        changes += await _handover(ipr, o, n, mine, family)
    log.info("handed ecmpd's routes and rules over from proto %d metric %d tables %d+ "
             "rules %d+ to proto %d metric %d tables %d+ rules %d+ (%d changes)",
             o.route_proto, o.route_metric, o.table_base, o.rule_priority, n.route_proto,
             n.route_metric, n.table_base, n.rule_priority, changes)
    return changes


async def _handover(ipr: AsyncIPRoute, o: Owned, n: Owned, desired: Desired | None,
                    family: int) -> int:
    """`handover` of IP version `family`'s routes and rules."""
    o, n = o.for_family(family), n.for_family(family)
    have = await read_actual(ipr, o, family=family)
    if not have.routes and not have.rules and desired is None:
        return 0
    target = desired if desired is not None else translate(have.routes, have.rules, o, n,
                                                           family)
    if target.main is not None:
        there = await read_actual(ipr, n, family=family)
        # at the same table and metric, a route with the old proto is ecmpd's own
        old_key = (o.table_base, o.route_metric)
        ours_there = (n.table_base, n.route_metric) == old_key and old_key in have.routes
        if there.foreign_main is not None and not ours_there:
            log.error("a default route that is not ecmpd's occupies table %d metric %d "
                      "(%s): ecmpd's route stays in table %d metric %d", n.table_base,
                      n.route_metric, there.foreign_main, o.table_base, o.route_metric)
            # the old route stays, and so does the rule that looks it up
            target = Desired(None, target.tables,
                             tuple(r for r in target.rules if r.table != n.table_base),
                             target.sysctls, family)
            have.routes.pop(old_key, None)
            have.routes.pop((MAIN_TABLE, o.route_metric), None)
            have.rules = {r for r in have.rules
                          if (r.priority, r.table) != (o.rule_priority + BALANCE_RULE,
                                                       o.table_base)}
    steps = plan_handover(have.routes, have.rules, o, n, target)
    return await run_steps(ipr, steps)
