"""routing: read/diff/apply ecmpd's routes and rules in a lab router (root, lab); the
kernel-filtered reads with a big foreign FIB; handing everything over to new numbers.

The test process never enters another namespace: `AsyncIPRoute(netns=...)` has pyroute2
create the netlink socket in a forked child that joins the lab's router namespace and
hands the socket back; kernel state is read with ``ip -n``-style commands in the lab.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from contextlib import asynccontextmanager
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, AsyncIterator

import pytest
from pyroute2 import AsyncIPRoute

from ecmpd import interfaces, routing
from ecmpd.desired import (UNREACHABLE, UNREACHABLE_METRIC, Desired, build_desired, describe,
                           rule_range, table_range)
from lab import Lab
from lab.runner import add_foreign
from ecmpd.configmodel import Config, Policy, Wan
from ecmpd.state import project

pytestmark = pytest.mark.lab

PROTO = 236


def cfg(**kw: Any) -> Config:
    """Config for the seed lab: wlan1 (id 1, weight 1), wlan2 (id 2, weight 3)."""
    wans = (Wan("wlan1", "wlan1", IPv4Address("10.111.0.1"), 1, 1),
            Wan("wlan2", "wlan2", IPv4Address("10.112.0.1"), 3, 2))
    return Config(lan_interfaces=("Local",), wans=wans, **kw)


CFG = cfg()


@asynccontextmanager
async def router(lab: Lab) -> AsyncIterator[AsyncIPRoute]:
    """A netlink socket in the lab's router namespace (flags=0: never create a namespace)."""
    async with AsyncIPRoute(netns=lab.ns_router, flags=0) as ipr:
        yield ipr


async def desired(ipr: AsyncIPRoute, lab: Lab, c: Config, active: set[str],
                  keep_main: Any = None) -> Desired:
    links = {name: v["index"] for name, v in (await interfaces.read_links(ipr)).items()}
    addrs = {w.name: str(IPv4Interface(w.address).ip) for w in lab.spec.wans}
    return build_desired(c, links, addrs, active, keep_main)


def snapshot(lab: Lab) -> tuple[str, str]:
    """The router's whole routing state as `ip` prints it (compared byte for byte)."""
    return (lab.run(lab.ns_router, "ip", "-j", "route", "show", "table", "all").stdout,
            lab.run(lab.ns_router, "ip", "-j", "rule").stdout)


def kernel_plan(lab: Lab, c: Config) -> list[str]:
    """ecmpd's objects in the router, read with `ip`, rendered like `desired.describe()`."""
    idx = {link["ifname"]: link["ifindex"]
           for link in json.loads(lab.run(lab.ns_router, "ip", "-j", "link").stdout)}
    tables = table_range(c)
    lines = []
    for r in json.loads(lab.run(lab.ns_router, "ip", "-4", "-N", "-j", "route", "show",
                                "table", "all").stdout):
        table = int(r.get("table", 254))
        if r["dst"] != "default" or r.get("protocol") != str(c.route_proto):
            continue
        if table != 254 and table not in tables:
            continue
        if r.get("type") in ("unreachable", "7"):  # -N: numeric type
            lines.append(f"route unreachable default table {table} metric {r.get('metric', 0)}")
        elif table in (254, c.table_base) or r.get("nexthops"):   # a policy set's too
            hops = r.get("nexthops") or [{"gateway": r["gateway"], "dev": r["dev"], "weight": 1}]
            hop_text = " ".join(f"nexthop via {h['gateway']} oif {idx[h['dev']]} weight "
                                f"{h.get('weight', 1)}" for h in hops)
            lines.append(f"route default table {table} metric {r.get('metric', 0)} {hop_text}")
        else:
            lines.append(f"route default table {table} via {r['gateway']} oif {idx[r['dev']]}")
    for r in json.loads(lab.run(lab.ns_router, "ip", "-N", "-j", "rule").stdout):
        table = int(r["table"])
        if r["priority"] not in rule_range(c) or not (table == 254 or table in tables):
            continue
        if "suppress_prefixlen" in r:
            what = f"from all lookup main suppress_prefixlength {r['suppress_prefixlen']}"
        elif "fwmark" in r:
            what = f"from all fwmark {r['fwmark']}/{r['fwmask']} lookup {table}"
        elif r["src"] == "all":
            what = f"from all lookup {table}"
        else:
            what = f"from {r['src']} lookup {table}"
        lines.append(f"rule {r['priority']}: {what}")
    return sorted(lines)


