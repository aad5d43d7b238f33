"""Events and their effects: `step(state, event, now) -> (state, effects)`.  Pure.

Every change of what the daemon knows is an event: the watcher reports kernel events
(links, addresses, ecmpd's routes and rules, other programs' default routes, the nft
ruleset, a resync after lost events), the probers their rounds, the control socket an administrator's disable or
enable, the daemon itself the route found at start and a reloaded config.  `step` turns
one event and the current `State` into the next `State` and the effects the daemon must
carry out: log lines, a reconcile, a conntrack flush, a prober reset.

Rules:
* a WAN whose link stops being OK is DOWN at once; one whose link is OK again starts
  RISING, and its prober starts afresh (its old probes may live on in conntrack);
* a WAN whose address changes or goes loses the connections NATed to the old one
  (they cannot work any more); one whose learned gateway moves keeps its health: its
  routes and probes follow the new gateway at once;
* a health transition that changes whether the WAN is in the route, or ends DOWN, asks
  for an urgent reconcile (timed as a reaction); DOWN also flushes the WAN's connections
  (after that reconcile);
* when an IP version's carrying tier moves (`ecmpd.tiers`) it is logged, and the WANs
  with ``failback: flush`` a lower tier took new flows back from are flushed;
* a WAN whose nexthop the kernel refuses (`NexthopsRefused`, from a reconcile) is DOWN
  with the kernel's reason until a reconcile installs it or its nexthop changes; the
  other WANs' routes are installed without it;
* `Resynced` replaces links and addresses whole: it supersedes every event before it;
* IPv4 and IPv6 are judged apart: an event about one version (a probe round, an
  address, a default route, a refused nexthop) runs in that version's plane
  (`state.plane`) and changes only it; a link event, a resync, a reload or a disable
  runs in both.  A version's DOWN flushes only that version's connections of a
  dual-stack WAN (one kernel request by mark for a WAN of one version, or once its
  other version is DOWN too);
  log lines of an IPv6 plane, and of a WAN carrying both, name the version;
* a probe target that becomes one of the router's own addresses (by any event: an
  address added anywhere, a learned gateway, a reload) is logged once, as a WARNING;
  the daemon's prober counts it as failed (`state.own_targets`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Union

from . import hastep, health, lan, ownaddr, tiers
from .desired import MAIN_TABLE, RouteSpec, rule_range, table_range
from .health import Health, Phase, Verdict
from .logsetup import NOTICE
from .configmodel import FAMILIES, Config
from .effects import (Effect, Flush, ForgetAddress, Log, Reconcile, ResetProber, Result,
                      Transition)
from .state import (Addresses, Default, Defaults, Link, Refusal, State, WanState, active,
                    address, gateway, hop_of, link_ok, link_problem, merge, observed,
                    own_by_wan, plane, project, refusal, remember_gateways, usable)

if TYPE_CHECKING:  # made on reloads only: not imported at start
    from .reloadplan import ReloadPlan


# ---- events ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkChanged:
    """RTM_NEWLINK (`link` set) or RTM_DELLINK (`link` None) of interface `name`."""

    name: str
    link: Link | None


@dataclass(frozen=True)
class AddressesChanged:
    """An address of IP version `family` was added to or removed from interface
    `index`; `addresses` is that version's re-read table, `local` every address of the
    router re-read (None: it could not be read, keep the last one)."""

    index: int
    removed: bool
    addresses: Addresses | None
    local: ownaddr.Local | None = None
    family: int = 4


@dataclass(frozen=True)
class RouteChanged:
    """A route was added, changed or deleted in `table`; `proto` (None: unknown; not
    compared: it refines the report) tells another program's route from ecmpd's."""

    table: int
    dst_len: int
    proto: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DefaultsChanged:
    """Another program's default route in `table` changed; `defaults` is that table's
    re-read (None: it could not be read, keep the last one)."""

    table: int
    defaults: tuple[Default, ...] | None
    family: int = 4


@dataclass(frozen=True)
class DefaultsRead:
    """Other programs' default routes of every table re-read (after a link or address
    went: the kernel drops the routes that depended on it without telling anyone)."""

    defaults: Defaults
    family: int = 4


@dataclass(frozen=True)
class RuleChanged:
    """An ip rule at `priority` was added or deleted."""

    priority: int


@dataclass(frozen=True)
class RulesetChanged:
    """The nftables ruleset changed (or its events were lost)."""


@dataclass(frozen=True)
class Resynced:
    """Links, addresses and (None: unchanged) default routes re-read, after events
    were lost."""

    links: Mapping[str, Link]
    addresses: Addresses
    defaults: Defaults | None = None
    local: ownaddr.Local | None = None
    addresses6: Addresses | None = None
    """None: unchanged."""
    defaults6: Defaults | None = None


@dataclass(frozen=True)
class NexthopsRefused:
    """A reconcile pass's findings: WAN name -> the kernel's refusal of its nexthop, for
    every WAN whose nexthop it refused; a WAN left out had its nexthop taken (or not
    tried)."""

    refused: Mapping[str, Refusal]
    family: int = 4


@dataclass(frozen=True)
class ProbeRound:
    """A prober's verdict on one round of WAN `name`'s IP version `family`."""

    name: str
    verdict: Verdict
    reason: str = ""
    family: int = 4


@dataclass(frozen=True)
class SetDisabled:
    """The administrator disabled (or enabled) WAN `name`."""

    name: str
    disabled: bool


@dataclass(frozen=True)
class Adopted:
    """ecmpd's multipath route of IP version `family` found in the kernel at start
    (None: none), and the routes found in its policy WAN sets' tables."""

    main: RouteSpec | None
    family: int = 4
    sets: tuple[RouteSpec, ...] = ()


