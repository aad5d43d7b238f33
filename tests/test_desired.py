"""desired: config + links + health → routes, rules, sysctls (pure)."""

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from ecmpd.desired import (MAIN_TABLE, UNICAST, UNREACHABLE, UNREACHABLE_METRIC, Nexthop,
                           RouteSpec, RuleSpec, build_desired, describe, policy_routes,
                           rule_range, table_range)
from ecmpd.configmodel import Config, Policy, Wan

WANS = (Wan("a", "ethA", IPv4Address("10.1.0.1"), 1, 1),
        Wan("b", "ethB", IPv4Address("10.2.0.1"), 2, 2),
        Wan("c", "ethC", IPv4Address("10.3.0.1"), 3, 5))
CFG = Config(lan_interfaces=("lan0",), wans=WANS, table_base=500, rule_priority=2000)
LINKS = {"ethA": 11, "ethB": 12, "ethC": 13, "lan0": 2}
ADDRS = {"a": "10.1.0.2", "b": "10.2.0.2", "c": "10.3.0.2"}


def test_multipath_has_active_wans_with_their_weights():
    d = build_desired(CFG, LINKS, ADDRS, {"a", "c"})
    assert d.main == RouteSpec(500, (Nexthop("10.1.0.1", 11, 1), Nexthop("10.3.0.1", 13, 3)), 0)
    # looked up after every fwmark and source rule: a pinned connection keeps its WAN
    assert d.rules[-1] == RuleSpec(2512, 500)
    assert max(r.priority for r in d.rules if r.fwmark or r.src) < 2512


def test_learned_gateways_and_device_nexthops():
    d = build_desired(CFG, LINKS, ADDRS, {"a", "b", "c"},
                      gateways={"a": "10.1.0.254", "b": ""})
    # c's gateway is not known: no route via it, only its table's unreachable default
    assert d.main.nexthops == (Nexthop("10.1.0.254", 11, 1), Nexthop("", 12, 2))
    assert [(t.table, t.nexthops) for t in d.tables if t.kind == UNICAST] == [
        (501, (Nexthop("10.1.0.254", 11, 1),)), (502, (Nexthop("", 12, 1),))]
    text = "\n".join(describe(d))
    assert "nexthop oif 12 weight 2" in text and "route default table 502 oif 12" in text


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
    last = RouteSpec(500, (Nexthop("10.1.0.1", 11, 1),), 0)
    assert build_desired(CFG, LINKS, ADDRS, set(), keep_main=last).main == last
    # one an earlier version left in table main is kept, in ecmpd's table
    legacy = RouteSpec(MAIN_TABLE, (Nexthop("10.1.0.1", 11, 1),), 0)
    assert build_desired(CFG, LINKS, ADDRS, set(), keep_main=legacy).main == last
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


HASH_SYSCTLS = {  # hash: -> (policy, fields); None: the fields are left alone
    "l3": ("0", None), "l4": ("1", None),
    "src": ("3", "1"),  # the custom hash of FIB_MULTIPATH_HASH_FIELD_SRC_IP only
}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", sorted(HASH_SYSCTLS))
def test_hash_sysctls_of_each_hash_and_ip_version(mode: str, family: int):
    cfg = Config(lan_interfaces=("lan0",), wans=WANS, hash=mode)
    got = build_desired(cfg, LINKS, ADDRS, set(), family=family).sysctls
    mine = [(p, v) for p, v in got if "multipath_hash" in p]
    policy, fields = HASH_SYSCTLS[mode]
    # the fields first: policy 3 never hashes on the kernel's default fields
    assert mine == [*([(f"net/ipv{family}/fib_multipath_hash_fields", fields)] if fields
                      else []), (f"net/ipv{family}/fib_multipath_hash_policy", policy)]


def test_describe_mentions_everything():
    text = "\n".join(describe(build_desired(CFG, LINKS, ADDRS, {"a", "b"})))
    assert "nexthop via 10.1.0.1 oif 11 weight 1" in text
    assert "fwmark 0x20000/0xff0000 lookup 502" in text
    assert "suppress_prefixlength 0" in text
    assert "from 10.3.0.2 lookup 505" in text
    assert "route unreachable default table 505 metric 4294967295" in text