def planned(d: Desired) -> list[str]:
    return sorted(line for line in describe(d) if not line.startswith("sysctl "))


def ours_removed(state: tuple[str, str], c: Config) -> tuple[list[Any], list[Any]]:
    """A snapshot without ecmpd's objects (to compare with the state before ecmpd ran)."""
    routes, rules = (json.loads(s) for s in state)
    tables = table_range(c)

    def our_route(r: dict[str, Any]) -> bool:
        table = r.get("table", "main")
        t = 254 if table == "main" else int(table) if table.isdigit() else -1
        return (r["dst"] == "default" and r.get("protocol") == str(PROTO)
                and (t == 254 or t in tables))

    def our_rule(r: dict[str, Any]) -> bool:
        table = r["table"]
        t = 254 if table == "main" else int(table) if table.isdigit() else -1
        return r["priority"] in rule_range(c) and (t == 254 or t in tables)

    return [r for r in routes if not our_route(r)], [r for r in rules if not our_rule(r)]


def host_state() -> tuple[str, str, str]:
    """The host's own ns identity and ecmpd-looking objects in it (read only)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all", "proto", str(PROTO)],
                            capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["ip", "-4", "rule"], capture_output=True, text=True, check=True).stdout
    return os.readlink("/proc/self/ns/net"), routes, rules


# ------------------------------------------------------------------ tests


def test_the_netlink_socket_acts_in_the_lab_not_in_the_host(lab: Lab) -> None:
    before = host_state()

    async def body() -> None:
        async with router(lab) as ipr:
            assert os.readlink("/proc/self/ns/net") == before[0]
            links = await interfaces.read_links(ipr)
            assert {"Local", "wlan1", "wlan2"} <= set(links)
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            assert await routing.apply(ipr, CFG, d) == 11

    asyncio.run(body())
    assert "proto 236" in lab.run(lab.ns_router, "ip", "route", "show", "default", "table",
                                  "1000").stdout
    assert host_state() == before


def test_apply_installs_exactly_the_plan_and_a_second_apply_changes_nothing(lab: Lab) -> None:
    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            assert await routing.apply(ipr, CFG, d) == len(planned(d)) == 11
            assert kernel_plan(lab, CFG) == planned(d)
            first = snapshot(lab)
            actual = await routing.read_actual(ipr, CFG)
            assert actual.rules == set(d.rules)
            assert actual.foreign_main is None
            assert actual.routes[(1000, 0)].same_as(d.main)
            # the unreachable defaults are read back as such, equal to the desired ones
            for t in d.tables:
                assert actual.routes[(t.table, t.metric)].same_as(t)
            assert {k for k, r in actual.routes.items() if r.kind == UNREACHABLE} == \
                {(1001, UNREACHABLE_METRIC), (1002, UNREACHABLE_METRIC)}
            assert await routing.apply(ipr, CFG, d) == 0
            assert await routing.apply(ipr, CFG, d, actual) == 0
            assert snapshot(lab) == first

    asyncio.run(body())


def test_a_change_of_activity_changes_only_the_main_route(lab: Lab) -> None:
    async def body() -> None:
        async with router(lab) as ipr:
            both = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, both)
            routes0, rules0 = snapshot(lab)
            one = await desired(ipr, lab, CFG, {"wlan1"})
            assert await routing.apply(ipr, CFG, one) == 1
            assert kernel_plan(lab, CFG) == planned(one)
            routes1, rules1 = snapshot(lab)
            assert rules1 == rules0
            main = lab.run(lab.ns_router, "ip", "route", "show", "table", "1000", "default").stdout
            assert main.split() == "default via 10.111.0.1 dev wlan1 proto 236".split()
            def not_main_default(routes: str) -> list[Any]:
                return [r for r in json.loads(routes)
                        if r["dst"] != "default" or r.get("table") != "1000"]
            assert not_main_default(routes1) == not_main_default(routes0)
            # every WAN down: the daemon keeps the route it has (0 changes)
            kept = (await routing.read_actual(ipr, CFG)).routes[(1000, 0)]
            assert await routing.apply(ipr, CFG, await desired(ipr, lab, CFG, set(), kept)) == 0
            assert await routing.apply(ipr, CFG, both) == 1
            assert snapshot(lab) == (routes0, rules0)

    asyncio.run(body())


FOREIGN = [
    "rule add priority 1001 lookup 2000",                          # in range, other table
    "rule add priority 1300 fwmark 0x10000/0xff0000 lookup 2000",  # in range, our mark, other table
    "rule add priority 1513 fwmark 0x10000/0xff0000 lookup 1001",  # just outside the range
    "rule add priority 999 lookup main suppress_prefixlength 0",   # outside, same as ours
    "route add 198.51.100.0/24 via 10.111.0.1",                    # main, not default
    "route add 198.51.100.128/25 via 10.112.0.1 proto 236",        # main, our proto, not default
    "route add default via 10.112.0.1 metric 100",                 # main default, another metric
    "route add default via 10.112.0.1 table 2000",                 # default in a foreign table
    "route add default via 10.111.0.1 proto 236 table 2001",       # our proto, unrelated table
    "route add default via 10.111.0.1 table 1001 metric 50",       # our table, foreign proto
    "route add unreachable default table 1002 metric 60",          # likewise, unreachable
]


def test_foreign_objects_survive_apply_and_remove_all(lab: Lab) -> None:
    add_foreign(lab, FOREIGN)
    before = snapshot(lab)
    assert before[1].count('"table":"2000"') == 2

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            assert await routing.apply(ipr, CFG, d) == 11
            actual = await routing.read_actual(ipr, CFG)
            assert actual.foreign_main is None
            assert set(actual.routes) == {(1000, 0), (1001, 0), (1002, 0),
                                          (1001, UNREACHABLE_METRIC), (1002, UNREACHABLE_METRIC)}
            assert actual.rules == set(d.rules)
            assert kernel_plan(lab, CFG) == planned(d)
            assert ours_removed(snapshot(lab), CFG) == ours_removed(before, CFG)
            assert await routing.apply(ipr, CFG, d) == 0
            assert await routing.remove_all(ipr, CFG) == 11
            assert await routing.remove_all(ipr, CFG) == 0

    asyncio.run(body())
    assert snapshot(lab) == before


def test_default_routes_in_main_are_shadowed_not_touched(lab: Lab) -> None:
    """A DHCP client's default route in main at metric 0 (what ifupdown + dhclient
    install): ecmpd's route lives in its own table; main's routes stay as they are and
    carry the traffic again when ecmpd's route is gone."""
    server = lab.spec.server_addresses[0]
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.111.0.1", "proto", "dhcp")
    before = snapshot(lab)
    main = lab.run(lab.ns_router, "ip", "-j", "route", "show", "table", "main", "default").stdout

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan2"})
            assert await routing.apply(ipr, CFG, d) == 11
            assert (await routing.read_actual(ipr, CFG)).foreign_main is None
            assert exit_of(lab, server) == "wlan2"       # ecmpd's route, not main's
            assert lab.run(lab.ns_router, "ip", "-j", "route", "show", "table", "main",
                           "default").stdout == main
            assert await routing.apply(ipr, CFG, d) == 0
            assert await routing.remove_all(ipr, CFG) == 11
            assert exit_of(lab, server) == "wlan1"       # main's again

    asyncio.run(body())
    assert snapshot(lab) == before


