"""The status payload of `ecmpctl status`, rendered from one immutable `Snapshot`.

The daemon takes the snapshot at one moment (`ecmpd.daemon.Daemon.snapshot`): its state,
ecmpd's routes as the kernel has them right then (read back, not remembered), the
prober readings and the counters; conntrack counts are read just before.  `render` is
pure: every flag in the payload follows from that one snapshot, so none can contradict
another (e.g. "all WANs are down: keeping the last route" next to WANs that are UP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import configha, lan, ownaddr, role, state as st_mod
from .desired import Nexthop, RouteSpec, metric_of
from .configmodel import PROTOCOL_NAMES, Config, Policy
from .decision import policy_sets
from .health import Verdict
from .history import Summary, iso
from .judge import RoundResult
from .state import State


@dataclass(frozen=True)
class TargetReading:
    """One probe target over the prober's window (seconds; None before any sample)."""

    loss_pct: float | None = None
    rtt: float | None = None
    srtt: float | None = None
    rttvar: float | None = None


@dataclass(frozen=True)
class ProbeReading:
    """What a WAN's prober measured, copied out of it at snapshot time."""

    targets: Mapping[str, TargetReading]
    """In the order of the WAN's resolved targets."""
    timeout: float | None = None
    last: RoundResult | None = None
    rested: int = 0
    """Rounds rested on the other IP version's replies (`ecmpd.prober`)."""


class _Prober(Protocol):
    def window(self) -> Any: ...
    def rtt(self, address: str) -> tuple[float | None, float | None]: ...
    def timeout(self) -> float: ...
    def last(self) -> RoundResult | None: ...
    rested_total: int


def reading(prober: _Prober, targets: tuple[str, ...]) -> ProbeReading:
    """A copy of `prober`'s readings for `targets` (an `ecmpd.prober.Prober`)."""
    per = prober.window().per_target()
    out = {}
    for addr in targets:
        loss, rtt = per.get(addr, (None, None))
        srtt, rttvar = prober.rtt(addr)
        out[addr] = TargetReading(loss, rtt, srtt, rttvar)
    return ProbeReading(st_mod.frozen(out), prober.timeout(), prober.last(),
                        prober.rested_total)


@dataclass(frozen=True)
class Stats:
    """The daemon's counters."""

    reconciles: int = 0
    changes: int = 0
    nft_writes: int = 0
    events: int = 0
    """Kernel events the watcher read."""
    reactions: tuple[float, ...] = ()
    """Seconds from recent health decisions to the kernel's ack of the route change."""
    flushes: int = 0
    """Conntrack flushes of WANs that went DOWN."""
    resyncs: int = 0
    """Full resynchronisations after lost kernel events."""
    monitors: int = 0
    """``ecmpctl monitor`` clients connected."""


@dataclass(frozen=True)
class Snapshot:
    """Everything status shows, taken at one moment."""

    state: State
    main: RouteSpec | None
    """ecmpd's multipath route as the kernel has it (read with `state`)."""
    foreign_main: str | None = None
    stray: tuple[str, ...] = ()
    """Warnings about default routes with ecmpd's proto it does not own (`routing.stray_warnings`)."""
    connections: Mapping[str, int] = field(default_factory=dict)
    probes: Mapping[Any, ProbeReading] = field(default_factory=dict)
    """(WAN name, IP version) -> readings (a WAN without a prober yet has none); a plain
    WAN name means its IPv4 prober."""
    stats: Stats = Stats()
    pid: int = 0
    config_path: str = ""
    uptime: float = 0.0
    main6: RouteSpec | None = None
    """ecmpd's IPv6 multipath route as the kernel has it."""
    foreign_main6: str | None = None
    policy_packets: Mapping[int, int] = field(default_factory=dict)
    """Policy position -> packets its counter saw (new connections' first packets)."""
    history: Mapping[tuple[str, int], Summary] = field(default_factory=dict)
    """(WAN name, IP version) -> its downs in the last 24 h and its last down."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _family(snap: Snapshot, p: State, family: int, name: str,
            in_route: set[int]) -> dict[str, Any]:
    """WAN `name`'s fields of IP version `family` (a version it carries; `p`: that
    version's plane of the snapshot)."""
    cfg = p.cfg
    wan, ws = cfg.wan(name), p.wan(name)
    probe = snap.probes.get((name, family)) or (snap.probes.get(name) if family == 4 else None)
    last = probe.last if probe else None
    own = st_mod.own_targets(p, wan)
    return {
        # DISABLED (by the administrator) overrides; `health` is what the probes say
        "state": "disabled" if ws.disabled else ws.health.state.value,
        "health": ws.health.state.value,
        "since": ws.since,
        "since_iso": iso(ws.since) if ws.since else None,
        "reason": ws.health.reason,
        "last_round": last.reason if last else None,
        "verdict": last.verdict.value if last else None,
        # "probes late, traffic flowing" and the like: why a WAN is kept although its
        # probes are not answered in time
        "note": last.reason if last and last.verdict is Verdict.SLOW else None,
        "timeout_ms": _ms(probe.timeout) if probe else None,
        # rounds that sent nothing: the other IP version's replies proved the line
        "rested_rounds": probe.rested if probe else 0,
        # the gateway in use: fixed, or learned (`gateway: auto`; null while unknown, or
        # on a point-to-point link, whose nexthop is the interface itself)
        "gateway": st_mod.gateway(p, wan) or None,
        "gateway_source": "config" if wan.gateway is not None else "learned",
        "nexthop": _nexthop(st_mod.gateway(p, wan), wan.interface, st_mod.onlink(p, wan)),
        "address": st_mod.address(p, wan),
        # a nexthop via its interface is in the kernel's route right now, whatever the
        # daemon believes (a gateway the kernel still has from before counts)
        "active": (link := p.links.get(wan.interface)) is not None and link.index in in_route,
        # usable, but a lower tier takes new flows: probed, out of the route
        "standby": st_mod.usable(p, name) and name not in st_mod.active(p),
        "targets": {addr: {"loss_pct": None if t.loss_pct is None else round(t.loss_pct, 1),
                           "rtt_ms": _ms(t.rtt), "srtt_ms": _ms(t.srtt),
                           "rttvar_ms": _ms(t.rttvar),
                           # why a target counts as failed whatever it answers
                           "reason": ownaddr.reason(addr) if addr in own else None}
                    for addr, t in (probe.targets.items() if probe else ())},
        # since the daemon started (the history is in memory; the journal keeps more)
        **snap.history.get((name, family), Summary()).as_json(),
    }


