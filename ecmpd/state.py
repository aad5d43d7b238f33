"""What the daemon knows, as immutable snapshots, and what follows from one.  Pure.

`State` is the whole of it: the config in force, the links and IPv4 addresses netlink
reported, and per WAN its health, since when, whether the administrator disabled it and
whether it was adopted from ecmpd's route found in the kernel at start.  The daemon owns
the one current `State` and replaces it whole (`ecmpd.events.step`); nothing mutates one.

Everything else is derived from a single snapshot, never stored beside it, so no two
facts can be read at different moments: a WAN's address, carrier and link check, whether
it is usable, the active set, the desired kernel state, and whether the last route is kept
because no WAN is usable (from the snapshot and the kernel route read with it).

Invariants (kept by `ecmpd.events.step`):
* a WAN whose link is not OK (no interface, link down, no carrier, no IPv4 address) is DOWN;
* `wans` follows the order of `cfg.wans` and holds exactly its names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from . import health
from .desired import MAIN_TABLE, Desired, RouteSpec, build_desired
from .health import Health, State as HealthState
from .model import Config, Wan

Addresses = Mapping[int, tuple[tuple[str, int], ...]]
"""Interface index -> its IPv4 (address, prefix length) pairs, primary first."""

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

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> "Link":
        """From `routing.link_state`'s {index, up, carrier}."""
        return cls(int(state["index"]), bool(state["up"]), bool(state["carrier"]))


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


@dataclass(frozen=True)
class State:
    """One snapshot of everything the daemon knows."""

    cfg: Config
    links: Mapping[str, Link] = field(default_factory=lambda: _EMPTY)
    """Interface name -> link, every interface of the namespace."""
    addresses: Addresses = field(default_factory=lambda: _EMPTY)
    wans: Mapping[str, WanState] = field(default_factory=lambda: _EMPTY)
    """WAN name -> what was decided about it, in config order."""

    def __post_init__(self) -> None:
        for name in ("links", "addresses", "wans"):
            object.__setattr__(self, name, frozen(getattr(self, name)))

    def wan(self, name: str) -> WanState:
        """The WAN called `name` (KeyError when there is none)."""
        return self.wans[name]

    def with_wan(self, name: str, ws: WanState) -> "State":
        """This state with WAN `name` replaced by `ws`."""
        return replace(self, wans={**self.wans, name: ws})


def initial(cfg: Config, links: Mapping[str, Link], addresses: Addresses,
            disabled: Iterable[str], now: float) -> State:
    """The state at start: every WAN INIT (DOWN without a usable link), not adopted."""
    off = set(disabled)
    st = State(cfg, links, addresses)
    return replace(st, wans={w.name: observed(st, w, WanState(since=now,
                                                             disabled=w.name in off))
                             for w in cfg.wans})


# ---- derived from one snapshot -----------------------------------------------------------

def address(st: State, wan: Wan) -> str | None:
    """The router's primary IPv4 address on the WAN's interface."""
    link = st.links.get(wan.interface)
    addrs = st.addresses.get(link.index, ()) if link else ()
    return addrs[0][0] if addrs else None


def gateway(st: State, wan: Wan) -> str:
    """The WAN's gateway: the configured one (a DHCP-learned one would be observed state)."""
    return str(wan.gateway)


def carrier(st: State, wan: Wan) -> bool:
    """The WAN's interface exists, is up and has carrier."""
    link = st.links.get(wan.interface)
    return bool(link and link.carrier)


def link_problem(st: State, wan: Wan) -> str | None:
    """Why the WAN's link is not usable, or None when it is (carrier and an address)."""
    if wan.interface not in st.links:
        return "no such interface"
    if not carrier(st, wan):
        return "no carrier"
    if address(st, wan) is None:
        return "no IPv4 address"
    return None


def link_ok(st: State, wan: Wan) -> bool:
    """Carrier up and an IPv4 address on the WAN's interface."""
    return link_problem(st, wan) is None


def observed(st: State, wan: Wan, ws: WanState) -> WanState:
    """`ws` made consistent with the link: DOWN (with the reason) when it is not OK."""
    why = link_problem(st, wan)
    return ws if why is None else replace(ws, health=Health(HealthState.DOWN, 0, why))


def usable(st: State, name: str) -> bool:
    """Whether WAN `name`'s nexthop belongs in the multipath route now."""
    ws = st.wans.get(name)
    if ws is None or ws.disabled or not health.takes_new_flows(ws.health.state):
        return False
    if ws.health.state is HealthState.INIT and not ws.adopted:
        return False
    return link_ok(st, st.cfg.wan(name))


def active(st: State) -> frozenset[str]:
    """The usable WANs."""
    return frozenset(n for n in st.wans if usable(st, n))


def awaiting_verdict(st: State) -> list[str]:
    """WANs with a usable link that wait for their first probe verdict (not adopted)."""
    return [n for n, ws in st.wans.items()
            if ws.health == Health() and not ws.adopted and link_ok(st, st.cfg.wan(n))]


def keeps_last_route(st: State, main: RouteSpec | None) -> bool:
    """No WAN is usable, yet ecmpd's route (`main`, read from the kernel with `st`) is
    there: it is kept rather than leaving the LAN without a default route."""
    return main is not None and not active(st)


def hop_of(st: State, wan: Wan) -> tuple[str, int] | None:
    """(gateway, interface index) of the WAN's nexthop (None: no such interface)."""
    link = st.links.get(wan.interface)
    return (gateway(st, wan), link.index) if link else None


@dataclass(frozen=True)
class Decision:
    """What one reconcile wants, derived from one snapshot and the kernel route."""

    state: State
    desired: Desired
    active: frozenset[str]
    kept: bool
    """All WANs down: the kernel's route is kept."""

    def in_route(self, name: str) -> bool:
        """Whether WAN `name`'s nexthop is in the desired multipath route."""
        hop = hop_of(self.state, self.state.cfg.wan(name))
        main = self.desired.main
        return hop is not None and main is not None and hop in main.hops()


def decide(st: State, kernel_main: RouteSpec | None) -> Decision:
    """The desired kernel state for `st`; `kernel_main` is ecmpd's route in table main
    as read from the kernel with `st` (kept when no WAN is usable)."""
    cfg = st.cfg
    # the kernel refuses routes via an interface that is administratively down
    links = {name: link.index for name, link in st.links.items() if link.up}
    addrs = {w.name: a for w in cfg.wans if (a := address(st, w))}
    act = active(st)
    desired = build_desired(cfg, links, addrs, set(act), keep_main=kernel_main)
    return Decision(st, desired, act, keeps_last_route(st, kernel_main))


def main_route(routes: Mapping[tuple[int, int], RouteSpec], cfg: Config) -> RouteSpec | None:
    """ecmpd's route in table main (at `route.metric`) among `routes` read from the kernel."""
    return routes.get((MAIN_TABLE, cfg.route_metric))