# ---- policy WAN sets --------------------------------------------------------------------

PCFG = replace(CFG, policies=(
    Policy(1, ("c", "a"), 255, name="voip", fallback="drop"),
    Policy(2, ("b",), 254, name="bulk"),
    Policy(3, ("a", "c"), 255, fallback="drop")))
"""Sets 255 (a, c; drop) and 254 (b; balance) under tables 500+ and rules 2000+."""
VOIP = RuleSpec(2255, 755, fwmark=0xFF0000, fwmask=0xFF0000)
BULK = RuleSpec(2254, 754, fwmark=0xFE0000, fwmask=0xFF0000)


def policy_tables(d, *tables: int) -> list[RouteSpec]:
    return [t for t in d.tables if t.table in tables]


def test_a_policy_set_has_a_weighted_route_over_its_wans_in_ecmpds_ranges():
    d = build_desired(PCFG, LINKS, ADDRS, {"a"}, sets={255: {"a", "c"}, 254: {"b"}})
    assert policy_tables(d, 755, 754) == [
        RouteSpec(754, (Nexthop("10.2.0.1", 12, 2),), 0),
        RouteSpec(755, (Nexthop("10.1.0.1", 11, 1), Nexthop("10.3.0.1", 13, 3)), 0),
        RouteSpec(755, (), UNREACHABLE_METRIC, UNREACHABLE)]
    assert VOIP in d.rules and BULK in d.rules
    assert all(r.priority in rule_range(PCFG) for r in d.rules)
    assert all(t.table in table_range(PCFG) for t in d.tables)
    # the balance route and the WANs' own tables are what they are without policies
    plain = build_desired(CFG, LINKS, ADDRS, {"a"})
    assert d.main == plain.main and set(plain.tables) <= set(d.tables)
    assert set(d.rules) - set(plain.rules) == {VOIP, BULK}


def test_no_usable_wan_in_a_set_drops_or_falls_through_to_the_balance_table():
    for sets in (None, {}, {255: set(), 254: set()}):
        d = build_desired(PCFG, LINKS, ADDRS, {"a", "b"}, sets=sets)
        assert policy_tables(d, 755, 754) == [RouteSpec(755, (), UNREACHABLE_METRIC,
                                                        UNREACHABLE)]
        assert VOIP in d.rules and BULK in d.rules
    # a WAN of the set without a known gateway or interface has no nexthop to give
    d = build_desired(PCFG, {"ethA": 11, "ethB": 12}, ADDRS, {"a"}, sets={255: {"a", "c"}},
                      gateways={"a": "10.1.0.1", "b": "10.2.0.1", "c": "10.3.0.1"})
    assert policy_tables(d, 755)[0].nexthops == (Nexthop("10.1.0.1", 11, 1),)


def test_policy_sets_of_ipv6():
    cfg = replace(PCFG, wans=tuple(replace(w, gateway=None, families=(6,)) for w in WANS))
    gws = {"a": "2001:db8:1::1", "c": "fe80::1"}
    d = build_desired(cfg, LINKS, {}, set(), gateways=gws, family=6, sets={255: {"a", "c"}})
    assert policy_tables(d, 755, 754) == [
        RouteSpec(755, (Nexthop("2001:db8:1::1", 11, 1), Nexthop("fe80::1", 13, 3)), 1024,
                  family=6),
        RouteSpec(755, (), UNREACHABLE_METRIC, UNREACHABLE, family=6)]
    assert replace(VOIP, family=6) in d.rules and replace(BULK, family=6) in d.rules
    assert "-6 rule 2255: from all fwmark 0xff0000/0xff0000 lookup 755" in describe(d)


