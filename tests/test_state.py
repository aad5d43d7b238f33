"""Unit tests of ecmpd.state (snapshots and what is derived from one) and ecmpd.events
(the pure transitions `step(state, event, now) -> (state, effects)`).  No root, no loop."""

from __future__ import annotations

import dataclasses
import logging
import random
from ipaddress import IPv4Address

import pytest

from ecmpd import events as ev
from ecmpd.desired import Nexthop, RouteSpec
from ecmpd.health import Health, Phase as H, Verdict
from ecmpd.logsetup import NOTICE
from ecmpd.configmodel import Config, Policy, Wan
from ecmpd.reloadplan import plan_reload
from ecmpd.state import (Default, Link, State, WanState, active, address, awaiting_verdict, carrier,
                         initial, keeps_last_route, link_condition, link_ok, usable)
from ecmpd.decision import decide

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), weight=1, id=1),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2)),
)
"""Marks 0x10000/0x20000 under 0xff0000; tables 1001..1255, rules 1000..1511 (defaults)."""
UP_LINK = Link(11, True, True)
LINKS = {"lan0": Link(3, True, True), "eth1": UP_LINK, "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.10", 24), ("192.0.2.11", 24)), 12: (("198.51.100.10", 24),)}
T0 = 1_700_000_000.0
UP = Health(H.UP, 0, "after 1 good round")


def start(links=LINKS, addrs=ADDRS, disabled=(), cfg=CFG) -> State:
    return initial(cfg, links, addrs, disabled, T0)


def up(st: State, *names: str) -> State:
    for name in names or tuple(st.wans):
        st = st.with_wan(name, dataclasses.replace(st.wan(name), health=UP))
    return st


def step(st: State, event, now: float = T0 + 10):
    return ev.step(st, event, now)


def kinds(effects) -> list[str]:
    """The effects' kinds but transitions (tests/test_events.py checks those)."""
    return [type(e).__name__ for e in effects if not isinstance(e, ev.Transition)]


def logs(effects) -> list[tuple[int, str]]:
    return [(e.level, e.message) for e in effects if isinstance(e, ev.Log)]


def main_route(*gw_oif: tuple[str, int]) -> RouteSpec:
    return RouteSpec(1000, tuple(Nexthop(g, o, 1) for g, o in gw_oif), 0)


# ---- the snapshot --------------------------------------------------------------------

def test_a_state_is_immutable_and_copies_what_it_is_given() -> None:
    links = dict(LINKS)
    st = start(links=links)
    links["eth9"] = Link(99, True, True)            # the caller's dict is not the state's
    assert "eth9" not in st.links
    with pytest.raises(TypeError):
        st.links["eth9"] = Link(99, True, True)  # type: ignore[index]
    with pytest.raises(TypeError):
        st.wans["wlan1"] = WanState()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.cfg = CFG  # type: ignore[misc]
    after, _ = step(st, ev.LinkChanged("eth1", Link(11, True, False)))
    assert st.links["eth1"] == UP_LINK and after.links["eth1"].carrier is False
    assert st.wan("wlan1").health == Health() and after.wan("wlan1").health.state is H.DOWN


def test_initial_judges_links_from_what_netlink_shows() -> None:
    st = start(links={"eth1": UP_LINK, "eth2": Link(12, True, False)}, disabled={"wlan1"})
    w1, w2 = st.wan("wlan1"), st.wan("wlan2")
    assert (w1.health, w1.since, w1.disabled, w1.adopted) == (Health(), T0, True, False)
    assert w2.health == Health(H.DOWN, 0, "no carrier")
    assert list(st.wans) == ["wlan1", "wlan2"]
    assert start(links={}).wan("wlan1").health.reason == "interface missing"
    assert start(addrs={12: ADDRS[12]}).wan("wlan1").health.reason == "no IPv4 address"


def test_link_condition_tells_a_missing_interface_from_one_without_carrier() -> None:
    w2 = CFG.wan("wlan2")
    assert link_condition(start(), w2) == "up"
    assert link_condition(start(links={**LINKS, "eth2": Link(12, True, False)}), w2) == "no carrier"
    assert link_condition(start(links={**LINKS, "eth2": Link(12, False, False)}), w2) == "down"
    assert link_condition(start(links={}), w2) == "missing"


@pytest.mark.parametrize("first", [Link(12, True, False), Link(12, False, False)],
                         ids=["carrier-lost", "link-down"])
