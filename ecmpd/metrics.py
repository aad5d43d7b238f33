"""Prometheus metrics: what `ecmpctl status` shows, as numbers a graph or an alert reads.

`exposition()` renders, at scrape time, one status snapshot (`ecmpd.daemon.Daemon
.snapshot`: the same numbers `ecmpctl status --json` shows) and the counters kept here
(state changes, reaction times, reloads) through a private `CollectorRegistry`.  The
HTTP side is `ecmpd.metrics_server`: on the daemon's loop, no thread.  prometheus_client
(and the http and wsgi modules it pulls in) is imported only when the endpoint is on:
it would add a tenth of a second or more to every start.

Every per-WAN metric has a `wan` label and, but for `ecmpd_wan_connections` (conntrack
counts a WAN's connections of both IP versions by its one mark), a `family` label
(``ipv4`` / ``ipv6``): one series per IP version the WAN carries, also on a single-version
WAN, so an alert rule reads every WAN alike and a dual-stack WAN whose IPv6 alone fails
shows it.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .console import version as _read_version
from .control_protocol import ROLES
from .desired import RouteSpec
from .events import Transition
from .health import Phase

version = functools.cache(_read_version)
"""ecmpd's version, read once (each scrape shows it)."""

if TYPE_CHECKING:
    from .status import Snapshot
    from .metrics_server import MetricsServer

log = logging.getLogger("ecmpd")

REACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of `ecmpd_reaction_seconds`: a failover's route change takes
milliseconds; a second or more means a stalled kernel or loop."""
FRESH = 1.0
"""Seconds an exposition serves further scrapes: scrapers in a burst (or one that
hammers) cost one snapshot (a conntrack dump, a kernel read) and one render a second at
most (a render costs 0.8 ms of CPU with 3 WANs, 20 ms with 100: bench/metrics_render.py)."""
FAMILY = {4: "ipv4", 6: "ipv6"}


@dataclass
class Counters:
    """What the daemon tells the metrics as it happens (on the loop)."""

    changes: dict[tuple[str, int], int] = field(default_factory=dict)
    """(WAN name, IP version) -> state changes since start."""
    reaction_buckets: list[int] = field(default_factory=lambda: [0] * len(REACTION_BUCKETS))
    """Reactions per bucket (not cumulative; beyond the last bound: only in the count)."""
    reaction_count: int = 0
    reaction_sum: float = 0.0
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})

    def transition(self, t: Transition) -> None:
        if not t.family:
            return              # the HA pair's change: ecmpd_ha_role shows it
        key = (t.name, t.family)
        self.changes[key] = self.changes.get(key, 0) + 1

    def reaction(self, seconds: float) -> None:
        i = bisect.bisect_left(REACTION_BUCKETS, seconds)
        if i < len(REACTION_BUCKETS):
            self.reaction_buckets[i] += 1
        self.reaction_count += 1
        self.reaction_sum += seconds

    def reloaded(self, ok: bool) -> None:
        self.reloads["ok" if ok else "failed"] += 1


def families(snap: Snapshot, counters: Counters) -> list[Any]:
    """The metric families of `snap` and `counters` (pure)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    st = snap.state
    cfg = st.cfg
    up = GaugeMetricFamily("ecmpd_wan_up", "1 when the WAN's probes find it up (its health, "
                           "whether disabled or not)", labels=("wan", "family"))
    active = GaugeMetricFamily("ecmpd_wan_active", "1 when the WAN's nexthop is in ecmpd's "
                               "route in the kernel (it takes new connections)",
                               labels=("wan", "family"))
    disabled = GaugeMetricFamily("ecmpd_wan_disabled", "1 when the WAN is disabled by "
                                 "ecmpctl disable", labels=("wan", "family"))
    changes = CounterMetricFamily("ecmpd_wan_state_changes_total", "WAN state changes "
                                  "(up, down, rising, falling, disabled) since ecmpd started",
                                  labels=("wan", "family"))
    rtt = GaugeMetricFamily("ecmpd_wan_rtt_seconds", "mean round-trip time of a probe "
                            "target's replies over the probe window",
                            labels=("wan", "family", "target"))
    loss = GaugeMetricFamily("ecmpd_wan_loss_ratio", "share (0..1) of a probe target's echo "
                             "requests lost over the probe window",
                             labels=("wan", "family", "target"))
    conns = GaugeMetricFamily("ecmpd_wan_connections", "conntrack entries (not ICMP) of "
                              "connections pinned to the WAN", labels=("wan",))
    in_route = {4: _oifs(snap.main), 6: _oifs(snap.main6)}
    for wan in cfg.wans:
        link = st.links.get(wan.interface)
        for f in wan.families:
            ws = (st.wans if f == 4 else st.wans6).get(wan.name)
            if ws is None:
                continue
            labels = (wan.name, FAMILY[f])
            up.add_metric(labels, float(ws.health.state is Phase.UP))
            active.add_metric(labels, float(link is not None and link.index in in_route[f]))
            disabled.add_metric(labels, float(ws.disabled))
            changes.add_metric(labels, float(counters.changes.get((wan.name, f), 0)))
            probe = snap.probes.get((wan.name, f)) or (snap.probes.get(wan.name)
                                                       if f == 4 else None)
            for target, t in (probe.targets.items() if probe else ()):
                if t.rtt is not None:
                    rtt.add_metric((*labels, target), t.rtt)
                if t.loss_pct is not None:
                    loss.add_metric((*labels, target), t.loss_pct / 100.0)
        conns.add_metric((wan.name,), float(snap.connections.get(wan.name, 0)))
    return [_info(), up, active, disabled, changes, rtt, loss, conns, _reactions(counters),
            _reloads(counters), *_ha(snap)]