def test_describe_lists_the_policy_sets_their_tables_and_rules():
    d = build_desired(PCFG, LINKS, ADDRS, {"a"}, sets={255: {"a", "c"}})
    lines = describe(d, PCFG)
    assert lines[:2] == [
        "# policy set 255 (voip, policy 3): use c, a, fallback drop; mark 0xff0000, "
        "table 755: its WANs",
        "# policy set 254 (bulk): use b, fallback balance; mark 0xfe0000, table 754: "
        "balanced like unmatched traffic: no usable WAN"]
    assert "route default table 755 metric 0 nexthop via 10.1.0.1 oif 11 weight 1 " \
           "nexthop via 10.3.0.1 oif 13 weight 3" in lines
    assert "route unreachable default table 755 metric 4294967295" in lines
    assert "rule 2255: from all fwmark 0xff0000/0xff0000 lookup 755" in lines
    assert "rule 2254: from all fwmark 0xfe0000/0xff0000 lookup 754" in lines
    assert describe(d) == lines[2:]
    dropped = describe(build_desired(PCFG, LINKS, ADDRS, {"a"}), PCFG)[0]
    assert dropped.endswith("table 755: dropped: no usable WAN")
    # one set for many policies names a few of them
    many = replace(PCFG, policies=tuple(Policy(i, ("b",), 254) for i in range(1, 8)))
    assert describe(build_desired(many, LINKS, ADDRS, {"a"}), many)[0].startswith(
        "# policy set 254 (policy 1, policy 2, policy 3 and 4 more): use b")


# ---- ownership numbers and make-before-break handovers ---------------------------------

import pytest  # noqa: E402

from ecmpd.desired import Desired, Owned, Step, plan_handover, translate  # noqa: E402

TWO = (Wan("a", "ethA", IPv4Address("10.1.0.1"), 1, 1),
       Wan("b", "ethB", IPv4Address("10.2.0.1"), 3, 2))
LAN = "lan"


def two(**kw) -> Config:
    return Config(lan_interfaces=("lan0",), wans=TWO, **kw)


def installed(cfg: Config) -> tuple[dict, set]:
    """What ecmpd installs for `cfg` with both WANs active: (routes, rules) as read back."""
    d = build_desired(cfg, LINKS, ADDRS, {"a", "b"}, sets=SETS)
    routes = {(t.table, t.metric): t for t in d.tables}
    routes[(d.main.table, d.main.metric)] = d.main
    return routes, set(d.rules)


class Kernel:
    """A model of the kernel's policy routing, enough to follow ecmpd's objects: rules in
    priority order (a new rule goes after those of equal priority), tables keyed by
    (table, metric) with replace semantics, and a LAN connected route in main."""

    def __init__(self, routes: dict, rules: set, protos: dict) -> None:
        self.routes = {k: (v, protos.get(k[0], 0)) for k, v in routes.items()}
        self.rules: list = sorted(rules)

    def step(self, s: Step) -> None:
        if s.op == "route":
            self.routes[(s.route.table, s.route.metric)] = (s.route, s.proto)
        elif s.op == "unroute":
            key = (s.route.table, s.route.metric)
            if key in self.routes and self.routes[key][1] == s.proto:
                del self.routes[key]
        elif s.op == "rule":
            assert s.rule not in self.rules, f"rule added twice: {s}"
            at = len([r for r in self.rules if r.priority <= s.rule.priority])
            self.rules.insert(at, s.rule)
        else:
            self.rules.remove(s.rule)

    def table(self, table: int):
        specs = sorted((m, spec) for (t, m), (spec, _p) in self.routes.items() if t == table)
        return specs[0][1] if specs else None

    def lookup(self, mark: int = 0, src: str | None = None, to_lan: bool = False):
        """The gateways a packet leaves by, LAN, or 'unreachable'."""
        for r in self.rules:
            if r.suppress_prefixlen is not None:
                if to_lan:
                    return LAN                    # the connected route, not suppressed
                continue
            if r.fwmark is not None and (mark & r.fwmask) != r.fwmark:
                continue
            if r.src is not None and r.src != src:
                continue
            route = self.table(r.table)
            if route is None:
                continue
            return "unreachable" if route.kind == UNREACHABLE else \
                frozenset(h.gateway for h in route.nexthops)
        if to_lan:
            return LAN
        main = self.table(MAIN_TABLE)
        return frozenset(h.gateway for h in main.nexthops) if main else None

    def check(self, cfg_marks: dict, where: str) -> None:
        for name, (mark, src, gw) in cfg_marks.items():
            assert self.lookup(mark=mark) == {gw}, f"{where}: {name}'s marked packets"
            assert self.lookup(src=src) == {gw}, f"{where}: from {name}'s address"
            assert self.lookup(mark=mark, to_lan=True) == LAN, \
                f"{where}: {name}'s replies to the LAN"
        assert self.lookup() == {"10.1.0.1", "10.2.0.1"}, f"{where}: new flows"


