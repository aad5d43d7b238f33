"""The benchmark's pure parts: statistics and formatting, the result table, outage
reporting, the /proc and ``ip monitor`` parsers, and the baseline's translation of the
seed and its check-gateway state machine.  (The bench itself runs outside the suite.)"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import baseline, stats  # noqa: E402
from lab.traffic import FlowResult  # noqa: E402
from bench.flows import FaultRun  # noqa: E402
from bench.figures import _broken_cell, _outage_cell  # noqa: E402
from bench.run import parse_only  # noqa: E402
from bench import ipv6, ipv6load, ipv6rows  # noqa: E402
from bench.perf import Usage  # noqa: E402
from bench.plan import QUICK  # noqa: E402
from bench.underload import FaultOut, Soak  # noqa: E402
from lab import StreamResult  # noqa: E402

# ------------------------------------------------------------------ statistics


def test_summarize_and_percentile() -> None:
    s = stats.summarize([3.0, 1.0, 2.0, 10.0])
    assert (s.n, s.min, s.median, s.max) == (4, 1.0, 2.5, 10.0)
    with pytest.raises(ValueError):
        stats.summarize([])
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.percentile([5.0, 1.0], 99) == 5.0
    with pytest.raises(ValueError):
        stats.percentile(values, 0)


def test_fmt_summary_keeps_never_out_of_the_numbers() -> None:
    assert stats.fmt_summary([0.7, 0.9, 0.8], "s") == "0.70 / 0.80 / 0.90 s (n=3)"
    text = stats.fmt_summary([12.0, math.inf, 15.0], "s", window=22.4)
    assert text == "12.00 / 13.50 / 15.00 s (n=2); never recovered in 1/3 runs (> 22.4 s)"
    only_never = stats.fmt_summary([math.inf] * 3, "s", window=15.0, never="never detected")
    assert only_never == "never detected in 3/3 runs (> 15.0 s)"
    assert stats.fmt_summary([96.123], "%", 1) == "96.1 / 96.1 / 96.1% (n=1)"
    assert stats.fmt_summary([]) == "no data"


def test_meets_every_value_or_the_median() -> None:
    assert stats.meets([0.7, 0.9], 1.0)
    assert not stats.meets([0.7, 1.1], 1.0)
    assert not stats.meets([0.7, math.inf], 1.0)
    assert stats.meets([5.0, 8.0, 40.0], 10.0, stat="median")
    assert not stats.meets([5.0, 12.0, 40.0], 10.0, stat="median")
    assert stats.meets([96.0, 94.0, 97.0], 95.0, ">=", "median")
    assert not stats.meets([96.0, 94.0, 97.0], 95.0, ">=")
    assert not stats.meets([], 1.0)
    assert [stats.verdict(x) for x in (True, False, None)] == ["pass", "**FAIL**", "info"]


def test_render_table_is_one_markdown_table() -> None:
    rows = [stats.Row("1 outage", "2 WANs | dead", "0.8 s", "15 s", "≤ 1.0 s", "pass"),
            stats.Row("7 status", "seed", "60 ms")]
    text = stats.render_table(rows)
    lines = text.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| figure | setup | ecmpd")
    assert lines[1] == "|---|---|---|---|---|---|"
    assert all(line.count(" | ") == 5 for line in lines[2:])  # "|" in a cell is escaped
    assert "2 WANs \\| dead" in lines[2]
    assert lines[3].endswith("| — | — | info |")


def test_distribution_deviation_and_ratios() -> None:
    labels = ["a"] * 18 + ["b"] * 82
    assert stats.shares_pct(labels) == {"a": 18.0, "b": 82.0}
    # 1:5 wants 16.67 / 83.33
    assert stats.max_deviation_pp(labels, {"a": 1, "b": 5}) == pytest.approx(1.333, abs=1e-3)
    # a WAN that got nothing deviates by its whole share; failures (None) count as no WAN
    assert stats.max_deviation_pp(["a"] * 9 + [None], {"a": 1, "b": 1}) == pytest.approx(50.0)
    assert stats.ratios([2.0, 3.0], [4.0, 3.0]) == [0.5, 1.0]
    with pytest.raises(ValueError):
        stats.ratios([1.0], [1.0, 2.0])


# ------------------------------------------------------------------ /proc, monitor, log

STAT = ("1234 (python3 -m x) S 1 1234 1234 0 -1 4194560 5000 0 0 0 "
        "150 25 0 0 20 0 3 0 100 300000000 9000 18446744073709551615")


def test_proc_parsers_and_cpu_percent() -> None:
    assert stats.proc_cpu_ticks(STAT) == 175  # a ")" or space in comm does not shift fields
    status = "Name:\tpython3\nVmPeak:\t  120000 kB\nVmHWM:\t   38912 kB\nVmRSS:\t   30000 kB\n"
    assert stats.proc_status_kb(status, "VmHWM") == 38912
    assert stats.proc_status_kb(status, "VmRSS") == 30000
    with pytest.raises(ValueError):
        stats.proc_status_kb(status, "VmSwap")
    assert stats.cpu_percent(100, 112, 20.0, 100) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        stats.cpu_percent(0, 1, 0.0, 100)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


MONITOR = """\
[2026-11-27T07:56:49.822043] default via 10.112.0.1 dev wlan2 proto 236 
[2026-11-27T07:56:51.142928] default proto 236 
\tnexthop via 10.111.0.1 dev wlan1 weight 1 
\tnexthop via 10.112.0.1 dev wlan2 weight 1 
[2026-11-27T07:56:51.530491] Deleted default via 10.111.0.1 dev wlan1 table 1001 proto 236 
[2026-11-27T07:56:52.100000] default via 10.111.0.1 dev wlan1 table 1001 proto 236 
[2026-11-27T07:56:53.000000] default via 10.111.0.10 dev wlan3 proto 236 
"""


def test_monitor_events_and_routes_without_a_gateway() -> None:
    events = stats.parse_monitor(MONITOR)
    assert len(events) == 5
    assert events[1][0] == pytest.approx(_ts("2026-11-27T07:56:51.142928"))
    assert "nexthop via 10.111.0.1 dev wlan1" in events[1][1]  # continuation lines joined
    without = stats.main_route_without(events, "10.111.0.1")
    # not the multipath with it, not a deletion, not another table; 10.111.0.10 is not .1
    assert without == [pytest.approx(_ts("2026-11-27T07:56:49.822043")),
                       pytest.approx(_ts("2026-11-27T07:56:53.0"))]


def test_down_decisions_and_first_after() -> None:
    log = ("1795766419.500000 ecmpd[7] INFO wlan1: UP -> FALLING after 1 failed round: x\n"
           "1795766419.900123 ecmpd[7] INFO wlan1: FALLING -> DOWN after 3 failed rounds: x\n"
           "2026-11-27 07:56:49 ecmpd[7] INFO wlan2: FALLING -> DOWN after 3 failed rounds\n"
           "1795766421.000000 ecmpd[7] INFO wan-2: RISING -> DOWN after 1 failed round: y\n")
    assert stats.down_decisions(log) == [(1795766419.900123, "wlan1"), (1795766421.0, "wan-2")]
    assert stats.first_after([1.0, 2.5, 2.2, 9.0], 2.0) == 2.2
    assert stats.first_after([1.0, 9.0], 2.0) is None  # beyond the 5 s limit


# ------------------------------------------------------------------ figure cells


def run(outage: float, window: float = 20.0, took_out: bool | None = None,
        healthy: int = 0, broken: int = 0) -> FaultRun:
    return FaultRun("x", "dead", "wlan1", outage, window, healthy, broken, took_out=took_out)


def test_outage_cell_says_never_detected_only_when_nothing_was_taken_out() -> None:
    assert _outage_cell([run(0.8), run(0.7), run(0.9)]) == "0.70 / 0.80 / 0.90 s (n=3)"
    never = [run(math.inf, 15.7, False), run(math.inf, 19.0, False), run(math.inf, 22.3, False)]
    assert _outage_cell(never) == "never detected in 3/3 runs (> 15.7 s)"
    mixed = [run(14.0, took_out=True), run(math.inf, 18.0, True)]
    assert _outage_cell(mixed) == "14.00 / 14.00 / 14.00 s (n=1); never recovered in 1/2 runs (> 18.0 s)"


def test_broken_cell() -> None:
    runs = [run(1, healthy=98, broken=0), run(1, healthy=103, broken=12), run(1, healthy=100, broken=3)]
    assert _broken_cell(runs) == "0 / 3 / 12 of 98–103 healthy (n=3)"


def test_parse_only() -> None:
    assert parse_only(None) == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]
    assert parse_only("4,1 1") == [1, 4]
    assert parse_only("9") == [9]
    assert parse_only("12 11") == [11, 12]
    for bad in ("8", "17", "0"):
        with pytest.raises(ValueError):
            parse_only(bad)


# ------------------------------------------------------------------ the baseline


def test_check_gateway_out_after_two_misses_back_after_one_answer() -> None:
    g = baseline.GatewayCheck()
    assert g.up
    assert g.observe(False) is False and g.up          # one miss: still in
    assert g.observe(True) is False and g.up           # an answer resets the streak
    assert g.observe(False) is False and g.up
    assert g.observe(False) is True and not g.up       # second consecutive miss: out
    assert g.observe(False) is False and not g.up      # stays out, no new change
    assert g.observe(True) is True and g.up            # one answer: back
    assert g.observe(True) is False and g.up


def test_check_gateway_other_thresholds() -> None:
    g = baseline.GatewayCheck(misses=3, answers=2)
    assert [g.observe(False) for _ in range(3)] == [False, False, True]
    assert [g.observe(x) for x in (True, False, True, True)] == [False, False, False, True]
    assert g.up


WANS = [baseline.SeedWan("wlan1", "10.111.0.1", 1, 1), baseline.SeedWan("wlan2", "10.112.0.1", 5, 2)]


def test_parse_wan() -> None:
    assert baseline.parse_wan("wlan2,10.112.0.1,5", 2) == WANS[1]
    assert baseline.parse_wan("wlan1,10.111.0.1", 1) == WANS[0]
    for bad in ("wlan1", "wlan1,,1", "a,b,c,d", "wlan1,10.111.0.1,0"):
        with pytest.raises(ValueError):
            baseline.parse_wan(bad, 1)


def test_main_route_is_the_weighted_multipath_of_the_active_gateways() -> None:
    assert baseline.main_route(WANS, WANS) == [
        "ip", "route", "replace", "default", "proto", "static",
        "nexthop", "via", "10.111.0.1", "dev", "wlan1", "weight", "1",
        "nexthop", "via", "10.112.0.1", "dev", "wlan2", "weight", "5"]
    assert baseline.main_route(WANS, WANS[1:]) == [
        "ip", "route", "replace", "default", "proto", "static", "via", "10.112.0.1", "dev", "wlan2"]
    assert baseline.main_route(WANS, []) == ["ip", "route", "del", "default", "proto", "static"]


def test_nft_script_is_the_seeds_nat_and_mangle_only() -> None:
    script = baseline.nft_script(WANS)
    assert script.startswith("add table ip seed\ndelete table ip seed\n")  # atomic replace
    assert 'oifname "wlan1" masquerade' in script and 'oifname "wlan2" masquerade' in script
    assert 'iifname "wlan2" ct mark set 2' in script
    assert "ct mark 1 meta mark set 1" in script
    assert "hook input priority mangle" in script and "type route hook output" in script
    # LAN flows are NOT pinned: nothing marks forwarded connections
    assert "forward" not in script and "prerouting" not in script
    assert script.count("{") == script.count("}")


def test_mark_routing_and_cleanup_cover_the_same_objects() -> None:
    assert baseline.mark_routing(WANS[1]) == [
        ["ip", "route", "replace", "default", "via", "10.112.0.1", "dev", "wlan2", "table", "102"],
        ["ip", "rule", "add", "priority", "102", "fwmark", "2", "lookup", "102"]]
    cleanup = baseline.cleanup_commands(WANS)
    assert ["ip", "rule", "del", "priority", "101"] in cleanup
    assert ["ip", "route", "flush", "table", "102"] in cleanup
    assert ["ip", "route", "del", "default", "proto", "static"] in cleanup
    assert any(c[0] == "nft" and "delete table ip seed" in c[1] for c in cleanup)


# ------------------------------------------------------------------ outage


def flows_at(*spec: tuple[float, bool]) -> list[FlowResult]:
    return [FlowResult(t=t, ok=ok, source=None, latency=None) for t, ok in spec]


def test_settled_outage_needs_a_lasting_recovery() -> None:
    # flows every 0.5 s until 5.5 s; those of 1.0..2.5 s fail; all good from 3.0 s on
    steady = flows_at(*[(i * 0.5, not 2 <= i <= 5) for i in range(12)])
    assert stats.settled_outage(steady, 0.9) == pytest.approx(2.0)
    assert stats.settled_outage(steady, 0.9, settle=2.5) == pytest.approx(2.0)
    assert stats.settled_outage(steady, 0.9, settle=2.6) == math.inf
    # flows alternating between a dead and a live WAN, the last two lucky: not recovered
    alternating = flows_at(*[(i * 0.1, i % 2 == 0 or i >= 18) for i in range(20)])
    assert stats.settled_outage(alternating, 0.0, settle=1.0) == math.inf
    assert stats.settled_outage(flows_at((0.0, True), (1.0, True)), 0.5) == 0.0
    assert stats.settled_outage(flows_at((0.0, True), (1.0, False)), 0.5) == math.inf


def test_log_errors_pairs_each_error_with_its_exception() -> None:
    log = ("2026-11-27 08:17:11 ecmpd[1] INFO wan2: RISING -> UP after 5 good rounds\n"
           "2026-11-27 08:17:11 ecmpd[1] ERROR applying wan2's state change failed\n"
           "Traceback (most recent call last):\n"
           '  File "/x/daemon.py", line 163, in _transition\n'
           "    await self.reconcile()\n"
           "pyroute2.netlink.exceptions.NetlinkError: (16, 'Device or resource busy')\n"
           "2026-11-27 08:17:12 ecmpd[1] WARNING cannot set route\n"
           "2026-11-27 08:17:13 ecmpd[1] ERROR cannot apply nft table ecmpd: boom\n")
    assert stats.log_errors(log) == [
        "2026-11-27 08:17:11 ecmpd[1] ERROR applying wan2's state change failed -> "
        "pyroute2.netlink.exceptions.NetlinkError: (16, 'Device or resource busy')",
        "2026-11-27 08:17:13 ecmpd[1] ERROR cannot apply nft table ecmpd: boom"]
    assert stats.log_errors("2026-11-27 08:17:11 ecmpd[1] INFO all fine\n") == []


# ------------------------------------------------------------------ figure 9


ROUTES = """\
[2026-12-01T07:34:19.478768] default via 10.101.0.1 dev north table 1001 proto 236 
[2026-12-01T07:34:19.479338] unreachable default table 1001 proto 236 metric 4294967295 
[2026-12-01T07:34:19.481052] default proto 236 
\tnexthop via 10.101.0.1 dev north weight 1 
\tnexthop via 10.102.0.1 dev south weight 1 
\tnexthop via 10.103.0.1 dev west weight 1 
[2026-12-01T07:34:20.447671] default proto 236 
\tnexthop via 10.102.0.1 dev south weight 1 
\tnexthop via 10.103.0.1 dev west weight 1 
[2026-12-01T07:34:20.915916] local fe80::e07b:f3ff:fea8:ebf2 dev north table local proto kernel metric 0 pref medium
[2026-12-01T07:34:21.397499] default proto static 
\tnexthop via 10.101.0.1 dev north weight 1 dead linkdown 
\tnexthop via 10.102.0.1 dev south weight 1 
\tnexthop via 10.103.0.1 dev west weight 1 
[2026-12-01T07:34:22.000000] default via 10.103.0.1 dev west proto static 
[2026-12-01T07:34:23.254329] Deleted default via 10.101.0.1 dev north table 1001 proto 236 
[2026-12-01T07:34:23.255865] Deleted default proto 236 
\tnexthop via 10.103.0.1 dev west weight 1 
"""


def test_default_route_devs_reads_table_mains_default_only() -> None:
    bodies = [b for _, b in stats.parse_monitor(ROUTES)]
    assert [stats.default_route_devs(b) for b in bodies] == [
        None, None, {"north", "south", "west"}, {"south", "west"}, None,
        {"south", "west"},  # a dead nexthop does not carry traffic
        {"west"}, None, set()]


def test_route_timeline_and_removals() -> None:
    events = stats.parse_monitor(ROUTES)
    t = [ts for ts, _ in events]
    tl = stats.route_timeline({"north", "south", "west"}, events)
    assert [sorted(devs) for _, devs in tl] == [
        ["north", "south", "west"], ["north", "south", "west"], ["south", "west"],
        ["south", "west"], ["west"], []]
    assert stats.removals(tl) == [(t[3], "north"), (t[6], "south"), (t[8], "west")]
    assert stats.removals(tl, start=t[4], end=t[7]) == [(t[6], "south")]
    assert stats.first_removal(tl, "north", t[0]) == t[3]
    assert stats.first_removal(tl, "north", t[4]) is None  # gone already, never back
    assert stats.devs_at(tl, t[3] - 0.001) == {"north", "south", "west"}
    assert stats.devs_at(tl, t[3]) == {"south", "west"}
    # events before the watch started are ignored; the initial state stands for them
    late = stats.route_timeline({"south", "west"}, events, start=t[3] + 0.1)
    assert [sorted(d) for _, d in late] == [["south", "west"], ["south", "west"], ["west"], []]
    assert late[0][0] == t[3] + 0.1


def test_removals_count_every_exit_and_rejoin() -> None:
    a, ab = frozenset({"a"}), frozenset({"a", "b"})
    tl = [(0.0, ab), (1.0, a), (2.0, ab), (3.0, a), (4.0, frozenset())]
    assert stats.removals(tl) == [(1.0, "b"), (3.0, "b"), (4.0, "a")]
    assert stats.first_removal(tl, "b", 1.5) == 3.0


def test_last_rise_and_parse_samples() -> None:
    text = "100.000000 5\n100.020000 9\n100.040000 12\n100.500000 12\ngarbage\n100.9 x\n"
    samples = stats.parse_samples(text)
    assert samples == [(100.0, 5), (100.02, 9), (100.04, 12), (100.5, 12)]
    assert stats.last_rise(samples, 101.0) == pytest.approx(100.04)
    assert stats.last_rise(samples, 100.03) == pytest.approx(100.02)
    assert stats.last_rise(samples, 100.0) is None
    assert stats.last_rise([(1.0, 7)], 5.0) is None  # one sample: no rise seen


def test_fmt_fault_outs_counts_runs_already_out() -> None:
    assert stats.fmt_fault_outs([0.8, 1.2, 0.9]) == "0.80 / 0.90 / 1.20 s (n=3)"
    assert stats.fmt_fault_outs([15.8, None, math.inf], window=24.0) == (
        "15.80 / 15.80 / 15.80 s (n=1); never out in 1/2 runs (> 24.0 s); "
        "already out before the fault in 1/3 runs")
    assert stats.fmt_fault_outs([None]) == "already out before the fault in 1/1 runs"
    assert stats.fmt_fault_outs([]) == "no data"


def _fault(out: float | None, stop_out: float | None = None, window: float = 10.0):
    from bench.underload import FaultOut
    return FaultOut("ecmpd", "dead", "north", 0.0, out, window, stop_out)


def test_fig9_cells_and_verdicts() -> None:
    from bench.figures import _outs_cell, _outs_ok, _soak_cells
    from bench.underload import Soak, buffer_bytes, wan_counts
    from lab import StreamResult

    assert buffer_bytes("north", "down", 1.0) == 2.5e6      # 20 Mbit/s, 1 s
    assert buffer_bytes("west", "up", 2.0) == 3.75e6        # 15 Mbit/s, 2 s
    assert wan_counts([(1.0, "north"), (2.0, "north"), (3.0, "west")]) == {
        "north": 2, "south": 0, "west": 1}

    runs = [_fault(0.77, 0.70), _fault(1.24, 0.55), _fault(None)]
    assert _outs_cell(runs) == "0.77 / 1.00 / 1.24 s (n=2); already out before the fault in 1/3 runs"
    assert _outs_cell(runs, "stop_out") == ("0.55 / 0.62 / 0.70 s (n=2); not measured in 1/3 "
                                            "runs (not out, or out before the fault)")
    assert not _outs_ok(runs, 1.5)                          # a run that was not measured fails
    assert _outs_ok(runs[:2], 1.5) and not _outs_ok(runs[:2], 1.0)
    assert not _outs_ok([_fault(math.inf)], 1.5) and not _outs_ok([], 1.5)
    assert not _outs_ok(runs[:2], 0.5, "stop_out") and _outs_ok(runs[:2], 0.7, "stop_out")

    ok = StreamResult("download", "north", "north", 5201, 20000, 10, 1.0, False)
    bad = StreamResult("upload", "west", "west", 5202, 20001, 10, 1.0, True, "reset")
    soak = Soak("baseline", "saturation", 60.0, 100.0, [(110.0, "north"), (130.0, "north")],
                [ok, bad])
    assert _soak_cells([soak]) == ("2 / 2 / 2 (n=1) — north 2, south 0, west 0",
                                   "1 / 1 / 1 of 2 streams (n=1)")
    assert "north at +10.0s, north at +30.0s" in soak.line()
    assert "streams broken 1/2" in soak.line() and "BROKEN reset" in soak.line()


def test_log_between_picks_a_wans_lines_in_a_window() -> None:
    log = ("1795766419.500000 ecmpd[7] INFO ecmpd 7 running: north, south\n"
           "1795766420.100000 ecmpd[7] INFO north: UP -> FALLING after 1 failed round: x\n"
           "1795766420.500000 ecmpd[7] WARNING north: FALLING -> DOWN after 3 failed rounds "
           "(leaves the route)\n"
           "1795766420.600000 ecmpd[7] INFO south: UP -> FALLING after 1 failed round\n"
           "2026-12-01 07:34:19 ecmpd[7] INFO north: DOWN -> RISING\n"
           "1795766425.000000 ecmpd[7] NOTICE north: RISING -> UP after 5 good rounds\n")
    assert stats.log_between(log, 1795766420.0, 1795766421.0, "north:") == [
        (1795766420.1, "INFO", "north: UP -> FALLING after 1 failed round: x"),
        (1795766420.5, "WARNING", "north: FALLING -> DOWN after 3 failed rounds "
                                  "(leaves the route)")]
    assert len(stats.log_between(log, 0, 2e9)) == 5  # the line without an epoch is skipped


def test_sigterm_handler_tears_down_only_in_the_main_process() -> None:
    import os
    from bench.run import _on_sigterm

    handler = _on_sigterm(os.getpid())
    with pytest.raises(KeyboardInterrupt):  # the main process unwinds: labs torn down
        handler()
    pid = os.fork()  # like pyroute2's netns helper, which is ended with SIGTERM
    if pid == 0:
        try:
            handler()
        finally:
            os._exit(1)  # not reached when the handler exits the child itself
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 143


def test_ecmpds_table_counts_as_the_default_route_other_tables_do_not() -> None:
    ecmpd = ("default table 1000 proto 236 metric 0 nexthop via 10.111.0.1 dev wlan1 "
             "weight 1 nexthop via 10.112.0.1 dev wlan2 weight 5")
    assert stats.default_route_devs(ecmpd) == {"wlan1", "wlan2"}
    assert stats.default_route_devs("default via 10.111.0.1 dev wlan1 table 1001 proto 236") \
        is None
    assert stats.default_route_devs("unreachable default table 1000 proto 236") is None
    assert stats.main_route_without([(1.0, ecmpd), (2.0, "default via 10.112.0.1 dev wlan2 "
                                                         "table 1000 proto 236")],
                                    "10.111.0.1") == [2.0]


# ------------------------------------------------------------------ figure 11: IPv6


ROUTE6_JSON = (
    '[{"dst":"default","table":"1000","protocol":"236","metric":1024,"flags":[],'
    '"pref":"medium","nexthops":[{"gateway":"2001:db8:1::1","dev":"north","weight":1,'
    '"flags":[]},{"gateway":"2001:db8:2::1","dev":"south","weight":2,"flags":["dead"]},'
    '{"gateway":"2001:db8:3::1","dev":"west","weight":3,"flags":[]}]},'
    '{"dst":"default","gateway":"2001:db8:1::1","dev":"north","table":"1001",'
    '"protocol":"236","metric":1024,"flags":[],"pref":"medium"},'
    '{"type":"unreachable","dst":"default","dev":"lo","table":"1001","metric":4294967295,'
    '"flags":[],"pref":"medium"}]')


def test_route_json_devs_reads_ecmpds_table_of_either_version() -> None:
    # a dead nexthop, a per-WAN table and an unreachable default do not count
    assert stats.route_json_devs(ROUTE6_JSON) == {"north", "west"}
    main4 = '[{"dst":"default","gateway":"10.111.0.1","dev":"wlan1","flags":[]}]'
    assert stats.route_json_devs(main4) == {"wlan1"}
    assert stats.route_json_devs("") == set() and stats.route_json_devs("[]") == set()


def test_ipv6_monitor_events_give_the_route_timeline() -> None:
    text = ("[2026-12-07T16:51:23.495311] default table 1000 proto 236 metric 1024 pref medium\n"
            "\tnexthop via 2001:db8:2::1 dev south weight 2 \n"
            "\tnexthop via 2001:db8:3::1 dev west weight 3 \n"
            "[2026-12-07T16:51:24.487442] default table 1000 proto 236 metric 1024 pref medium\n"
            "\tnexthop via 2001:db8:1::1 dev north weight 1 \n"
            "\tnexthop via 2001:db8:2::1 dev south weight 2 \n"
            "\tnexthop via 2001:db8:3::1 dev west weight 3 \n")
    events = stats.parse_monitor(text)
    tl = stats.route_timeline({"north", "south", "west"}, events, events[0][0] - 1)
    assert [devs for _, devs in tl] == [frozenset({"north", "south", "west"}),
                                       frozenset({"south", "west"}),
                                       frozenset({"north", "south", "west"})]
    assert stats.first_removal(tl, "north", 0) == events[0][0]


def _dual(mode: str, wan: str, out6: float, out4: float, r6: float | None = 0.6,
          r4: float | None = 0.6, healthy: int = 0, broken6: int = 0) -> ipv6.DualRun:
    return ipv6.DualRun(mode, wan, {
        6: FaultRun("ecmpd IPv6", mode, wan, out6, 5.0, healthy, broken6),
        4: FaultRun("ecmpd IPv4", mode, wan, out4, 5.0, healthy, 0)}, {6: r6, 4: r4})


def test_fig11_fault_rows_put_ipv6_first_and_ipv4_as_the_baseline() -> None:
    faults = {
        "dead": [_dual("dead", "north", 0.62, 0.66, healthy=160),
                 _dual("dead", "south", 0.70, 0.64, healthy=170, broken6=1)],
        "carrier": [_dual("carrier", "north", 0.02, 0.0, r6=0.01, r4=None)],
    }
    rows = ipv6rows.fault_rows(faults, {"upstream": "TimeoutError: route"}, hold=200)
    assert [r.figure for r in rows] == ["11 IPv6 new-flow outage", "11 healthy IPv6 flows broken",
                                        "11 IPv6 new-flow outage", "11 IPv6 new-flow outage"]
    dead, held, upstream, carrier = rows
    assert dead.ecmpd == ("0.62 / 0.66 / 0.70 s (n=2); kernel route 0.60 / 0.60 / 0.60 s (n=2)")
    assert dead.baseline.startswith("IPv4: 0.64 / 0.65 / 0.66 s (n=2)")
    assert (dead.target, dead.result) == ("≤ 1.0 s", "pass")
    assert "baseline column: ecmpd's IPv4 in the same run" in dead.setup
    assert held.ecmpd == "0 / 0 / 1 of 160–170 healthy (n=2)" and held.result == "**FAIL**"
    assert held.baseline == "IPv4: 0 / 0 / 0 of 160–170 healthy (n=2)"
    assert upstream.result == "**ERROR**" and "TimeoutError" in upstream.ecmpd
    assert carrier.target == "≤ 0.3 s" and carrier.result == "pass"
    assert carrier.baseline.endswith("kernel route never changed")
    slow = ipv6rows.fault_rows({"dead": [_dual("dead", "west", math.inf, 0.6)]}, {}, hold=0)
    assert slow[0].result == "**FAIL**" and len(slow) == 3  # no run of the other modes: ERROR
    assert "never recovered in 1/1 runs" in slow[0].ecmpd


def test_route_cell() -> None:
    assert ipv6rows.route_cell([0.5, None, 0.7]) == ("kernel route 0.50 / 0.60 / 0.70 s (n=2), "
                                                    "not out in 1/3 runs")
    assert ipv6rows.route_cell([None]) == "kernel route never changed"


def _outage(family: int, wan: str = "north", **kw) -> ipv6.FamilyOutage:
    base = dict(out=0.6, held=30, broken=0, held_all=200, broken_all=0, left_other=0,
                new_ok=100, new_total=100, new_on_wan=17)
    base.update(kw)
    return ipv6.FamilyOutage(wan, family, **base)


def test_family_outage_is_clean_only_when_nothing_of_the_other_version_suffered() -> None:
    assert _outage(6).clean and _outage(6).other == 4
    for bad in (dict(out=None), dict(held=0), dict(broken=1), dict(broken_all=2),
                dict(left_other=1), dict(new_ok=99), dict(new_on_wan=0)):
        assert not _outage(6, **bad).clean, bad
    assert "IPv4 long-lived flows through it broken 0/30" in _outage(6).line()


def test_fig11_one_version_down_row() -> None:
    outs = [_outage(6), _outage(4, held=25), _outage(6, "south", held=40), _outage(4, "south")]
    row = ipv6rows.outage_row(outs, None, 200)
    assert row.ecmpd.startswith("IPv6 long-lived flows through the WAN broken 0 / 0 / 0 of "
                                "25–30 (n=2), on every WAN 0;")
    assert "its IPv4 left the route 0.60 / 0.60 / 0.60 s (n=2)" in row.ecmpd
    assert row.baseline.startswith("IPv4 long-lived flows through the WAN broken 0 / 0 / 0 of "
                                   "30–40 (n=2)")
    assert "new IPv4 flows greeted 200/200 (34 through the WAN)" in row.baseline
    assert (row.target, row.result) == ("0 and 0", "pass")
    assert ipv6rows.outage_row(outs[:1] + [_outage(4, broken=3)], None, 200).result == "**FAIL**"
    assert ipv6rows.outage_row([], "RuntimeError: x", 200).result == "**ERROR**"


def test_fig11_distribution_soak_and_cpu_rows() -> None:
    dist = {6: [(1.2, {}), (0.8, {})], 4: [(0.5, {}), (3.5, {})]}
    row = ipv6rows.dist_row(dist, None, 3000)
    assert row.ecmpd == "max dev 0.80 / 1.00 / 1.20 pp (n=2)" and row.result == "pass"
    assert row.baseline == "IPv4: max dev 0.50 / 2.00 / 3.50 pp (n=2)"
    assert ipv6rows.dist_row({6: [(3.1, {})], 4: [(0.1, {})]}, None, 3000).result == "**FAIL**"
    assert ipv6rows.dist_row({}, "ValueError: x", 3000).result == "**ERROR**"

    ok = StreamResult("download", "north", "north", 5201, 20000, 10, 1.0, False)
    bad = StreamResult("upload", "west", "west", 5202, 20001, 10, 1.0, True, "reset")
    s6 = Soak("ecmpd IPv6", "saturation", 60.0, 100.0, [], [ok, ok])
    s4 = Soak("ecmpd IPv4", "saturation", 60.0, 100.0, [(120.0, "west")], [ok, bad])
    left, broken = ipv6rows.soak_rows(ipv6load.DualSoak({6: s6, 4: s4}), None, 60)
    assert left.ecmpd == "IPv6 route: 0 / 0 / 0 (n=1) — north 0, south 0, west 0"
    assert left.baseline == "IPv4 route: 1 / 1 / 1 (n=1) — north 0, south 0, west 1"
    assert left.result == "**FAIL**" and broken.result == "**FAIL**"   # either version fails it
    assert broken.ecmpd == "IPv6 streams: 0 / 0 / 0 of 2 streams (n=1)"
    good = ipv6rows.soak_rows(ipv6load.DualSoak({6: s6, 4: replace(s4, removals=[],
                                                                streams=[ok])}), None, 60)
    assert [r.result for r in good] == ["pass", "pass"]
    assert ipv6rows.soak_rows(None, "LoadError: x", 60)[0].result == "**ERROR**"

    usage = {6: Usage(3, [1.1, 1.3, 1.2], [30.0] * 3, 30.0),
             4: Usage(3, [0.7, 0.8, 0.9], [29.0] * 3, 29.0)}
    cpu = ipv6rows.cpu_row(usage, None, 60)
    assert cpu.ecmpd == "1.10 / 1.20 / 1.30% (n=3)" and cpu.result == "pass"
    assert cpu.baseline == "IPv4 only: 0.70 / 0.80 / 0.90% (n=3)" and cpu.target == "≤ 1.5 %"
    usage[6] = Usage(3, [1.1, 1.6, 1.2], [30.0] * 3, 30.0)
    assert ipv6rows.cpu_row(usage, None, 60).result == "**FAIL**"


def _ramps(removals6: list[tuple[float, str]], broken: bool = False) -> ipv6load.Ramps:
    ok = StreamResult("download", "north", "north", 5201, 20000, 10, 1.0, broken)
    per = {6: [Soak("ecmpd IPv6", "ramp", 12.0, 100.0, removals6),
               Soak("ecmpd IPv6", "ramp", 12.0, 112.0, [])],
           4: [Soak("ecmpd IPv4", "ramp", 12.0, 100.0, [], [ok, ok]),
               Soak("ecmpd IPv4", "ramp", 12.0, 112.0, [], [ok, ok])]}
    return ipv6load.Ramps(per, {6: [0.9, 0.8], 4: [0.95, 0.85]}, {6: [0, 1], 4: [0, 0]})


def test_fig11_ramp_rows_count_each_version_and_the_ipv4_load() -> None:
    left, broken = ipv6rows.ramp_rows(_ramps([]), None, 2)
    assert left.ecmpd == ("IPv6 route: 0 / 0 / 0 (n=2) — north 0, south 0, west 0; peak srtt "
                          "of the least queued line 0.80 / 0.85 / 0.90 s (n=2); WANs fallen to "
                          "FALLING (a failed round) 0 / 0 / 1 (n=2)")
    assert left.baseline.endswith("FALLING (a failed round) 0 / 0 / 0 (n=2)")
    assert left.baseline.startswith("IPv4 route: 0 / 0 / 0 (n=2)")
    assert "stopped 2x (8 s load, 4 s idle" in left.setup
    assert (left.result, broken.result) == ("pass", "pass")
    assert broken.ecmpd.startswith("IPv6: none to break")
    assert broken.baseline == "IPv4 load streams: 0 / 0 / 0 of 2 streams (n=2)"
    left, broken = ipv6rows.ramp_rows(_ramps([(101.0, "west")], broken=True), None, 2)
    assert left.ecmpd.startswith("IPv6 route: 0 / 0 / 1 (n=2) — north 0, south 0, west 1")
    assert left.result == "**FAIL**" and broken.result == "**FAIL**"
    assert [r.result for r in ipv6rows.ramp_rows(None, "LoadError: x", 3)] == ["**ERROR**"]


def _busy(wan: str, out: float, idle_out: float | None = 0.5, srtt4: float = 0.6,
          left4: int = 0) -> ipv6load.BusyOutage:
    ok = StreamResult("download", wan, wan, 5201, 20000, 10, 1.0, False)
    return ipv6load.BusyOutage(_outage(6, wan, out=idle_out),
                               FaultOut("ecmpd IPv6", "dead6", wan, 100.0, out, 10.0),
                               {6: 0.7, 4: srtt4}, [(101.0, wan)] * left4, [], [ok, ok])


def test_fig11_busy_rows_put_the_saturated_line_against_the_idle_one() -> None:
    runs = [_busy("north", 1.5), _busy("south", 2.0, 0.4), _busy("west", 2.5)]
    runs[2].fell_before = 2
    out, hurt = ipv6rows.busy_rows(runs, None, 200)
    assert out.ecmpd == ("saturated line: 1.50 / 2.00 / 2.50 s (n=3); ratio to the idle line "
                         "(same WAN) 3.0 / 5.0 / 5.0 × (n=3); srtt at the fault IPv4 0.60 / "
                         "0.60 / 0.60 s (n=3), IPv6 0.70 / 0.70 / 0.70 s (n=3); IPv6 fell to "
                         "FALLING under the load before the fault in 1/3 runs")
    assert out.baseline == "idle line: kernel route 0.40 / 0.50 / 0.50 s (n=3)"
    assert (out.target, out.result) == ("≤ 4 s", "pass")
    assert hurt.ecmpd.startswith("WAN out of the IPv4 route 0 / 0 / 0 (n=3); IPv4 load "
                                 "streams broken 0 / 0 / 0 of 2 (n=3)")
    assert hurt.baseline.startswith("idle line: IPv4 long-lived flows") and hurt.result == "pass"
    slow = ipv6rows.busy_rows([_busy("north", math.inf), _busy("south", 1.0, None)], None, 200)
    assert slow[0].result == "**FAIL**" and "never out in 1/2 runs" in slow[0].ecmpd
    assert "ratio to the idle line (same WAN) no data" in slow[0].ecmpd
    cold = ipv6rows.busy_rows([_busy("north", 1.0, srtt4=0.1)], None, 200)
    assert cold[0].result == "info" and "srtt < 0.3 s at the fault in 1/1 runs" in cold[0].ecmpd
    assert ipv6rows.busy_rows([_busy("north", 1.0, left4=1)], None, 200)[1].result == "**FAIL**"
    assert [r.result for r in ipv6rows.busy_rows([], "TimeoutError: x", 200)] == ["**ERROR**"]
    assert runs[1].ratio == 5.0 and _busy("north", 1.0, None).ratio is None


def test_fig11_rows_cover_every_part_even_when_all_failed() -> None:
    res = ipv6rows.Fig11(errors={p: "RuntimeError: boom" for p in
                             ("dead", "upstream", "carrier", "dist", "outages", "soak", "cpu",
                              "ramps", "busy")})
    rows = ipv6rows.rows(res, QUICK)
    assert len(rows) == 9 and all(r.result == "**ERROR**" for r in rows)
    assert all(r.figure.startswith("11 ") for r in rows)
    assert "fig 11 soak: ERROR RuntimeError: boom" in res.details()
