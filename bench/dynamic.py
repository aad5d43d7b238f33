"""Figure 10: dynamic WANs (`gateway: auto`).  A DHCP WAN (dnsmasq in its ISP, busybox
udhcpc on the router putting ``default via <gw>`` in table main at metric 0, proto dhcp,
as ifupdown + dhclient do), a static WAN and a point-to-point WAN (a PPP-like tun link
with a new address on every reconnect) — the lab of tests/test_dynamic_wans_lab.py, with
the real ecmpd in the router namespace at its defaults.

What is measured (each `reps` times):

* the ISP moves the DHCP WAN's gateway (`DhcpWan.move_gateway`): the old gateway goes at
  once (udhcpc's unicast renewal to it is lost and it rebinds by broadcast), or, with
  ``keep_old``, only once the client took the new one.  From the client script having
  applied the new lease (`DhcpEvent.applied`) until ecmpd's WAN table (1001) routes via
  the new gateway, until a new TCP flow from the router bound to the WAN's address
  succeeds through it, and until the WAN is back in the multipath route (table 1000).
  The old gateway's probes fail from the removal on, so the WAN goes DOWN before the
  new lease arrives and needs ``probe.up`` good rounds afterwards; with ``keep_old`` it
  should never leave the route.  Long-lived LAN flows held across the move show whether
  the other WANs' connections live on.
* the PPP session reconnects with a new address (`PtpWan.reconnect`): from the session
  being up (`PtpSession.connected`) until ppp0's nexthop is back in table 1000, that
  minus the up rounds (``probe.up`` x ``probe.interval``), the conntrack entries still
  NATed to the old address once it is back, and the other WANs' held flows.
* the DHCP client's metric-0 default route in table main: the share of new LAN flows per
  WAN with it present, and that route before ecmpd, with ecmpd, and after ecmpd stopped.

The kernel's routes are read with ``ip -ts monitor route`` in the router namespace (an
event stream, stamped by ``ip`` on reception: no polling load on the 2 shared cores);
waits poll ``ip -j route`` every 50 ms.  The pure helpers (route-event parsing, per-table
timelines, flow arithmetic, cells) are unit-tested in tests/test_bench_dynamic.py.

In this lab the old and the new gateway are two addresses of the same ISP interface
(one MAC): packets sent via the old gateway still get through while the router's
neighbour entry for it is cached (it is REACHABLE/STALE for tens of seconds), so a flow
only proves the new gateway once table 1001 names it.  The "new flow" time is therefore
the completion of the first successful flow *started after* table 1001 moved (flows are
started every `FLOW_EVERY` s); flows failing before or after that are in the details.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ecmpd.lab import Lab, LabSpec, LabWan, Line

from bench import stats
from bench.routers import wait_until
from bench.underload import spool, monitor_routes
from bench.dynamicstats import (
    GATEWAYS, Hop, Timeline, broken_others, count_cell, count_lines, effective,
    failed_between, first_event, first_ok_after, first_when, has_dev, left, next_gateway,
    routes_from_json, secs_cell, share_cell, shares, snmp_counter, table_timeline)

SPEC = LabSpec(wans=(LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
                     LabWan("wlan2", "10.112.0.2/24", "10.112.0.1"),
                     LabWan("ppp0", "10.113.0.2/24", "10.113.0.1", kind="ptp")))
NAMES = ("wlan1", "wlan2", "ppp0")
DHCP_WAN, PTP_WAN = "wlan1", "ppp0"
WAN_ADDRESS = "10.111.0.2"
CONFIG: dict[str, Any] = {
    "lan": {"interfaces": ["Local"]},
    "wans": {"wlan1": {"interface": "wlan1", "gateway": "auto", "id": 1},
             "wlan2": {"interface": "wlan2", "gateway": "10.112.0.1", "id": 2},
             "ppp0": {"interface": "ppp0", "gateway": "auto", "id": 3}},
}
MULTIPATH_TABLE = 1000
WAN_TABLE = 1001
"""ecmpd's table of wlan1 (1000 + id)."""
PROBE_UP, PROBE_INTERVAL = 5, 0.2
"""ecmpd's defaults: UP after 5 good rounds, a round every 0.2 s."""
HOLD = 60
"""Long-lived LAN flows held across a gateway move (90 across a reconnect)."""
HOLD_PTP = 90
FLOWS = 60
"""New LAN flows per repetition of the share row."""
FLOW_EVERY = 0.02
FLOW_COUNT = 300
"""New flows from the router bound to the WAN address: one every `FLOW_EVERY` s, 6 s."""
FLOW_LEAD = 1.0
"""Seconds the flow run is given to start before the gateway moves."""
SETTLE = 10.0
"""Seconds to wait for the route to settle after a move or reconnect."""
AFTER = 1.0
"""Seconds the held flows run on after the route settled (a late break would show)."""
SATURATED = Line(20.0, 5.0, 1.0)
"""The saturated-line row: 20 Mbit/s down, 5 up, 1 s buffers (`ecmpd.lab.lines`)."""
SAT_FILL = 6.0
"""Seconds of load before the move on the saturated line."""


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