@dataclass(frozen=True)
class Reloaded:
    """A new valid config, and the plan `reloadplan.plan_reload` made for it."""

    cfg: Config
    plan: ReloadPlan


Event = Union[LinkChanged, AddressesChanged, RouteChanged, DefaultsChanged, DefaultsRead,
              RuleChanged, RulesetChanged, Resynced, ProbeRound, SetDisabled, Adopted,
              Reloaded, NexthopsRefused, "hastep.SetRole", "hastep.SplitBrainChecked"]


# ---- effects: ecmpd.effects (re-exported here) -------------------------------------

# ---- transitions ----------------------------------------------------------------------

def set_health(st: State, name: str, new: Health, now: float,
               before: State | None = None) -> Result:
    """WAN `name`'s health becomes `new`: the log line and what a transition needs.
    `before`: the state the WAN's usability is compared with (default `st`; the state
    before the links changed when they are what made the health change)."""
    ws = st.wan(name)
    old = ws.health
    if new == old:
        return st, ()           # a steady WAN's round: the state stays the same object
    if not health.transitioned(old, new):
        return st.with_wan(name, replace(ws, health=new)), ()
    after = st.with_wan(name, replace(ws, health=new, since=now))
    was, now_ = name in active(before or st), name in active(after)
    if was == now_ and new.state is Phase.DOWN and usable(before or st, name):
        level, what = logging.WARNING, f" (was standing by in tier {st.cfg.wan(name).tier})"
    elif was == now_:
        level, what = logging.INFO, ""
    elif was:
        level, what = logging.WARNING, " (leaves the route)"
    elif old.state is Phase.INIT:
        level, what = logging.INFO, " (joins the route)"
    else:
        level, what = NOTICE, " (back in the route)"
    effects: list[Effect] = [Log(level, f"{name}: {health.describe(old, new)}{what}")]
    if was != now_ or new.state is Phase.DOWN:
        effects.append(Reconcile(urgent=True))
    if new.state is Phase.DOWN:
        wan = st.cfg.wan(name)
        effects.append(Flush(st.cfg.mark_of(wan), st.cfg.mark_mask, name))
    effects.append(Transition(name, new.state.value, old.state.value, new.reason, now,
                              now - ws.since if ws.since else None, now_))
    return after, tuple(effects)


