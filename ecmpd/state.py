"""What the daemon knows, as immutable snapshots, and what follows from one.  Pure.

`State` is the whole of it: the config in force, the links, IPv4 addresses, every local
address of the router (both families) and other programs' default routes netlink reported, and per WAN its health, since when, whether the administrator disabled it and
whether it was adopted from ecmpd's route found in the kernel at start.  The daemon owns
the one current `State` and replaces it whole (`ecmpd.events.step`); nothing mutates one.

Everything else is derived from a single snapshot, never stored beside it, so no two
facts can be read at different moments: a WAN's address, gateway (fixed, or learned for
`gateway: auto`), carrier and link check, whether
it is usable, the active set, the desired kernel state, and whether the last route is kept
because no WAN is usable (from the snapshot and the kernel route read with it).

IPv4 and IPv6 are judged apart (an ISP's IPv6 may break while its IPv4 works): each
WAN has one `WanState` per version it carries, in `wans` (IPv4) and `wans6` (IPv6), and
the addresses and other programs' default routes of each version are kept apart too.
Every rule below is written once, for one version: `plane(st, 6)` projects a snapshot
onto IPv6 (its `wans`, `addresses` and `defaults` are the IPv6 ones, its config's WANs
are those carrying IPv6, with `gateway6` as their gateway and their IPv6 targets), and
`merge` puts a plane's result back.  A plane's `family` says which version it is.

Invariants (kept by `ecmpd.events.step`):
* a WAN whose link is not OK for a version (no interface, link down, no carrier, no
  address of that version, no gateway known, its nexthop refused by the kernel) is DOWN
  in that version; carrier loss takes both down at once;
* `wans` follows the order of `cfg.wans` and holds exactly the names of the WANs that
  carry IPv4, `wans6` those that carry IPv6.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from . import health, ownaddr
from .desired import MAIN_TABLE, RouteSpec
from .health import Health, Phase
from .configha import floating_set
from .role import HaState, start_role
from .configmodel import FAMILIES, Config, Wan

Addresses = Mapping[int, tuple[tuple, ...]]
"""Interface index -> its IPv4 addresses, primary first: (address, prefix length), or
(address, prefix length, peer) on a point-to-point link with a peer address."""

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def frozen(items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> Mapping[Any, Any]:
    """A read-only copy (an existing read-only mapping is shared, not copied)."""
    if isinstance(items, MappingProxyType):
        return items
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class Link:
    """A network interface as netlink reports it."""

    index: int
    up: bool
    """Administratively up (IFF_UP)."""
    carrier: bool
    """Up and with carrier (IFF_LOWER_UP)."""
    pointopoint: bool = False
    """A point-to-point link (IFF_POINTOPOINT: ppp, tun, raw-ip wwan): its nexthop is
    the device, no gateway needed."""

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> "Link":
        """From `interfaces.link_state`'s {index, up, carrier, pointopoint}."""
        return cls(int(state["index"]), bool(state["up"]), bool(state["carrier"]),
                   bool(state.get("pointopoint", False)))


@dataclass(frozen=True, order=True)
class Default:
    """One nexthop of another program's default route (a DHCP client's, pppd's, ...):
    where a `gateway: auto` WAN learns its gateway."""

    metric: int
    oif: int
    gateway: str
    """The gateway address; ``""``: the device itself (``default dev ppp0``)."""
    onlink: bool = False
    """Installed ``onlink`` (RTNH_F_ONLINK): the gateway is outside the interface's
    subnets (a /32 lease) and ecmpd's routes via it need the flag too."""

Defaults = Mapping[int, tuple[Default, ...]]
"""Routing table -> the default routes in it that are not ecmpd's."""

Hop = tuple[str, int, bool]
"""A WAN's nexthop as installed: (gateway, interface index, onlink)."""


@dataclass(frozen=True)
class Refusal:
    """The kernel refused the WAN's nexthop `hop` (its route update failed: `error`).
    It holds while the WAN's nexthop is `hop`; the next reconcile that installs it
    forgets it."""

    hop: Hop
    error: str