# ------------------------------------------------------------------ the lab side




class Monitor:
    """``ip -ts monitor route`` in the router namespace from construction on, and the
    initial default routes of the tables watched."""

    TABLES = ("main", str(MULTIPATH_TABLE), str(WAN_TABLE))

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.proc, self.out, self.start = monitor_routes(lab)
        self.initial = {t: routes_from_json(default_routes(lab, t)) for t in self.TABLES}

    def events(self) -> list[tuple[float, str]]:
        return stats.parse_monitor(spool(self.out))

    def timeline(self, table: int | str) -> Timeline:
        return table_timeline(table, self.initial[str(table)], self.events(), self.start)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def default_routes(lab: Lab, table: int | str) -> list[dict[str, Any]]:
    out = lab.run(lab.ns_router, "ip", "-j", "-4", "route", "show", "default", "table",
                  str(table)).stdout
    return json.loads(out or "[]")


def main_defaults(lab: Lab) -> list[Any]:
    """Table main's default routes, as ``ip -j`` shows them."""
    return default_routes(lab, "main")


def now_hops(lab: Lab, table: int) -> frozenset[Hop]:
    return effective(routes_from_json(default_routes(lab, table)))



def conntrack_to(lab: Lab, address: str) -> int:
    """conntrack entries whose replies go to `address` (NATed to it)."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "--reply-dst", address, check=False)
    return count_lines(out.stdout)


def whole(lab: Lab, gateway: str) -> bool:
    """Every WAN in table 1000, wlan1 via `gateway`."""
    hops = now_hops(lab, MULTIPATH_TABLE)
    return has_dev(DHCP_WAN, gateway)(hops) and all(has_dev(n)(hops) for n in NAMES)


def tools_missing() -> list[str]:
    return [t for t in ("dnsmasq", "udhcpc", "conntrack") if shutil.which(t) is None]


def gateway_move(lab: Lab, dhcp: Any, mon: Monitor, keep_old: bool,
                 saturated: bool = False) -> Move:
    """Move wlan1's gateway once (to the other of `GATEWAYS`) with held LAN flows and a
    stream of router flows bound to the WAN address; wait until it settled."""
    old = dhcp.gateway
    new = next_gateway(old, keep_old)
    wait_until(lambda: whole(lab, old), SETTLE, f"every WAN in the route, wlan1 via {old}")
    held = lab.hold_flows(HOLD, byte_interval=0.1)
    try:
        held.wait_established(15.0 if saturated else 10.0)
        run = lab.start_flows(FLOW_COUNT, interval=FLOW_EVERY, timeout=1.0 if not saturated
                              else 3.0, from_ns=lab.ns_router, sources=[WAN_ADDRESS])
        time.sleep(FLOW_LEAD)  # the flow tool's start: its first flows precede the move
        moved = time.time()
        lease = dhcp.move_gateway(new, keep_old=keep_old)
        if lease.error:
            raise RuntimeError(f"the DHCP client could not apply the new lease: {lease.error}")
        wait_until(lambda: whole(lab, new), SETTLE, f"wlan1 via {new} back in table 1000")
        results = run.result()
        time.sleep(AFTER)  # the held flows run on: a late break would show
    finally:
        held_res = held.stop()
    t1001 = mon.timeline(WAN_TABLE)
    t1000 = mon.timeline(MULTIPATH_TABLE)
    tmain = mon.timeline("main")
    table_at = first_when(t1001, has_dev(DHCP_WAN, new), moved)
    back_at = first_when(t1000, has_dev(DHCP_WAN, new), moved)
    main_at = first_when(tmain, has_dev(DHCP_WAN, new), moved)
    end = time.time()
    flow_at = first_ok_after(results, table_at) if table_at is not None else None
    b, h = broken_others(held_res, DHCP_WAN)
    own = [r for r in held_res if r.wan == DHCP_WAN]
    fails_before = failed_between(results, moved, table_at if table_at else math.inf)
    fails_after = failed_between(results, table_at) if table_at else 0
    m = Move(keep_old, old, new, moved, lease.applied, main_at, table_at, flow_at, back_at,
             left(t1000, DHCP_WAN, moved, end), fails_before, fails_after, len(results),
             b, h, sum(1 for r in own if r.broken), len(own), saturated)
    last = max((r.wall or 0.0) for r in results) if results else 0.0
    if flow_at is None and table_at is not None and last < table_at:
        m.notes.append("the flow run ended before table 1001 moved")
    return m


def quiet_move(lab: Lab, dhcp: Any, mon: Monitor) -> Move:
    """Move wlan1's gateway (the old one gone at once) with no traffic on the WAN: only
    its probes judge it while the renewal is pending."""
    old = dhcp.gateway
    new = next_gateway(old, False)
    wait_until(lambda: whole(lab, old), SETTLE, f"every WAN in the route, wlan1 via {old}")
    time.sleep(AFTER)  # the last flows' traffic stops counting as evidence of life
    redirects = isp_redirects(lab)
    moved = time.time()
    lease = dhcp.move_gateway(new)
    if lease.error:
        raise RuntimeError(f"the DHCP client could not apply the new lease: {lease.error}")
    redirects = isp_redirects(lab) - redirects
    wait_until(lambda: whole(lab, new), SETTLE, f"wlan1 via {new} back in table 1000")
    t1000 = mon.timeline(MULTIPATH_TABLE)
    m = Move(False, old, new, moved, lease.applied,
                first_when(mon.timeline("main"), has_dev(DHCP_WAN, new), moved),
                first_when(mon.timeline(WAN_TABLE), has_dev(DHCP_WAN, new), moved), None,
                first_when(t1000, has_dev(DHCP_WAN, new), moved),
                left(t1000, DHCP_WAN, moved, time.time()), 0, 0, 0, 0, 0, 0, 0, quiet=True)
    m.redirects = redirects
    m.notes.append(f"the ISP sent {redirects} ICMP redirects from the move until the lease "
                   "was applied (probes to the vanished gateway go back out of cust; ecmpd's "
                   "arrival counters skip redirects: they prove nothing beyond the gateway)")
    return m


def isp_redirects(lab: Lab) -> int:
    """ICMP redirects sent by wlan1's ISP so far."""
    text = lab.run(lab.ns_isp(DHCP_WAN), "cat", "/proc/net/snmp").stdout
    return snmp_counter(text, "Icmp", "OutRedirects")


