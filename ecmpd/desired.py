"""Desired routing state: config + what the daemon knows now → plain data.  Pure.

ecmpd's routing objects, all of them recognisable as its own:

* table main: ``default proto <ours> metric <m>`` — the weighted multipath route over
  the WANs that take new flows;
* table ``base + id`` per WAN: ``default via <gateway> dev <wan> proto <ours>`` and,
  below it, ``unreachable default proto <ours> metric 4294967295``: when the WAN's route
  is gone or ignored (link down, ``ignore_routes_with_linkdown=1``), a packet sent from
  the WAN's address or carrying its mark gets EHOSTUNREACH instead of falling through
  to table main and leaving by another WAN (a probe must only ever test its own WAN);
* ip rules, priorities ``P .. P+511`` (P = ``rules.priority``):
  ``P``: ``lookup main suppress_prefixlength 0`` (marked packets still reach connected
  and more specific routes: the LAN, the WAN subnets), ``P+id``: ``fwmark <wan
  mark>/<mask> lookup <wan table>``, ``P+256+id``: ``from <wan address> lookup <wan
  table>`` (the router's replies and the prober's probes leave by that WAN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Config

MAIN_TABLE = 254
RULE_SPAN = 512
UNREACHABLE_METRIC = 0xFFFFFFFF
"""Metric of the `unreachable` default in each WAN table: below any real route there."""
UNICAST, UNREACHABLE = "unicast", "unreachable"


@dataclass(frozen=True, order=True)
class Nexthop:
    """One gateway of a route; `weight` is the kernel weight (1..256)."""

    gateway: str
    oif: int
    weight: int = 1


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

    def hops(self) -> set[tuple[str, int]]:
        """(gateway, oif) of every nexthop."""
        return {(h.gateway, h.oif) for h in self.nexthops}

    def same_as(self, other: "RouteSpec") -> bool:
        """Equal as the kernel keeps them (a single nexthop carries no weight)."""
        if (self.table, self.metric, self.kind) != (other.table, other.metric, other.kind):
            return False
        if len(self.nexthops) == 1 and len(other.nexthops) == 1:
            a, b = self.nexthops[0], other.nexthops[0]
            return (a.gateway, a.oif) == (b.gateway, b.oif)
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


@dataclass(frozen=True)
class Desired:
    """Everything ecmpd wants in the kernel's routing, as plain data."""

    main: RouteSpec | None
    """The multipath route, or None when no WAN can carry it."""
    tables: tuple[RouteSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = field(default=())


def rule_range(cfg: Config) -> range:
    """The ip rule priorities ecmpd owns."""
    return range(cfg.rule_priority, cfg.rule_priority + RULE_SPAN)


def table_range(cfg: Config) -> range:
    """The routing tables ecmpd owns."""
    return range(cfg.table_base + 1, cfg.table_base + 256)


def build_desired(
    cfg: Config,
    links: dict[str, int],
    addresses: dict[str, str],
    active: set[str],
    keep_main: RouteSpec | None = None,
) -> Desired:
    """The desired routing state.

    `links` maps interface names to indexes (a missing interface gets no route via it,
    only its table's unreachable default),
    `addresses` maps WAN names to the router's IPv4 address on them, `active` holds the
    WANs whose nexthop belongs in the multipath route.  When no WAN is active,
    `keep_main` (the route in the kernel now) is kept rather than leaving no route.
    """
    tables: list[RouteSpec] = []
    rules: list[RuleSpec] = [RuleSpec(cfg.rule_priority, MAIN_TABLE, suppress_prefixlen=0)]
    hops: list[Nexthop] = []
    for wan in cfg.wans:
        table = cfg.table_of(wan)
        rules.append(RuleSpec(cfg.rule_priority + wan.id, table,
                              fwmark=cfg.mark_of(wan), fwmask=cfg.mark_mask))
        if wan.name in addresses:
            rules.append(RuleSpec(cfg.rule_priority + 256 + wan.id, table,
                                  src=addresses[wan.name]))
        oif = links.get(wan.interface)
        if oif is not None:
            nh = Nexthop(str(wan.gateway), oif, wan.weight)
            tables.append(RouteSpec(table, (Nexthop(nh.gateway, oif, 1),), 0))
            if wan.name in active:
                hops.append(nh)
        # needs no interface: it stays when the link (and the route via it) is gone
        tables.append(RouteSpec(table, (), UNREACHABLE_METRIC, UNREACHABLE))
    main = RouteSpec(MAIN_TABLE, tuple(hops), cfg.route_metric) if hops else keep_main
    return Desired(main, tuple(tables), tuple(sorted(rules)), sysctls_for(cfg))


def sysctls_for(cfg: Config) -> tuple[tuple[str, str], ...]:
    """The sysctls ecmpd sets (paths under /proc/sys), per interface where possible."""
    out: list[tuple[str, str]] = [
        ("net/ipv4/fib_multipath_hash_policy", "1" if cfg.hash == "l4" else "0"),
    ]
    for iface in cfg.lan_interfaces:
        out.append((f"net/ipv4/conf/{iface}/forwarding", "1"))
    for wan in cfg.wans:
        out.append((f"net/ipv4/conf/{wan.interface}/forwarding", "1"))
        out.append((f"net/ipv4/conf/{wan.interface}/rp_filter", "2"))
        out.append((f"net/ipv4/conf/{wan.interface}/ignore_routes_with_linkdown", "1"))
    return tuple(out)


def describe(d: Desired) -> list[str]:
    """The plan as `ip route` / `ip rule`-like lines (for --dry-run and logs)."""
    lines: list[str] = []
    if d.main is not None:
        hops = " ".join(f"nexthop via {h.gateway} oif {h.oif} weight {h.weight}"
                        for h in d.main.nexthops)
        lines.append(f"route default table main metric {d.main.metric} {hops}")
    else:
        lines.append("route default table main: none (no usable WAN)")
    for t in d.tables:
        if t.kind == UNREACHABLE:
            lines.append(f"route unreachable default table {t.table} metric {t.metric}")
            continue
        h = t.nexthops[0]
        lines.append(f"route default table {t.table} via {h.gateway} oif {h.oif}")
    for r in d.rules:
        if r.suppress_prefixlen is not None:
            what = f"from all lookup main suppress_prefixlength {r.suppress_prefixlen}"
        elif r.fwmark is not None:
            what = f"from all fwmark {r.fwmark:#x}/{r.fwmask:#x} lookup {r.table}"
        else:
            what = f"from {r.src} lookup {r.table}"
        lines.append(f"rule {r.priority}: {what}")
    for path, value in d.sysctls:
        lines.append(f"sysctl {path.replace('/', '.')} = {value}")
    return lines
