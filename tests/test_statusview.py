"""ecmpd.statusview: what ecmpctl prints for status (at a glance), history and monitor."""

from __future__ import annotations

import time

import pytest

from ecmpd.statusview import clock, event_line, render_history, render_status

NOW = 1_764_000_100.0          # 2025-11-24 16:01:40 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fam(state: str, since: float, active: bool, **kw) -> dict:
    return {"state": state, "health": state, "since": since, "active": active,
            "reason": kw.pop("reason", ""), "standby": kw.pop("standby", False),
            "downs_24h": kw.pop("downs", 0), "last_down": kw.pop("last_down", None),
            "targets": kw.pop("targets", {}), **kw}


DOWN_AT = NOW - 3600 - 125
LAST = {"at": DOWN_AT, "at_iso": "x", "reason": "0/2 targets answered"}
T = {"10.0.0.1": {"rtt_ms": 10.0, "loss_pct": 0.0}, "192.0.2.1": {"rtt_ms": 30.0, "loss_pct": 50.0}}
WAN1 = {**fam("up", NOW - 3600, True, downs=2, last_down=LAST, targets=T),
        "weight": 2, "tier": 1, "connections": 120, "disabled": False}
WAN2 = {**fam("down", NOW - 30, False, reason="0/2 targets answered", downs=1,
              last_down={**LAST, "at": NOW - 30}),
        "weight": 1, "tier": 1, "connections": 0, "disabled": False}
PAYLOAD = {"pid": 7, "config": "/etc/ecmpd/ecmpd.yaml", "uptime": 90000.0, "hash": "h",
           "wans": {"wlan1": WAN1, "wlan2": WAN2},
           "route": {"present": True, "kept_last": False,
                     "nexthops": [{"gateway": "10.0.0.1", "interface": "eth1", "weight": 2}]},
           "policies": [{"name": "voip"}], "warnings": [],
           "stats": {"reconciles": 6, "reaction_ms": [8.5]}}


def test_status_at_a_glance_is_one_line_per_wan_and_the_route() -> None:
    text = render_status(PAYLOAD, NOW)
    assert text == """\
ecmpd: pid 7, config /etc/ecmpd/ecmpd.yaml, up 1d01h

WAN    STATE  SINCE             ROUTE  WEIGHT  RTT     LOSS  CONNS  DOWNS/24H  LAST DOWN
wlan1  UP     15:01:40 (1h00m)  yes    2       20.0ms  25%   120    2          14:59:35 (1h02m)
wlan2  DOWN   16:01:10 (30s)    no     1       -       -     0      1          16:01:10 (30s)
  wlan1 last down: 0/2 targets answered
  wlan2 DOWN: 0/2 targets answered

route: default proto ecmpd
  via 10.0.0.1 dev eth1 weight 2
policies: 1 (ecmpctl status -v)
"""
    # the detail and the daemon's internals: only under -v
    verbose = render_status(PAYLOAD, NOW, verbose=True)
    assert "stats: reconciles 6, reaction_ms [8.5]" in verbose
    assert "  downs in the last 24 h: 2, last 1h ago (0/2 targets answered)" in verbose


def test_dual_stack_tiers_standby_and_disabled_at_a_glance() -> None:
    six = fam("rising", NOW - 5, False, reason="1/3 good rounds")
    wan1 = {**WAN1, "tier": 1, "ipv4": fam("up", NOW - 3600, True), "ipv6": six}
    wan2 = {**WAN2, **fam("up", NOW - 60, False, standby=True), "tier": 2}
    wan3 = {**WAN2, **fam("up", NOW - 60, False), "disabled": True, "reason": "ok"}
    text = render_status({**PAYLOAD, "new_flows_tier": {"ipv4": 1, "ipv6": None},
                          "wans": {"wlan1": wan1, "wlan2": wan2, "wlan3": wan3},
                          "route6": {"present": False}}, NOW)
    lines = text.splitlines()
    assert "new flows: tier 1 (IPv4), no WAN usable (IPv6)" in lines
    assert lines[3].split() == ["WAN", "STATE", "SINCE", "ROUTE", "WEIGHT", "TIER", "RTT",
                                "LOSS", "CONNS", "DOWNS/24H", "LAST", "DOWN"]
    assert lines[4].split()[:5] == ["wlan1", "UP", "15:01:40", "(1h00m)", "yes"]
    assert lines[5].split()[:6] == ["wlan1", "IPv6", "RISING", "16:01:35", "(5s)", "no"]
    assert lines[6].split()[:5] == ["wlan2", "UP", "16:00:40", "(1m00s)", "standby"]
    assert lines[7].split()[:2] == ["wlan3", "DISABLED"]
    assert "  wlan1 IPv6 RISING: 1/3 good rounds" in lines
    assert "  wlan3 DISABLED by the administrator; probes say UP: ok" in lines
    assert "route6: none (ecmpd has no default route installed)" in lines


def test_odd_payloads_render_without_failing() -> None:
    for payload in ({}, {"wans": "x"}, {"wans": {"a": None, "b": {"targets": {"x": None}}}},
                    {"wans": {"a": {"since": "soon", "last_down": 5, "ipv4": {}, "ipv6": 3}}}):
        assert render_status(payload, NOW).startswith("ecmpd: pid ?")


def test_clock_time_and_older_than_a_day() -> None:
    assert clock(NOW - 10, NOW) == "16:01:30"
    assert clock(NOW - 3 * 86400, NOW) == "Nov 21 16:01"
    assert clock(None, NOW) == clock("x", NOW) == "?"


EVENTS = [
    {"wan": "wlan1", "family": "ipv4", "state": "falling", "previous": "up",
     "reason": "1/2 targets answered", "at": NOW - 100, "lasted": 7200.0, "active": False},
    {"wan": "wlan1", "family": "ipv4", "state": "down", "previous": "falling",
     "reason": "0/2 targets answered", "at": NOW - 98, "lasted": 2.0, "active": False},
    {"wan": "wlan2", "family": "ipv6", "state": "disabled", "previous": "up",
     "reason": "disabled by the administrator", "at": NOW - 50, "lasted": None,
     "active": False},
]


def test_history_table() -> None:
    assert render_history({"transitions": EVENTS, "limit": 1000}, NOW) == """\
TIME      WAN         CHANGE           LASTED  REASON
16:00:00  wlan1       up -> falling    2h00m   1/2 targets answered
16:00:02  wlan1       falling -> down  2s      0/2 targets answered
16:00:50  wlan2 IPv6  up -> disabled   -       disabled by the administrator
"""
    full = render_history({"transitions": EVENTS[:2], "limit": 2}, NOW)
    assert full.endswith("(the last 2 kept; the journal has more: journalctl WAN=<name>)\n")
    assert render_history({"transitions": []}, NOW) == \
        "no WAN state changes since ecmpd started\n"
    assert render_history({"transitions": [None, 5]}, NOW).startswith("no WAN")


def test_monitor_lines() -> None:
    assert event_line(EVENTS[1], NOW) == \
        "16:00:02 wlan1 falling -> down: 0/2 targets answered (falling 2s), out of the route"
    assert event_line({**EVENTS[0], "state": "up", "active": True, "reason": ""}, NOW) == \
        "16:00:00 wlan1 up -> up (up 2h00m), in the route"
    assert event_line(None, NOW) == "? ? ? -> ?"