def _links(before: State, after: State, reasons: dict[str, str], now: float) -> Result:
    """Links, addresses or default routes changed from `before` to `after`; `reasons`:
    WAN -> why.  A WAN whose link check flipped goes DOWN at once, or starts RISING with
    a fresh prober; one whose address changed forgets the connections NATed to the old
    one; one whose gateway moved follows it (a reconcile)."""
    st, effects = after, []
    for name, why in reasons.items():
        wan = st.cfg.wan(name)
        old_addr, new_addr = address(before, wan), address(after, wan)
        if old_addr is not None and old_addr != new_addr:
            effects.append(ForgetAddress(name, old_addr))
        ok = link_ok(after, wan)
        old_gw, new_gw = gateway(before, wan), gateway(after, wan)
        if old_gw != new_gw and wan.gateway is None:
            effects.append(Log(logging.INFO if old_gw is None or new_gw is None else NOTICE,
                               f"{name}: gateway {_gw(old_gw, wan)} -> {_gw(new_gw, wan)}",
                               f"gateway {name}"))
            effects.append(Reconcile(urgent=ok and link_ok(before, wan)))
        if ok == link_ok(before, wan):
            problem = link_problem(after, wan)
            if not ok and problem and problem != link_problem(before, wan):
                # still DOWN, for another reason now (an address back, no gateway yet)
                ws = st.wan(name)
                st = st.with_wan(name, replace(ws, health=replace(ws.health, reason=problem)))
            continue
        ws = st.wan(name)
        if not ok:
            st, more = set_health(st, name, health.carrier_lost(ws.health, why), now, before)
        else:
            st, more = set_health(st, name, health.carrier_back(ws.health, why), now, before)
            more += (ResetProber(name, address(after, wan)),)
        effects += more
    return st, tuple(effects)


def _gw(gw: str | None, wan) -> str:
    return "none" if gw is None else gw or f"dev {wan.interface}"


def _link_changed(st: State, ev: LinkChanged, now: float) -> Result:
    links = dict(st.links)
    old = links.get(ev.name)
    reasons: dict[str, str] = {}
    reconcile = ev.link is None
    if ev.link is None:
        links.pop(ev.name, None)
    else:
        # a renamed interface keeps its index: forget its old name
        for other in [n for n, l in links.items() if l.index == ev.link.index and n != ev.name]:
            del links[other]
            for w in st.cfg.wans:
                if w.interface == other:
                    reasons[w.name] = f"interface renamed to {ev.name}"
                    reconcile = True
        links[ev.name] = ev.link
    new = ev.link
    why = ("interface removed" if new is None else "link down" if not new.up else
           "carrier lost" if not new.carrier else "carrier up")
    for w in st.cfg.wans:
        if w.interface == ev.name:
            reasons[w.name] = why
            # a WAN link's up flag and index feed the desired state (an admin down drops
            # its routes without any RTM_DELROUTE): their change reconciles
            if old is None or new is None or (old.up, old.index) != (new.up, new.index):
                reconcile = True
    after, effects = _links(st, remember_gateways(replace(st, links=links)), reasons, now)
    return after, effects + ((Reconcile(),) if reconcile else ())


def _addresses_changed(st: State, ev: AddressesChanged, now: float) -> Result:
    after = st if ev.addresses is None else remember_gateways(replace(st,
                                                                      addresses=ev.addresses))
    if ev.local is not None:
        after = replace(after, local=ev.local)
    why = "address removed" if ev.removed else "address added"
    reasons = {w.name: why for w in st.cfg.wans
               if (link := st.links.get(w.interface)) and link.index == ev.index}
    after, effects = _links(st, after, reasons, now)
    return after, effects + (Reconcile(),)


def _defaults_changed(st: State, ev: DefaultsChanged, now: float) -> Result:
    if ev.defaults is None or st.defaults.get(ev.table, ()) == ev.defaults:
        return st, ()       # unchanged: a burst of another program's re-adds costs nothing
    defaults = {t: d for t, d in st.defaults.items() if t != ev.table}
    if ev.defaults:
        defaults[ev.table] = ev.defaults
    return _new_defaults(st, defaults, now)


def _new_defaults(st: State, defaults: Defaults, now: float) -> Result:
    after = remember_gateways(replace(st, defaults=defaults))
    return _links(st, after, {w.name: link_problem(after, w) or "gateway learned"
                              for w in st.cfg.wans if w.gateway is None}, now)


def _resynced(st: State, ev: Resynced, now: float) -> Result:
    after = remember_gateways(replace(st, links=ev.links, addresses=ev.addresses,
                                      defaults=st.defaults if ev.defaults is None
                                      else ev.defaults,
                                      local=st.local if ev.local is None else ev.local))
    after, effects = _links(st, after, {w.name: "resync" for w in st.cfg.wans}, now)
    return after, effects + (Reconcile(),)