def _wan(snap: Snapshot, planes: Mapping[int, State], name: str,
         in_route: dict[int, set[int]]) -> dict[str, Any]:
    """WAN `name`: its IPv4 fields at the top (the IPv6 ones on an IPv6-only WAN), each
    version it carries under ``ipv4`` / ``ipv6`` (null: not carried)."""
    st, cfg = snap.state, snap.state.cfg
    wan = cfg.wan(name)
    per = {f: _family(snap, planes[f], f, name, in_route[f]) if wan.has(f) else None
           for f in (4, 6)}
    top = per[4] or per[6]
    assert top is not None
    disabled = (st.wans.get(name) or st.wans6[name]).disabled
    out = {k: v for k, v in top.items()}
    out.update({
        "interface": wan.interface,
        "families": [f"ipv{f}" for f in wan.families],
        "point_to_point": bool((lk := st.links.get(wan.interface)) and lk.pointopoint),
        "weight": wan.weight,
        "tier": wan.tier,
        "failback": wan.failback,
        "nat": {f"ipv{f}": " ".join(filter(None, (wan.nat_mode(f),
                                                   str(wan.snat_address(f) or ""))))
                for f in wan.families},
        "disabled": disabled,
        "carrier": st_mod.carrier(st, wan),
        "link": st_mod.link_condition(st, wan),
        "mark": hex(cfg.mark_of(wan)),
        "table": cfg.table_of(wan),
        "connections": snap.connections.get(name, 0),
        "ipv4": per[4],
        "ipv6": per[6],
    })
    return out


def _nexthop(gateway: str | None, interface: str, onlink: bool = False) -> str | None:
    """``via <gateway> dev <interface> [onlink]``, ``dev <interface>`` or None (unknown)."""
    if gateway is None:
        return None
    if not gateway:
        return f"dev {interface}"
    return f"via {gateway} dev {interface}{' onlink' if onlink else ''}"


def _weight(cfg: Config, interface: str | None, hop: Nexthop, hops: int) -> int:
    """A nexthop's weight: the kernel's; on a single-nexthop route (where the kernel keeps
    none) the weight of the WAN on that interface, which it carries as soon as another
    nexthop joins."""
    if hops == 1:
        return next((w.weight for w in cfg.wans if w.interface == interface), hop.weight)
    return hop.weight


def _route(cfg: Config, main: RouteSpec | None, names: Mapping[int, str],
           kept: bool) -> dict[str, Any]:
    return {
        "present": main is not None,
        "kept_last": kept,
        "nexthops": [{"gateway": h.gateway or None, "interface": names.get(h.oif, str(h.oif)),
                      "onlink": h.onlink,
                      "weight": _weight(cfg, names.get(h.oif), h, len(main.nexthops))}
                     for h in (main.nexthops if main else ())],
    }


def match_text(p: Policy) -> str:
    """What policy `p` matches, in the config's words (``any`` when everything)."""
    ports = lambda rs: ",".join(str(a) if a == b else f"{a}-{b}" for a, b in rs)  # noqa: E731
    parts = [("src", ",".join(p.src)), ("dst", ",".join(p.dst)),
             ("proto", ",".join(PROTOCOL_NAMES.get(n, str(n)) for n in p.proto)),
             ("sport", ports(p.sport)), ("dport", ports(p.dport)), ("iif", ",".join(p.iif))]
    return " ".join(f"{k} {v}" for k, v in parts if v) or "any"