def test_a_foreign_default_route_in_ecmpds_table_is_not_replaced(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.111.0.1", "table", "1000")
    before = snapshot(lab)
    foreign = lab.run(lab.ns_router, "ip", "-j", "route", "show", "table", "1000", "default").stdout
    at_100 = cfg(route_metric=100)

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            with caplog.at_level(logging.ERROR, logger="ecmpd"):
                assert await routing.apply(ipr, CFG, d) == 10  # tables and rules only
            assert "not ecmpd's" in caplog.text and "10.111.0.1" in caplog.text
            actual = await routing.read_actual(ipr, CFG)
            assert actual.foreign_main is not None and "10.111.0.1" in actual.foreign_main
            assert (1000, 0) not in actual.routes
            assert lab.run(lab.ns_router, "ip", "-j", "route", "show", "table", "1000",
                           "default").stdout == foreign
            assert await routing.apply(ipr, CFG, d) == 0
            # with another metric ecmpd's route sits next to the foreign one
            d100 = await desired(ipr, lab, at_100, {"wlan1", "wlan2"})
            assert await routing.apply(ipr, at_100, d100) == 1
            assert (await routing.read_actual(ipr, at_100)).foreign_main is None
            assert kernel_plan(lab, at_100) == planned(d100)
            defaults = json.loads(lab.run(lab.ns_router, "ip", "-j", "route", "show", "table",
                                          "1000", "default").stdout)
            assert [(r.get("metric", 0), r.get("gateway"), len(r.get("nexthops", [])))
                    for r in defaults] == [(0, "10.111.0.1", 0), (100, None, 2)]
            assert await routing.remove_all(ipr, at_100) == 11

    asyncio.run(body())
    assert snapshot(lab) == before


def test_remove_all_leaves_nothing_of_ecmpd(lab: Lab) -> None:
    before = snapshot(lab)

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            assert len(kernel_plan(lab, CFG)) == 11
            assert await routing.remove_all(ipr, CFG) == 11
            actual = await routing.read_actual(ipr, CFG)
            assert (actual.routes, actual.rules, actual.foreign_main) == ({}, set(), None)

    asyncio.run(body())
    assert kernel_plan(lab, CFG) == []
    assert snapshot(lab) == before


def _dual(policies: tuple[Policy, ...]) -> Config:
    """The seed lab's WANs with IPv6 (static global gateways) and `policies`."""
    six = [dict(gateway6=IPv6Address(f"2001:db8:{i}::1"), families=(4, 6)) for i in (1, 2)]
    return replace(CFG, wans=tuple(replace(w, **x) for w, x in zip(CFG.wans, six)),
                   policies=policies)


VOIP = Policy(1, ("wlan2",), 255, name="voip", fallback="drop")
BULK = Policy(2, ("wlan1", "wlan2"), 254, name="bulk")
ONLY1 = Policy(3, ("wlan1",), 253, name="only1", fallback="drop")


async def desired_of(ipr: AsyncIPRoute, lab: Lab, c: Config, family: int,
                     sets: dict[int, set[str]]) -> Desired:
    """IP version `family`'s desired state with both WANs in the balance route."""
    links = {name: v["index"] for name, v in (await interfaces.read_links(ipr)).items()}
    p = project(c, family)
    addrs = {w.name: str(IPv4Interface(w.address).ip) if family == 4 else
             str(IPv6Interface(w.address6).ip) for w in lab.spec.wans}
    gws = {w.name: str(w.gateway) for w in p.wans}
    return build_desired(p, links, addrs, {"wlan1", "wlan2"}, gateways=gws, family=family,
                         sets=sets)


async def same_in_kernel(ipr: AsyncIPRoute, c: Config, d: Desired) -> None:
    """The kernel holds exactly `d`'s routes and rules of its IP version."""
    actual = await routing.read_actual(ipr, c, family=d.family)
    assert actual.rules == set(d.rules)
    want = [*d.tables, d.main]
    assert set(actual.routes) == {(t.table, t.metric) for t in want}
    for t in want:
        assert actual.routes[(t.table, t.metric)].same_as(t), t


def test_policy_sets_route_drop_fall_through_and_follow_a_reload(lab: Lab) -> None:
    """Two policy sets of both IP versions, `voip` (wlan2, drop) and `bulk` (both WANs,
    balance): installed, read back as ecmpd's, applied again without a change; with no
    usable WAN voip's connections fail and bulk's are balanced like unmatched traffic; a
    reload that drops bulk and adds only1 removes and adds exactly theirs."""
    before = snapshot(lab)
    server, server6 = lab.spec.server_addresses[0], lab.spec.server_addresses6[0]
    a, b = _dual((VOIP, BULK)), _dual((VOIP, ONLY1))
    unreachable = "No route to host"

    def exits(mark: int) -> set[str]:
        return {exit_of(lab, server, "mark", hex(mark)),
                exit_of(lab, server6, "mark", hex(mark))}

    async def body() -> None:
        async with router(lab) as ipr:
            up = {255: {"wlan2"}, 254: {"wlan1", "wlan2"}}
            for family in (4, 6):
                d = await desired_of(ipr, lab, a, family, up)
                # the WANs' 11 objects; 2 rules, voip's route and unreachable, bulk's route
                assert await routing.apply(ipr, a, d) == 11 + 5
                await same_in_kernel(ipr, a, d)
                if family == 4:
                    assert kernel_plan(lab, a) == planned(d)
            first = snapshot(lab)
            for family in (4, 6):
                d = await desired_of(ipr, lab, a, family, up)
                assert await routing.apply(ipr, a, d) == 0
            assert snapshot(lab) == first
            assert exits(a.route_mark(255)) == {"wlan2"}
            assert exit_of(lab, lab.clients[0], "mark", hex(a.route_mark(255))) == "Local"
            # bulk over both WANs (weights 1 and 3): some of many destinations by each
            spread = {exit_of(lab, f"198.18.{i}.1", "mark", hex(a.route_mark(254)))
                      for i in range(64)}
            assert spread == {"wlan1", "wlan2"}

            # no WAN of either set usable: voip dropped, bulk through the balance table
            for family in (4, 6):
                d = await desired_of(ipr, lab, a, family, {})
                assert await routing.apply(ipr, a, d) == 2     # the two routes go
                await same_in_kernel(ipr, a, d)
            assert all(unreachable in e for e in exits(a.route_mark(255)))
            balanced = {exit_of(lab, f"198.18.{i}.1") for i in range(64)}
            assert {exit_of(lab, f"198.18.{i}.1", "mark", hex(a.route_mark(254)))
                    for i in range(64)} == balanced == {"wlan1", "wlan2"}
            for family in (4, 6):
                d = await desired_of(ipr, lab, a, family, {})
                assert await routing.apply(ipr, a, d) == 0

            # reload: bulk's rule goes (its table is empty), only1's rule, route and
            # unreachable come, and voip's WAN is usable again
            for family in (4, 6):
                d = await desired_of(ipr, lab, b, family, {255: {"wlan2"}, 253: {"wlan1"}})
                assert await routing.apply(ipr, b, d) == 1 + 3 + 1
                await same_in_kernel(ipr, b, d)
                if family == 4:
                    assert kernel_plan(lab, b) == planned(d)
                assert await routing.apply(ipr, b, d) == 0
            assert exits(b.route_mark(253)) == {"wlan1"}
            assert "1254" not in lab.run(lab.ns_router, "ip", "rule").stdout
            assert "1254" not in lab.run(lab.ns_router, "ip", "-6", "rule").stdout
            # everything of ecmpd's, policy tables and rules included, goes on stop
            assert await routing.remove_all(ipr, b) == 2 * (11 + 3 + 3)

    asyncio.run(body())
    assert snapshot(lab) == before


def test_read_links_and_read_addresses(lab: Lab) -> None:
    kernel = {link["ifname"]: link["ifindex"]
              for link in json.loads(lab.run(lab.ns_router, "ip", "-j", "link").stdout)}
    lab.run(lab.ns_router, "ip", "addr", "add", "10.111.0.3/24", "dev", "wlan1")  # secondary
    lab.run(lab.ns_router, "ip", "addr", "add", "10.99.0.1/16", "dev", "wlan1")   # 2nd primary

    async def body() -> None:
        async with router(lab) as ipr:
            links = await interfaces.read_links(ipr)
            assert {n: v["index"] for n, v in links.items()} == kernel
            assert links["wlan1"] == {"index": kernel["wlan1"], "up": True, "carrier": True,
                                      "pointopoint": False}
            addrs = await interfaces.read_addresses(ipr)
            assert addrs[kernel["wlan1"]][0] == ("10.111.0.2", 24)
            assert sorted(addrs[kernel["wlan1"]]) == [("10.111.0.2", 24), ("10.111.0.3", 24),
                                                     ("10.99.0.1", 16)]
            assert addrs[kernel["wlan2"]] == [("10.112.0.2", 24)]
            assert addrs[kernel["lo"]] == [("127.0.0.1", 8)]

            lab.run(lab.ns_router, "ip", "link", "set", "dev", "wlan2", "down")
            lab.fault("wlan1", "carrier")  # the ISP's side goes down: no carrier, still admin up
            links = await interfaces.read_links(ipr)
            assert links["wlan2"] == {"index": kernel["wlan2"], "up": False, "carrier": False,
                                      "pointopoint": False}
            assert links["wlan1"] == {"index": kernel["wlan1"], "up": True, "carrier": False,
                                      "pointopoint": False}

    asyncio.run(body())


def exit_of(lab: Lab, *args: str) -> str:
    """The device `ip route get <args>` picks in the router, or the kernel's error text."""
    r = lab.run(lab.ns_router, "ip", "-j", "route", "get", *args, check=False)
    return json.loads(r.stdout)[0]["dev"] if r.returncode == 0 else r.stderr.strip()


def test_a_wan_without_carrier_sends_its_packets_nowhere_else(lab: Lab) -> None:
    server, client = lab.spec.server_addresses[0], lab.clients[0]
    wan1, wan2 = "10.111.0.2", "10.112.0.2"
    mark1, mark2 = hex(CFG.mark_of(CFG.wans[0])), hex(CFG.mark_of(CFG.wans[1]))
    unreachable = "No route to host"

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            for path, value in d.sysctls:   # what the daemon sets: ignore_routes_with_linkdown
                lab.run(lab.ns_router, "sysctl", "-qw", f"{path.replace('/', '.')}={value}")

            def normal_traffic(wan1_ok: bool) -> None:
                """Rules P (main, suppress), P+id (fwmark) and P+256+id (from) at work."""
                assert exit_of(lab, server, "from", wan2) == "wlan2"
                assert exit_of(lab, server, "mark", mark2) == "wlan2"
                assert exit_of(lab, client, "mark", mark1) == "Local"   # P: connected routes
                assert exit_of(lab, client, "from", wan1) == "Local"
                assert exit_of(lab, "10.112.0.1", "mark", mark1) == "wlan2"
                assert exit_of(lab, server) in ({"wlan1", "wlan2"} if wan1_ok else {"wlan2"})

            normal_traffic(wan1_ok=True)
            assert exit_of(lab, server, "from", wan1) == "wlan1"
            assert exit_of(lab, server, "mark", mark1) == "wlan1"

            lab.fault("wlan1", "carrier")
            # the route via wlan1 is ignored (linkdown): its probes and pinned packets meet
            # the unreachable default instead of table main's route over wlan2
            assert unreachable in exit_of(lab, server, "from", wan1)
            assert unreachable in exit_of(lab, server, "mark", mark1)
            assert unreachable in exit_of(lab, "10.111.0.1", "from", wan1)  # the gateway too
            normal_traffic(wan1_ok=False)
            assert await routing.apply(ipr, CFG, d) == 0

            # without it the packets would leave by the other WAN: the leak it closes
            lab.run(lab.ns_router, "ip", "route", "del", "unreachable", "default", "table",
                    "1001", "metric", str(UNREACHABLE_METRIC))
            assert exit_of(lab, server, "from", wan1) == "wlan2"
            assert await routing.apply(ipr, CFG, d) == 1
            assert unreachable in exit_of(lab, server, "from", wan1)

            lab.heal("wlan1")
            normal_traffic(wan1_ok=True)
            assert exit_of(lab, server, "from", wan1) == "wlan1"

    asyncio.run(body())


# ---- reading only ecmpd's routes; handing them over -------------------------------------

import time  # noqa: E402


def bgp_lines(count: int, gateway: str = "10.111.0.1") -> list[str]:
    """`count` foreign /24 routes, half in table main, half in table 100 (a BGP feed)."""
    half = count // 2
    def net(first: int, i: int) -> str:
        return f"{first + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24"

    return ([f"route add {net(11, i)} via {gateway} table 100 proto bgp" for i in range(half)]
            + [f"route add {net(100, i)} via {gateway} proto bgp" for i in range(count - half)])


FOREIGN_FIB = 200_000


def test_with_a_big_foreign_fib_only_ecmpds_routes_are_read_and_fast(lab: Lab) -> None:
    add_foreign(lab, FOREIGN)

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            small = await routing.read_actual(ipr, CFG)
            lab.run(lab.ns_router, "ip", "-batch", "-",
                    input="\n".join(bgp_lines(FOREIGN_FIB)) + "\n", timeout=300)
            took = []
            for _ in range(5):
                t = time.perf_counter()
                big = await routing.read_actual(ipr, CFG)
                took.append(time.perf_counter() - t)
                assert big == small
            print(f"\nread_actual with {FOREIGN_FIB} foreign routes: "
                  f"best {min(took) * 1000:.1f} ms, worst {max(took) * 1000:.1f} ms")
            assert min(took) < 0.05
            # the fallback (no strict checking) reads the same, the slow way
            real = routing.RouteReader.like

            def unsupported(ipr: Any) -> Any:
                raise routing.StrictUnsupported(92, "no strict checking (test)")

            routing.RouteReader.like = unsupported    # type: ignore[method-assign]
            try:
                lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join(
                    line.replace(" add ", " del ", 1) for line in bgp_lines(FOREIGN_FIB)) + "\n",
                    timeout=300)
                assert await routing.read_actual(ipr, CFG) == small
            finally:
                routing.RouteReader.like = real       # type: ignore[method-assign]

    asyncio.run(body())