def test_a_session_that_ends_is_down_for_a_missing_interface(first: Link) -> None:
    """The ISP ends a PPPoE session: its interface loses carrier (or goes down), then is
    deleted; the WAN's reason follows to "interface missing", whichever came first."""
    st = up(start())
    st, _ = step(st, ev.LinkChanged("eth2", first))
    assert st.wan("wlan2").health.state is H.DOWN
    st, _ = step(st, ev.LinkChanged("eth2", None), T0 + 11)
    assert st.wan("wlan2").health == Health(H.DOWN, 0, "interface missing")
    assert link_condition(st, CFG.wan("wlan2")) == "missing"


def test_address_carrier_and_link_check_are_derived() -> None:
    st = start()
    w1, w2 = CFG.wans
    assert address(st, w1) == "192.0.2.10"          # the primary one
    assert carrier(st, w1) and link_ok(st, w1)
    st = dataclasses.replace(st, links={**LINKS, "eth2": Link(12, True, False)})
    assert address(st, w2) == "198.51.100.10" and not carrier(st, w2) and not link_ok(st, w2)


@pytest.mark.parametrize("health, adopted, disabled, usable_", [
    (Health(), False, False, False),             # INIT: not before its first verdict...
    (Health(), True, False, True),               # ...unless adopted from the kernel's route
    (Health(H.INIT, 1, ""), False, False, False),
    (UP, False, False, True),
    (Health(H.FALLING, 1, ""), False, False, True),
    (Health(H.RISING, 2, ""), False, False, False),
    (Health(H.DOWN, 0, ""), True, False, False),
    (UP, False, True, False),                    # disabled by the administrator
])
def test_usable(health, adopted, disabled, usable_) -> None:
    st = start().with_wan("wlan1", WanState(health, T0, disabled, adopted))
    assert usable(st, "wlan1") is usable_
    assert ("wlan1" in active(st)) is usable_


def test_waiting_for_first_verdicts() -> None:
    st = start(links={"eth1": UP_LINK})             # wlan2: no interface, DOWN
    assert awaiting_verdict(st) == ["wlan1"]
    st, _ = step(st, ev.ProbeRound("wlan1", Verdict.FAILED, "silent"))
    assert awaiting_verdict(st) == []                # INIT with one failed round: judged
    assert not usable(st, "wlan1")


def test_decide_routes_and_the_kept_flag_from_one_snapshot() -> None:
    kernel = main_route(("192.0.2.1", 11), ("198.51.100.1", 12))
    st = up(start(), "wlan2")
    d = decide(st, kernel)
    assert d.active == {"wlan2"} and not d.kept
    assert d.desired.main == RouteSpec(1000, (Nexthop("198.51.100.1", 12, 2),), 0)
    assert d.in_route("wlan2") and not d.in_route("wlan1")
    # nothing usable: the kernel's route is kept, and said so
    st = st.with_wan("wlan2", WanState(Health(H.DOWN, 0, "x"), T0))
    d = decide(st, kernel)
    assert d.kept and d.desired.main == kernel and d.in_route("wlan1")
    assert keeps_last_route(st, kernel) and not keeps_last_route(st, None)
    assert not decide(st, None).kept and decide(st, None).desired.main is None
    # an administratively down interface gets no route via it
    st = dataclasses.replace(up(st), links={**LINKS, "eth1": Link(11, False, False)})
    tables = {(t.table, t.kind) for t in decide(st, kernel).desired.tables}
    assert (1001, "unicast") not in tables and (1002, "unicast") in tables


# ---- probe rounds --------------------------------------------------------------------

def test_the_first_good_verdict_brings_a_wan_into_the_route() -> None:
    st, effects = step(start(), ev.ProbeRound("wlan1", Verdict.GOOD, "1/1 targets answered"))
    assert st.wan("wlan1").health.state is H.UP and st.wan("wlan1").since == T0 + 10
    assert usable(st, "wlan1")
    assert logs(effects) == [(logging.INFO, "wlan1: INIT -> UP after 1 good round: "
                                            "1/1 targets answered (joins the route)")]
    assert ev.Reconcile(urgent=True) in effects


def test_down_after_failed_rounds_leaves_the_route_and_flushes_after_the_reconcile() -> None:
    st = up(start())
    effects: tuple = ()
    for i in range(3):
        st, effects = step(st, ev.ProbeRound("wlan1", Verdict.FAILED, "0/1 answered"), T0 + i)
        if i < 2:
            assert st.wan("wlan1").health.state is H.FALLING
    assert st.wan("wlan1").health.state is H.DOWN and st.wan("wlan1").since == T0 + 2
    assert kinds(effects) == ["Log", "Reconcile", "Flush"]
    assert effects[0].level == logging.WARNING and effects[0].message.endswith("(leaves the route)")
    assert effects[1] == ev.Reconcile(urgent=True)
    assert effects[2] == ev.Flush(0x10000, 0xFF0000, "wlan1")


