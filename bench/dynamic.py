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
from typing import Any, Callable

from lab import Lab, LabSpec, LabWan, Line

from bench import stats
from bench.routers import wait_until
from bench.underload import spool, monitor_routes
from bench.dynamicstats import (
    Fig10, Hop, Move, Reconnect, Shares, Timeline, broken_others, count_lines, effective,
    failed_between, first_event, first_ok_after, first_when, has_dev, left, next_gateway,
    routes_from_json, shares, snmp_counter, table_timeline)

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
"""The saturated-line row: 20 Mbit/s down, 5 up, 1 s buffers (`lab.lines`)."""
SAT_FILL = 6.0
"""Seconds of load before the move on the saturated line."""


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