@dataclass(frozen=True)
class WanState:
    """What the daemon decided about one WAN (what it observed lives in `State`)."""

    health: Health = Health()
    since: float = 0.0
    """Epoch seconds of the last health transition."""
    disabled: bool = False
    """Disabled by the administrator (`ecmpctl disable`)."""
    adopted: bool = False
    """In ecmpd's route found in the kernel at start: usable while still INIT (no flap).
    A WAN that is not adopted is usable only after a probe verdict."""
    learned: str | None = None
    """`gateway: auto`: the gateway its interface's default route named last.  It stays
    in use while no default route names one (a DHCP client deletes its route before it
    adds the renewed one; the probes judge a gateway that is really gone) and is
    forgotten with the interface or its address (`remember_gateways`)."""
    learned_onlink: bool = False
    """The `learned` gateway's route was installed ``onlink``."""
    refused: Refusal | None = None
    """The last reconcile found the kernel refusing this WAN's nexthop."""


@dataclass(frozen=True)
class State:
    """One snapshot of everything the daemon knows."""

    cfg: Config
    links: Mapping[str, Link] = field(default_factory=lambda: _EMPTY)
    """Interface name -> link, every interface of the namespace."""
    addresses: Addresses = field(default_factory=lambda: _EMPTY)
    wans: Mapping[str, WanState] = field(default_factory=lambda: _EMPTY)
    """WAN name -> what was decided about it, in config order."""
    defaults: Defaults = field(default_factory=lambda: _EMPTY)
    """Other programs' default routes via interfaces (read only when a WAN learns its
    gateway: `gateway: auto`)."""
    local: ownaddr.Local = frozenset()
    """Every address of the router, any interface, IPv4 and IPv6 (normalized): a probe
    target among them is answered by the router itself."""
    wans6: Mapping[str, WanState] = field(default_factory=lambda: _EMPTY)
    """WAN name -> what was decided about its IPv6, for the WANs carrying IPv6."""
    addresses6: Addresses = field(default_factory=lambda: _EMPTY)
    """Interface index -> its global IPv6 addresses (address, prefix length), the one
    ecmpd uses first (link-local ones are no source for NAT66 or from-rules)."""
    defaults6: Defaults = field(default_factory=lambda: _EMPTY)
    """Other programs' IPv6 default routes (router advertisements', DHCPv6's, pppd's)."""
    family: int = 4
    """The IP version `wans`, `addresses` and `defaults` describe: 4 in the daemon's
    snapshot, 6 in its IPv6 plane (`plane`)."""
    ha: HaState = HaState()
    """The HA role and the split-brain checks' findings (`ecmpd.role`; both planes
    share it)."""

    def __post_init__(self) -> None:
        for name in ("links", "addresses", "wans", "defaults", "wans6", "addresses6",
                     "defaults6"):
            object.__setattr__(self, name, frozen(getattr(self, name)))
        if not isinstance(self.local, frozenset):
            object.__setattr__(self, "local", frozenset(self.local))

    def wan(self, name: str) -> WanState:
        """The WAN called `name` (KeyError when there is none)."""
        return self.wans[name]

    def with_wan(self, name: str, ws: WanState) -> "State":
        """This state with WAN `name` replaced by `ws`."""
        return replace(self, wans={**self.wans, name: ws})


def initial(cfg: Config, links: Mapping[str, Link], addresses: Addresses,
            disabled: Iterable[str], now: float, defaults: Defaults | None = None,
            local: ownaddr.Local = frozenset(), addresses6: Addresses | None = None,
            defaults6: Defaults | None = None) -> State:
    """The state at start: every WAN INIT in each version it carries (DOWN without a
    usable link), not adopted."""
    off = set(disabled)
    st = State(cfg, links, addresses, defaults=defaults or {}, local=local,
               addresses6=addresses6 or {}, defaults6=defaults6 or {},
               ha=HaState(start_role(cfg), now))
    for family in FAMILIES:
        p = plane(st, family)
        p = remember_gateways(replace(p, wans={w.name: WanState(since=now,
                                                                disabled=w.name in off)
                                               for w in p.cfg.wans}))
        p = replace(p, wans={w.name: observed(p, w, p.wan(w.name)) for w in p.cfg.wans})
        st = merge(st, p)
    return st


