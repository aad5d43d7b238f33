"""decision: policy WAN sets' routes from one snapshot per IP version (pure, no root).

The sets here: route 255 = wlan2 (tier 1) + lte (tier 2), `fallback: drop`; route 254 =
lte alone, `fallback: balance`.  wlan1 and wlan2 carry IPv4 and IPv6, lte IPv4 only.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from ecmpd import events as ev
from ecmpd.configmodel import Config, Policy, Wan
from ecmpd.decision import Decision, decide, policy_sets, stranded
from ecmpd.desired import (UNICAST, UNREACHABLE, UNREACHABLE_METRIC, Nexthop, RouteSpec, RuleSpec,
                           balance_table, describe)
from ecmpd.health import Verdict
from ecmpd.state import Link, State, initial, plane

T0 = 1_700_000_000.0
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True), "eth3": Link(13, True, True)}
ADDRS = {11: (("192.0.2.10", 24),), 12: (("198.51.100.10", 24),), 13: (("203.0.113.10", 24),)}
ADDRS6 = {11: (("2001:db8:1::2", 64),), 12: (("2001:db8:2::2", 64),)}
SIX = dict(families=(4, 6))
CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), 1, 1,
              gateway6=IPv6Address("2001:db8:1::1"), **SIX),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), 3, 2,
              gateway6=IPv6Address("2001:db8:2::1"), **SIX),
          Wan("lte", "eth3", IPv4Address("203.0.113.1"), 2, 3, tier=2)),
    policies=(Policy(1, ("wlan2", "lte"), 255, name="voip", fallback="drop"),
              Policy(2, ("lte",), 254, name="camera"),
              Policy(3, ("wlan2", "lte"), 255, name="sip", fallback="drop")))
"""Tables 1000+, rules 1000+, marks under 0xff0000 (the defaults)."""
WLAN1, WLAN2, LTE = (Nexthop("192.0.2.1", 11, 1), Nexthop("198.51.100.1", 12, 3),
                     Nexthop("203.0.113.1", 13, 2))
WLAN1_6, WLAN2_6 = Nexthop("2001:db8:1::1", 11, 1), Nexthop("2001:db8:2::1", 12, 3)


def rounds(st: State, name: str, verdict: Verdict, n: int, *families: int) -> State:
    for family in families or (4, 6):
        if name == "lte" and family == 6:
            continue
        for _ in range(n):
            st, _ = ev.step(st, ev.ProbeRound(name, verdict, "r", family), T0 + 10)
    return st


def all_up(cfg: Config = CFG) -> State:
    st = initial(cfg, LINKS, ADDRS, (), T0, addresses6=ADDRS6)
    for name in ("wlan1", "wlan2", "lte"):
        st = rounds(st, name, Verdict.GOOD, 1)
    return st


def table(d: Decision, number: int, family: int = 4) -> list[tuple[str, object]]:
    """(kind, nexthops or metric) of each route of IP version `family` in table `number`."""
    return [(t.kind, t.nexthops if t.kind == UNICAST else t.metric)
            for t in d.of(family)[0].tables if t.table == number]


DROPPED = [(UNREACHABLE, UNREACHABLE_METRIC)]


def test_each_set_balances_over_its_usable_wans_of_its_own_lowest_tier() -> None:
    d = decide(all_up(), None)
    assert set(d.desired.main.nexthops) == {WLAN1, WLAN2}       # lte stands by
    # voip: wlan2 carries it, lte (tier 2) stands by within the set; drop: unreachable below
    assert table(d, 1255) == [(UNICAST, (WLAN2,)), *DROPPED]
    # camera: lte alone, though tier 1 carries unmatched traffic
    assert table(d, 1254) == [(UNICAST, (LTE,))]
    assert policy_sets(plane(d.state, 4)) == {255: {"wlan2"}, 254: {"lte"}}
    rules = d.desired.rules
    assert RuleSpec(1255, 1255, fwmark=0xFF0000, fwmask=0xFF0000) in rules
    assert RuleSpec(1254, 1254, fwmark=0xFE0000, fwmask=0xFF0000) in rules
    # in the block of the WAN fwmark rules: after the suppress rule, before the source
    # rules and the balance rule
    prios = [r.priority for r in rules]
    assert prios.index(1254) < prios.index(1256 + 1) < prios.index(1512)


def test_a_set_goes_to_its_next_tier_then_to_its_fallback() -> None:
    st = rounds(all_up(), "wlan2", Verdict.FAILED, 3, 4)
    d = decide(st, None)
    assert set(d.desired.main.nexthops) == {WLAN1}               # tier 1 still carries
    assert table(d, 1255) == [(UNICAST, (LTE,)), *DROPPED]       # the set's tier 2
    st = rounds(st, "lte", Verdict.FAILED, 3, 4)
    d = decide(st, None)
    assert table(d, 1255) == DROPPED                             # drop: connections fail
    assert table(d, 1254) == []              # balance: falls through to the balance table
    # the rules stay: a marked packet must never reach a table of another WAN by chance
    assert {r.priority for r in d.desired.rules} >= {1254, 1255}
    st = rounds(st, "wlan2", Verdict.GOOD, 5, 4)
    assert table(decide(st, None), 1255) == [(UNICAST, (WLAN2,)), *DROPPED]


def test_weights_and_several_wans_of_the_lowest_tier() -> None:
    cfg = Config(lan_interfaces=CFG.lan_interfaces, wans=CFG.wans, policies=(
        Policy(1, ("lte", "wlan2", "wlan1"), 200, fallback="drop"),))
    d = decide(all_up(cfg), None)
    [route, unreachable] = [t for t in d.desired.tables if t.table == 1200]
    assert route.nexthops == (WLAN1, WLAN2) and route.metric == 0   # weights 1 and 3
    assert unreachable.kind == UNREACHABLE
    assert "route default table 1200 metric 0 nexthop via 192.0.2.1 oif 11 weight 1 " \
           "nexthop via 198.51.100.1 oif 12 weight 3" in describe(d.desired)


def test_ip_versions_are_judged_apart_and_a_wan_lacking_one_is_not_in_its_set() -> None:
    st = all_up()
    d = decide(st, None)
    # IPv6: lte carries no IPv6, so voip's IPv6 set is wlan2 alone and camera's is empty
    assert policy_sets(plane(st, 6)) == {255: {"wlan2"}, 254: frozenset()}
    assert table(d, 1255, 6) == [(UNICAST, (WLAN2_6,)), *DROPPED]
    assert table(d, 1254, 6) == []
    assert all(t.metric == 1024 for t in d.desired6.tables if t.kind == UNICAST)
    assert RuleSpec(1255, 1255, fwmark=0xFF0000, fwmask=0xFF0000, family=6) in d.desired6.rules
    # wlan2's IPv6 fails: voip's IPv6 drops (no IPv6 WAN left in its set) while its
    # IPv4 goes on via wlan2
    st = rounds(st, "wlan2", Verdict.FAILED, 3, 6)
    d = decide(st, None)
    assert table(d, 1255, 6) == DROPPED
    assert table(d, 1255) == [(UNICAST, (WLAN2,)), *DROPPED]
    assert set(d.desired6.main.nexthops) == {WLAN1_6}


def test_a_disabled_wan_and_one_awaiting_its_first_verdict() -> None:
    st, _ = ev.step(all_up(), ev.SetDisabled("wlan2", True), T0 + 20)
    assert table(decide(st, None), 1255) == [(UNICAST, (LTE,)), *DROPPED]
    # at start, lte answered first while wlan2 waits for its verdict: the set waits for
    # tier 1 as the balance route does (a backup takes nothing just by answering first)
    st = rounds(initial(CFG, LINKS, ADDRS, (), T0, addresses6=ADDRS6), "lte", Verdict.GOOD, 1)
    d = decide(st, None)
    assert table(d, 1255) == DROPPED and table(d, 1254) == [(UNICAST, (LTE,))]


def test_the_same_snapshot_gives_the_same_state_and_no_policies_give_none() -> None:
    st = all_up()
    assert decide(st, None) == decide(st, None)
    plain = decide(all_up(Config(lan_interfaces=CFG.lan_interfaces, wans=CFG.wans)), None)
    mine = decide(st, None)
    for family in (4, 6):
        # policies only add their rules and tables
        extra_rules = set(mine.of(family)[0].rules) - set(plain.of(family)[0].rules)
        assert {r.table for r in extra_rules} == {1254, 1255}
        assert set(plain.of(family)[0].tables) <= set(mine.of(family)[0].tables)
        assert {t.table for t in set(mine.of(family)[0].tables) - set(plain.of(family)[0].tables)} \
            <= {1254, 1255}
        assert mine.of(family)[0].main == plain.of(family)[0].main


# ---- the administrator's disable and the last route ---------------------------------------

def disabled(st: State, *names: str) -> State:
    for n in names:
        st, _ = ev.step(st, ev.SetDisabled(n, True), T0 + 20)
    return st


def test_disabling_the_last_usable_wan_strands_its_versions() -> None:
    st = rounds(all_up(), "lte", Verdict.FAILED, 10)
    d = decide(st, None)
    assert stranded(d, "wlan1") == ()                      # wlan2 carries both versions
    d = decide(disabled(st, "wlan2"), None)
    assert stranded(d, "wlan1") == (4, 6)
    assert stranded(d, "lte") == ()                        # not in any route
    # the IPv6 of wlan2 is down, its IPv4 is up: wlan1 is the last IPv6 WAN only
    half = rounds(st, "wlan2", Verdict.FAILED, 10, 6)
    assert stranded(decide(half, None), "wlan1") == (6,)


def test_a_kept_route_loses_the_disabled_wans_nexthops() -> None:
    """With no usable WAN the route found in the kernel is kept, but never a disabled
    WAN's nexthop in it: a forced disable of the last WAN takes the route away."""
    st = initial(CFG, LINKS, ADDRS, (), T0, addresses6=ADDRS6)
    for name in ("wlan1", "wlan2", "lte"):
        st = rounds(st, name, Verdict.FAILED, 10)
    kept = decide(st, None).desired.main
    assert kept is None
    kernel = RouteSpec(balance_table(CFG), (WLAN1, WLAN2), 0)
    d = decide(st, kernel)
    assert d.kept and d.desired.main.nexthops == (WLAN1, WLAN2)
    assert stranded(d, "wlan1") == ()                      # wlan2's nexthop stays
    d = decide(disabled(st, "wlan2"), kernel)
    assert d.kept and d.desired.main.nexthops == (WLAN1,)
    assert stranded(d, "wlan1") == (4,)
    d = decide(disabled(st, "wlan2", "wlan1"), kernel)
    assert d.desired.main is None and not d.kept