MARKS = {"a": (0x10000, "10.1.0.2", "10.1.0.1"), "b": (0x20000, "10.2.0.2", "10.2.0.1")}
SETS = {255: {"b"}, 254: {"a", "b"}, 253: set()}
"""The policy sets of `POLICIES` with both WANs usable."""
POLICIES = (Policy(1, ("b",), 255, fallback="drop"), Policy(2, ("a", "b"), 254),
            Policy(3, ("a",), 253, fallback="drop"))
"""Marks 0xff0000 (via b), 0xfe0000 (balanced over a and b), 0xfd0000 (dropped)."""


def check_policies(kernel: Kernel, where: str) -> None:
    assert kernel.lookup(mark=0xFF0000) == {"10.2.0.1"}, f"{where}: set 255"
    assert kernel.lookup(mark=0xFE0000) == {"10.1.0.1", "10.2.0.1"}, f"{where}: set 254"
    assert kernel.lookup(mark=0xFD0000) == "unreachable", f"{where}: set 253"
    assert kernel.lookup(mark=0xFF0000, to_lan=True) == LAN, f"{where}: to the LAN"

RENUMBERINGS = {
    "tables.base up by 1 (overlapping: b's old table is a's new one)": dict(table_base=1001),
    "tables.base down by 1": dict(table_base=999),
    "tables.base far away": dict(table_base=5000),
    "rules.priority below (new fwmark rules before the old suppress rule)": dict(rule_priority=900),
    "rules.priority up by 1 (overlapping ranges)": dict(rule_priority=1001),
    "route.metric": dict(route_metric=10),
    "route.proto (same metric: replaced in place)": dict(route_proto=237),
    "everything": dict(table_base=1001, rule_priority=999, route_metric=5, route_proto=200),
}


@pytest.mark.parametrize("policies", [(), POLICIES], ids=["", "policies"])
@pytest.mark.parametrize("name", list(RENUMBERINGS))
@pytest.mark.parametrize("mode", ["translated", "desired"])
def test_a_handover_makes_before_it_breaks(name: str, mode: str, policies) -> None:
    old_cfg = two(table_base=1000, rule_priority=1000, policies=policies)
    new_cfg = two(**{"table_base": 1000, "rule_priority": 1000, **RENUMBERINGS[name]},
                  policies=policies)
    old, new = Owned.of(old_cfg), Owned.of(new_cfg)
    routes, rules = installed(old_cfg)
    want_routes, want_rules = installed(new_cfg)
    target = (translate(routes, rules, old, new) if mode == "translated"
              else build_desired(new_cfg, LINKS, ADDRS, {"a", "b"}, sets=SETS))
    kernel = Kernel(routes, rules, {t: old.route_proto for t, _ in routes})
    kernel.check(MARKS, "before")
    if policies:
        check_policies(kernel, "before")
    steps = plan_handover(routes, rules, old, new, target)
    for i, s in enumerate(steps):
        kernel.step(s)
        kernel.check(MARKS, f"after step {i} ({s})")
        if policies:
            check_policies(kernel, f"after step {i} ({s})")
    # exactly the new objects, under the new proto
    assert {k: v[0] for k, v in kernel.routes.items()} == want_routes
    assert all(p == new.route_proto for _, p in kernel.routes.values())
    assert set(kernel.rules) == want_rules and len(kernel.rules) == len(want_rules)
    # and nothing done twice
    assert len(steps) == len(set(steps))


