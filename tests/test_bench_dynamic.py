"""Figure 10's pure parts (bench/dynamic.py): route events of ``ip -ts monitor route``,
per-table timelines, the flow arithmetic and the cells.  No root, no lab."""

from __future__ import annotations

import math
import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import dynamicrows as dr, dynamicstats as ds, stats  # noqa: E402
from lab.traffic import FlowResult, HeldResult  # noqa: E402


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


MONITOR = """\
[2026-12-02T10:00:00.000000] default via 10.111.0.254 dev wlan1 proto dhcp scope link 
[2026-12-02T10:00:00.004000] default via 10.111.0.254 dev wlan1 table 1001 proto 236 
[2026-12-02T10:00:00.005000] default table 1000 proto 236 
\tnexthop via 10.111.0.254 dev wlan1 weight 1 
\tnexthop via 10.112.0.1 dev wlan2 weight 1 
\tnexthop dev ppp0 weight 1 
[2026-12-02T10:00:01.000000] default table 1000 proto 236 
\tnexthop via 10.112.0.1 dev wlan2 weight 1 
\tnexthop dev ppp0 weight 1 dead 
[2026-12-02T10:00:01.500000] local 10.113.0.3 dev ppp0 table local proto kernel scope host src 10.113.0.3 
[2026-12-02T10:00:02.000000] default via 10.112.0.1 dev wlan2 table 1000 proto 236 
[2026-12-02T10:00:03.000000] Deleted default via 10.111.0.254 dev wlan1 table 1001 proto 236 
[2026-12-02T10:00:04.000000] local fe80::1 dev wlan1 table local proto kernel metric 0 pref medium
"""


def test_parse_route_event_single_multipath_unreachable_and_others() -> None:
    ev = ds.parse_route_event("default via 10.111.0.254 dev wlan1 table 1001 proto 236 ")
    assert ev == ds.RouteEvent(False, "default", "1001", 0,
                               frozenset({("10.111.0.254", "wlan1")}))
    ev = ds.parse_route_event("Deleted default via 10.111.0.1 dev wlan1 proto dhcp metric 0 ")
    assert ev is not None and ev.deleted and ev.table == "main"
    ev = ds.parse_route_event("unreachable default table 1001 proto 236 metric 4294967295 ")
    assert ev == ds.RouteEvent(False, "default", "1001", 4294967295, frozenset())
    ev = ds.parse_route_event("default table 1000 proto 236 nexthop via 10.112.0.1 dev wlan2 "
                              "weight 1 nexthop dev ppp0 weight 1 nexthop via 10.111.0.1 dev "
                              "wlan1 weight 1 dead linkdown")
    assert ev is not None and ev.hops == {("10.112.0.1", "wlan2"), (None, "ppp0")}
    assert ds.parse_route_event("local 10.113.0.3 dev ppp0 table local proto kernel") is None
    assert ds.parse_route_event("fe80::/64 dev wlan1 proto kernel metric 256") is None
    assert ds.parse_route_event("") is None


def test_routes_from_json_and_effective() -> None:
    routes = [{"dst": "default", "gateway": "10.111.0.1", "dev": "wlan1", "flags": []},
              {"type": "unreachable", "dst": "default", "metric": 4294967295, "flags": []}]
    got = ds.routes_from_json(routes)
    assert got == {0: frozenset({("10.111.0.1", "wlan1")}), 4294967295: frozenset()}
    assert ds.effective(got) == {("10.111.0.1", "wlan1")}
    assert ds.effective({4294967295: frozenset()}) == frozenset()
    assert ds.effective({}) == frozenset()
    multi = [{"dst": "default", "flags": [], "nexthops": [
        {"gateway": "10.112.0.1", "dev": "wlan2", "weight": 1, "flags": []},
        {"dev": "ppp0", "weight": 1, "flags": ["dead"]}]}]
    assert ds.routes_from_json(multi) == {0: frozenset({("10.112.0.1", "wlan2")})}