def test_rising_back_to_up_and_falling_back_down() -> None:
    st = start().with_wan("wlan1", WanState(Health(H.DOWN, 0, "x"), T0))
    st, effects = step(st, ev.ProbeRound("wlan1", Verdict.GOOD))
    assert st.wan("wlan1").health.state is H.RISING
    assert kinds(effects) == ["Log"]                 # RISING takes no flows: no reconcile
    for _ in range(4):
        st, effects = step(st, ev.ProbeRound("wlan1", Verdict.GOOD))
    assert st.wan("wlan1").health.state is H.UP
    assert logs(effects)[0][0] == NOTICE and "(back in the route)" in logs(effects)[0][1]
    st = st.with_wan("wlan1", WanState(Health(H.RISING, 2, "x"), T0))
    st, effects = step(st, ev.ProbeRound("wlan1", Verdict.FAILED))
    # no change of membership, but DOWN: its connections go
    assert kinds(effects) == ["Log", "Reconcile", "Flush"]


def test_rounds_count_only_for_known_wans_with_a_link() -> None:
    st = start(links={"eth1": UP_LINK})
    assert step(st, ev.ProbeRound("nope", Verdict.GOOD)) == (st, ())
    assert step(st, ev.ProbeRound("wlan2", Verdict.GOOD)) == (st, ())
    st2, effects = step(up(st, "wlan1"), ev.ProbeRound("wlan1", Verdict.GOOD))
    assert effects == () and st2.wan("wlan1").since == T0     # no transition: since stays


# ---- links and addresses -------------------------------------------------------------

@pytest.mark.parametrize("before, after, reason, plain", [
    # carrier lost, the link still administratively up: the health change reconciles
    (Link(11, True, True), Link(11, True, False), "carrier lost", False),
    (Link(11, True, False), Link(11, True, True), "carrier up", False),
    # administratively down: the kernel drops the WAN's routes silently -> reconcile
    (Link(11, True, True), Link(11, False, False), "link down", True),
    # and back up: the WAN's table route must be put back
    (Link(11, False, False), Link(11, True, True), "carrier up", True),
    (Link(11, False, False), Link(11, True, False), "carrier lost", True),
])
def test_a_wan_link_change(before, after, reason, plain) -> None:
    st = start(links={**LINKS, "eth1": before})
    if before.carrier:
        st = up(st, "wlan1")
    st2, effects = step(st, ev.LinkChanged("eth1", after))
    assert st2.links["eth1"] == after and st2.links["eth2"] == LINKS["eth2"]
    assert (ev.Reconcile() in effects) is plain
    if before.carrier and not after.carrier:
        assert st2.wan("wlan1").health == Health(H.DOWN, 0, reason)
        assert ev.Flush(0x10000, 0xFF0000, "wlan1") in effects
        assert "(leaves the route)" in logs(effects)[0][1]
    elif after.carrier:
        assert st2.wan("wlan1").health == Health(H.RISING, 0, reason)
        assert ev.ResetProber("wlan1", "192.0.2.10") in effects
    else:
        assert st2.wan("wlan1") == st.wan("wlan1")         # was DOWN, stays DOWN


def test_non_wan_links_are_recorded_without_effects() -> None:
    """(A LAN interface's changes are logged: tests/test_lan.py.)"""
    st, effects = step(start(links={**LINKS, "veth8": Link(98, True, True)}),
                       ev.LinkChanged("veth8", Link(98, False, False)))
    st, more = step(st, ev.LinkChanged("veth9", Link(99, True, True)))
    assert st.links["veth8"] == Link(98, False, False) and st.links["veth9"].index == 99
    assert effects == more == ()


def test_dellink_and_a_new_index() -> None:
    st = up(start())
    st2, effects = step(st, ev.LinkChanged("eth2", None))
    assert "eth2" not in st2.links
    assert st2.wan("wlan2").health == Health(H.DOWN, 0, "interface removed")
    assert ev.Reconcile() in effects
    assert step(st, ev.LinkChanged("veth9", None))[1] == (ev.Reconcile(),)
    # the interface comes back with another index (its routes need it) but no address
    # yet: still DOWN; RISING once the address is there
    st3, effects = step(st2, ev.LinkChanged("eth2", Link(42, True, True)))
    assert st3.wan("wlan2").health.state is H.DOWN and effects == (ev.Reconcile(),)
    st4, effects = step(st3, ev.AddressesChanged(42, False, {42: ADDRS[12]}))
    assert st4.wan("wlan2").health == Health(H.RISING, 0, "address added")
    assert ev.ResetProber("wlan2", "198.51.100.10") in effects