# ---- one IP version's plane ------------------------------------------------------------

_PROJECTED: dict[tuple[int, int], tuple[Config, Config]] = {}
"""(id(config), version) -> (config, its projection): a config is projected once."""


def project(cfg: Config, family: int) -> Config:
    """`cfg` as IP version `family` sees it: the WANs carrying it, each with that
    version's gateway in `gateway`, `families` just (family,) and only that version's
    probe targets.  The IPv4 projection of a config without IPv6 is the config itself."""
    hit = _PROJECTED.get((id(cfg), family))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    wans = tuple(replace(w, gateway=w.fixed_gateway(family), families=(family,),
                         probe=replace(w.probe, targets=w.probe.family_targets(family)))
                 for w in cfg.wans if w.has(family))
    out = cfg if wans == cfg.wans else replace(cfg, wans=wans)
    if len(_PROJECTED) > 64:
        _PROJECTED.clear()
    _PROJECTED[(id(cfg), family)] = (cfg, out)
    return out


def plane(st: State, family: int) -> State:
    """The snapshot as IP version `family` sees it (see the module docstring)."""
    if family == st.family:
        cfg = project(st.cfg, family)
        return st if cfg is st.cfg else replace(st, cfg=cfg)
    assert st.family == 4, "a plane is projected from the whole snapshot"
    return replace(st, cfg=project(st.cfg, 6), wans=st.wans6, addresses=st.addresses6,
                   defaults=st.defaults6, wans6={}, addresses6={}, defaults6={}, family=6)


def merge(st: State, p: State) -> State:
    """The whole snapshot `st` with plane `p`'s findings put back (its links and local
    addresses are the whole router's)."""
    if p.family == 4:
        return replace(st, links=p.links, local=p.local, wans=p.wans, addresses=p.addresses,
                       defaults=p.defaults)
    return replace(st, links=p.links, local=p.local, wans6=p.wans, addresses6=p.addresses,
                   defaults6=p.defaults)


def version(wan: Wan) -> int:
    """The IP version of a WAN of a plane's config (it carries exactly one)."""
    return wan.families[0] if len(wan.families) == 1 else 4


# ---- derived from one snapshot -----------------------------------------------------------

def address(st: State, wan: Wan) -> str | None:
    """The router's primary address (of the plane's version) on the WAN's interface; in
    an HA pair never a floating address (the master holds it too: `configha.floating`),
    the router's own: its probes' source and what its masquerade uses."""
    link = st.links.get(wan.interface)
    addrs = st.addresses.get(link.index, ()) if link else ()
    if addrs and st.cfg.ha is not None:
        skip = floating_set(st.cfg)
        addrs = tuple(a for a in addrs if ownaddr.normal(a[0]) not in skip)
    return addrs[0][0] if addrs else None


def peer(st: State, wan: Wan) -> str | None:
    """The peer address of the WAN's point-to-point link (None: none, or not ptp)."""
    link = st.links.get(wan.interface)
    addrs = st.addresses.get(link.index, ()) if link else ()
    return addrs[0][2] if addrs and len(addrs[0]) > 2 else None


def gateway(st: State, wan: Wan) -> str | None:
    """The WAN's nexthop gateway: the fixed one; for `gateway: auto` the device (``""``)
    on a point-to-point link, else the gateway of the best (lowest metric, table main
    first) default route another program put via the interface, in any table; None
    while there is none."""
    if wan.gateway is not None:
        return str(wan.gateway)
    link = st.links.get(wan.interface)
    if link is None:
        return None
    if link.pointopoint:
        return ""
    best = _routed(st, link.index)
    if best is not None:
        return best.gateway
    ws = st.wans.get(wan.name)
    return ws.learned if ws is not None else None


def onlink(st: State, wan: Wan) -> bool:
    """Whether the WAN's learned gateway is on the link without a route to it (its
    default route was installed ``onlink``); a fixed gateway or a device never is."""
    link = st.links.get(wan.interface)
    if wan.gateway is not None or link is None or link.pointopoint:
        return False
    best = _routed(st, link.index)
    if best is not None:
        return bool(best.gateway) and best.onlink
    ws = st.wans.get(wan.name)
    return ws is not None and ws.learned is not None and ws.learned_onlink