def test_table_timelines_first_when_and_left() -> None:
    events = stats.parse_monitor(MONITOR)
    t0 = _ts("2026-12-02T09:59:59")
    init1000 = {0: frozenset({("10.111.0.1", "wlan1"), ("10.112.0.1", "wlan2"),
                              (None, "ppp0")})}
    tl = ds.table_timeline(1000, init1000, events, t0)
    assert [len(h) for _, h in tl] == [3, 3, 1, 1]
    new = ds.has_dev("wlan1", "10.111.0.254")
    assert ds.first_when(tl, new, t0) == pytest.approx(_ts("2026-12-02T10:00:00.005"))
    assert ds.first_when(tl, ds.has_dev("wlan1"), t0) == t0  # in force at the start
    assert ds.first_when(tl, new, _ts("2026-12-02T10:00:01.5")) is None
    assert ds.left(tl, "wlan1", t0) == [pytest.approx(_ts("2026-12-02T10:00:01"))]
    assert ds.left(tl, "ppp0", t0) == [pytest.approx(_ts("2026-12-02T10:00:01"))]  # dead
    assert ds.left(tl, "wlan1", t0, _ts("2026-12-02T10:00:00.5")) == []
    assert ds.lacks_dev("ppp0")(tl[-1][1])
    # table 1001: the unreachable fallback at the highest metric is not a route
    init1001 = {0: frozenset({("10.111.0.1", "wlan1")}), 4294967295: frozenset()}
    tl = ds.table_timeline("1001", init1001, events, t0)
    assert [sorted(h) for _, h in tl] == [[("10.111.0.1", "wlan1")],
                                          [("10.111.0.254", "wlan1")], []]
    main = ds.table_timeline("main", {}, events, t0)
    assert ds.first_when(main, ds.has_dev("wlan1", "10.111.0.254"), t0) == \
        pytest.approx(_ts("2026-12-02T10:00:00"))
    # events before the start are ignored
    late = ds.table_timeline(1000, init1000, events, _ts("2026-12-02T10:00:01.2"))
    assert [len(h) for _, h in late] == [3, 1]
    assert ds.first_event(events, "local 10.113.0.3 dev ppp0 ") == \
        pytest.approx(_ts("2026-12-02T10:00:01.5"))
    assert ds.first_event(events, "local 10.113.0.3 dev ppp0 ", _ts("2026-12-02T10:00:02")) \
        is None


def _flow(wall: float, ok: bool, latency: float = 0.005, wan: str | None = "wlan1") -> FlowResult:
    return FlowResult(0.0, ok, "10.111.0.2" if ok else None, latency if ok else None,
                      None if ok else "timeout", "10.111.0.2", wall, wan if ok else None)


def test_flow_arithmetic() -> None:
    flows = [_flow(10.0, True), _flow(10.5, False), _flow(11.0, False),
             _flow(11.2, True, 0.3), _flow(11.1, True, 0.01)]
    assert ds.first_ok_after(flows, 10.6) == pytest.approx(11.11)  # earliest start wins
    assert ds.first_ok_after(flows, 12.0) is None
    assert ds.failed_between(flows, 10.0) == 2
    assert ds.failed_between(flows, 10.0, 11.0) == 1
    held = [HeldResult("10.111.0.2", True, wan="wlan1"), HeldResult("10.112.0.2", False,
            wan="wlan2"), HeldResult("10.113.0.2", True, wan="ppp0"),
            HeldResult(None, True, wan=None)]
    assert ds.broken_others(held, "wlan1") == (1, 2)
    assert ds.count_lines("a\n\n b \n") == 2
    snmp = ("Ip: Forwarding DefaultTTL\nIp: 1 64\n"
            "Icmp: InMsgs OutRedirects OutEchos\nIcmp: 5 7 9\n")
    assert ds.snmp_counter(snmp, "Icmp", "OutRedirects") == 7
    with pytest.raises(ValueError):
        ds.snmp_counter(snmp, "Tcp", "OutRsts")
    out = [_flow(1, True, wan="wlan1"), _flow(2, True, wan="wlan2"), _flow(3, False)]
    assert ds.shares(out, ["wlan1", "wlan2", "ppp0"]) == pytest.approx(
        {"wlan1": 100 / 3, "wlan2": 100 / 3, "ppp0": 0.0})
    assert ds.shares([], ["wlan1"]) == {"wlan1": 0.0}