def _policies(snap: Snapshot, planes: Mapping[int, State]) -> list[dict[str, Any]]:
    """Each policy: what it matches, its WANs, the ones its route uses now per IP
    version it can match, and its packet counter."""
    cfg = snap.state.cfg
    sets = {f: policy_sets(planes[f]) for f in cfg.families()} if cfg.policies else {}
    out = []
    for p in cfg.policies:
        via = {f"ipv{f}": sorted(sets[f].get(p.route, ())) for f in p.families() if f in sets}
        out.append({"position": p.position, "name": p.label, "match": match_text(p),
                    "use": list(p.use), "fallback": p.fallback, "via": via,
                    "packets": snap.policy_packets.get(p.position, 0)})
    return out


def render(snap: Snapshot) -> dict[str, Any]:
    """The status as a JSON-ready dict (see ecmpd.ecmpctl_command.render_status for its
    text form).  `route` is the IPv4 multipath route, `route6` the IPv6 one."""
    st = snap.state
    cfg = st.cfg
    mains = {4: snap.main, 6: snap.main6}
    planes = {f: st_mod.plane(st, f) for f in (4, 6)}
    kept = {f: st_mod.keeps_last_route(planes[f], mains[f]) for f in (4, 6)}
    in_route = {f: {h.oif for h in m.nexthops} if m else set() for f, m in mains.items()}
    names = {link.index: name for name, link in st.links.items()}
    families = cfg.families()
    warnings: list[str] = []
    for f in families:
        v = cfg.version_prefix(f)
        if kept[f]:
            warnings.append(f"all {v}WANs are down: keeping the last route")
        foreign = snap.foreign_main if f == 4 else snap.foreign_main6
        if foreign:
            warnings.append(f"a {v}route that is not ecmpd's holds table {cfg.table_base} "
                            f"metric {metric_of(cfg.route_metric, f)}: {foreign}")
    warnings += snap.stray
    warnings += lan.warnings(st)
    for f in families:
        if mains[f] is None:
            warnings.append(f"no ecmpd {cfg.version_prefix(f)}route in the kernel")
    if st.ha.conflicts:
        warnings.insert(0, "SPLIT BRAIN: another host answers for " + ", ".join(
            f"{c.sighting.address} on {c.sighting.interface} ({c.sighting.mac})"
            for c in st.ha.conflicts) + " while this router is master")
    s = snap.stats
    out = {
        "pid": snap.pid,
        "config": snap.config_path,
        "uptime": round(snap.uptime, 3),
        "hash": cfg.hash,
        # per IP version the config carries: the tier that takes new flows (null: no
        # WAN is usable)
        "new_flows_tier": {f"ipv{f}": st_mod.carrying_tier(planes[f]) for f in families},
        "wans": {w.name: _wan(snap, planes, w.name, in_route) for w in cfg.wans},
        # each LAN interface as the kernel has it (`problem`: why it forwards nothing)
        "lan": lan.entries(st),
        "route": _route(cfg, snap.main, names, kept[4]),
        "route6": _route(cfg, snap.main6, names, kept[6]),
        "policies": _policies(snap, planes),
        "warnings": warnings,
        "stats": {"reconciles": s.reconciles, "changes": s.changes,
                  "nft_writes": s.nft_writes, "events": s.events,
                  "reaction_ms": [round(x * 1000, 3) for x in s.reactions],
                  "flushes": s.flushes, "resyncs": s.resyncs, "monitors": s.monitors},
    }
    if cfg.ha is not None:
        out["ha"] = ha_status(st)
    return out


def ha_status(st: State) -> dict[str, Any]:
    """The `ha` object: the role, a split brain (null: none), the floating addresses and
    the numbers both routers must agree on (`marks_digest`; `ecmpd.role`)."""
    cfg, h = st.cfg, st.ha
    assert cfg.ha is not None
    split = None
    if h.conflicts:
        since = min(c.since for c in h.conflicts)
        split = {"since": round(since, 3), "since_iso": iso(since), "addresses": [
            {"address": c.sighting.address, "interface": c.sighting.interface,
             "mac": c.sighting.mac, "since": round(c.since, 3), "since_iso": iso(c.since)}
            for c in h.conflicts]}
    return {"role": h.role, "since": round(h.since, 3), "since_iso": iso(h.since),
            "reason": h.reason, "split_brain": split, "vips": list(cfg.ha.vips),
            "floating": {i: list(a) for i, a in configha.floating(cfg).items()},
            "detect_interval": cfg.ha.detect_interval,
            "marks_digest": role.marks_digest(cfg), "marks": role.marks(cfg)}