def ptp_reconnect(lab: Lab, ptp: Any, mon: Monitor) -> Reconnect:
    """Reconnect ppp0 with the next pool address, with held LAN flows."""
    old = ptp.session.address
    wait_until(lambda: all(has_dev(n)(now_hops(lab, MULTIPATH_TABLE)) for n in NAMES), SETTLE,
         "every WAN in the route")
    held = lab.hold_flows(HOLD_PTP, byte_interval=0.1)
    ct_after = None
    try:
        held.wait_established()
        ct_before = conntrack_to(lab, old)
        down = time.time()
        session = ptp.reconnect()
        wait_until(lambda: has_dev(PTP_WAN)(now_hops(lab, MULTIPATH_TABLE)), SETTLE,
             "ppp0 back in table 1000")
        ct_after = conntrack_to(lab, old)
        time.sleep(AFTER)  # the held flows run on: a late break would show
    finally:
        held_res = held.stop()
    t1000 = mon.timeline(MULTIPATH_TABLE)
    back_at = first_when(t1000, has_dev(PTP_WAN), session.connected)
    addr_at = first_event(mon.events(), f"local {session.address} dev {PTP_WAN} ", down)
    gone = left(t1000, PTP_WAN, down)
    b, h = broken_others(held_res, PTP_WAN)
    own = [r for r in held_res if r.wan == PTP_WAN]
    r = Reconnect(old, session.address, down, session.connected, back_at, addr_at, ct_before,
                  ct_after, b, h, sum(1 for x in own if x.broken), len(own))
    if not gone:
        r.notes.append("no event showed ppp0 leaving table 1000 (the kernel drops a "
                       "vanished device's routes without a notification)")
    return r