def test_translate_renumbers_and_leaves_out_what_the_new_numbers_do_not_own() -> None:
    old = Owned(236, 0, 1000, 1000, ids=(1, 2))
    routes, rules = installed(two())
    t = translate(routes, rules, old, Owned(236, 7, 250, 3000, ids=(1,)))
    # id 2 is not in the new ids; table 250+4 would be main: neither is translated
    assert {s.table for s in t.tables} == {251}
    assert (t.main.table, t.main.metric) == (250, 7)
    assert t.main.nexthops == routes[(1000, 0)].nexthops
    assert {r.priority for r in t.rules} == {3000, 3001, 3257, 3512}
    assert {r.table for r in t.rules} == {254, 251, 250}
    # tables.base 252: id 1 would be table 253 ("default"), id 2 table 254 (main)
    reserved = translate(routes, rules, old, Owned(236, 0, 252, 1000))
    assert reserved.tables == ()
    assert [r for r in reserved.rules if r.table == 254] == [
        RuleSpec(1000, 254, suppress_prefixlen=0)]
    assert reserved.rules == (RuleSpec(1000, 254, suppress_prefixlen=0), RuleSpec(1512, 252))


def test_no_main_route_wanted_removes_the_old_one() -> None:
    old, new = Owned(236, 0, 1000, 1000), Owned(236, 10, 1000, 1000)
    routes, rules = installed(two())
    steps = plan_handover(routes, rules, old, new, Desired(None, (), ()))
    assert Step("unroute", route=routes[(1000, 0)], proto=236) in steps


def test_a_route_an_earlier_version_kept_in_main_moves_to_ecmpds_table() -> None:
    """Earlier versions kept the multipath route in table main and had no rule for it:
    the new route and its rule come first, the one in main goes last."""
    cfg = two(table_base=1000, rule_priority=1000)
    routes, rules = installed(cfg)
    legacy = {**{k: v for k, v in routes.items() if k[0] != 1000},
              (MAIN_TABLE, 0): replace(routes[(1000, 0)], table=MAIN_TABLE)}
    old_rules = {r for r in rules if r.priority != 1512}
    o = Owned.of(cfg)
    steps = plan_handover(legacy, old_rules, o, o, build_desired(cfg, LINKS, ADDRS, {"a", "b"}))
    kernel = Kernel(legacy, old_rules, {t: 236 for t, _ in legacy})
    kernel.check(MARKS, "before")
    for i, s in enumerate(steps):
        kernel.step(s)
        kernel.check(MARKS, f"after step {i} ({s})")
    assert steps[-1] == Step("unroute", route=legacy[(MAIN_TABLE, 0)], proto=236)
    assert {k: v[0] for k, v in kernel.routes.items()} == routes


def test_owned_round_trips_and_rejects_garbage() -> None:
    o = Owned.of(two(table_base=2000, route_metric=3, nft_table="x", mark_mask=0xFF0))
    assert o == Owned(236, 3, 2000, 1000, "x", 0xFF0, (1, 2))
    assert Owned.from_json(o.to_json()) == o
    assert Owned.of(o) is o
    assert o.wan_tables() == (2000, 2001, 2002) and o.table_range() == range(2000, 2256)
    assert o.rule_range() == range(1000, 1513)
    for bad in ({**o.to_json(), "table_base": "1"}, {**o.to_json(), "ids": [0]},
                {**o.to_json(), "nft_table": ""}, {**o.to_json(), "route_metric": -1}):
        with pytest.raises((ValueError, TypeError, KeyError)):
            Owned.from_json(bad)
    with pytest.raises(KeyError):
        Owned.from_json({"route_proto": 236})
    assert o.problem() is None


HOSTS = {
    "the kernel's route proto": {"route_proto": 2},
    "boot's route proto": {"route_proto": 3},
    "a DHCP client's route proto": {"route_proto": 16},
    "bird's route proto": {"route_proto": 12},
    "rule priority 0 (lookup local)": {"rule_priority": 0},
    "rule priority 32766 (lookup main)": {"rule_priority": 32766},
    "tables.base = main": {"table_base": 254},
    "tables.base = local": {"table_base": 255},
    "a WAN table on local": {"table_base": 250, "ids": [5]},
    "tables beyond 32 bits": {"table_base": 2**32 - 10},
    "a bool for a number": {"route_metric": True},
    "an nft keyword": {"nft_table": "filter table"},
    "an empty mark mask": {"mark_mask": 0},
}