def test_a_renamed_wan_interface_is_forgotten_under_its_old_name() -> None:
    st, effects = step(up(start()), ev.LinkChanged("eth1old", UP_LINK))
    assert "eth1" not in st.links and st.links["eth1old"] == UP_LINK
    assert st.wan("wlan1").health == Health(H.DOWN, 0, "interface renamed to eth1old")
    assert ev.Reconcile() in effects


def test_addresses_removed_and_added() -> None:
    st = up(start())
    gone = {12: ADDRS[12]}
    st2, effects = step(st, ev.AddressesChanged(11, True, gone))
    assert st2.addresses == gone
    assert st2.wan("wlan1").health == Health(H.DOWN, 0, "address removed")
    assert ev.Reconcile() in effects and ev.Reconcile(urgent=True) in effects
    back = {**gone, 11: (("192.0.2.77", 24),)}
    st3, effects = step(st2, ev.AddressesChanged(11, False, back))
    assert st3.wan("wlan1").health == Health(H.RISING, 0, "address added")
    assert ev.ResetProber("wlan1", "192.0.2.77") in effects
    # elsewhere: only a reconcile; an unreadable table keeps the last one
    assert step(st, ev.AddressesChanged(3, False, ADDRS))[1] == (ev.Reconcile(),)
    st4, _ = step(st, ev.AddressesChanged(11, True, None))
    assert st4.addresses == st.addresses and st4.wan("wlan1") == st.wan("wlan1")


def test_a_resync_replaces_links_and_addresses_whole() -> None:
    st = up(start(links={**LINKS, "stale0": Link(50, True, True)}))
    links = {"lan0": LINKS["lan0"], "eth1": Link(11, True, False), "eth2": LINKS["eth2"]}
    st2, effects = step(st, ev.Resynced(links, {11: ADDRS[11], 12: (("198.51.100.99", 24),)}))
    assert dict(st2.links) == links
    assert st2.wan("wlan1").health == Health(H.DOWN, 0, "resync")
    assert st2.wan("wlan2") == st.wan("wlan2")              # unchanged link: untouched
    assert address(st2, CFG.wans[1]) == "198.51.100.99"
    assert effects[-1] == ev.Reconcile()
    # the same dump again changes nothing
    assert step(st2, ev.Resynced(links, st2.addresses))[0] == st2


# ---- routes, rules, ruleset ------------------------------------------------------------

@pytest.mark.parametrize("table, dst_len, reconcile", [
    (254, 0, True), (1000, 0, True), (1001, 0, True), (1255, 0, True),
    (100, 0, False), (999, 0, False), (1256, 0, False), (255, 0, False),
    (254, 24, False), (1001, 32, False),
])
def test_route_events_reconcile_only_for_default_routes_in_ecmpd_tables(
        table, dst_len, reconcile) -> None:
    st = start()
    assert step(st, ev.RouteChanged(table, dst_len)) == (st, (ev.Reconcile(),) if reconcile
                                                         else ())


@pytest.mark.parametrize("priority, reconcile", [
    (1000, True), (1001, True), (1257, True), (1511, True), (1512, True),
    (999, False), (1513, False), (32766, False), (0, False)])
def test_rule_events_reconcile_only_inside_ecmpd_range(priority, reconcile) -> None:
    st = start()
    assert bool(step(st, ev.RuleChanged(priority))[1]) is reconcile


def test_the_ranges_follow_the_config_and_the_ruleset_always_reconciles() -> None:
    st = start(cfg=dataclasses.replace(CFG, table_base=2000, rule_priority=500))
    assert step(st, ev.RouteChanged(1001, 0))[1] == ()
    assert step(st, ev.RouteChanged(2001, 0))[1] == (ev.Reconcile(),)
    assert step(st, ev.RuleChanged(1013))[1] == ()
    assert step(st, ev.RuleChanged(500))[1] == (ev.Reconcile(),)
    assert step(st, ev.RulesetChanged()) == (st, (ev.Reconcile(),))


# ---- administrator, start, reload ------------------------------------------------------