def test_own_proto_routes_at_other_metrics_are_reported_not_touched(lab: Lab) -> None:
    lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join([
        "route add default via 10.112.0.1 proto 236 metric 50",
        "route add unreachable default proto 236 metric 60",
        "route add 0.0.0.0/8 via 10.112.0.1 proto 236",         # not a default route
        "route add default via 10.111.0.1 proto 17 metric 70",   # not our proto
    ]) + "\n")
    before = snapshot(lab)

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            actual = await routing.read_actual(ipr, CFG)
            assert sorted((r.metric, r.kind) for r in actual.stray_main) == [
                (50, "unicast"), (60, "unreachable")]
            assert actual.foreign_main is None
            lines = routing.stray_warnings(actual, CFG)
            assert len(lines) == 2 and "at metric 50 (via 10.112.0.1) sits below" in lines[0]
            assert "ip route del default proto 236 metric 50" in lines[0]
            assert await routing.remove_all(ipr, CFG) == 11

    asyncio.run(body())
    assert snapshot(lab) == before


NEW = cfg(table_base=3000, rule_priority=3000, route_metric=10, route_proto=237)


def test_handover_moves_everything_to_the_new_numbers_and_nothing_else(lab: Lab) -> None:
    add_foreign(lab, FOREIGN)
    before = snapshot(lab)

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            n = await routing.handover(ipr, CFG, NEW)
            # the new suppress rule; per WAN its 2 new routes, 2 new rules, 2 old rules, 2
            # old routes; the new multipath route and rule, the old rule and route; the old
            # suppress rule
            assert n == 1 + 2 * (2 + 2 + 2 + 2) + 4 + 1
            assert kernel_plan(lab, CFG) == []
            want = await desired(ipr, lab, NEW, {"wlan1", "wlan2"})
            assert kernel_plan(lab, NEW) == planned(want)
            assert await routing.apply(ipr, NEW, want) == 0   # translated == desired here
            assert await routing.handover(ipr, NEW, NEW) == 0
            assert await routing.remove_all(ipr, NEW) == 11

    asyncio.run(body())
    assert snapshot(lab) == before