@pytest.mark.parametrize("change", HOSTS.values(), ids=HOSTS.keys())
def test_owned_numbers_no_config_could_hold_are_refused(change) -> None:
    o = Owned.of(two()).to_json()
    with pytest.raises(ValueError):
        Owned.from_json({**o, **change})
    numbers = {**o, **change}
    forged = Owned(numbers["route_proto"], numbers["route_metric"], numbers["table_base"],
                   numbers["rule_priority"], numbers["nft_table"], numbers["mark_mask"],
                   tuple(numbers["ids"]))
    assert forged.problem()


def test_owns_table_never_the_kernels_tables() -> None:
    o = Owned(236, 0, 200, 1000, "ecmpd", 0xFF0000, (1,))
    assert o.owns_table(200) and o.owns_table(252) and o.owns_table(455)
    assert not any(o.owns_table(t) for t in (253, 254, 255, 199, 456))


def test_a_policy_set_never_takes_a_wan_ids_or_a_kernel_table():
    cfg = replace(PCFG, table_base=200, policies=(
        Policy(1, ("a",), 53, fallback="drop"),     # table 253 ("default")
        Policy(2, ("a",), 54, fallback="drop"),     # table 254 (main)
        Policy(3, ("a",), 5, fallback="drop"),      # c's id
        Policy(4, ("a",), 52, fallback="drop")))
    assert list(policy_routes(cfg)) == [52]
    d = build_desired(cfg, LINKS, ADDRS, {"a"}, sets={53: {"a"}, 54: {"a"}, 5: {"a"}, 52: {"a"}})
    assert {t.table for t in d.tables} == {201, 202, 205, 252}
    assert [r.table for r in d.rules if r.priority == 2005] == [205]
    assert Owned.of(cfg).ids == (1, 2, 5, 52)


def test_policy_tables_are_owned_read_and_carried_over_to_new_numbers():
    o = Owned.of(PCFG)
    assert o.ids == (1, 2, 5, 254, 255)
    assert o.wan_tables() == (500, 501, 502, 505, 754, 755)
    assert Owned.from_json(o.to_json()) == o
    d = build_desired(PCFG, LINKS, ADDRS, {"a"}, sets={255: {"a", "c"}, 254: {"b"}})
    routes = {(t.table, t.metric): t for t in d.tables}
    new = replace(o, table_base=3000, rule_priority=4000)
    t = translate(routes, d.rules, o, new)
    assert {(s.table, s.kind) for s in t.tables if s.table > 3250} == {
        (3254, UNICAST), (3255, UNICAST), (3255, UNREACHABLE)}
    assert RuleSpec(4255, 3255, fwmark=0xFF0000, fwmask=0xFF0000) in t.rules
    # a set the new numbers do not have is left behind, to be removed
    gone = translate(routes, d.rules, o, replace(new, ids=(1, 2, 5, 255)))
    assert not any(s.table == 3254 for s in gone.tables)
    assert not any(r.table == 3254 for r in gone.rules)


def test_an_onlink_gateway_keeps_its_flag_in_every_route():
    d = build_desired(CFG, LINKS, ADDRS, {"a", "b"}, gateways={"a": "203.0.113.1", "b": ""},
                      onlink={"a", "b"})
    assert d.main.nexthops == (Nexthop("203.0.113.1", 11, 1, True), Nexthop("", 12, 2))
    assert d.tables[0].nexthops == (Nexthop("203.0.113.1", 11, 1, True),)
    text = "\n".join(describe(d))
    assert "nexthop via 203.0.113.1 onlink oif 11" in text
    # the flag is part of the route: a route without it is not the same
    plain = RouteSpec(501, (Nexthop("203.0.113.1", 11, 1),), 0)
    assert not d.tables[0].same_as(plain) and d.tables[0].same_as(d.tables[0])