def measure(lab: Lab, reps: int, saturated_run: bool = True,
            progress: Callable[[str], None] = lambda s: None) -> Fig10:
    """The whole figure on `lab` (built from `SPEC`, servers running)."""
    from bench.routers import EpochEcmpd, start_ecmpd, stop_ecmpd
    res = Fig10()
    missing = tools_missing()
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed (./dev setup)")
    dhcp = lab.dhcp(DHCP_WAN)
    ptp = lab.ptp(PTP_WAN)
    try:
        before = main_defaults(lab)
        d = start_ecmpd(lab, config=CONFIG, cls=EpochEcmpd)
        try:
            mon = Monitor(lab)
            try:
                progress("  fig 10: shares with the DHCP client's route in main")
                per, failed = [], []
                for _ in range(reps):
                    out = lab.new_flows(FLOWS, timeout=3.0)
                    per.append(shares(out, NAMES))
                    failed.append(sum(1 for r in out if not r.ok))
                res.shares = Shares(per, failed, before, main_defaults(lab))
                for key in ("move", "move-keep", "move-quiet"):
                    progress(f"  fig 10: gateway moves ({key})")
                    try:
                        for _ in range(reps):
                            res.moves.append(quiet_move(lab, dhcp, mon) if key == "move-quiet"
                                             else gateway_move(lab, dhcp, mon,
                                                               key == "move-keep"))
                    except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                        res.errors[key] = f"{type(exc).__name__}: {exc}"
                progress("  fig 10: PPP reconnects")
                try:
                    for _ in range(reps):
                        res.reconnects.append(ptp_reconnect(lab, ptp, mon))
                except Exception as exc:  # noqa: BLE001
                    res.errors["ptp"] = f"{type(exc).__name__}: {exc}"
                if saturated_run:
                    progress("  fig 10: a gateway move on a saturated line")
                    try:
                        res.saturated.append(saturated_move(lab, dhcp, mon))
                    except Exception as exc:  # noqa: BLE001
                        res.errors["saturated"] = f"{type(exc).__name__}: {exc}"
            finally:
                mon.close()
        finally:
            stop_ecmpd(lab, d)
            res.log_errors = stats.log_errors(d.log())
        if res.shares is not None:
            res.shares.main_after = main_defaults(lab)
            lease = dhcp.lease
            res.shares.lease_gateway = lease.gateway if lease else None
    finally:
        ptp.disconnect()
        dhcp.stop()
    return res


def saturated_move(lab: Lab, dhcp: Any, mon: Monitor) -> Move:
    """One move (old gateway gone at once) while wlan1's line is shaped and loaded both
    ways (one iperf3 stream each way, pinned to wlan1)."""
    lab.shape(DHCP_WAN, SATURATED)
    try:
        load = lab.load(wans=[DHCP_WAN], seconds=60, streams_per_wan=1)
        try:
            time.sleep(SAT_FILL)  # a duration of load: the queues fill
            m = gateway_move(lab, dhcp, mon, keep_old=False, saturated=True)
        finally:
            streams = load.stop()
        m.notes.append("load streams broken " + str(sum(1 for s in streams if s.broken))
                       + f"/{len(streams)}")
        return m
    finally:
        lab.unshape(DHCP_WAN)


# ------------------------------------------------------------------ rows