def _routed(st: State, oif: int) -> Default | None:
    """The best default route via interface `oif` (lowest metric, table main first),
    among other programs' routes."""
    best = min(((d.metric, table != MAIN_TABLE, table, d)
                for table, ds in st.defaults.items() for d in ds if d.oif == oif),
               default=None)
    return best[3] if best is not None else None


def remember_gateways(st: State) -> State:
    """`st` with each `gateway: auto` WAN's `learned` gateway brought up to date: the
    one its best default route names, the last one while none does, none once the
    interface or its address is gone."""
    wans = dict(st.wans)
    for w in st.cfg.wans:
        ws = wans.get(w.name)
        if w.gateway is not None or ws is None:
            continue
        link = st.links.get(w.interface)
        learned, on = None, False
        if link is not None and address(st, w) is not None:
            best = _routed(st, link.index)
            learned, on = ((ws.learned, ws.learned_onlink) if best is None
                           else (best.gateway, best.onlink and bool(best.gateway)))
        if (learned, on) != (ws.learned, ws.learned_onlink):
            wans[w.name] = replace(ws, learned=learned, learned_onlink=on)
    return st if wans == dict(st.wans) else replace(st, wans=wans)


def probe_gateway(st: State, wan: Wan) -> str | None:
    """The address the probe target `gateway` means: the gateway, or on a
    point-to-point link the peer (None: unknown; the target is left out)."""
    return gateway(st, wan) or peer(st, wan)


def no_target(st: State, wan: Wan) -> str:
    """Why the probe target `gateway` means no address for the WAN (its only target)."""
    link, iface = st.links.get(wan.interface), wan.interface
    if gateway(st, wan) is None:
        return "no target to probe: the gateway is not known yet"
    if link is not None and link.pointopoint:
        return (f"no target to probe: {iface} is point-to-point without a peer address; "
                f"list probe targets beyond it")
    return (f"no target to probe: the default route via {iface} names no gateway "
            f"(default dev {iface}) and {iface} is not point-to-point; give the WAN a "
            f"gateway, or probe targets beyond it")


def probe_gateways(st: State) -> dict[str, str]:
    """WAN name -> the address `gateway` means for it, where known (the source the
    arrival counters leave out: the gateway's own answers prove nothing beyond it)."""
    return {w.name: g for w in st.cfg.wans if (g := probe_gateway(st, w))}


def probe_targets(st: State, wan: Wan) -> tuple[tuple[str, ...], int]:
    """The WAN's probe targets (`gateway` resolved) and quorum now."""
    gw = probe_gateway(st, wan)
    return wan.probe.resolved_targets(gw), wan.probe.resolved_quorum(gw)


def own_targets(st: State, wan: Wan) -> tuple[str, ...]:
    """The WAN's probe targets that are the router's own addresses (they count as
    failed: the router answers them itself)."""
    return ownaddr.own(st.local, probe_targets(st, wan)[0])


def own_by_wan(st: State) -> dict[str, tuple[str, ...]]:
    """WAN name -> its probe targets, of every IP version it carries, that are the
    router's own addresses (the snapshot `st` whole, not a plane)."""
    own: dict[str, tuple[str, ...]] = {}
    for family in FAMILIES:
        p = plane(st, family)
        for w in p.cfg.wans:
            own[w.name] = own.get(w.name, ()) + own_targets(p, w)
    return own


def gateways(st: State) -> dict[str, str]:
    """WAN name -> nexthop gateway, for the WANs whose gateway is known."""
    return {w.name: g for w in st.cfg.wans if (g := gateway(st, w)) is not None}


def carrier(st: State, wan: Wan) -> bool:
    """The WAN's interface exists, is up and has carrier."""
    link = st.links.get(wan.interface)
    return bool(link and link.carrier)


def link_condition(st: State, wan: Wan) -> str:
    """The WAN interface's condition in a word or two: "missing" (no such interface: a
    PPP session's interface is deleted when the session ends), "down" (administratively),
    "no carrier" or "up"."""
    link = st.links.get(wan.interface)
    if link is None:
        return "missing"
    return "up" if link.carrier else "no carrier" if link.up else "down"