def _nexthops_refused(st: State, ev: NexthopsRefused, now: float) -> Result:
    """Each WAN's refusal becomes the pass's finding; one whose refusal starts or ends
    changes like a link (DOWN at once, or RISING with a fresh prober)."""
    changed = {w.name: replace(ws, refused=r) for w in st.cfg.wans
               if (r := ev.refused.get(w.name)) != (ws := st.wan(w.name)).refused}
    if not changed:
        return st, ()
    after = replace(st, wans={**st.wans, **changed})
    effects: list[Effect] = []
    reasons = {}
    for name in changed:
        wan = st.cfg.wan(name)
        was, why = refusal(st, wan), refusal(after, wan)
        if why and why != was:
            effects.append(Log(logging.WARNING, f"{name}: {why}: the other WANs' routes are "
                                                f"installed without it"))
        elif was and not why:
            effects.append(Log(NOTICE, f"{name}: the kernel takes its route now"))
        reasons[name] = why or "route installed"
    after, more = _links(st, after, reasons, now)
    for name in changed:
        # DOWN for this reason, whatever made it DOWN before (the probes, refused too)
        ws = after.wan(name)
        if (why := refusal(after, after.cfg.wan(name))) and ws.health.reason != why:
            after = after.with_wan(name, replace(ws, health=replace(ws.health, reason=why)))
    return after, (*effects, *more)


def _ours(cfg: Config, ev: RouteChanged) -> bool:
    """Whether a route event may concern ecmpd's routes: a default route in its tables,
    or one of its proto in main (a delete reports the deleted route's proto).  Other
    programs' default routes in main are no reconcile's business (`routing._add_main`
    skips them): churn of a DHCP client's route costs no pass."""
    if ev.dst_len != 0:
        return False
    if ev.table in table_range(cfg):
        return True
    return ev.table == MAIN_TABLE and ev.proto in (None, cfg.route_proto)


def _adopted(st: State, ev: Adopted) -> Result:
    """At start: WANs in the routes found are adopted, those of the policy WAN sets'
    routes too (a set of standby WANs only, which the multipath route never holds,
    keeps its route instead of waiting for their first verdict); the others are DOWN
    when the multipath route was found."""
    if ev.main is None and not ev.sets:
        return st, ()
    hops = set().union(*(r.hops() for r in (ev.main, *ev.sets) if r is not None))
    wans = {}
    for w in st.cfg.wans:
        ws = st.wan(w.name)
        if link_ok(st, w):
            if hop_of(st, w) in hops:
                ws = replace(ws, adopted=True)
            elif ev.main is not None:
                ws = replace(ws, health=Health(Phase.DOWN, 0,
                                               "not in the route found at start"))
        wans[w.name] = ws
    return (replace(st, wans=wans),
            (Log(logging.INFO, "found ecmpd's route in the kernel: adopting it"),))


def _reloaded(st: State, ev: Reloaded, now: float) -> Result:
    """Unchanged WANs keep their state; new and re-addressed ones start INIT (DOWN
    without a usable link) and must earn their place with a verdict."""
    plan, old = ev.plan, st.cfg
    effects: list[Effect] = [
        Log(logging.WARNING, f"{name}: id {before} -> {after} (ids default to the position "
                             f"in `wans`): its connections are reset; give WANs explicit ids "
                             f"to avoid this")
        for name, before, after in plan.renumbered]
    base = replace(st, cfg=ev.cfg, wans={})
    wans = {}
    for w in ev.cfg.wans:
        ws = st.wans.get(w.name)
        if ws is None or w.name in plan.rejudged:
            ws = observed(base, w, WanState(since=now, disabled=ws.disabled if ws else False))
        wans[w.name] = ws
    effects += [Flush(mark, old.mark_mask) for mark in plan.stale_marks]
    after = remember_gateways(replace(base, wans=wans))
    after = replace(after, wans={w.name: observed(after, w, after.wan(w.name))
                                 for w in ev.cfg.wans})
    return after, (*effects, Reconcile())


_ONE_PLANE = (ProbeRound, AddressesChanged, DefaultsChanged, DefaultsRead, NexthopsRefused,
              Adopted)
"""Events about one IP version (their `family`); the others concern both."""


def step(st: State, ev: Event, now: float) -> Result:
    """The state after `ev` and the effects to carry out; `now`: epoch seconds.  The
    HA role's events change only the role (`ecmpd.hastep`); every event's effects are
    those the role carries out (`hastep.gate`)."""
    if isinstance(ev, hastep.EVENTS):
        after, effects = hastep.step(st, ev, now)
    else:
        after, effects = _step_wans(st, ev, now)
        if isinstance(ev, Reloaded):
            after, more = hastep.reloaded(st, after, now)
            effects += more
    return after, hastep.gate(after, effects)


