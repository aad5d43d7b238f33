"""Figure 13's table rows (forwarding cost, bench/fwcost.py): `figure13` measures, `rows`
turns the windows into rows (pure), `note` says how to read them."""

from __future__ import annotations

import statistics
import textwrap
from typing import TYPE_CHECKING, Callable

from bench import fwcost
from bench.fwcost import KINDS, LONG, MATCHING, NEW_EVERY, PAYLOAD, PPS, RULES, TICK, VARIANTS
from bench.fwcost import FwCost, Window
from bench.stats import Row, fmt_summary, verdict

if TYPE_CHECKING:
    from bench.plan import Bench


def _ratios(ws: list[Window], bare: dict[int, Window], cost: Callable[[Window], float]
            ) -> tuple[list[float], list[float]]:
    """(ratios, differences in ns) of each window's cost to the bare router's of its round."""
    pairs = [(cost(w), cost(bare[w.round])) for w in ws if w.round in bare]
    return ([a / b for a, b in pairs if b > 0], [(a - b) * 1000 for a, b in pairs])


def rows(m: FwCost, seconds: float) -> list[Row]:
    """One row per variant (µs per packet, ratio to the bare router of the same round),
    and the idle CPU row; a variant without a window gets an ERROR row."""
    setup = (f"2 WANs (unshaped veth); {PPS} pps of UDP, {PAYLOAD + 28}-byte packets, "
             f"{LONG} long-lived flows + a new flow every {NEW_EVERY}th packet, "
             f"{seconds:.0f} s windows, routers interleaved per round; the sender's kernel "
             "CPU (its system time, the veth path runs in it, + ksoftirqd minus an idle "
             "window) per packet received; second: the whole machine's kernel CPU "
             "(/proc/stat) minus the idle window")
    bare = {w.round: w for w in _rounds(m, "bare")}
    zeros = {w.round: w for w in _rounds(m, "ecmpd 0")}
    out = []
    for v in VARIANTS:
        ws = _rounds(m, v)
        name = f"13 forwarding cost: {v}"
        if not ws:
            out.append(Row(name, setup, f"ERROR: {m.errors.get(v, 'no window')}",
                           result="**ERROR**"))
            continue
        lost = [100 * (1 - w.received / w.sent) for w in ws if w.sent]
        text = (f"sender {fmt_summary([w.sender_us for w in ws], 'µs/packet', 2)}; machine "
                f"{fmt_summary([w.us_per_packet for w in ws], 'µs/packet', 2)}; lost "
                f"{fmt_summary(lost, '%', 2)}; "
                f"{fmt_summary([w.received / w.seconds for w in ws], 'pps received', 0)}")
        if any(w.matched is not None for w in ws):
            text += ("; new connections the matching policy counted " +
                     fmt_summary([float(w.matched or 0) for w in ws], "", 0))
        if KINDS.get(v, "") in RULES:
            text += f"; {RULES[KINDS[v]]} lookup(s) at most in the policies' chains"
        if v in m.errors:
            text += f"; some windows failed: {m.errors[v]}"
        if v in KINDS and KINDS[v]:
            zero, _ = _ratios(ws, zeros, lambda w: w.sender_us)
            text += f"; ratio to ecmpd 0 of the same round (sender) {fmt_summary(zero, '', 3)}"
        ratio, diff = _ratios(ws, bare, lambda w: w.sender_us)
        mratio, _ = _ratios(ws, bare, lambda w: w.us_per_packet)
        base = (f"ratio to the same round's bare router: sender {fmt_summary(ratio, '', 3)} "
                f"({fmt_summary(diff, 'ns/packet', 0)} more); machine {fmt_summary(mratio, '', 2)}"
                if v != "bare" and ratio else "—")
        target = "≤ 1.10 × bare (sender, median)" if v.startswith("ecmpd") else "—"
        result = "info"
        if target != "—" and ratio:
            result = verdict(statistics.median(ratio) <= 1.10)
        out.append(Row(name, setup, text, base, target, result))
    out.append(Row("13 forwarding cost: idle", "the idle windows (no traffic, a router "
                   "running; subtracted from the machine's figures), all routers",
                   fmt_summary([t / seconds / TICK * 100 for t in m.idle],
                               "% of one CPU in kernel, the whole machine", 1)))
    return out


def _rounds(m: FwCost, variant: str) -> list[Window]:
    return [w for w in m.windows if w.variant == variant]



def figure13(bench: "Bench") -> list[Row]:
    seconds = bench.plan.fwcost_seconds
    m = fwcost.measure(bench, bench.plan.fwcost_rounds, seconds)
    return rows(m, seconds)


def note() -> str:
    """How to read figure 13 (for results.md)."""
    return textwrap.fill(
        "Figure 13 (bench/fwcost.py): the seed's 2-WAN lab, unshaped veth; per round each "
        "router in turn (the order rotates), each started afresh, 1 s to settle, an idle "
        "window, then one window of traffic.  \"sender\" is the generator's system time "
        "(getrusage over its sending loop) plus ksoftirqd's beyond the idle window, per "
        "packet received: on veth the router's forwarding runs as softirq in the sending "
        "task, so this is the path's kernel cost, sendto and the sink's drop included (the "
        "same for every router: the ratios understate the routers' own differences, the "
        "ns/packet differences do not).  \"machine\" is the whole machine's kernel CPU "
        "(/proc/stat has no namespaces) minus the idle window: anything else the host does "
        "shows in it (the idle row says how much; min/max show the noise).  Bare router: "
        "a multipath default route over both WANs (L3 hash) and one masquerade rule.  The "
        "mixed policy sets' last policy matches the new connections of the first "
        f"{MATCHING} client addresses (its counter is reported; its packets must still "
        "reach the sink: lost is sent minus received).", 88) + "\n\n"