def test_handover_keeps_the_old_main_route_when_a_foreign_one_holds_the_new_metric(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.111.0.1", "metric", "10",
            "table", "3000")

    async def body() -> None:
        async with router(lab) as ipr:
            d = await desired(ipr, lab, CFG, {"wlan1", "wlan2"})
            await routing.apply(ipr, CFG, d)
            with caplog.at_level(logging.ERROR, logger="ecmpd"):
                await routing.handover(ipr, CFG, NEW)
            assert "ecmpd's route stays in table 1000 metric 0" in caplog.text
            old = await routing.read_actual(ipr, CFG)
            assert set(old.routes) == {(1000, 0)} and len(old.rules) == 1
            new = await routing.read_actual(ipr, NEW)
            assert (3000, 10) not in new.routes and new.foreign_main is not None
            assert len(new.rules) == 5

    asyncio.run(body())


def test_a_removed_wans_table_is_found_through_its_rules_and_cleaned(lab: Lab) -> None:
    """Reads cover the configured WANs' tables and every table one of ecmpd's rules
    points at: a WAN dropped from the config is still cleaned up completely."""
    only1 = Config(lan_interfaces=("Local",), wans=(CFG.wans[0],))

    async def body() -> None:
        async with router(lab) as ipr:
            await routing.apply(ipr, CFG, await desired(ipr, lab, CFG, {"wlan1", "wlan2"}))
            actual = await routing.read_actual(ipr, only1)
            assert {t for t, _ in actual.routes} == {1000, 1001, 1002}
            d1 = await desired(ipr, lab, only1, {"wlan1"})
            # route 1002 x2 removed, rules 1002 and 1258 removed, the main route changed
            assert await routing.apply(ipr, only1, d1, actual) == 5
            assert kernel_plan(lab, CFG) == planned(d1)
            assert "1002" not in lab.run(lab.ns_router, "ip", "rule").stdout
            assert lab.run(lab.ns_router, "ip", "route", "show", "table", "1002").stdout == ""

    asyncio.run(body())