def _step_wans(st: State, ev: Event, now: float) -> Result:
    """`step` of an event about the WANs, links, routes or config."""
    if isinstance(ev, ProbeRound) and _steady(st, ev):
        return st, ()
    if isinstance(ev, _ONE_PLANE):
        after, effects = _in_plane(st, ev.family, ev, now)
    elif isinstance(ev, (LinkChanged, Reloaded, SetDisabled, Resynced)):
        # each plane steps from the snapshot before the event (the links it changes are
        # shared: a plane stepped after another would see them changed already)
        after, effects = st, ()
        for family in FAMILIES:
            one = ev
            if isinstance(ev, Resynced) and family == 6:
                one = replace(ev, defaults=ev.defaults6, addresses=(
                    st.addresses6 if ev.addresses6 is None else ev.addresses6))
            after, more = _in_plane(st, family, one, now, into=after)
            effects += more
        if isinstance(ev, Reloaded):
            after = replace(after, cfg=ev.cfg)
            effects += _nat_flushes(st.cfg, ev)
        if not isinstance(ev, SetDisabled):
            effects += _lan_effects(st, after)
    else:
        after, effects = _step(st, ev, now)
    if after is not st:
        effects = _whole_flushes(after, effects) + _tier_effects(st, after)
    effects = tuple(dict.fromkeys(effects))   # both planes may ask for the same reconcile
    if isinstance(ev, (ProbeRound, SetDisabled)) or after is st:
        return after, effects         # neither moves an address, a target or a gateway
    logs = ownaddr.changes(own_by_wan(st), own_by_wan(after))
    return after, effects + tuple(Log(level, message) for level, message in logs)


def _nat_flushes(old: Config, ev: Reloaded) -> tuple[Effect, ...]:
    """The log line and flush of each kept WAN's IP version whose `nat:` changed: its
    connections of that version alone (unnamed: never widened to both versions, and
    mark-checked by the plan), after the reconcile that writes the new NAT rules."""
    out: list[Effect] = []
    for name, family in ev.plan.nat_changed:
        wan, prev = ev.cfg.wan(name), old.wan(name)
        out += [Log(logging.INFO, f"{wan.label(family)}: nat {prev.nat_mode(family)} -> "
                                  f"{wan.nat_mode(family)}: removing its IPv{family} "
                                  "connections from conntrack"),
                Flush(ev.cfg.mark_of(wan), ev.cfg.mark_mask, None, family)]
    return tuple(out)


def _lan_effects(before: State, after: State) -> tuple[Effect, ...]:
    """The log lines of the LAN interfaces whose problem changed, and a reconcile when
    one appeared (its sysctls are written then: `lan`)."""
    out: tuple[Effect, ...] = tuple(Log(level, msg) for level, msg in lan.changes(before, after))
    return out + ((Reconcile(),) if lan.appeared(before, after) else ())


def _whole_flushes(after: State, effects: tuple[Effect, ...]) -> tuple[Effect, ...]:
    """A dual-stack WAN's flush of one version becomes a flush of both when its other
    version is DOWN too (a dead ISP, a lost carrier): one kernel request by mark instead
    of a dump and one delete per entry (seconds for thousands, see `conntrack`); the
    other version's entries went, or go, with its own DOWN anyway."""
    def whole(e: Effect) -> Effect:
        if not isinstance(e, Flush) or e.family is None or e.name is None:
            return e
        other = (after.wans6 if e.family == 4 else after.wans).get(e.name)
        return (replace(e, family=None) if other is not None
                and other.health.state is Phase.DOWN else e)
    return tuple(whole(e) for e in effects)


def _tier_effects(before: State, after: State) -> tuple[Effect, ...]:
    """The log line of each IP version whose carrying tier moved, and the flushes of the
    WANs with ``failback: flush`` that a lower tier took new flows back from (after the
    reconcile that moves the route, as every flush)."""
    out: list[Effect] = []
    cfg = after.cfg
    for change in tiers.changes(before, after):
        level = NOTICE if change.back else logging.WARNING
        out += [Log(level, change.message(cfg)), Reconcile(urgent=True)]
        for name in change.flush:
            wan = cfg.wan(name)
            out.append(Flush(cfg.mark_of(wan), cfg.mark_mask, name,
                             change.family if len(wan.families) > 1 else None))
    return tuple(out)


