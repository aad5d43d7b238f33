"""What one reconcile wants: the desired kernel state of each IP version, derived from
one snapshot (`ecmpd.state.State`) and the routes read from the kernel with it.  Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .configmodel import FAMILIES, Config
from .desired import (MAIN_TABLE, Desired, RouteSpec, balance_table, build_desired, metric_of,
                      policy_routes)
from .state import (State, active, address, gateways, hop_of, keeps_last_route, onlink,
                    plane)


@dataclass(frozen=True)
class Decision:
    """What one reconcile wants, derived from one snapshot and the kernel routes: per
    IP version, the desired state, the usable WANs and whether the last route is kept."""

    state: State
    desired: Desired
    active: frozenset[str]
    kept: bool
    """All IPv4 WANs down: the kernel's route is kept."""
    desired6: Desired = field(default_factory=lambda: Desired(None, family=6))
    active6: frozenset[str] = frozenset()
    kept6: bool = False

    def of(self, family: int) -> tuple[Desired, frozenset[str], bool]:
        """(desired, active, kept) of IP version `family`."""
        return ((self.desired, self.active, self.kept) if family == 4 else
                (self.desired6, self.active6, self.kept6))

    def in_route(self, name: str, family: int = 4) -> bool:
        """Whether WAN `name`'s nexthop of IP version `family` is in the desired
        multipath route of that version."""
        p = plane(self.state, family)
        if name not in p.wans:
            return False
        hop = hop_of(p, p.cfg.wan(name))
        main = self.of(family)[0].main
        return hop is not None and main is not None and hop in main.hops()


def decide(st: State, kernel_main: RouteSpec | None,
           kernel_main6: RouteSpec | None = None) -> Decision:
    """The desired kernel state for `st`; `kernel_main` (`kernel_main6`) is ecmpd's
    IPv4 (IPv6) multipath route as read from the kernel with `st` (kept when no WAN of
    that version is usable), less the nexthops of WANs the administrator disabled: the
    administrator's word overrides keeping the last route.  Each policy WAN set's route
    goes over the WANs `active` among its own (`policy_sets`)."""
    out = []
    for family, kernel in ((4, kernel_main), (6, kernel_main6)):
        p = plane(st, family)
        kernel = without_disabled(p, kernel)
        cfg = p.cfg
        # the kernel refuses routes via an interface that is administratively down
        links = {name: link.index for name, link in p.links.items() if link.up}
        addrs = {w.name: a for w in cfg.wans if (a := address(p, w))}
        act = active(p)
        # a WAN without an address has no route in its table (a gateway it cannot
        # reach is refused by the kernel): only the unreachable default
        gws = {n: g for n, g in gateways(p).items() if n in addrs}
        on = {w.name for w in cfg.wans if onlink(p, w)}
        desired = build_desired(cfg, links, addrs, set(act), keep_main=kernel, gateways=gws,
                                onlink=on, family=family, sets=policy_sets(p),
                                present=p.links)
        out += [desired, act, keeps_last_route(p, kernel)]
    return Decision(st, *out)


def without_disabled(p: State, route: RouteSpec | None) -> RouteSpec | None:
    """`route` without the nexthops of plane `p`'s disabled WANs (None: none is left)."""
    off = {hop for w in p.cfg.wans if p.wan(w.name).disabled
           and (hop := hop_of(p, w)) is not None}
    if route is None or not off:
        return route
    kept = tuple(h for h in route.nexthops if (h.gateway, h.oif) not in off)
    return replace(route, nexthops=kept) if kept else None


def stranded(d: Decision, name: str) -> tuple[int, ...]:
    """The IP versions whose ecmpd route would be gone if WAN `name` were disabled now
    (`d`: the decision in force): its nexthop is in the route and no other WAN's would
    be (none usable; none left of a kept route)."""
    st = d.state
    off = replace(st.wan(name), disabled=True) if name in st.wans else None
    off6 = replace(st.wans6[name], disabled=True) if name in st.wans6 else None
    after = replace(st, wans={**st.wans, name: off} if off else st.wans,
                    wans6={**st.wans6, name: off6} if off6 else st.wans6)
    new = decide(after, d.desired.main, d.desired6.main)
    return tuple(f for f in FAMILIES if d.in_route(name, f) and new.of(f)[0].main is None)


def policy_sets(p: State) -> dict[int, frozenset[str]]:
    """Each policy WAN set's `route` -> the WANs of its `use` that take its new flows
    in plane `p`: usable, of the lowest tier among them (a WAN of `use` that does not
    carry `p`'s IP version is not in that version's set)."""
    return {route: active(p, policy.use) for route, policy in policy_routes(p.cfg).items()}


def set_routes(routes: Mapping[tuple[int, int], RouteSpec], cfg: Config,
               family: int = 4) -> tuple[RouteSpec, ...]:
    """The routes of ecmpd's policy WAN sets' tables among `routes` of IP version
    `family` read from the kernel (a set whose WANs are all down has none)."""
    metric = metric_of(0, family)
    return tuple(r for route in sorted(policy_routes(cfg))
                 if (r := routes.get((cfg.table_base + route, metric))) is not None)


def main_route(routes: Mapping[tuple[int, int], RouteSpec], cfg: Config,
               family: int = 4) -> RouteSpec | None:
    """ecmpd's multipath route among `routes` of IP version `family` read from the
    kernel: in its table (at `route.metric`), or where an earlier version kept it, in
    table main."""
    metric = metric_of(cfg.route_metric, family)
    return (routes.get((balance_table(cfg), metric))
            or routes.get((MAIN_TABLE, metric)))
