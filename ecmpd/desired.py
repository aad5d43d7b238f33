"""Desired routing state: config + what the daemon knows now → plain data.  Pure.

ecmpd's routing objects, all of them recognisable as its own:

* table ``base`` (``tables.base``): ``default proto <ours> metric <m>`` — the weighted
  multipath route over the WANs that take new flows.  It lives in a table of ecmpd's,
  not in main, so that default routes other programs put in main (a DHCP client's at
  metric 0, NetworkManager's at 100+) are shadowed by ecmpd's rules, never fought over;
  when ecmpd has no route, lookups fall through to main and those routes work;
* table ``base + id`` per WAN: ``default via <gateway> dev <wan> proto <ours>`` (``dev
  <wan>`` alone on a point-to-point link) and, below it, ``unreachable default proto
  <ours> metric 4294967295``: when the WAN's route is gone or ignored (link down,
  ``ignore_routes_with_linkdown=1``, gateway not yet learned), a packet sent from the
  WAN's address or carrying its mark gets EHOSTUNREACH instead of falling through to
  another table and leaving by another WAN (a probe must only ever test its own WAN);
* table ``base + route`` per policy WAN set (`route`: a `Policy.route` value, never a
  WAN id): ``default proto <ours>`` weighted over the set's WANs that take its new
  flows (usable, of the lowest tier among the set's usable ones: tiers are judged
  within the set), and with ``fallback: drop`` the ``unreachable default`` below it (no
  usable WAN: the connection fails); with ``fallback: balance`` nothing else, so that
  with no usable WAN the lookup falls through to the balance table like unmatched
  traffic;
* ip rules, priorities ``P .. P+512`` (P = ``rules.priority``):
  ``P``: ``lookup main suppress_prefixlength 0`` (everything reaches connected and more
  specific routes: the LAN, the WAN subnets; main's default routes are suppressed),
  ``P+id``: ``fwmark <wan mark>/<mask> lookup <wan table>``, ``P+route``: ``fwmark
  <route mark>/<mask> lookup <policy table>`` (a policy's new connection: nft marks its
  first packet), ``P+256+id``: ``from <wan address> lookup <wan table>`` (the router's
  replies and the prober's probes leave by that WAN), ``P+512``: ``lookup <base>`` (new
  flows: the multipath route).

A nexthop's ``gateway`` is an address, or ``""`` for a device nexthop (a point-to-point
link needs no gateway).

IPv4 and IPv6 each get all of the above, under the same numbers (tables and rules are
per version in the kernel): `build_desired` makes one version's `Desired` from that
version's plane (`ecmpd.state.plane`); every route and rule carries its `family`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields as dataclass_fields, replace
from typing import Any

from . import schema
from .configvalues import Bad
from .configmodel import Config, Policy

MAIN_TABLE = 254
RESERVED_TABLES = frozenset({0, 253, 254, 255})
"""Table ids never ecmpd's: unspec, default, main, local."""
RULE_SPAN = 513
BALANCE_RULE = RULE_SPAN - 1
"""Offset from `rules.priority` of the rule looking up ecmpd's multipath table: after
every fwmark and source rule (a pinned connection keeps its WAN)."""
UNREACHABLE_METRIC = 0xFFFFFFFF
"""Metric of the `unreachable` default in each WAN table: below any real route there."""
UNICAST, UNREACHABLE = "unicast", "unreachable"
IPV6_METRIC_ZERO = 1024
"""The kernel stores an IPv6 route given metric 0 at 1024 (IP6_RT_PRIO_USER): ecmpd's
IPv6 routes use 1024 where its IPv4 routes use 0, so what it reads back is what it
wanted (`metric_of`)."""


def metric_of(metric: int, family: int) -> int:
    """The metric a route of IP version `family` meant at `metric` has in the kernel."""
    return metric if family == 4 or metric else IPV6_METRIC_ZERO