def _steady(st: State, ev: ProbeRound) -> bool:
    """The round leaves its WAN's health as it is (most rounds: a steady WAN's), so the
    snapshot stays the same object; checked without projecting a plane."""
    ws = (st.wans if ev.family == 4 else st.wans6).get(ev.name)
    try:
        p = st.cfg.wan(ev.name).probe
    except KeyError:
        return True
    return ws is None or health.step(ws.health, ev.verdict, p.down, p.up, ev.reason) == ws.health


def _in_plane(st: State, family: int, ev: Event, now: float,
              into: State | None = None) -> Result:
    """`ev` stepped in IP version `family`'s plane of `st`, put back into `into` (default
    `st`), and its effects made that version's."""
    into = st if into is None else into
    p = plane(st, family)
    if isinstance(ev, Reloaded):
        ev = replace(ev, cfg=project(ev.cfg, family))
    after, effects = _step(p, ev, now)
    return (into if after is p else merge(into, after),
            tuple(_versioned(st.cfg, family, e) for e in effects))


def _versioned(cfg: Config, family: int, e: Effect) -> Effect:
    """Effect `e` of IP version `family`'s plane, made that version's: a DOWN's flush
    and a prober reset concern only it; a WAN's log line names the version when the
    WAN carries both, or only IPv6."""
    if isinstance(e, Flush) and e.name is not None:
        # a WAN of one version flushes by mark in one kernel request (the kernel's
        # flush takes both versions); a dual-stack WAN deletes that version's entries
        wan = cfg.find(e.name)
        return replace(e, family=family) if wan is not None and len(wan.families) > 1 else e
    if isinstance(e, (ResetProber, Transition)):
        return replace(e, family=family)
    if isinstance(e, Log):
        name, sep, rest = e.message.partition(": ")
        if sep and (wan := cfg.find(name)) is not None:
            return replace(e, message=f"{wan.label(family)}: {rest}")
    return e


def _step(st: State, ev: Event, now: float) -> Result:
    cfg = st.cfg
    if isinstance(ev, ProbeRound):
        ws = st.wans.get(ev.name)
        if ws is None or not link_ok(st, wan := cfg.wan(ev.name)):
            return st, ()         # a WAN without link is DOWN: no round changes that
        p = wan.probe
        return set_health(st, ev.name,
                          health.step(ws.health, ev.verdict, p.down, p.up, ev.reason), now)
    if isinstance(ev, LinkChanged):
        return _link_changed(st, ev, now)
    if isinstance(ev, AddressesChanged):
        return _addresses_changed(st, ev, now)
    if isinstance(ev, RouteChanged):
        return st, (Reconcile(),) if _ours(cfg, ev) else ()
    if isinstance(ev, DefaultsChanged):
        return _defaults_changed(st, ev, now)
    if isinstance(ev, DefaultsRead):
        return _new_defaults(st, ev.defaults, now)
    if isinstance(ev, RuleChanged):
        return st, (Reconcile(),) if ev.priority in rule_range(cfg) else ()
    if isinstance(ev, RulesetChanged):
        return st, (Reconcile(),)
    if isinstance(ev, Resynced):
        return _resynced(st, ev, now)
    if isinstance(ev, SetDisabled):
        if ev.name not in st.wans:
            return st, ()
        after = st.with_wan(ev.name, replace(st.wan(ev.name), disabled=ev.disabled))
        level, what = logging.INFO, "enabled by the administrator"
        if ev.disabled and usable(st, ev.name) and not active(after):
            level, what = logging.WARNING, ("disabled by the administrator, and no other "
                                            "WAN is usable: its nexthop leaves the route")
        elif ev.disabled:
            what = "disabled by the administrator (its nexthop leaves the route)"
        ws = st.wan(ev.name)
        effects: tuple[Effect, ...] = (Log(level, f"{ev.name}: {what}"), Reconcile())
        if ev.disabled != ws.disabled:
            phase = ws.health.state.value
            effects += (Transition(ev.name, "disabled" if ev.disabled else phase,
                                   phase if ev.disabled else "disabled", what, now, None,
                                   ev.name in active(after)),)
        return after, effects
    if isinstance(ev, Adopted):
        return _adopted(st, ev)
    if isinstance(ev, Reloaded):
        return _reloaded(st, ev, now)
    if isinstance(ev, NexthopsRefused):
        return _nexthops_refused(st, ev, now)
    raise TypeError(f"not an event: {ev!r}")