def test_disable_and_enable() -> None:
    st = up(start())
    st2, effects = step(st, ev.SetDisabled("wlan2", True))
    assert st2.wan("wlan2").disabled and not usable(st2, "wlan2")
    assert st2.wan("wlan2").health == UP                    # the probes go on
    assert kinds(effects) == ["Log", "Reconcile"] and "disabled" in effects[0].message
    st3, _ = step(st2, ev.SetDisabled("wlan2", False))
    assert usable(st3, "wlan2")
    # the last usable WAN (`ecmpctl disable --force`): its nexthop leaves, the log says so
    st4, effects = step(st3, ev.SetDisabled("wlan1", True))
    st5, effects = step(st4, ev.SetDisabled("wlan2", True))
    assert st5.wan("wlan2").disabled and not active(st5)
    assert logs(effects) == [(logging.WARNING, "wlan2: disabled by the administrator, and "
                                               "no other WAN is usable: its nexthop leaves "
                                               "the route")]
    assert step(st, ev.SetDisabled("nope", True)) == (st, ())


def test_adoption_at_start() -> None:
    st = start(links={"eth1": UP_LINK, "eth2": LINKS["eth2"]})
    assert step(st, ev.Adopted(None)) == (st, ())
    st2, effects = step(st, ev.Adopted(main_route(("192.0.2.1", 11))))
    assert st2.wan("wlan1").adopted and usable(st2, "wlan1")          # no flap
    assert st2.wan("wlan2").health == Health(H.DOWN, 0, "not in the route found at start")
    assert "adopting" in effects[0].message
    # a WAN without link keeps its own reason
    st3, _ = step(start(links={"eth1": UP_LINK}), ev.Adopted(main_route(("192.0.2.1", 11))))
    assert st3.wan("wlan2").health.reason == "interface missing"


def test_adoption_keeps_a_policy_set_of_standby_wans() -> None:
    """`use: [lte]` with lte on tier 2: the multipath route never holds lte, its set's
    route does; adopted from it, the set keeps its route through a restart."""
    cfg = dataclasses.replace(
        CFG, wans=(CFG.wans[0], dataclasses.replace(CFG.wans[1], tier=2)),
        policies=(Policy(1, ("wlan2",), 10, src=("192.168.0.50/32",)),))
    st = start(cfg=cfg)
    lte = RouteSpec(1010, (Nexthop("198.51.100.1", 12, 2),), 0)
    st2, effects = step(st, ev.Adopted(main_route(("192.0.2.1", 11)), 4, (lte,)))
    assert st2.wan("wlan1").adopted and st2.wan("wlan2").adopted
    assert usable(st2, "wlan2") and "adopting" in effects[0].message
    d = decide(st2, main_route(("192.0.2.1", 11)))
    assert d.desired.main is not None and d.desired.main.hops() == {("192.0.2.1", 11)}
    assert [t.hops() for t in d.desired.tables if t.table == 1010 and t.nexthops] == [
        {("198.51.100.1", 12)}]
    # the multipath route alone, as before: the standby WAN waits DOWN for its probes
    st3, _ = step(st, ev.Adopted(main_route(("192.0.2.1", 11))))
    assert st3.wan("wlan2").health == Health(H.DOWN, 0, "not in the route found at start")
    assert not any(t.table == 1010 and t.nexthops for t in decide(st3, None).desired.tables)
    # a set's route without the multipath route: its WANs adopted, the others wait
    st4, _ = step(st, ev.Adopted(None, 4, (lte,)))
    assert st4.wan("wlan2").adopted and st4.wan("wlan1") == st.wan("wlan1")


def test_reload_keeps_unchanged_wans_and_judges_new_ones_anew() -> None:
    st = up(start(), "wlan1")
    st = st.with_wan("wlan2", dataclasses.replace(st.wan("wlan2"), disabled=True))
    wan3 = Wan("wlan3", "eth3", IPv4Address("203.0.113.1"), id=3)
    new = dataclasses.replace(CFG, wans=(
        CFG.wans[0], dataclasses.replace(CFG.wans[1], gateway=IPv4Address("198.51.100.2")),
        wan3))
    st2, effects = step(st, ev.Reloaded(new, plan_reload(CFG, new)), T0 + 50)
    assert st2.cfg is new and list(st2.wans) == ["wlan1", "wlan2", "wlan3"]
    assert st2.wan("wlan1") == st.wan("wlan1")                        # since kept
    assert st2.wan("wlan2") == WanState(Health(), T0 + 50, disabled=True)   # rejudged
    assert st2.wan("wlan3").health == Health(H.DOWN, 0, "interface missing")
    assert effects == (ev.Reconcile(),)
    # removed and renumbered: their old marks are flushed, the renumbering said
    gone = dataclasses.replace(CFG, wans=(dataclasses.replace(CFG.wans[1], id=1),))
    st3, effects = step(st2, ev.Reloaded(gone, plan_reload(new, gone)))
    assert list(st3.wans) == ["wlan2"]
    assert ev.Flush(0x10000, 0xFF0000) in effects and ev.Flush(0x20000, 0xFF0000) in effects
    assert any(e.level == logging.WARNING and "id 2 -> 1" in e.message
               for e in effects if isinstance(e, ev.Log))