def link_problem(st: State, wan: Wan) -> str | None:
    """Why the WAN's link is not usable, or None when it is (carrier, an address, a
    gateway, and a nexthop the kernel takes)."""
    if wan.interface not in st.links:
        return "interface missing"
    if not carrier(st, wan):
        return "no carrier"
    if address(st, wan) is None:
        return f"no IPv{version(wan)} address"
    if gateway(st, wan) is None:
        return "waiting for a gateway"
    return refusal(st, wan)


def full_hop(st: State, wan: Wan) -> Hop | None:
    """(gateway, interface index, onlink) of the WAN's nexthop (None: unknown)."""
    hop = hop_of(st, wan)
    return None if hop is None else (*hop, onlink(st, wan))


def refusal(st: State, wan: Wan) -> str | None:
    """Why the kernel refuses the WAN's nexthop as it is now (None: it does not, as far
    as the last reconcile that tried it found)."""
    ws = st.wans.get(wan.name)
    r = ws.refused if ws is not None else None
    if r is None or r.hop != full_hop(st, wan):
        return None
    gw, _, on = r.hop
    what = f"via {gw} dev {wan.interface}{' onlink' if on else ''}" if gw else \
        f"dev {wan.interface}"
    return f"the kernel refuses the route {what}: {r.error}"


def link_ok(st: State, wan: Wan) -> bool:
    """Carrier up, an IPv4 address on the WAN's interface and its gateway known."""
    return link_problem(st, wan) is None


def observed(st: State, wan: Wan, ws: WanState) -> WanState:
    """`ws` made consistent with the link: DOWN (with the reason) when it is not OK."""
    why = link_problem(st, wan)
    return ws if why is None else replace(ws, health=Health(Phase.DOWN, 0, why))


def usable(st: State, name: str) -> bool:
    """Whether WAN `name`'s nexthop belongs in the multipath route now."""
    ws = st.wans.get(name)
    if ws is None or ws.disabled or not health.takes_new_flows(ws.health.state):
        return False
    if ws.health.state is Phase.INIT and not ws.adopted:
        return False
    return link_ok(st, st.cfg.wan(name))


def carrying_tier(st: State, among: Collection[str] | None = None) -> int | None:
    """The tier that takes new flows: the lowest with a usable WAN, or with a WAN still
    waiting for its first verdict (a backup does not take new flows just because it
    answered first at start); None: none.  `among`: only these WANs count (a policy's
    `use`; names the plane does not have are left out); None: every WAN."""
    waiting = awaiting_verdict(st)
    return min((st.cfg.wan(n).tier for n in _among(st, among)
                if n in waiting or usable(st, n)), default=None)


def active(st: State, among: Collection[str] | None = None) -> frozenset[str]:
    """The WANs in the multipath route: the usable WANs of the carrying tier (the
    others' pinned flows go on by their marks and tables).  `among`: the same within
    these WANs alone (a policy's set, its tiers judged apart: `carrying_tier`)."""
    tier = carrying_tier(st, among)
    return frozenset(n for n in _among(st, among)
                     if st.cfg.wan(n).tier == tier and usable(st, n))


def _among(st: State, among: Collection[str] | None) -> list[str]:
    """The plane's WANs, or those of them named in `among`."""
    return list(st.wans) if among is None else [n for n in st.wans if n in among]


def awaiting_verdict(st: State) -> list[str]:
    """WANs with a usable link that wait for their first probe verdict (not adopted)."""
    return [n for n, ws in st.wans.items()
            if ws.health == Health() and not ws.adopted and link_ok(st, st.cfg.wan(n))]


def keeps_last_route(st: State, main: RouteSpec | None) -> bool:
    """No WAN is usable, yet ecmpd's route (`main`, read from the kernel with `st`) is
    there: it is kept rather than leaving the LAN without a default route."""
    return main is not None and not active(st)


def hop_of(st: State, wan: Wan) -> tuple[str, int] | None:
    """(gateway, interface index) of the WAN's nexthop (None: no such interface or no
    gateway known)."""
    link = st.links.get(wan.interface)
    gw = gateway(st, wan)
    return (gw, link.index) if link and gw is not None else None
