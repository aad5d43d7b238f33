"""Figure 10's table (bench/dynamic.py measures it): the rows and the per-run details."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from bench import stats
from bench.dynamic import (DHCP_WAN, FLOW_EVERY, FLOWS, HOLD, HOLD_PTP, NAMES, PROBE_INTERVAL,
                           PROBE_UP, SAT_FILL, SATURATED, WAN_ADDRESS)
from bench.dynamicstats import (GATEWAYS, Fig10, Shares, count_cell, secs_cell,
                                share_cell)


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