def _ha(snap: Snapshot) -> list[Any]:
    """The HA role (one series per role, 1 for the current one) and the floating
    addresses another host holds; none without `ha:`."""
    from prometheus_client.core import GaugeMetricFamily
    st = snap.state
    if st.cfg.ha is None:
        return []
    role = GaugeMetricFamily("ecmpd_ha_role", "1 for this router's HA role (master, backup "
                             "or fault: keepalived's, told by ecmpctl role)", labels=("role",))
    for r in ROLES:
        role.add_metric((r,), float(st.ha.role == r))
    split = GaugeMetricFamily("ecmpd_ha_split_brain", "floating addresses another host "
                              "answers for while this router is master (0: no split brain)")
    split.add_metric((), float(len(st.ha.conflicts)))
    return [role, split]


def _oifs(route: RouteSpec | None) -> set[int]:
    return {h.oif for h in route.nexthops} if route is not None else set()


def _info() -> Any:
    from prometheus_client.core import GaugeMetricFamily
    info = GaugeMetricFamily("ecmpd_info", "ecmpd's version (the value is always 1)",
                             labels=("version",))
    info.add_metric((version(),), 1.0)
    return info


def _reactions(c: Counters) -> Any:
    from prometheus_client.core import HistogramMetricFamily
    cumulative, n = [], 0
    for bound, count in zip(REACTION_BUCKETS, c.reaction_buckets):
        n += count
        cumulative.append((_bound(bound), float(n)))
    cumulative.append(("+Inf", float(c.reaction_count)))
    return HistogramMetricFamily(
        "ecmpd_reaction_seconds", "seconds from a health decision to the kernel's "
        "acknowledgement of the route change", buckets=cumulative, sum_value=c.reaction_sum)


def _bound(b: float) -> str:
    return repr(float(b))


def _reloads(c: Counters) -> Any:
    from prometheus_client.core import CounterMetricFamily
    out = CounterMetricFamily("ecmpd_reloads_total", "config reloads (SIGHUP, ecmpctl "
                              "reload) by result: failed = refused, nothing changed",
                              labels=("result",))
    for result, n in c.reloads.items():
        out.add_metric((result,), float(n))
    return out


class _Collector:
    """Hands `generate_latest` the families rendered for the current scrape."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def exposition(snap: Snapshot, counters: Counters) -> bytes:
    """The text exposition format of `snap` and `counters`."""
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families(snap, counters)))  # type: ignore[arg-type]
    return generate_latest(registry)


class Metrics:
    """The daemon's metrics: the counters it feeds and, when `metrics.listen` is set, the
    endpoint serving them."""

    def __init__(self, snapshot: Callable[[], Awaitable[Snapshot]]) -> None:
        self.snapshot = snapshot
        self.counters = Counters()
        self.server: MetricsServer | None = None
        self.address: tuple[str, int] | None = None
        """Where the endpoint listens (None: nowhere)."""
        self._taken: tuple[float, bytes] | None = None
        """(loop time, exposition) of the last render for a scrape."""
        self._pending: asyncio.Task[bytes] | None = None

    # the daemon's hooks: each is one call on the loop, none blocks; each drops the
    # render kept for scrapes, which would not show it
    def transition(self, t: Transition) -> None:
        self.counters.transition(t)
        self._taken = None

    def reaction(self, seconds: float) -> None:
        self.counters.reaction(seconds)
        self._taken = None

    def reloaded(self, ok: bool) -> None:
        self.counters.reloaded(ok)
        self._taken = None

    async def listen(self, address: tuple[str, int] | None) -> None:
        """Serve on `address` (None: stop serving); nothing happens when it is where the
        endpoint listens already.  A failure to listen is logged: routing goes on."""
        if address == self.address and (address is None or self.server is not None):
            return
        await self.close()
        if address is None:
            return
        from .metrics_server import MetricsServer
        server = MetricsServer(self.render)
        try:
            await server.start(*address)
        except OSError as exc:
            log.error("metrics: cannot listen on %s: %s", _show(address), exc.strerror or exc)
            return
        self.server, self.address = server, address
        log.info("metrics: serving http://%s/metrics", _show(address))

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()        # its scrapers get no answer: they are dropped
        if self.server is not None:
            await self.server.close()
        self.server, self.address = None, None

    async def render(self) -> bytes:
        """An exposition at most `FRESH` seconds old."""
        loop = asyncio.get_running_loop()
        if self._taken is not None and loop.time() - self._taken[0] < FRESH:
            return self._taken[1]
        if self._pending is None or self._pending.done():
            self._pending = loop.create_task(self._take())
        # shielded: a scraper that goes away cancels its wait, not the others'
        return await asyncio.shield(self._pending)

    async def _take(self) -> bytes:
        text = exposition(await self.snapshot(), self.counters)
        self._taken = (asyncio.get_running_loop().time(), text)
        return text


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