@dataclass(frozen=True, order=True)
class Nexthop:
    """One gateway of a route (``""``: the device itself, on a point-to-point link);
    `weight` is the kernel weight (1..256); `onlink`: the gateway is taken as on the
    link without a route to it (RTNH_F_ONLINK: an off-subnet gateway, a /32 lease)."""

    gateway: str
    oif: int
    weight: int = 1
    onlink: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """A default route of ecmpd's in `table` (one nexthop = a plain route).

    `kind` is the route type: `UNICAST` (via its nexthops) or `UNREACHABLE` (no
    nexthops; the lookup ends with EHOSTUNREACH).
    """

    table: int
    nexthops: tuple[Nexthop, ...]
    metric: int = 0
    kind: str = UNICAST
    family: int = 4
    """The IP version (4 or 6)."""

    def hops(self) -> set[tuple[str, int]]:
        """(gateway, oif) of every nexthop."""
        return {(h.gateway, h.oif) for h in self.nexthops}

    def same_as(self, other: "RouteSpec") -> bool:
        """Equal as the kernel keeps them (a single nexthop carries no weight)."""
        if (self.table, self.metric, self.kind) != (other.table, other.metric, other.kind):
            return False
        if len(self.nexthops) == 1 and len(other.nexthops) == 1:
            a, b = self.nexthops[0], other.nexthops[0]
            return (a.gateway, a.oif, a.onlink) == (b.gateway, b.oif, b.onlink)
        return sorted(self.nexthops) == sorted(other.nexthops)


@dataclass(frozen=True, order=True)
class RuleSpec:
    """An ip rule of ecmpd's (exactly one of fwmark, src, suppress is used)."""

    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None
    src: str | None = None
    suppress_prefixlen: int | None = None
    other: bool = False
    """Read from the kernel with a selector, flag or action ecmpd never sets (iif, oif,
    ``not``, a destination, tos, a goto…): never one of ecmpd's."""
    family: int = 4