def test_set_routes_are_the_policy_tables_routes_read_from_the_kernel() -> None:
    from ecmpd.decision import main_route, set_routes
    from ecmpd.desired import IPV6_METRIC_ZERO, RouteSpec
    cfg = Config(lan_interfaces=("lan0",),
                 wans=(Wan("a", "eth1", IPv4Address("192.0.2.1"), 1, 1),),
                 policies=(Policy(1, ("a",), 10), Policy(2, ("a",), 11, fallback="drop")))
    hop = (Nexthop("192.0.2.1", 11, 1),)
    routes = {(1000, 0): RouteSpec(1000, hop, 0), (1010, 0): RouteSpec(1010, hop, 0),
              (1011, UNREACHABLE_METRIC): RouteSpec(1011, (), UNREACHABLE_METRIC, UNREACHABLE),
              (1001, 0): RouteSpec(1001, hop, 0)}
    assert set_routes(routes, cfg) == (routes[(1010, 0)],)     # not a WAN's, not unreachable
    assert main_route(routes, cfg) == routes[(1000, 0)]
    six = {(1011, IPV6_METRIC_ZERO): RouteSpec(1011, hop, IPV6_METRIC_ZERO, family=6)}
    assert set_routes(six, cfg, 6) == (six[(1011, IPV6_METRIC_ZERO)],)
    assert set_routes({}, cfg) == ()