def test_an_onlink_nexthop_is_read_back_and_a_refused_one_is_left_out(lab: Lab) -> None:
    lab.run(lab.ns_router, "ip", "addr", "flush", "dev", "wlan1")
    lab.run(lab.ns_router, "ip", "addr", "add", "10.111.0.2/32", "dev", "wlan1")

    async def body() -> None:
        async with router(lab) as ipr:
            links = {name: v["index"] for name, v in (await interfaces.read_links(ipr)).items()}
            addrs = {"wlan1": "10.111.0.2", "wlan2": "10.112.0.2"}
            # wlan1's gateway is off its /32 (onlink); wlan2's is nowhere the kernel knows
            d = build_desired(CFG, links, addrs, {"wlan1", "wlan2"},
                              gateways={"wlan1": "10.111.0.1", "wlan2": "10.99.0.1"},
                              onlink={"wlan1"})
            refused: dict = {}
            assert await routing.apply(ipr, CFG, d, refused=refused) > 0
            assert refused == {("10.99.0.1", links["wlan2"]): "Network is unreachable"}
            main = lab.run(lab.ns_router, "ip", "route", "show", "table", "1000").stdout
            assert main.split() == \
                "default via 10.111.0.1 dev wlan1 proto 236 onlink".split()
            # read back with its flag: the same desired state again changes nothing
            first = snapshot(lab)
            again: dict = {}
            assert await routing.apply(ipr, CFG, d, refused=again) == 0
            assert again == refused and snapshot(lab) == first

    asyncio.run(body())