@dataclass(frozen=True)
class Desired:
    """Everything ecmpd wants in the kernel's routing, as plain data."""

    main: RouteSpec | None
    """The multipath route (in table `balance_table`), or None when no WAN can carry it."""
    tables: tuple[RouteSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = field(default=())
    family: int = 4
    """The IP version of every route and rule here."""


def rule_range(cfg: Config) -> range:
    """The ip rule priorities ecmpd owns."""
    return range(cfg.rule_priority, cfg.rule_priority + RULE_SPAN)


def table_range(cfg: Config) -> range:
    """The routing tables ecmpd owns: its multipath table, then one per WAN id."""
    return range(cfg.table_base, cfg.table_base + 256)


def balance_table(cfg: "Config | Owned") -> int:
    """The table of ecmpd's multipath default route (``tables.base``)."""
    return cfg.table_base


def policy_routes(cfg: Config) -> dict[int, Policy]:
    """`Config.policy_routes` (each policy WAN set's `route` -> its first policy), less
    any whose table or rule could be another's: a WAN id's, or a kernel table
    (`RESERVED_TABLES`: ecmpd never puts a route in main or local)."""
    ids = {w.id for w in cfg.wans}
    return {r: p for r, p in cfg.policy_routes().items()
            if 1 <= r <= 255 and r not in ids and cfg.table_base + r not in RESERVED_TABLES}


def build_desired(
    cfg: Config,
    links: Mapping[str, int],
    addresses: Mapping[str, str],
    active: set[str],
    keep_main: RouteSpec | None = None,
    gateways: Mapping[str, str] | None = None,
    onlink: Collection[str] = (),
    family: int = 4,
    sets: Mapping[int, Collection[str]] | None = None,
    present: Collection[str] | None = None,
) -> Desired:
    """The desired routing state.

    `links` maps interface names to indexes (a missing interface gets no route via it,
    only its table's unreachable default),
    `addresses` maps WAN names to the router's IPv4 address on them, `active` holds the
    WANs whose nexthop belongs in the multipath route, `gateways` maps WAN names to
    their nexthop gateway (``""``: the device; a WAN missing from it has no known
    gateway and no route; None: the config's fixed gateways), `onlink` names the WANs
    whose gateway is on the link without a route to it.  When no WAN is active,
    `keep_main` (the route in the kernel now) is kept rather than leaving no route.
    `family`: the IP version; `cfg` is that version's plane's config (its WANs carry
    it, `gateway` is theirs).  A config with no WAN of that version wants nothing.
    `sets` maps each policy WAN set's `route` to the WANs whose nexthops are in its
    route (`ecmpd.state.active` among the set's WANs); a set missing from it has none
    (its fallback applies).  `present` names the interfaces that exist (None: every
    one the config names): no sysctl is wanted for another (`present_sysctls`).
    """
    if not cfg.wans:
        return Desired(None, family=family)
    if gateways is None:
        gateways = {w.name: str(w.gateway) for w in cfg.wans if w.gateway is not None}
    tables: list[RouteSpec] = []
    rules: list[RuleSpec] = [
        RuleSpec(cfg.rule_priority, MAIN_TABLE, suppress_prefixlen=0, family=family),
        RuleSpec(cfg.rule_priority + BALANCE_RULE, balance_table(cfg), family=family)]
    hops: list[Nexthop] = []
    wan_hops: dict[str, Nexthop] = {}
    for wan in cfg.wans:
        table = cfg.table_of(wan)
        rules.append(RuleSpec(cfg.rule_priority + wan.id, table, fwmark=cfg.mark_of(wan),
                              fwmask=cfg.mark_mask, family=family))
        if wan.name in addresses:
            rules.append(RuleSpec(cfg.rule_priority + 256 + wan.id, table,
                                  src=addresses[wan.name], family=family))
        oif = links.get(wan.interface)
        gw = gateways.get(wan.name)
        if oif is not None and gw is not None:
            on = bool(gw) and wan.name in onlink
            tables.append(RouteSpec(table, (Nexthop(gw, oif, 1, on),), metric_of(0, family),
                                    family=family))
            wan_hops[wan.name] = Nexthop(gw, oif, wan.weight, on)
            if wan.name in active:
                hops.append(wan_hops[wan.name])
        # needs no interface: it stays when the link (and the route via it) is gone
        tables.append(RouteSpec(table, (), UNREACHABLE_METRIC, UNREACHABLE, family=family))
    for route, policy in sorted(policy_routes(cfg).items()):
        table = cfg.table_base + route
        rules.append(RuleSpec(cfg.rule_priority + route, table, fwmark=cfg.route_mark(route),
                              fwmask=cfg.mark_mask, family=family))
        now = (sets or {}).get(route, ())
        set_hops = tuple(wan_hops[n] for n in wan_hops if n in now)
        if set_hops:
            tables.append(RouteSpec(table, set_hops, metric_of(0, family), family=family))
        if policy.fallback == "drop":
            tables.append(RouteSpec(table, (), UNREACHABLE_METRIC, UNREACHABLE, family=family))
    if hops:
        main: RouteSpec | None = RouteSpec(balance_table(cfg), tuple(hops),
                                           metric_of(cfg.route_metric, family), family=family)
    else:
        main = keep_main and replace(keep_main, table=balance_table(cfg),
                                     metric=metric_of(cfg.route_metric, family), family=family)
    sysctls = present_sysctls(sysctls_for(cfg) if family == 4 else sysctls6_for(cfg), present)
    return Desired(main, tuple(tables), tuple(sorted(rules)), sysctls, family)


HASH_POLICY = {"l3": "0", "l4": "1", "src": "3"}
"""`hash:` -> fib_multipath_hash_policy (3: the custom hash of the fields sysctl)."""
SRC_IP_ONLY = "1"
"""fib_multipath_hash_fields for `hash: src`: bit 0 (FIB_MULTIPATH_HASH_FIELD_SRC_IP),
the source address only, in decimal as the kernel reads it back."""


def hash_fields_sysctl(family: int) -> str:
    """The path of IP version `family`'s fib_multipath_hash_fields (Linux 5.14 and
    later: `hash: src` needs it)."""
    return f"net/ipv{family}/fib_multipath_hash_fields"


def hash_sysctls(mode: str, family: int) -> list[tuple[str, str]]:
    """IP version `family`'s multipath hash sysctls for `hash: <mode>`.  ``src`` (every
    connection of one client on one WAN) writes the fields before the policy that
    reads them; ``l3`` and ``l4`` leave the fields alone."""
    policy = (f"net/ipv{family}/fib_multipath_hash_policy", HASH_POLICY[mode])
    return [(hash_fields_sysctl(family), SRC_IP_ONLY), policy] if mode == "src" else [policy]


def present_sysctls(sysctls: Iterable[tuple[str, str]],
                    present: Collection[str] | None) -> tuple[tuple[str, str], ...]:
    """`sysctls` without the per-interface ones of interfaces not in `present` (None:
    all kept).  A missing interface has no sysctl directory; once it appears, its
    link event reconciles and its sysctls are written."""
    if present is None:
        return tuple(sysctls)
    out = []
    for path, value in sysctls:
        parts = path.split("/")     # net/ipv4/conf/<interface>/<name>
        if len(parts) == 5 and parts[2] == "conf" and parts[3] not in ("all", "default") \
                and parts[3] not in present:
            continue
        out.append((path, value))
    return tuple(out)


def sysctls6_for(cfg: Config) -> tuple[tuple[str, str], ...]:
    """The IPv6 sysctls ecmpd sets for the WANs of an IPv6 plane's config `cfg`.

    IPv6 forwarding has one switch, ``conf/all/forwarding`` (the per-interface value
    only selects host or router behaviour).  A forwarding interface ignores router
    advertisements unless ``accept_ra`` is 2: it is set on the WANs that learn their
    gateway (``gateway6: auto``), before forwarding goes on.  The multipath hash has its
    own IPv6 sysctls."""
    out: list[tuple[str, str]] = [(f"net/ipv6/conf/{w.interface}/accept_ra", "2")
                                  for w in cfg.wans if w.gateway is None]
    out.append(("net/ipv6/conf/all/forwarding", "1"))
    out += hash_sysctls(cfg.hash, 6)
    out += [(f"net/ipv6/conf/{w.interface}/ignore_routes_with_linkdown", "1")
            for w in cfg.wans]
    return tuple(out)


def sysctls_for(cfg: Config) -> tuple[tuple[str, str], ...]:
    """The sysctls ecmpd sets (paths under /proc/sys), per interface where possible."""
    out = hash_sysctls(cfg.hash, 4)
    for iface in cfg.lan_interfaces:
        out.append((f"net/ipv4/conf/{iface}/forwarding", "1"))
    for wan in cfg.wans:
        out.append((f"net/ipv4/conf/{wan.interface}/forwarding", "1"))
        out.append((f"net/ipv4/conf/{wan.interface}/rp_filter", "2"))
        out.append((f"net/ipv4/conf/{wan.interface}/ignore_routes_with_linkdown", "1"))
    return tuple(out)


def describe(d: Desired, cfg: Config | None = None) -> list[str]:
    """The plan as `ip route` / `ip rule`-like lines (for --dry-run and logs); with the
    config `cfg`, a ``#`` note per policy WAN set first (`policy_notes`)."""
    lines: list[str] = [] if cfg is None else policy_notes(d, cfg)
    v = "" if d.family == 4 else "-6 "
    if d.main is not None:
        lines.append(f"{v}{_multipath(d.main)}")
    else:
        lines.append(f"{v}route default: none (no usable WAN)")
    for t in d.tables:
        if t.kind == UNREACHABLE:
            lines.append(f"{v}route unreachable default table {t.table} metric {t.metric}")
        elif len(t.nexthops) > 1:       # a policy WAN set's
            lines.append(f"{v}{_multipath(t)}")
        else:
            h = t.nexthops[0]
            lines.append(f"{v}route default table {t.table} {_via(h)}oif {h.oif}")
    for r in d.rules:
        if r.suppress_prefixlen is not None:
            what = f"from all lookup main suppress_prefixlength {r.suppress_prefixlen}"
        elif r.fwmark is None and r.src is None:
            what = f"from all lookup {r.table}"
        elif r.fwmark is not None:
            what = f"from all fwmark {r.fwmark:#x}/{r.fwmask:#x} lookup {r.table}"
        else:
            what = f"from {r.src} lookup {r.table}"
        lines.append(f"{v}rule {r.priority}: {what}")
    for path, value in d.sysctls:
        lines.append(f"sysctl {path.replace('/', '.')} = {value}")
    return lines


def _multipath(r: RouteSpec) -> str:
    hops = " ".join(f"nexthop {_via(h)}oif {h.oif} weight {h.weight}" for h in r.nexthops)
    return f"route default table {r.table} metric {r.metric} {hops}"


def policy_notes(d: Desired, cfg: Config) -> list[str]:
    """One ``#`` line per policy WAN set of `cfg` in `d`: its policies, WANs, fallback,
    mark and table, and where its new connections go now."""
    out = []
    for route, first in policy_routes(cfg).items():
        table = cfg.table_base + route
        names = [p.label for p in cfg.policies if p.route == route]
        who = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        kinds = {t.kind for t in d.tables if t.table == table}
        now = ("its WANs" if UNICAST in kinds else
               "dropped: no usable WAN" if UNREACHABLE in kinds else
               "balanced like unmatched traffic: no usable WAN")
        out.append(f"# {cfg.version_prefix(d.family)}policy set {route} ({who}): use "
                   f"{', '.join(first.use)}, fallback {first.fallback}; mark "
                   f"{cfg.route_mark(route):#x}, table {table}: {now}")
    return out


def _via(h: Nexthop) -> str:
    if not h.gateway:
        return ""
    return f"via {h.gateway} onlink " if h.onlink else f"via {h.gateway} "


# ---- ownership numbers, and moving from one set of them to another ------------------

@dataclass(frozen=True)
class Owned:
    """The numbers by which ecmpd recognises its kernel objects, and the WAN ids and
    policy routes that have a table under them (see the module docstring for what they
    own).

    Two configs with the same `numbers()` own the same objects; a change of any of them
    (a reload, or a restart with another config) must hand the objects over, or the old
    ones are orphaned: nobody recognises them any more.
    """

    route_proto: int
    route_metric: int
    table_base: int
    rule_priority: int
    nft_table: str = "ecmpd"
    mark_mask: int = 0x00FF0000
    ids: tuple[int, ...] = ()
    """WAN ids and policy WAN sets' `route` values (sorted): their tables are
    ``table_base + id``, their fwmark rules at ``rule_priority + id``."""

    @classmethod
    def of(cls, cfg: "Config | Owned") -> "Owned":
        """The numbers of a config (an `Owned` is returned as it is)."""
        if isinstance(cfg, Owned):
            return cfg
        ids = {w.id for w in cfg.wans} | set(policy_routes(cfg))
        return cls(cfg.route_proto, cfg.route_metric, cfg.table_base, cfg.rule_priority,
                   cfg.nft_table, cfg.mark_mask, tuple(sorted(ids)))

    def for_family(self, family: int) -> "Owned":
        """These numbers as IP version `family`'s routes have them in the kernel (an
        IPv6 route metric of 0 is 1024: `metric_of`)."""
        m = metric_of(self.route_metric, family)
        return self if m == self.route_metric else replace(self, route_metric=m)

    def numbers(self) -> tuple[int, int, int, int, str, int]:
        """What identifies the objects (the ids only say which tables are in use)."""
        return (self.route_proto, self.route_metric, self.table_base, self.rule_priority,
                self.nft_table, self.mark_mask)

    def routing_numbers(self) -> tuple[int, int, int, int]:
        """The numbers that recognise routes and rules (`reloadplan.owned_by`'s)."""
        return (self.route_proto, self.route_metric, self.table_base, self.rule_priority)

    def table_range(self) -> range:
        """Tables ``base .. base + 255`` (those of them in `RESERVED_TABLES` excepted:
        see `owns_table`)."""
        return range(self.table_base, self.table_base + 256)

    def owns_table(self, table: int) -> bool:
        """Whether `table` can be one of ecmpd's (never main, local, default or 0)."""
        return table in self.table_range() and table not in RESERVED_TABLES

    def rule_range(self) -> range:
        return range(self.rule_priority, self.rule_priority + RULE_SPAN)

    def wan_tables(self) -> tuple[int, ...]:
        """The multipath table, then the tables of the WAN ids and policy routes, in id
        order."""
        return (self.table_base, *(self.table_base + i for i in self.ids))

    def to_json(self) -> dict:
        return {"route_proto": self.route_proto, "route_metric": self.route_metric,
                "table_base": self.table_base, "rule_priority": self.rule_priority,
                "nft_table": self.nft_table, "mark_mask": self.mark_mask,
                "ids": list(self.ids)}

    @classmethod
    def from_json(cls, d: Mapping) -> "Owned":
        """The inverse of `to_json`: numbers that a valid config could hold, or
        ValueError naming the first that no config could (TypeError/KeyError on a wrong
        shape).  Nothing read from disk may name an object ecmpd could not own."""
        fields: dict[str, Any] = {}
        for key, parse in _PARSERS.items():
            try:
                fields[key] = parse(d[key])
            except Bad as exc:
                raise ValueError(f"{key}: {exc}") from None
        ids = d.get("ids", [])
        if not isinstance(ids, list) or any(type(i) is not int or not 1 <= i <= 255 for i in ids):
            raise ValueError("ids: not a list of table ids (1..255)")
        owned = cls(fields["route_proto"], fields["route_metric"], fields["table_base"],
                    fields["rule_priority"], fields["nft_table"], fields["mark_mask"],
                    tuple(sorted(set(ids))))
        if reserved := [t for t in owned.wan_tables() if t in RESERVED_TABLES]:
            raise ValueError(f"table {reserved[0]} is one of the kernel's own tables")
        return owned


    def problem(self) -> str | None:
        """Why no valid config could hold these numbers (None: one could)."""
        try:
            Owned.from_json(self.to_json())
        except (KeyError, TypeError, ValueError) as exc:
            return str(exc)
        return None


_PARSERS = {f.name: schema.parser_of(Config, f.name) for f in dataclass_fields(Owned)
            if f.name != "ids"}
"""The config's own parsers of the ownership numbers (`ecmpd.schema`'s)."""


Routes = Mapping[tuple[int, int], RouteSpec]
"""(table, metric) → route, as `routing.Actual.routes`."""


def translate(routes: Routes, rules: Iterable[RuleSpec], old: Owned, new: Owned,
              family: int = 4) -> Desired:
    """What is installed under `old` (`routes`, `rules`), renumbered to `new`: the same
    WAN ids, nexthops, selectors and order, in the new tables, rule priorities and main
    metric.  A table (a WAN's or a policy WAN set's) whose id `new` does not have (when
    `new.ids` is known) or that would land on a reserved table is left out.  The multipath route moves to `new`'s
    multipath table (from `old`'s, or from table main, where earlier versions kept it)."""
    def new_table(t: int) -> int | None:
        i = t - old.table_base
        n = new.table_base + i
        if n in RESERVED_TABLES or n not in new.table_range() or (
                new.ids and i != 0 and i not in new.ids):
            return None
        return n

    tables: list[RouteSpec] = []
    old_main = routes.get((old.table_base, old.route_metric)) or \
        routes.get((MAIN_TABLE, old.route_metric))
    main = old_main and replace(old_main, table=new.table_base, metric=new.route_metric)
    for (table, metric), spec in sorted(routes.items()):
        if table in (MAIN_TABLE, old.table_base):
            continue
        if (n := new_table(table)) is not None:
            tables.append(replace(spec, table=n))
    out: list[RuleSpec] = []
    for r in rules:
        prio = r.priority - old.rule_priority + new.rule_priority
        if r.table == MAIN_TABLE:
            out.append(replace(r, priority=prio))
        elif (n := new_table(r.table)) is not None:
            out.append(replace(r, priority=prio, table=n))
    return Desired(main, tuple(tables), tuple(sorted(set(out))), family=family)


@dataclass(frozen=True)
class Step:
    """One netlink change of a handover.  `op`: ``route`` (replace: a route with the same
    table, prefix and metric is swapped atomically), ``unroute`` (delete, matching
    `proto` too), ``rule`` (add), ``unrule`` (delete)."""

    op: str
    route: RouteSpec | None = None
    rule: RuleSpec | None = None
    proto: int = 0

    def __str__(self) -> str:
        if self.route is not None:
            r = self.route
            return f"{self.op} table {r.table} metric {r.metric} proto {self.proto} {r.kind}"
        return f"{self.op} {self.rule}"


def plan_handover(routes: Routes, rules: Iterable[RuleSpec], old: Owned, new: Owned,
                  target: Desired) -> list[Step]:
    """Steps from the objects installed under `old` (`routes`, `rules`) to `target`
    (under `new`), making before breaking: at every step a packet finds a route.

    * The new ``lookup main suppress_prefixlength 0`` rule comes first and the old one
      goes last: every fwmark/from rule always has one before it (replies to the LAN
      carry a WAN's mark and must still reach the connected routes).
    * The multipath table is id 0 here (``table_base + 0``), handled like a WAN's: its
      new route and rule come before the old rule and route go.  A multipath route in
      table main (where earlier versions kept it) goes last.
    * Per id: its new table's routes, then its new rules, then its old rules go,
      then its old table's routes that the target does not reuse.  When the table ranges
      overlap (tables.base moved by less than 256), a new table may be another WAN's old
      one: the WANs are taken in the order that empties such a table (of its rules)
      before it is filled: descending ids when the base grows, ascending when it shrinks.
    """
    rules = set(rules)
    target_rules = set(target.rules)
    new_tables = [*target.tables, *([target.main] if target.main is not None else [])]
    target_keys = {(t.table, t.metric) for t in new_tables}
    delta = new.table_base - old.table_base
    ids = ({t - old.table_base for t, _ in routes if t != MAIN_TABLE}
           | {r.table - old.table_base for r in rules if r.table != MAIN_TABLE}
           | {t.table - new.table_base for t in new_tables}
           | {r.table - new.table_base for r in target_rules if r.table != MAIN_TABLE})
    steps: list[Step] = []
    steps += [Step("rule", rule=r) for r in sorted(target_rules - rules)
              if r.table == MAIN_TABLE]
    for i in sorted(ids, reverse=delta > 0):
        tn, to = new.table_base + i, old.table_base + i
        steps += [Step("route", route=t, proto=new.route_proto)
                  for t in new_tables if t.table == tn]
        steps += [Step("rule", rule=r) for r in sorted(target_rules - rules) if r.table == tn]
        steps += [Step("unrule", rule=r) for r in sorted(rules - target_rules) if r.table == to]
        steps += [Step("unroute", route=s, proto=old.route_proto)
                  for (t, m), s in sorted(routes.items())
                  if t == to and t != MAIN_TABLE and (t, m) not in target_keys]
    old_main = routes.get((MAIN_TABLE, old.route_metric))
    if old_main is not None:
        steps.append(Step("unroute", route=old_main, proto=old.route_proto))
    steps += [Step("unrule", rule=r) for r in sorted(rules - target_rules)
              if r.table == MAIN_TABLE]
    return steps