def test_an_unknown_event_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        step(start(), object())  # type: ignore[arg-type]


# ---- invariants over random event sequences --------------------------------------------

def random_event(rng: random.Random):
    name = rng.choice(["eth1", "eth2", "lan0"])
    index = {"eth1": 11, "eth2": 12, "lan0": 3}[name]
    return rng.choice([
        lambda: ev.ProbeRound(rng.choice(["wlan1", "wlan2"]), rng.choice(list(Verdict))),
        lambda: ev.LinkChanged(name, Link(index, rng.random() < .8, rng.random() < .7)),
        lambda: ev.LinkChanged(name, None),
        lambda: ev.AddressesChanged(index, True, {k: v for k, v in ADDRS.items()
                                                  if k != index}),
        lambda: ev.AddressesChanged(index, False, ADDRS),
        lambda: ev.SetDisabled(rng.choice(["wlan1", "wlan2"]), rng.random() < .3),
        lambda: ev.Resynced(LINKS, ADDRS),
    ])()


@pytest.mark.parametrize("seed", range(20))
def test_invariants_hold_after_every_event(seed: int) -> None:
    """A WAN without a usable link is DOWN; "keeping the last route" never goes with a
    usable WAN (the flaky status); an urgent reconcile comes with every change of the
    active set."""
    rng = random.Random(seed)
    kernel = main_route(("192.0.2.1", 11))
    st = start()
    for i in range(300):
        before = st
        st, effects = step(st, random_event(rng), T0 + i)
        for w in CFG.wans:
            if not link_ok(st, w):
                assert st.wan(w.name).health.state is H.DOWN, (seed, i, st)
        assert not (keeps_last_route(st, kernel) and active(st))
        if active(before) != active(st):
            assert any(isinstance(e, ev.Reconcile) for e in effects), (seed, i)
        assert list(st.wans) == ["wlan1", "wlan2"]


# ---- gateway: auto -------------------------------------------------------------------

AUTO = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("dhcp", "eth1", None, weight=1, id=1),
          Wan("ppp", "ppp0", None, weight=5, id=2),
          Wan("fixed", "eth2", IPv4Address("198.51.100.1"), id=3)),
)
PPP = Link(20, True, True, pointopoint=True)
AUTO_LINKS = {**LINKS, "ppp0": PPP}
AUTO_ADDRS = {**ADDRS, 20: (("10.64.0.7", 32, "10.64.0.1"),)}


def dhcp_route(gw: str, metric: int = 0, oif: int = 11) -> tuple:
    return (Default(metric, oif, gw),)


def test_a_learned_gateway_comes_from_another_programs_default_route() -> None:
    from ecmpd.state import gateway, link_problem, probe_gateway
    st = start(links=AUTO_LINKS, addrs=AUTO_ADDRS, cfg=AUTO)
    dhcp, ppp, fixed = AUTO.wans
    # nothing learned yet: DOWN, waiting; the point-to-point link needs no gateway
    assert gateway(st, dhcp) is None and link_problem(st, dhcp) == "waiting for a gateway"
    assert st.wan("dhcp").health.state is H.DOWN
    assert gateway(st, ppp) == "" and probe_gateway(st, ppp) == "10.64.0.1"
    assert gateway(st, fixed) == "198.51.100.1"
    # any table, any metric; the lowest metric wins, table main first among equals;
    # routes via other interfaces do not count
    st = dataclasses.replace(st, defaults={
        254: dhcp_route("192.0.2.1", 100) + dhcp_route("198.51.100.1", 0, oif=12),
        77: dhcp_route("192.0.2.254", 50)})
    assert gateway(st, dhcp) == "192.0.2.254"
    st = dataclasses.replace(st, defaults={254: dhcp_route("192.0.2.1", 50),
                                           77: dhcp_route("192.0.2.254", 50)})
    assert gateway(st, dhcp) == "192.0.2.1"
    assert link_problem(st, dhcp) is None


