"""Tiers (`ecmpd.tiers`, `ecmpd.state.active`) and what the state machine does when the
carrying tier moves: pure, no root."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

import pytest

from ecmpd import events as ev
from ecmpd.configmodel import Config, Wan
from ecmpd.decision import decide
from ecmpd.health import Verdict
from ecmpd.logsetup import NOTICE
from ecmpd.state import Link, State, active, carrying_tier, initial, plane
from ecmpd.tiers import changes, tiered

T0 = 1_700_000_000.0
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True), "eth3": Link(13, True, True)}
ADDRS = {11: (("192.0.2.10", 24),), 12: (("198.51.100.10", 24),), 13: (("203.0.113.10", 24),)}
ADDRS6 = {11: (("2001:db8:1::2", 64),), 12: (("2001:db8:2::2", 64),),
          13: (("2001:db8:3::2", 64),)}


def wans(failback: str = "keep", six: bool = False) -> Config:
    """wlan1, wlan2 in tier 1; lte (tier 2) with `failback`; dual-stack when `six`."""
    def w(name: str, iface: str, gw: str, i: int, **kw) -> Wan:
        extra = dict(gateway6=IPv6Address("fe80::1"), families=(4, 6)) if six else {}
        return Wan(name, iface, IPv4Address(gw), id=i, **extra, **kw)
    return Config(lan_interfaces=("lan0",),
                  wans=(w("wlan1", "eth1", "192.0.2.1", 1), w("wlan2", "eth2", "198.51.100.1", 2),
                        w("lte", "eth3", "203.0.113.1", 3, tier=2, failback=failback)))


def start(cfg: Config) -> State:
    return initial(cfg, LINKS, ADDRS, (), T0, addresses6=ADDRS6)


def rounds(st: State, name: str, verdict: Verdict, n: int, family: int = 4):
    """`n` rounds of `verdict` for WAN `name`; the state and every effect."""
    effects: list = []
    for _ in range(n):
        st, more = ev.step(st, ev.ProbeRound(name, verdict, "r", family), T0 + 10)
        effects += more
    return st, effects


def all_up(cfg: Config) -> State:
    st = start(cfg)
    for name in ("wlan1", "wlan2", "lte"):
        for f in cfg.families():
            st, _ = rounds(st, name, Verdict.GOOD, 1, f)
    return st


def logs(effects) -> list[tuple[int, str]]:
    return [(e.level, e.message) for e in effects if isinstance(e, ev.Log)]


def flushes(effects) -> list[ev.Flush]:
    return [e for e in effects if isinstance(e, ev.Flush)]


def test_new_flows_use_only_the_lowest_tier_with_a_usable_wan() -> None:
    st = all_up(wans())
    assert (carrying_tier(st), active(st)) == (1, {"wlan1", "wlan2"})
    d = decide(st, None)
    assert {h.oif for h in d.desired.main.nexthops} == {11, 12}  # lte stands by
    assert not d.in_route("lte") and d.in_route("wlan1")
    # per-WAN tables keep every WAN's route: pinned flows of a standby WAN go on
    assert {t.table for t in d.desired.tables if t.kind == "unicast"} >= {1001, 1002, 1003}
    st, _ = rounds(st, "wlan1", Verdict.FAILED, 3)
    assert active(st) == {"wlan2"}     # one tier-1 WAN left: tier 2 still stands by
    st, effects = rounds(st, "wlan2", Verdict.FAILED, 3)
    assert (carrying_tier(st), active(st)) == (2, {"lte"})
    assert {h.oif for h in decide(st, None).desired.main.nexthops} == {13}
    assert (logging.WARNING, "new flows: tier 2 (lte): no WAN of tier 1 is usable") \
        in logs(effects)
    assert ev.Reconcile(urgent=True) in effects


@pytest.mark.parametrize("failback, flushed", [("keep", False), ("flush", True)])
def test_failback_returns_new_flows_and_flushes_only_a_flush_wan(failback, flushed) -> None:
    st = all_up(wans(failback))
    st, _ = rounds(st, "wlan1", Verdict.FAILED, 3)
    st, _ = rounds(st, "wlan2", Verdict.FAILED, 3)
    assert active(st) == {"lte"}
    st, effects = rounds(st, "wlan2", Verdict.GOOD, 5)
    assert active(st) == {"wlan2"}
    message = "new flows: tier 1 again (wlan2)"
    if flushed:
        message += "; the connections of lte are removed (failback: flush)"
    assert (NOTICE, message) in logs(effects)
    assert flushes(effects) == ([ev.Flush(0x30000, 0xFF0000, "lte")] if flushed else [])
    # wlan1 back as well: tier 1 carried already, nothing more moves or is flushed
    st, effects = rounds(st, "wlan1", Verdict.GOOD, 5)
    assert active(st) == {"wlan1", "wlan2"} and not flushes(effects)
    assert not [m for _, m in logs(effects) if m.startswith("new flows")]


def test_a_backup_that_died_while_tier_1_came_back_is_not_flushed_twice() -> None:
    # lte was DOWN (flushed then) when tier 1 returned: failback flushes only a usable WAN
    st = all_up(wans("flush"))
    st, _ = rounds(st, "wlan1", Verdict.FAILED, 3)
    st, _ = rounds(st, "wlan2", Verdict.FAILED, 3)
    st, effects = rounds(st, "lte", Verdict.FAILED, 3)
    assert carrying_tier(st) is None and len(flushes(effects)) == 1
    assert (logging.WARNING, "new flows: no tier has a usable WAN") in logs(effects)
    st, effects = rounds(st, "wlan1", Verdict.GOOD, 5)
    assert active(st) == {"wlan1"} and not flushes(effects)


def test_a_standby_wan_going_down_is_a_warning_without_route_change() -> None:
    st = all_up(wans())
    st, effects = rounds(st, "lte", Verdict.FAILED, 3)
    assert (logging.WARNING, "lte: FALLING -> DOWN after 3 failed rounds: r "
                             "(was standing by in tier 2)") in logs(effects)
    assert active(st) == {"wlan1", "wlan2"}


def test_each_ip_version_has_its_own_carrying_tier() -> None:
    cfg = wans("flush", six=True)
    st = all_up(cfg)
    st, _ = rounds(st, "wlan1", Verdict.FAILED, 3, family=6)
    st, effects = rounds(st, "wlan2", Verdict.FAILED, 3, family=6)
    assert (carrying_tier(plane(st, 4)), carrying_tier(plane(st, 6))) == (1, 2)
    assert active(plane(st, 4)) == {"wlan1", "wlan2"} and active(plane(st, 6)) == {"lte"}
    assert (logging.WARNING, "new IPv6 flows: tier 2 (lte): no WAN of tier 1 is usable") \
        in logs(effects)
    st, effects = rounds(st, "wlan1", Verdict.GOOD, 5, family=6)
    # a dual-stack WAN's failback flush takes only that version's connections
    assert flushes(effects) == [ev.Flush(0x30000, 0xFF0000, "lte", 6)]


def test_a_carrier_loss_of_the_whole_tier_hands_both_versions_over_at_once() -> None:
    cfg = wans(six=True)
    st = all_up(cfg)
    st, _ = ev.step(st, ev.LinkChanged("eth1", Link(11, True, False)), T0 + 20)
    st, effects = ev.step(st, ev.LinkChanged("eth2", Link(12, True, False)), T0 + 21)
    assert {f: carrying_tier(plane(st, f)) for f in (4, 6)} == {4: 2, 6: 2}
    assert {m for _, m in logs(effects) if m.startswith("new")} == {
        "new IPv4 flows: tier 2 (lte): no WAN of tier 1 is usable",
        "new IPv6 flows: tier 2 (lte): no WAN of tier 1 is usable"}


def test_an_untiered_config_logs_no_tier_changes() -> None:
    cfg = Config(lan_interfaces=("lan0",),
                 wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), id=1),))
    assert not tiered(cfg) and tiered(wans())
    one = start(cfg)
    after, effects = rounds(one, "wlan1", Verdict.GOOD, 1)
    assert not [m for _, m in logs(effects) if m.startswith("new")]
    assert changes(one, after) == []


def test_a_backup_answering_first_at_start_does_not_take_new_flows() -> None:
    # at start every WAN waits for its first verdict; the backup answering first must
    # not carry new flows for the moment tier 1 has not been judged yet
    st = start(wans())
    st, effects = rounds(st, "lte", Verdict.GOOD, 1)
    assert carrying_tier(st) == 1 and active(st) == frozenset()
    assert not [m for _, m in logs(effects) if "joins the route" in m or m.startswith("new")]
    st, _ = rounds(st, "wlan1", Verdict.GOOD, 1)
    assert active(st) == {"wlan1"}
    # a tier-1 WAN judged dead at its first rounds hands over as soon as it is judged
    st = start(wans())
    st, _ = rounds(st, "lte", Verdict.GOOD, 1)
    st, _ = rounds(st, "wlan1", Verdict.FAILED, 1)
    st, effects = rounds(st, "wlan2", Verdict.FAILED, 1)
    assert active(st) == {"lte"}
    assert (logging.WARNING, "new flows: tier 2 (lte): no WAN of tier 1 is usable") \
        in logs(effects)


def test_a_set_of_wans_has_its_own_carrying_tier() -> None:
    # a policy's WANs: tiers apply within them, whatever the others do
    st = all_up(wans())
    assert active(st, ["wlan2", "lte"]) == {"wlan2"}
    assert active(st, ["lte"]) == {"lte"} and carrying_tier(st, ["lte"]) == 2
    st, _ = rounds(st, "wlan2", Verdict.FAILED, 3)
    assert active(st, ["wlan2", "lte"]) == {"lte"} and active(st) == {"wlan1"}
    assert active(st, ["wlan2"]) == frozenset() and carrying_tier(st, ["wlan2"]) is None
