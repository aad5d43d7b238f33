"""desired: config + links + health → routes, rules, sysctls (pure)."""

from ipaddress import IPv4Address

from ecmpd.desired import (MAIN_TABLE, UNICAST, UNREACHABLE, UNREACHABLE_METRIC, Nexthop,
                           RouteSpec, RuleSpec, build_desired, describe, rule_range, table_range)
from ecmpd.model import Config, Wan

WANS = (Wan("a", "ethA", IPv4Address("10.1.0.1"), 1, 1),
        Wan("b", "ethB", IPv4Address("10.2.0.1"), 2, 2),
        Wan("c", "ethC", IPv4Address("10.3.0.1"), 3, 5))
CFG = Config(lan_interfaces=("lan0",), wans=WANS, table_base=500, rule_priority=2000)
LINKS = {"ethA": 11, "ethB": 12, "ethC": 13, "lan0": 2}
ADDRS = {"a": "10.1.0.2", "b": "10.2.0.2", "c": "10.3.0.2"}


def test_multipath_has_active_wans_with_their_weights():
    d = build_desired(CFG, LINKS, ADDRS, {"a", "c"})
    assert d.main == RouteSpec(MAIN_TABLE, (Nexthop("10.1.0.1", 11, 1), Nexthop("10.3.0.1", 13, 3)), 0)


def test_every_wan_keeps_its_table_and_rules_whatever_its_health():
    d = build_desired(CFG, LINKS, ADDRS, set(), keep_main=None)
    assert d.main is None
    assert [(t.table, t.kind) for t in d.tables] == [
        (501, UNICAST), (501, UNREACHABLE), (502, UNICAST), (502, UNREACHABLE),
        (505, UNICAST), (505, UNREACHABLE)]
    assert RuleSpec(2000, MAIN_TABLE, suppress_prefixlen=0) in d.rules
    assert RuleSpec(2005, 505, fwmark=0x50000, fwmask=0xFF0000) in d.rules
    assert RuleSpec(2000 + 256 + 5, 505, src="10.3.0.2") in d.rules
    assert all(r.priority in rule_range(CFG) for r in d.rules)
    assert all(t.table in table_range(CFG) for t in d.tables)


def test_all_down_keeps_the_last_route():
    last = RouteSpec(MAIN_TABLE, (Nexthop("10.1.0.1", 11, 1),), 0)
    assert build_desired(CFG, LINKS, ADDRS, set(), keep_main=last).main == last
    # but with an active WAN the kept route is ignored
    assert build_desired(CFG, LINKS, ADDRS, {"b"}, keep_main=last).main.nexthops == \
        (Nexthop("10.2.0.1", 12, 2),)


def test_missing_interface_or_address():
    d = build_desired(CFG, {"ethA": 11}, {"a": "10.1.0.2"}, {"a", "b", "c"})
    # the WANs without an interface keep only their unreachable default: their marked or
    # sourced packets must not fall through to another WAN
    assert [(t.table, t.kind) for t in d.tables] == [
        (501, UNICAST), (501, UNREACHABLE), (502, UNREACHABLE), (505, UNREACHABLE)]
    assert d.main.nexthops == (Nexthop("10.1.0.1", 11, 1),)
    assert not any(r.src == "10.2.0.2" for r in d.rules)


def test_every_wan_table_ends_in_an_unreachable_default_below_its_route():
    d = build_desired(CFG, LINKS, ADDRS, {"a"})
    for table in (501, 502, 505):
        routes = [t for t in d.tables if t.table == table]
        assert [r.kind for r in routes] == [UNICAST, UNREACHABLE]
        via, unreachable = routes
        assert unreachable == RouteSpec(table, (), UNREACHABLE_METRIC, UNREACHABLE)
        assert via.metric < unreachable.metric == 2**32 - 1
    # a rule sends each WAN's marked and sourced packets to that table
    assert {r.table for r in d.rules if r.fwmark or r.src} == {501, 502, 505}


def test_same_as_compares_the_route_type():
    unreachable = RouteSpec(501, (), UNREACHABLE_METRIC, UNREACHABLE)
    assert unreachable.same_as(RouteSpec(501, (), UNREACHABLE_METRIC, UNREACHABLE))
    assert not unreachable.same_as(RouteSpec(501, (), UNREACHABLE_METRIC))
    assert not unreachable.same_as(RouteSpec(501, (), UNREACHABLE_METRIC, "type 6"))


def test_same_as_ignores_weight_of_single_nexthop_and_order():
    one = RouteSpec(254, (Nexthop("10.1.0.1", 11, 5),))
    assert one.same_as(RouteSpec(254, (Nexthop("10.1.0.1", 11, 1),)))
    two = RouteSpec(254, (Nexthop("10.1.0.1", 11, 1), Nexthop("10.2.0.1", 12, 2)))
    assert two.same_as(RouteSpec(254, (Nexthop("10.2.0.1", 12, 2), Nexthop("10.1.0.1", 11, 1))))
    assert not two.same_as(RouteSpec(254, (Nexthop("10.2.0.1", 12, 3), Nexthop("10.1.0.1", 11, 1))))
    assert not one.same_as(RouteSpec(254, (Nexthop("10.1.0.1", 11, 1),), metric=5))


def test_sysctls_per_interface_and_hash_policy():
    d = dict(build_desired(CFG, LINKS, ADDRS, set()).sysctls)
    assert d["net/ipv4/fib_multipath_hash_policy"] == "1"
    assert d["net/ipv4/conf/lan0/forwarding"] == "1"
    assert d["net/ipv4/conf/ethB/rp_filter"] == "2"
    assert d["net/ipv4/conf/ethC/ignore_routes_with_linkdown"] == "1"
    assert "net/ipv4/ip_forward" not in d
    l3 = Config(lan_interfaces=("lan0",), wans=WANS, hash="l3")
    assert dict(build_desired(l3, LINKS, ADDRS, set()).sysctls)["net/ipv4/fib_multipath_hash_policy"] == "0"


def test_describe_mentions_everything():
    text = "\n".join(describe(build_desired(CFG, LINKS, ADDRS, {"a", "b"})))
    assert "nexthop via 10.1.0.1 oif 11 weight 1" in text
    assert "fwmark 0x20000/0xff0000 lookup 502" in text
    assert "suppress_prefixlength 0" in text
    assert "from 10.3.0.2 lookup 505" in text
    assert "route unreachable default table 505 metric 4294967295" in text