def client_routes(routes: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """(gateway, dev, protocol, metric) of ``ip -j`` default routes."""
    return [(r.get("gateway"), r.get("dev"), r.get("protocol"), r.get("metric", 0))
            for r in routes]


def main_ok(sh: Shares) -> tuple[bool, str]:
    """Whether table main's defaults were left alone: identical before ecmpd and with it
    (after the share runs), and after ecmpd stopped exactly the client's route for its
    last lease; and the cell text."""
    same = sh.main_before == sh.main_with
    want_after = [(sh.lease_gateway, DHCP_WAN, "dhcp", 0)]
    after_ok = sh.main_after is not None and client_routes(sh.main_after) == want_after
    text = (f"{'identical' if same else 'CHANGED'} before ecmpd and with it "
            f"({client_routes(sh.main_before)}); after ecmpd stopped (the gateway moved "
            f"meanwhile): {client_routes(sh.main_after or [])}"
            f"{'' if after_ok else ' (expected ' + str(want_after) + ')'}")
    return same and after_ok, text


SETUP = ("3 WANs 1:1:1: wlan1 DHCP (udhcpc puts default via its gateway in main, metric "
         "0), wlan2 static, ppp0 point-to-point, `gateway: auto`; ecmpd defaults; idle "
         "unshaped lines")


def rows(res: Fig10, reps: int) -> list[stats.Row]:
    """Figure 10's table rows."""
    Row, verdict = stats.Row, stats.verdict
    out: list[stats.Row] = []

    def err(name: str, key: str) -> stats.Row:
        return Row(name, SETUP, f"ERROR: {res.errors[key][:200]}", result="**ERROR**")

    variants = (
        ("move", "old gateway gone at once, traffic on the WAN",
         lambda m: not m.keep_old and not m.quiet),
        ("move-keep", "old gateway kept until the renewal, traffic on the WAN",
         lambda m: m.keep_old),
        ("move-quiet", "old gateway gone at once, no traffic on the WAN",
         lambda m: m.quiet),
    )
    for key, what, pick in variants:
        ms = [m for m in res.moves if pick(m)]
        name = f"10 DHCP gateway moved ({what})"
        quiet = key == "move-quiet"
        setup = (f"{SETUP}; the ISP moves wlan1's gateway (among {', '.join(GATEWAYS)}; "
                 + ("the client's renewal is answered at once" if key == "move-keep" else
                    "the client's unicast renewal is lost, it rebinds by broadcast")
                 + ")"
                 + ("; nothing but ecmpd's probes on wlan1" if quiet else
                    f"; {HOLD} long-lived LAN flows held across it, new flows from the "
                    f"router bound to {WAN_ADDRESS} every {FLOW_EVERY * 1000:.0f} ms")
                 + "; times from the client script having applied the renewed lease")
        if key in res.errors:
            out.append(err(name, key))
        if not ms:
            continue
        main = [None if m.table_at is None or m.main_at is None else
                (m.table_at - m.main_at) * 1000 for m in ms]
        known = [v for v in main if v is not None]
        out.append(Row(f"{name}: lease applied → table 1001 via the new gateway", setup,
                       secs_cell([m.since(m.table_at) for m in ms], 3)
                       + (f"; from the client's route appearing in main: "
                          f"{stats.fmt_summary(known, 'ms', 1)}" if known else "")))
        if not quiet:
            out.append(Row(f"{name}: lease applied → a new flow from the WAN address "
                           "succeeds via it", setup + "; the first flow started after table "
                           "1001 moved", secs_cell([m.since(m.flow_at) for m in ms], 3)
                           + "; flows failed after table 1001 moved: "
                           + count_cell([m.flows_failed_after for m in ms]),
                           target="0 failed",
                           result=verdict(all(m.flows_failed_after == 0
                                              and m.flow_at is not None for m in ms))))
        lefts = [len(m.left_at) for m in ms]
        back = secs_cell([m.since(m.back_at) for m in ms], 3)
        renewal = secs_cell([m.applied - m.moved for m in ms])
        if key == "move-keep":
            out.append(Row(f"{name}: WAN left the multipath route", setup,
                           count_cell(lefts) + " times; lease applied → wlan1 via the new "
                           f"gateway in table 1000: {back}", target="0",
                           result=verdict(not any(lefts))))
        else:
            out.append(Row(f"{name}: lease applied → wlan1 via the new gateway in the "
                           "multipath route (table 1000)", setup
                           + ("" if quiet else "; the traffic through the ISP (same MAC "
                              "behind both gateway addresses) proves the line alive while "
                              "the old gateway's probes fail"),
                           back + f"; left the route {count_cell(lefts)} times; the renewal "
                           f"came {renewal} after the old gateway went"
                           + ("; ICMP redirects the ISP sent meanwhile (not counted as "
                              "traffic beyond the gateway): "
                              + count_cell([m.redirects or 0 for m in ms]) if quiet else "")))
        if not quiet:
            out.append(Row(f"{name}: long-lived flows broken on the other WANs", setup,
                           count_cell([m.broken for m in ms], [m.held for m in ms]),
                           target="0", result=verdict(all(m.broken == 0 for m in ms))))
    for m in res.saturated:
        name = "10 DHCP gateway moved on a saturated line (old gateway gone at once)"
        setup = (f"{SETUP}, but wlan1 shaped {SATURATED.down_mbit:g}/{SATURATED.up_mbit:g} "
                 f"Mbit/s, {SATURATED.buffer_s:g} s buffers, loaded both ways (iperf3, 1 "
                 f"stream each way) for {SAT_FILL:.0f} s before and during the move (1 run)")
        def one(t: float | None) -> str:
            v = m.since(t)
            return "never" if v is None else f"{v:.3f} s"
        out.append(Row(name, setup,
                       f"lease applied {m.applied - m.moved:.2f} s after the old gateway went; "
                       f"from it: table 1001 via the new gateway {one(m.table_at)}, a new "
                       f"flow from the WAN address ok {one(m.flow_at)}, wlan1 via the new "
                       f"gateway in table 1000 {one(m.back_at)} (left it {len(m.left_at)} "
                       f"times); flows failed after table 1001 moved: {m.flows_failed_after}; "
                       f"other WANs' flows broken {m.broken}/{m.held}", result="info"))
    if "saturated" in res.errors:
        out.append(err("10 DHCP gateway moved on a saturated line", "saturated"))
    name = "10 PPP reconnect with a new address"
    setup = (f"{SETUP}; ppp0's session ends and comes back with the next pool address, "
             f"{HOLD_PTP} long-lived LAN flows held across it")
    if "ptp" in res.errors:
        out.append(err(name, "ptp"))
    rc = res.reconnects
    if rc:
        backs = [r.back for r in rc]
        up = PROBE_UP * PROBE_INTERVAL
        out.append(Row(f"{name}: session up → ppp0 back in table 1000", setup
                       + "; connected = PtpSession.connected (after both ends were up and "
                       "the router's carrier seen)",
                       secs_cell(backs, 3) + "; minus the up rounds "
                       f"({PROBE_UP} × {PROBE_INTERVAL:g} s): "
                       + secs_cell([None if b is None else b - up for b in backs], 3)
                       + "; from the new address appearing in the kernel: "
                       + secs_cell([r.from_addr for r in rc], 3)))
        cts = [r.ct_after if r.ct_after is not None else -1 for r in rc]  # -1: not read
        out.append(Row(f"{name}: conntrack entries NATed to the old address once back",
                       setup, count_cell(cts) + " (before the reconnect: "
                       + count_cell([r.ct_before for r in rc]) + ")", target="0",
                       result=verdict(all(c == 0 for c in cts))))
        out.append(Row(f"{name}: long-lived flows broken on the other WANs", setup,
                       count_cell([r.broken for r in rc], [r.held for r in rc]), target="0",
                       result=verdict(all(r.broken == 0 for r in rc))))
    sh = res.shares
    name = "10 DHCP client's metric-0 default route in main"
    if sh is not None:
        balanced = all(f == 0 for f in sh.failed) and all(
            all(r.get(n, 0.0) > 0 for n in NAMES) for r in sh.per_rep)
        out.append(Row(f"{name}: share of new LAN flows per WAN", SETUP + f"; weights 1:1:1, "
                       f"{FLOWS} new TCP flows from the LAN per repetition",
                       share_cell(sh.per_rep, NAMES) + "; failed "
                       + count_cell(sh.failed), target="≈ 33 % each, 0 failed",
                       result=verdict(balanced)))
        ok, text = main_ok(sh)
        out.append(Row(f"{name}: the route in main", SETUP, text, target="untouched",
                       result=verdict(ok)))
    if res.log_errors:
        out.append(Row("10 ecmpd's log", SETUP, f"{len(res.log_errors)} ERROR line(s): "
                       f"{res.log_errors[0][:160]}", target="0", result="**FAIL**"))
    return out


def details(res: Fig10) -> list[str]:
    """One detail line per run."""
    out = [f"fig 10 {m.line()}" for m in res.moves + res.saturated]
    out += [f"fig 10 {r.line()}" for r in res.reconnects]
    if res.shares is not None:
        out.append("fig 10 shares per repetition: " + "; ".join(
            ", ".join(f"{n} {v:.0f}%" for n, v in r.items()) for r in res.shares.per_rep))
    out += [f"fig 10 {k}: ERROR {v}" for k, v in res.errors.items()]
    return out
