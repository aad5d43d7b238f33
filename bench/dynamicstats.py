"""Figure 10's pure helpers (bench/dynamic.py): the DHCP WAN's gateways over the moves,
``ip -ts monitor route`` events as per-table timelines of nexthops, flow arithmetic and
table cells.  No root, no lab: unit-tested in tests/test_bench_dynamic.py."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from lab.traffic import FlowResult, HeldResult

from bench import stats

GATEWAYS = ("10.111.0.1", "10.111.0.254", "10.111.0.253")
"""The DHCP WAN's gateways over the moves (`next_gateway`); the first is the one udhcpc
got its first OFFER from, and busybox udhcpc keeps unicasting renewals to that server
(`lab.dhcp`)."""


# ------------------------------------------------------------------ pure: gateways


def next_gateway(current: str, keep_old: bool) -> str:
    """The gateway to move to from `current`.  busybox udhcpc unicasts its renewal to
    the server of its first OFFER (`GATEWAYS[0]`): a move that keeps the old gateway
    goes back to that address when it can (the renewal is answered at once, as by a
    real ISP's server that stays), and a move whose old gateway goes at once never uses
    it (the renewal is lost and the client rebinds by broadcast, as when the ISP's
    server moved away with the gateway)."""
    first, a, b = GATEWAYS
    if keep_old:
        return first if current != first else a
    return a if current != a else b


# ------------------------------------------------------------------ pure: route events

Hop = tuple[str | None, str]
"""(gateway or None for a device nexthop, device)."""

_TYPES = ("unreachable", "blackhole", "prohibit", "throw")


@dataclass(frozen=True)
class RouteEvent:
    """One ``ip monitor route`` event about a route."""

    deleted: bool
    dst: str
    table: str
    metric: int
    hops: frozenset[Hop]
    """Live nexthops (empty for unreachable/blackhole routes; ``dead`` ones left out)."""


def _hop(text: str) -> Hop | None:
    words = text.split()
    if "dead" in words or "dev" not in words:
        return None
    gw = words[words.index("via") + 1] if "via" in words else None
    return gw, words[words.index("dev") + 1]


def parse_route_event(body: str) -> RouteEvent | None:
    """A `stats.parse_monitor` body -> RouteEvent (None: not an IPv4 route line)."""
    deleted = body.startswith("Deleted ")
    if deleted:
        body = body[len("Deleted "):]
    words = body.split()
    if not words:
        return None
    kind = "unicast"
    if words[0] in _TYPES:
        kind, words = words[0], words[1:]
    if not words or ":" in words[0] or words[0] in ("local", "broadcast", "multicast",
                                                   "anycast", "nat"):
        return None
    dst = words[0]

    def after(key: str, default: str) -> str:
        return words[words.index(key) + 1] if key in words[:-1] else default

    table = after("table", "main")
    try:
        metric = int(after("metric", "0"))
    except ValueError:
        metric = 0
    hops: set[Hop] = set()
    if kind == "unicast":
        parts = re.split(r"\bnexthop\b", " ".join(words))
        for part in (parts[1:] if len(parts) > 1 else parts[:1]):
            h = _hop(part)
            if h is not None:
                hops.add(h)
    return RouteEvent(deleted, dst, table, metric, frozenset(hops))


def routes_from_json(routes: Iterable[Mapping[str, Any]]) -> dict[int, frozenset[Hop]]:
    """``ip -j route show default table N`` -> metric -> live hops (the initial state)."""
    out: dict[int, frozenset[Hop]] = {}
    for r in routes:
        if r.get("dst", "default") != "default":
            continue
        hops: set[Hop] = set()
        if r.get("type", "unicast") == "unicast":
            for h in r.get("nexthops") or [r]:
                if "dev" in h and "dead" not in (h.get("flags") or []):
                    hops.add((h.get("gateway"), h["dev"]))
        out[int(r.get("metric", 0))] = frozenset(hops)
    return out


def effective(routes: Mapping[int, frozenset[Hop]]) -> frozenset[Hop]:
    """The hops of the lowest-metric default route of a table (empty: none, or it is
    unreachable)."""
    return routes[min(routes)] if routes else frozenset()


Timeline = list[tuple[float, frozenset[Hop]]]


def table_timeline(table: int | str, initial: Mapping[int, frozenset[Hop]],
                   events: Sequence[tuple[float, str]], start: float = -math.inf) -> Timeline:
    """The default route of `table` (its live hops) over time: ``(start, initial)``, then
    one entry per event about that table's default route from `start` on."""
    routes = dict(initial)
    out: Timeline = [(start, effective(routes))]
    for ts, body in events:
        ev = parse_route_event(body)
        if ev is None or ev.dst != "default" or ev.table != str(table) or ts < start:
            continue
        if ev.deleted:
            routes.pop(ev.metric, None)
        else:
            routes[ev.metric] = ev.hops
        out.append((ts, effective(routes)))
    return out


def first_when(timeline: Timeline, pred: Callable[[frozenset[Hop]], bool],
               after: float) -> float | None:
    """The first time at or after `after` at which `pred(hops)` holds (the state in force
    at `after` counts, as `after`); None: never in the timeline."""
    now = timeline[0][1]
    for ts, hops in timeline:
        if ts > after:
            break
        now = hops
    if pred(now):
        return after
    return next((ts for ts, hops in timeline if ts > after and pred(hops)), None)


def has_dev(dev: str, gateway: str | None = "") -> Callable[[frozenset[Hop]], bool]:
    """Predicate: a hop on `dev` (and via `gateway` unless it is "")."""
    return lambda hops: any(d == dev and (gateway == "" or g == gateway) for g, d in hops)


def lacks_dev(dev: str) -> Callable[[frozenset[Hop]], bool]:
    return lambda hops: not any(d == dev for _, d in hops)


def left(timeline: Timeline, dev: str, start: float, end: float = math.inf) -> list[float]:
    """Times within [start, end] at which `dev` left the route (was in, then not)."""
    out = []
    for (_, before), (ts, after) in zip(timeline, timeline[1:]):
        if start <= ts <= end and has_dev(dev)(before) and not has_dev(dev)(after):
            out.append(ts)
    return out


def first_event(events: Sequence[tuple[float, str]], prefix: str,
                after: float = -math.inf) -> float | None:
    """The time of the first monitor event at or after `after` whose body starts with
    `prefix` (e.g. ``local 10.113.0.3 dev ppp0``: that address appeared)."""
    return next((ts for ts, body in events if ts >= after and body.startswith(prefix)), None)


# ------------------------------------------------------------------ pure: flows, cells


def first_ok_after(results: Sequence[FlowResult], t: float) -> float | None:
    """Epoch at which the first flow started at or after `t` that succeeded completed
    (its start + latency); None: none did."""
    ok = [r for r in results if r.ok and r.wall is not None and r.wall >= t]
    if not ok:
        return None
    first = min(ok, key=lambda r: r.wall)  # type: ignore[arg-type, return-value]
    return first.wall + (first.latency or 0.0)  # type: ignore[operator]


def failed_between(results: Sequence[FlowResult], start: float, end: float = math.inf) -> int:
    """Flows started within [start, end) that failed."""
    return sum(1 for r in results if not r.ok and r.wall is not None and start <= r.wall < end)


def broken_others(results: Sequence[HeldResult], wan: str) -> tuple[int, int]:
    """(broken, held) among the held flows on WANs other than `wan`."""
    others = [r for r in results if r.wan is not None and r.wan != wan]
    return sum(1 for r in others if r.broken), len(others)


def snmp_counter(text: str, group: str, name: str) -> int:
    """One counter of /proc/net/snmp (a header line and a value line per group)."""
    lines = [line.split() for line in text.splitlines() if line.startswith(f"{group}:")]
    for head, values in zip(lines[::2], lines[1::2]):
        if name in head:
            return int(values[head.index(name)])
    raise ValueError(f"no {group} {name} in /proc/net/snmp")


def count_lines(text: str) -> int:
    """Non-empty lines (``conntrack -L`` prints one entry a line, its summary on stderr)."""
    return sum(1 for line in text.splitlines() if line.strip())


def shares(results: Sequence[FlowResult], names: Sequence[str]) -> dict[str, float]:
    """Percent of `results` per WAN in `names` (failed flows count in the total)."""
    total = len(results)
    return {n: (100.0 * sum(1 for r in results if r.ok and r.wan == n) / total if total
                else 0.0) for n in names}


def secs_cell(values: Sequence[float | None], digits: int = 2) -> str:
    """min / median / max s (n); runs without a value are counted apart."""
    known = [v for v in values if v is not None]
    out = [stats.fmt_summary(known, "s", digits)] if known else []
    if len(known) != len(values):
        out.append(f"not reached in {len(values) - len(known)}/{len(values)} runs")
    return "; ".join(out) or "no data"


def count_cell(values: Sequence[int], of: Sequence[int] | None = None) -> str:
    """min / median / max of counts (n), with "of a–b" when given."""
    if not values:
        return "no data"
    s = stats.summarize([float(v) for v in values])
    tail = ""
    if of:
        tail = f" of {min(of)}" if min(of) == max(of) else f" of {min(of)}–{max(of)}"
    return f"{s.min:.0f} / {s.median:.0f} / {s.max:.0f}{tail} (n={s.n})"


def share_cell(per_rep: Sequence[Mapping[str, float]], names: Sequence[str]) -> str:
    """Per WAN: min / median / max percent over the repetitions."""
    parts = []
    for n in names:
        s = stats.summarize([r.get(n, 0.0) for r in per_rep])
        parts.append(f"{n} {s.min:.0f} / {s.median:.0f} / {s.max:.0f} %")
    return "; ".join(parts) + f" (n={len(per_rep)})"


# ------------------------------------------------------------------ results


@dataclass
class Move:
    """One gateway move of the DHCP WAN (epoch times; None: not seen)."""

    keep_old: bool
    old: str
    new: str
    moved: float
    """When `move_gateway` was called (the ISP's addresses change at once)."""
    applied: float
    """The renewed lease's `DhcpEvent.applied`."""
    main_at: float | None
    """When the client's route via the new gateway appeared in table main (monitor)."""
    table_at: float | None
    """When table 1001 first routed via the new gateway."""
    flow_at: float | None
    """When the first flow started after `table_at` succeeded."""
    back_at: float | None
    """When wlan1 via the new gateway was in table 1000."""
    left_at: list[float]
    """When wlan1 left table 1000 from `moved` until the end of the run."""
    flows_failed_before: int
    """Router flows bound to the WAN address, started from `moved` until `table_at`, failed."""
    flows_failed_after: int
    flows_total: int
    broken: int
    held: int
    broken_own: int
    held_own: int
    saturated: bool = False
    quiet: bool = False
    """No traffic on wlan1 (no held or router flows): only the probes judge it."""
    redirects: int | None = None
    """ICMP redirects wlan1's ISP sent from the move until the lease was applied."""
    notes: list[str] = field(default_factory=list)

    def since(self, t: float | None) -> float | None:
        return None if t is None else t - self.applied

    def line(self) -> str:
        def f(t: float | None) -> str:
            return "never" if t is None else f"{t - self.applied:+.3f}s"
        tag = "saturated " if self.saturated else "quiet " if self.quiet else ""
        return (f"{tag}move {self.old} -> {self.new}"
                f"{' keep_old' if self.keep_old else ''}: renewal applied "
                f"{self.applied - self.moved:.3f}s after the move; from applied: main route "
                f"{f(self.main_at)}, table 1001 {f(self.table_at)}, new flow ok "
                f"{f(self.flow_at)}, back in table 1000 {f(self.back_at)}; left table 1000 "
                f"{len(self.left_at)}x ({', '.join(f(t) for t in self.left_at) or '-'}); "
                f"router flows failed {self.flows_failed_before} before table 1001 moved, "
                f"{self.flows_failed_after} after (of {self.flows_total}); held flows broken: "
                f"others {self.broken}/{self.held}, wlan1 {self.broken_own}/{self.held_own}"
                + (f" ({'; '.join(self.notes)})" if self.notes else ""))


@dataclass
class Reconnect:
    old: str
    new: str
    disconnected: float
    connected: float
    back_at: float | None
    addr_at: float | None
    """When the new address appeared (the kernel's ``local <address> dev ppp0`` route)."""
    ct_before: int
    ct_after: int | None
    broken: int
    held: int
    broken_own: int
    held_own: int
    notes: list[str] = field(default_factory=list)

    @property
    def back(self) -> float | None:
        return None if self.back_at is None else self.back_at - self.connected

    @property
    def from_addr(self) -> float | None:
        """Seconds from the new address appearing to ppp0 back in table 1000."""
        if self.back_at is None or self.addr_at is None:
            return None
        return self.back_at - self.addr_at

    def line(self) -> str:
        back = "never" if self.back is None else f"{self.back:.3f}s"
        addr = ("never" if self.addr_at is None else
                f"{self.addr_at - self.connected:+.3f}s")
        return (f"reconnect {self.old} -> {self.new}: session down "
                f"{self.connected - self.disconnected:.3f}s, new address in the kernel {addr} "
                f"from connected, connected -> ppp0 back in table 1000 {back}; conntrack to the old address "
                f"{self.ct_before} before, {self.ct_after} once back; held flows broken: "
                f"others {self.broken}/{self.held}, ppp0 {self.broken_own}/{self.held_own}"
                + (f" ({'; '.join(self.notes)})" if self.notes else ""))


@dataclass
class Shares:
    per_rep: list[dict[str, float]]
    failed: list[int]
    main_before: list[Any]
    main_with: list[Any]
    main_after: list[Any] | None = None
    """Table main's defaults after ecmpd stopped (None: not read yet)."""
    lease_gateway: str | None = None
    """The gateway of the DHCP client's last lease (its route should be the one in main)."""


@dataclass
class Fig10:
    shares: Shares | None = None
    moves: list[Move] = field(default_factory=list)
    reconnects: list[Reconnect] = field(default_factory=list)
    saturated: list[Move] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