def test_a_policy_sets_route_leaves_out_a_refused_nexthop(lab: Lab) -> None:
    """As the balance route does: one refused nexthop does not keep the set's other
    WANs out of its route."""
    c = replace(CFG, policies=(BULK,))

    async def body() -> None:
        async with router(lab) as ipr:
            links = {name: v["index"] for name, v in (await interfaces.read_links(ipr)).items()}
            # wlan2's gateway is nowhere the kernel knows
            d = build_desired(c, links, {"wlan1": "10.111.0.2", "wlan2": "10.112.0.2"},
                              {"wlan1", "wlan2"},
                              gateways={"wlan1": "10.111.0.1", "wlan2": "10.99.0.1"},
                              sets={254: {"wlan1", "wlan2"}})
            refused: dict = {}
            assert await routing.apply(ipr, c, d, refused=refused) > 0
            assert refused == {("10.99.0.1", links["wlan2"]): "Network is unreachable"}
            for table in (1000, 1254):
                route = lab.run(lab.ns_router, "ip", "route", "show", "table", str(table)).stdout
                assert route.split() == "default via 10.111.0.1 dev wlan1 proto 236".split()
            first = snapshot(lab)
            assert await routing.apply(ipr, c, d, refused={}) == 0
            assert snapshot(lab) == first

    asyncio.run(body())