def test_learning_a_gateway_starts_rising_and_losing_it_goes_down() -> None:
    st = start(links=AUTO_LINKS, addrs=AUTO_ADDRS, cfg=AUTO)
    st2, effects = step(st, ev.DefaultsChanged(254, dhcp_route("192.0.2.1")))
    assert st2.wan("dhcp").health.state is H.RISING
    assert "ResetProber" in kinds(effects) and "Reconcile" in kinds(effects)
    assert (logging.INFO, "dhcp: gateway none -> 192.0.2.1") in logs(effects)
    # the route goes (a DHCP client deletes it before adding the renewed one): the last
    # gateway stays in use, the probes judge it
    st3, effects = step(up(st2, "dhcp"), ev.DefaultsChanged(254, ()))
    assert st3.wan("dhcp").health == UP and 254 not in st3.defaults
    assert st3.wan("dhcp").learned == "192.0.2.1" and effects == ()
    # the address goes (the lease is lost): the gateway is forgotten with it
    st4, effects = step(st3, ev.AddressesChanged(11, True, {12: ADDRS[12]}))
    assert st4.wan("dhcp").health == Health(H.DOWN, 0, "address removed")
    assert st4.wan("dhcp").learned is None and "Flush" in kinds(effects)
    st5, _ = step(st4, ev.AddressesChanged(11, False, ADDRS))
    assert st5.wan("dhcp").health == Health(H.DOWN, 0, "waiting for a gateway")
    # a table that could not be read changes nothing
    assert step(st2, ev.DefaultsChanged(254, None)) == (st2, ())


def test_a_moved_gateway_keeps_the_health_and_the_route_follows() -> None:
    st = up(step(start(links=AUTO_LINKS, addrs=AUTO_ADDRS, cfg=AUTO),
                 ev.DefaultsChanged(254, dhcp_route("192.0.2.1")))[0])
    st2, effects = step(st, ev.DefaultsChanged(254, dhcp_route("192.0.2.254")))
    assert st2.wan("dhcp").health == UP
    assert (NOTICE, "dhcp: gateway 192.0.2.1 -> 192.0.2.254") in logs(effects)
    assert ev.Reconcile(urgent=True) in effects and "Flush" not in kinds(effects)
    hops = decide(st2, None).desired.main.hops()
    assert hops == {("192.0.2.254", 11), ("", 20), ("198.51.100.1", 12)}


def test_a_new_address_forgets_the_connections_nated_to_the_old_one() -> None:
    st = up(start(links=AUTO_LINKS, addrs=AUTO_ADDRS, cfg=AUTO))
    # PPP reconnect: the interface goes (address with it), comes back with another
    st2, effects = step(st, ev.LinkChanged("ppp0", None))
    assert ev.ForgetAddress("ppp", "10.64.0.7") in effects
    assert st2.wan("ppp").health == Health(H.DOWN, 0, "interface removed")
    st3, effects = step(st2, ev.LinkChanged("ppp0", Link(21, True, True, pointopoint=True)))
    assert "ForgetAddress" not in kinds(effects)
    st4, effects = step(st3, ev.AddressesChanged(21, False, {**ADDRS, 21: (("10.64.0.9", 32),)}))
    assert st4.wan("ppp").health.state is H.RISING and "ResetProber" in kinds(effects)
    # an address replaced in place (a new DHCP lease) forgets the old one too; a carrier
    # loss, which keeps the address, forgets nothing
    st5, effects = step(st4, ev.AddressesChanged(21, False, {**ADDRS, 21: (("10.64.0.10", 32),)}))
    assert ev.ForgetAddress("ppp", "10.64.0.9") in effects
    _, effects = step(st5, ev.LinkChanged("ppp0", Link(21, True, False, pointopoint=True)))
    assert "ForgetAddress" not in kinds(effects)


def test_defaults_read_whole_replace_every_table() -> None:
    st = step(start(links=AUTO_LINKS, addrs=AUTO_ADDRS, cfg=AUTO),
              ev.DefaultsChanged(254, dhcp_route("192.0.2.1")))[0]
    st = step(st, ev.DefaultsChanged(77, dhcp_route("198.51.100.1", oif=12)))[0]
    st2, effects = step(st, ev.DefaultsRead({77: dhcp_route("198.51.100.1", oif=12)}))
    assert dict(st2.defaults) == {77: dhcp_route("198.51.100.1", oif=12)}
    # the route went, the address stayed: the last gateway stays in use
    assert st2.wan("dhcp").learned == "192.0.2.1" and effects == ()


def dual_stack_up(*more: Wan) -> State:
    """wlan1 on eth1 carrying IPv4 and IPv6 (and `more` WANs), both versions UP."""
    from ipaddress import IPv6Address
    cfg = Config(lan_interfaces=("lan0",),
                 wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), id=1,
                           gateway6=IPv6Address("fe80::1"), families=(4, 6)), *more))
    st = initial(cfg, LINKS, ADDRS, (), T0, addresses6={11: (("2001:db8:1::2", 64),)})
    for family in (4, 6):
        st, _ = step(st, ev.ProbeRound("wlan1", Verdict.GOOD, family=family))
    return st