def test_cells() -> None:
    assert ds.secs_cell([0.5, None, 1.0], 1) == \
        "0.5 / 0.8 / 1.0 s (n=2); not reached in 1/3 runs"
    assert ds.secs_cell([None]) == "not reached in 1/1 runs"
    assert ds.secs_cell([]) == "no data"
    assert ds.count_cell([0, 2, 1], [40, 42, 41]) == "0 / 1 / 2 of 40–42 (n=3)"
    assert ds.count_cell([0], [40]) == "0 / 0 / 0 of 40 (n=1)"
    assert ds.share_cell([{"a": 30.0, "b": 70.0}, {"a": 40.0, "b": 60.0}], ["a", "b"]) == \
        "a 30 / 35 / 40 %; b 60 / 65 / 70 % (n=2)"


def test_next_gateway_keeps_or_avoids_the_first_offer_server() -> None:
    first, a, b = ds.GATEWAYS
    assert ds.next_gateway(first, True) == a and ds.next_gateway(a, True) == first
    assert ds.next_gateway(b, True) == first
    assert ds.next_gateway(first, False) == a and ds.next_gateway(a, False) == b
    assert ds.next_gateway(b, False) == a
    # a move never stays put, and one that drops the old gateway never goes to `first`
    for cur in ds.GATEWAYS:
        for keep in (False, True):
            assert ds.next_gateway(cur, keep) != cur
        assert ds.next_gateway(cur, False) != first


def _move(**kw: object) -> ds.Move:
    base = dict(keep_old=False, old="10.111.0.1", new="10.111.0.254", moved=100.0,
                applied=101.1, main_at=101.095, table_at=101.1, flow_at=101.12,
                back_at=101.1, left_at=[], flows_failed_before=0, flows_failed_after=0,
                flows_total=300, broken=0, held=40, broken_own=0, held_own=20)
    base.update(kw)
    return ds.Move(**base)  # type: ignore[arg-type]


def test_rows_and_main_check() -> None:
    sh = ds.Shares([{"wlan1": 33.0, "wlan2": 34.0, "ppp0": 33.0}], [0],
                   [{"dst": "default", "gateway": "10.111.0.1", "dev": "wlan1",
                     "protocol": "dhcp", "flags": []}],
                   [{"dst": "default", "gateway": "10.111.0.1", "dev": "wlan1",
                     "protocol": "dhcp", "flags": []}],
                   [{"dst": "default", "gateway": "10.111.0.254", "dev": "wlan1",
                     "protocol": "dhcp", "flags": []}], "10.111.0.254")
    ok, text = dr.main_ok(sh)
    assert ok and text.startswith("identical")
    bad = ds.Shares(sh.per_rep, sh.failed, sh.main_before, [], sh.main_after, "10.111.0.254")
    assert not dr.main_ok(bad)[0]
    res = ds.Fig10(shares=sh, moves=[
        _move(), _move(keep_old=True, left_at=[100.5]),
        _move(quiet=True, flow_at=None, back_at=102.0, left_at=[100.4], held=0, held_own=0)],
        reconnects=[ds.Reconnect("10.113.0.2", "10.113.0.3", 200.0, 200.2, 201.1, 200.19, 90,
                                 0, 0, 60, 30, 30)])
    rows = dr.rows(res, 1)
    byname = {r.figure: r for r in rows}
    assert all(r.result != "**ERROR**" for r in rows)
    keep = byname["10 DHCP gateway moved (old gateway kept until the renewal, traffic on the "
                  "WAN): WAN left the multipath route"]
    assert keep.result == "**FAIL**"
    quiet = [r for r in rows if "no traffic" in r.figure]
    assert len(quiet) == 2 and quiet[1].ecmpd.startswith("0.900 / 0.900 / 0.900 s")
    ppp = [r for r in rows if r.figure.startswith("10 PPP")]
    assert "minus the up rounds (5 × 0.2 s): -0.100" in ppp[0].ecmpd
    assert [r.result for r in ppp[1:]] == ["pass", "pass"]
    res.errors["ptp"] = "TimeoutError: x"
    assert any(r.result == "**ERROR**" and r.figure.startswith("10 PPP")
               for r in dr.rows(res, 1))
    assert any("quiet move" in d for d in dr.details(res))
    assert math.isclose(res.reconnects[0].from_addr or 0, 0.91)