def test_a_rule_is_ecmpds_only_in_its_own_layout() -> None:
    from ecmpd.desired import Owned, RuleSpec
    o = Owned(236, 0, 1000, 1000, "ecmpd", 0xFF0000, (1, 2))
    mine = [RuleSpec(1000, 254, suppress_prefixlen=0),
            RuleSpec(1001, 1001, fwmark=0x10000, fwmask=0xFF0000),
            RuleSpec(1258, 1002, src="10.0.0.2"), RuleSpec(1512, 1000)]
    theirs = [RuleSpec(1000, 254),                                   # plain lookup main
              RuleSpec(1000, 254, fwmark=5, fwmask=0xFF, suppress_prefixlen=0),
              RuleSpec(1000, 255), RuleSpec(1100, 254),              # local, main
              RuleSpec(1001, 1002, fwmark=0x10000, fwmask=0xFF0000),  # another id's table
              RuleSpec(1001, 1001, fwmark=0x10000, fwmask=0xFFFF0000),  # not ecmpd's mask
              RuleSpec(1200, 1300),                                  # a table out of place
              RuleSpec(1257, 1001, src="10.0.0.2", other=True),      # `not from`, iif, to...
              RuleSpec(1512, 1001), RuleSpec(999, 1000), RuleSpec(1513, 1000)]
    assert all(routing.is_ours(r, o) for r in mine)
    assert not any(routing.is_ours(r, o) for r in theirs), \
        [r for r in theirs if routing.is_ours(r, o)]