def test_a_nat_change_on_reload_flushes_that_wans_connections_of_that_version() -> None:
    st = dual_stack_up(Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), id=2))
    wlan1, wlan2 = st.cfg.wans
    new = dataclasses.replace(st.cfg, wans=(dataclasses.replace(wlan1, nat=((6, "none"),)),
                                            wlan2))
    after, effects = step(st, ev.Reloaded(new, plan_reload(st.cfg, new)))
    # once (not per plane), that version only, after the reconcile that writes the rules
    assert [e for e in effects if isinstance(e, ev.Flush)] == [
        ev.Flush(0x10000, 0xFF0000, None, 6)]
    assert ("wlan1 IPv6: nat masquerade -> none: removing its IPv6 connections from "
            "conntrack") in [m for _, m in logs(effects)]
    assert ev.Reconcile() in effects and after.wan("wlan1") == st.wan("wlan1")
    # the same file again, or a weight: nothing goes
    for same in (st.cfg, dataclasses.replace(st.cfg, wans=(wlan1, dataclasses.replace(
            wlan2, weight=5)))):
        _, effects = step(st, ev.Reloaded(same, plan_reload(st.cfg, same)))
        assert not [e for e in effects if isinstance(e, ev.Flush)]
    # with the other version DOWN the flush stays one version's (not widened to both)
    down = st
    for _ in range(3):
        down, _ = step(down, ev.ProbeRound("wlan1", Verdict.FAILED, family=4))
    assert down.wan("wlan1").health.state is H.DOWN
    _, effects = step(down, ev.Reloaded(new, plan_reload(st.cfg, new)))
    assert [e for e in effects if isinstance(e, ev.Flush)] == [
        ev.Flush(0x10000, 0xFF0000, None, 6)]


def test_carrier_loss_takes_both_versions_down_and_back_together() -> None:
    from ecmpd.state import plane
    st = dual_stack_up(Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), id=2))
    assert {plane(st, f).wan("wlan1").health.state for f in (4, 6)} == {H.UP}
    st, effects = step(st, ev.LinkChanged("eth1", Link(11, True, False)))
    assert {f: plane(st, f).wan("wlan1").health.state for f in (4, 6)} == {4: H.DOWN, 6: H.DOWN}
    # both versions DOWN: one flush by mark of both (one kernel request)
    assert [e for e in effects if isinstance(e, ev.Flush)] == [
        ev.Flush(0x10000, 0xFF0000, "wlan1", None)]
    assert any("wlan1 IPv6:" in m for _, m in logs(effects))
    st, effects = step(st, ev.LinkChanged("eth1", UP_LINK))
    assert {f: plane(st, f).wan("wlan1").health.state for f in (4, 6)} == {4: H.RISING,
                                                                          6: H.RISING}
    assert {e.family for e in effects if isinstance(e, ev.ResetProber)} == {4, 6}


def test_a_steady_round_of_either_version_keeps_the_snapshot_object() -> None:
    # most rounds change nothing: the snapshot stays the very same object (no plane is
    # projected for them), while a round that moves the health still steps its plane
    from ecmpd.state import plane
    st = dual_stack_up()
    for family in (4, 6):
        for verdict in (Verdict.GOOD, Verdict.SLOW):
            after, effects = step(st, ev.ProbeRound("wlan1", verdict, family=family))
            assert (after, effects) == (st, ()) and after is st
    after, _ = step(st, ev.ProbeRound("wlan1", Verdict.FAILED, family=6))
    assert (plane(after, 4).wan("wlan1").health.state,
            plane(after, 6).wan("wlan1").health.state) == (H.UP, H.FALLING)
    assert step(st, ev.ProbeRound("nowhere", Verdict.FAILED, family=4))[0] is st


def test_the_second_version_down_flushes_both_by_mark_in_one_request() -> None:
    st = dual_stack_up()
    flushes = []
    for family in (4, 6):
        for _ in range(3):
            st, effects = step(st, ev.ProbeRound("wlan1", Verdict.FAILED, family=family))
            flushes += [e for e in effects if isinstance(e, ev.Flush)]
    # IPv4 alone DOWN: only its entries (IPv6 still carries flows); then IPv6 DOWN too:
    # everything under the mark in one request
    assert flushes == [ev.Flush(0x10000, 0xFF0000, "wlan1", 4),
                       ev.Flush(0x10000, 0xFF0000, "wlan1", None)]
