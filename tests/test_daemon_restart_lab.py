"""The daemon's runtime, part 1: kill -9 and restart, foreign changes to its objects.

The real ecmpd in a lab's router namespace with real traffic.  A restarted ecmpd adopts
what the killed one left (no flow broken, no change to the main default route, seen by
`ip monitor route`); whatever someone deletes or changes behind ecmpd's back (its route,
an ip rule, a WAN table, its nft table) is put back within 1 s.  A second ecmpd on the
same socket refuses to start and touches nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest

from lab.driver import LineReader, TrafficError
from lab.runner import Ecmpd, config_for, nft_table
from lab.wait import until, within

pytestmark = pytest.mark.lab

RESTORE_DEADLINE = 1.0
"""The spec: ecmpd's objects are back at most this long after a foreign deletion."""
MARKER = "198.51.100.0/24"
"""A route the test adds/deletes in the router namespace to delimit `ip monitor` output."""
TS = re.compile(r"^\[[^\]]*\]\s*")


def main_route_events(lines: list[str]) -> list[str]:
    """The `ip monitor route` lines about ecmpd's multipath default route (table 1000,
    `tables.base`) or a default route in table main."""
    out = []
    for line in lines:
        line = TS.sub("", line)
        table = re.search(r" table (\S+)", line)
        if re.match(r"^(Deleted )?default\b", line) and (table is None
                                                         or table.group(1) == "1000"):
            out.append(line)
    return out


@contextmanager
def route_events(lab) -> Iterator[list[str]]:
    """`ip -ts monitor route` in the router namespace around the block: the yielded list
    holds, after the block, every line reported during it.  A marker route added before
    and deleted after the block delimits it (no sleep-and-hope about the monitor)."""
    monitor = lab.popen(lab.ns_router, "ip", "-ts", "monitor", "route",
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    route = lambda verb: lab.run(lab.ns_router, "ip", "route", verb, MARKER, "dev", "Local")
    events = LineReader(monitor)
    try:
        def reported() -> bool:             # the monitor reports the marker
            route("add")
            try:
                events.wait(lambda ls: True if any(MARKER in x for x in ls) else None,
                            "marker route", 0.3)
                return True
            except TrafficError:
                route("del")
                return False

        until(reported, 5, "the monitor to report the marker route", interval=0)
        first = len(events.lines)
        out: list[str] = []
        yield out
        route("del")
        events.wait(lambda ls: True if any(MARKER in x and "Deleted" in x
                                           for x in ls[first:]) else None, "marker", 5)
        out += events.lines[first:]
    finally:
        monitor.terminate()
        monitor.wait(5)


def test_kill9_and_restart_adopts_without_flap_or_broken_flows(lab3, ecmpd_in):
    lab = lab3
    d = ecmpd_in(lab, weights={"wan1": 1, "wan2": 2, "wan3": 3})
    lab.start_servers()
    held = lab.hold_flows(90, byte_interval=0.1)
    assert held.wait_established() == 90
    route = json.loads(lab.run(lab.ns_router, "ip", "-j", "route", "show", "default", "table",
                                "1000").stdout)
    assert len(route) == 1
    nft = nft_table(lab)
    with route_events(lab) as during:
        old_pid = d.proc.pid
        d.kill9()
        # the dead daemon left its socket file: ecmpctl says it is not running, naming it
        assert os.path.exists(d.socket)
        res = d.ctl("status", check=False)
        assert res.returncode == 3 and d.socket in res.stderr, res
        d.start()                           # the same config and socket path
        st = d.wait_states({w.name: "up" for w in lab.spec.wans})
        assert st["pid"] != old_pid
        new_flows = lab.new_flows(60, timeout=3.0)
    flaps = main_route_events(during)
    assert not flaps, f"the main default route changed across the restart: {flaps}"
    assert json.loads(lab.run(lab.ns_router, "ip", "-j", "route", "show", "default", "table",
                              "1000").stdout) == route
    assert st["stats"]["nft_writes"] == 0, "the new ecmpd rewrote its intact nft table"
    assert nft_table(lab) == nft
    assert "removing stale control socket" in d.log()
    assert "adopting" in d.log()
    assert all(r.ok for r in new_flows), [r for r in new_flows if not r.ok][:3]
    results = held.stop()
    assert set(Counter(r.wan for r in results)) == {"wan1", "wan2", "wan3"}
    broken = [r for r in results if r.broken]
    assert not broken, f"{len(broken)} held flows broke across kill -9 + restart: {broken[:3]}"


def test_restart_with_a_wan_down_keeps_it_out_until_it_recovers(lab3, ecmpd_in):
    lab = lab3
    d = ecmpd_in(lab)
    lab.fault("wan2", "dead")
    d.wait_states({"wan2": "down"})
    route = lab.run(lab.ns_router, "ip", "route", "show", "default", "table", "1000").stdout
    assert "wan1" in route and "wan2" not in route
    with route_events(lab) as during:
        d.kill9()
        d.start()
        st = d.status()                     # what it observed at start: wan2 is not in use
        assert st["wans"]["wan2"]["state"] == "down" and not st["wans"]["wan2"]["active"]
        d.wait_states({"wan1": "up", "wan2": "down", "wan3": "up"})
    assert not main_route_events(during), main_route_events(during)
    assert lab.run(lab.ns_router, "ip", "route", "show", "default", "table",
                   "1000").stdout == route
    lab.heal("wan2")                        # and then it converges
    st = d.wait_states({"wan2": "up"})
    assert {h["interface"] for h in st["route"]["nexthops"]} == {"wan1", "wan2", "wan3"}


def policy_table(lab) -> str:
    """The routing table of the lab's one policy WAN set: the table of the fwmark rule
    that is not a WAN's (1001..1255 by id) nor the multipath route's."""
    rules = json.loads(lab.run(lab.ns_router, "ip", "-j", "rule", "show").stdout)
    wan_tables = {str(1000 + i) for i in range(1, len(lab.spec.wans) + 1)}
    (table,) = {str(r["table"]) for r in rules
                if "fwmark" in r and str(r["table"]) not in wan_tables}
    return table


def test_restart_keeps_the_route_of_a_policy_set_of_standby_wans(lab3, ecmpd_in):
    """`use: [wan3]` with wan3 on tier 2: the multipath route never holds it; a restart
    adopts it from the set's route, which stays in place (it used to go for the probe
    rounds wan3 needed to be UP again)."""
    lab = lab3
    config = config_for(lab)
    config["wans"]["wan3"]["tier"] = 2
    config["policies"] = [{"dst": "203.0.113.0/24", "use": ["wan3"]}]
    d = ecmpd_in(lab, config=config)
    table = policy_table(lab)
    show = ("ip", "route", "show", "default", "table", table)
    before = lab.run(lab.ns_router, *show).stdout
    assert "wan3" in before and "wan3" not in lab.run(
        lab.ns_router, "ip", "route", "show", "default", "table", "1000").stdout
    with route_events(lab) as during:
        d.kill9()
        d.start()
        st = d.status()                     # what it observed at start: wan3 adopted
        assert st["wans"]["wan3"]["state"] != "down", st["wans"]["wan3"]
        d.wait_states({"wan1": "up", "wan2": "up", "wan3": "up"})
    changed = [TS.sub("", x) for x in during if re.search(rf"\btable {table}\b", x)]
    assert not changed, f"the policy set's route changed across the restart: {changed}"
    assert lab.run(lab.ns_router, *show).stdout == before
    assert "adopting" in d.log()


def test_a_second_ecmpd_on_the_same_socket_refuses_to_start(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab)
    r = lambda *cmd: lab.run(lab.ns_router, *cmd).stdout
    dump = lambda: (r("ip", "-4", "-j", "route", "show", "table", "all"), r("ip", "-j", "rule"),
                    r("nft", "-j", "list", "ruleset"))
    kernel = dump()
    other = d.dir.parent / "ecmpd99"
    second = Ecmpd(lab, config_for(lab, weights={"wlan1": 7}), workdir=str(other))
    second.socket = d.socket
    res = lab.run(lab.ns_router, *second.argv(), check=False, timeout=20)
    assert res.returncode == 1, res
    assert "another ecmpd is already listening on " + d.socket in res.stderr
    assert dump() == kernel                     # it touched nothing
    st = d.status()                              # and the first one serves on
    assert st["pid"] == d.proc.pid
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values())


def _poll(check: Callable[[], bool], start: float, deadline: float) -> float | None:
    """Seconds from `start` until check() is true, or None if not by `start + deadline`."""
    if within(check, start + deadline - time.monotonic(), interval=0.005):
        return time.monotonic() - start
    return None


RESTORE_TIMES: dict[str, float] = {}
"""Observed restore times of the last run (printed with -s)."""


def test_external_deletions_and_changes_are_undone_within_a_second(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, weights={"wlan1": 1, "wlan2": 5})
    ns = lab.ns_router
    ip = lambda *a: subprocess.run(["ip", "-n", ns, *a], capture_output=True, text=True,
                                   check=True).stdout
    nft = lambda *a: lab.run(ns, "nft", *a, check=False).stdout
    # wlan1 has id 1: table tables.base + 1, fwmark rule at rules.priority + 1 (both 1000)
    table = prio = "1001"
    assert d.status()["wans"]["wlan1"]["table"] == 1001
    objects = {
        "multipath route": (lambda: ip("-j", "route", "show", "default", "table", "1000"),
                            ("route", "del", "default", "table", "1000", "proto", "236")),
        "fwmark rule": (lambda: ip("-j", "rule", "show"),
                        ("rule", "del", "priority", prio)),
        "table 1001": (lambda: ip("-j", "route", "show", "table", table),
                       ("route", "flush", "table", table)),
        # changed rather than deleted, under ecmpd's own proto
        "multipath route replaced": (lambda: ip("-j", "route", "show", "default", "table",
                                                "1000"),
                                     ("route", "replace", "default", "table", "1000", "proto",
                                      "236", "via", "10.111.0.1", "dev", "wlan1")),
        "table 1001 replaced": (lambda: ip("-j", "route", "show", "table", table),
                                ("route", "replace", "default", "proto", "236", "table", table,
                                 "via", "10.112.0.1", "dev", "wlan2")),
    }
    writes = d.status()["stats"]["nft_writes"]
    for name, (read, change) in objects.items():
        before = read()
        assert before.strip() not in ("", "[]")
        start = time.monotonic()
        ip(*change)
        took = _poll(lambda: read() == before, start, RESTORE_DEADLINE)
        assert took is not None, f"{name} not restored within {RESTORE_DEADLINE}s: {read()}"
        RESTORE_TIMES[name] = took
    table_text = nft("list", "table", "inet", "ecmpd")
    assert "masquerade" in table_text
    for name, cmd in (("nft table", ("delete", "table", "inet", "ecmpd")),
                      ("nft chain flushed", ("flush", "chain", "inet", "ecmpd", "nat"))):
        start = time.monotonic()
        lab.run(ns, "nft", *cmd)
        took = _poll(lambda: nft("list", "table", "inet", "ecmpd") == table_text, start,
                     RESTORE_DEADLINE)
        assert took is not None, f"{name} not restored within {RESTORE_DEADLINE}s"
        RESTORE_TIMES[name] = took
    print("restore times (s):", {k: round(v, 3) for k, v in RESTORE_TIMES.items()})
    st = d.status()
    assert st["stats"]["nft_writes"] == writes + 2
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values())
    # and the dataplane works again
    lab.start_servers()
    res = lab.new_flows(40, timeout=3.0)
    assert all(r.ok for r in res), [r for r in res if not r.ok][:3]


BURST = """
import json, random, sys, time
from pyroute2 import IPRoute
rounds, deadline = int(sys.argv[1]), float(sys.argv[2])
ipr = IPRoute()
def present():
    main = [r for r in ipr.get_routes(table=1000) if r['dst_len'] == 0 and r['proto'] == 236]
    rule = [r for r in ipr.get_rules() if r.get('priority') == 1001]
    return bool(main and rule)
times, lost = [], 0
for i in range(rounds):
    ipr.route('del', dst='0.0.0.0/0', table=1000, proto=236)
    time.sleep(random.uniform(0, 0.004))
    ipr.rule('del', priority=1001, table=1001, fwmark=0x10000, fwmask=0xff0000)
    start = time.monotonic()
    while not present():
        if time.monotonic() - start > deadline:
            lost += 1
            break
        time.sleep(0.002)
    else:
        times.append(time.monotonic() - start)
    while not present():        # a lost one: wait for ecmpd's next pass, or give up
        if time.monotonic() - start > deadline + 5:
            print(json.dumps({"lost": lost, "times": times, "stuck": i}))
            sys.exit(0)
        time.sleep(0.01)
print(json.dumps({"lost": lost, "times": times}))
"""


def test_deletions_in_quick_succession_are_all_put_back(make_lab, ecmpd_in):
    """Two foreign deletions a few ms apart: the second one arrives while ecmpd is busy
    putting back the first, and must not be lost (it was, before the kick fix)."""
    lab = make_lab()
    ecmpd_in(lab)
    out = lab.run(lab.ns_router, sys.executable, "-c", BURST, "30", str(RESTORE_DEADLINE),
                  timeout=90).stdout
    res = json.loads(out)
    print(f"burst restore times (s): max {max(res['times'], default=0):.3f}, "
          f"{len(res['times'])} rounds")
    assert res["lost"] == 0 and "stuck" not in res, res


def test_a_drained_wan_stays_drained_across_a_restart(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab, keep_on_exit=True)
    d.ctl("disable", "wlan2")
    assert d.stop() == 0
    d.start()
    st = d.wait_states({"wlan1": "up"})
    assert st["wans"]["wlan2"]["state"] == "disabled" and not st["wans"]["wlan2"]["active"]
    assert "still disabled by the administrator: wlan2" in d.log()
    d.ctl("enable", "wlan2")
    d.wait_states({"wlan2": "up"})


def test_other_proto_236_defaults_at_another_metric_are_left_alone(make_lab, ecmpd_in):
    lab = make_lab()
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.112.0.1", "dev", "wlan2",
            "proto", "236", "metric", "50")
    d = ecmpd_in(lab)
    d.ctl("reload")
    routes = lab.run(lab.ns_router, "ip", "route", "show", "default").stdout
    assert "metric 50" in routes
    assert d.stop() == 0
    assert "metric 50" in lab.run(lab.ns_router, "ip", "route", "show", "default").stdout


def test_a_dead_wan_at_start_never_enters_the_route(make_lab, tmp_path):
    """Not adopted from a route found in the kernel, a WAN must earn its place with a
    probe verdict: a dead one at start never carries a new flow, not even briefly."""
    lab = make_lab()
    lab.fault("wlan1", "dead")
    dead = lab.spec.wans[0].gateway
    d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path / "d"))
    with route_events(lab) as during:
        d.start()
        try:
            st = d.wait_states({"wlan1": "down", "wlan2": "up"})
        except Exception:
            d.stop()
            raise
    try:
        events = main_route_events(during)
        assert events and not [e for e in events if dead in e], events
        assert {h["interface"] for h in st["route"]["nexthops"]} == {"wlan2"}
        assert "wlan2: INIT -> UP" in d.log() and "(joins the route)" in d.log()
        lab.heal("wlan1")
        d.wait_states({"wlan1": "up"})
    finally:
        d.stop()


def test_an_upgrade_moves_the_route_out_of_main_without_a_gap(make_lab, ecmpd_in):
    """ecmpd 0.1 kept its multipath route in table main, with no rule for it.  Over what
    0.1 left (kill -9), this version adopts that route, installs it in its own table
    behind rule 1512 and only then removes the one in main: held flows live on."""
    lab = make_lab()
    d = ecmpd_in(lab)
    lab.start_servers()
    held = lab.hold_flows(40, byte_interval=0.1)
    assert held.wait_established() == 40
    d.kill9()
    ip = lambda *a: lab.run(lab.ns_router, "ip", *a).stdout  # noqa: E731
    # what 0.1 left: the same route in main instead of table 1000, and no rule 1512
    ip("route", "add", "default", "proto", "236", "metric", "0", "nexthop", "via",
       "10.111.0.1", "dev", "wlan1", "weight", "1", "nexthop", "via", "10.112.0.1", "dev",
       "wlan2", "weight", "1")
    ip("rule", "del", "priority", "1512")
    ip("route", "del", "default", "table", "1000", "proto", "236")
    with route_events(lab) as during:
        d.start()
        d.wait_states({"wlan1": "up", "wlan2": "up"})
    assert "adopting" in d.log()
    assert "proto 236" not in ip("route", "show", "table", "main")
    assert "nexthop via 10.111.0.1" in ip("route", "show", "table", "1000")
    assert "1512:\tfrom all lookup 1000" in ip("rule")
    # the new route came before the old one went
    lines = main_route_events(during)
    new = next(i for i, line in enumerate(lines) if " table 1000 " in f" {line} "
               and not line.startswith("Deleted"))
    old = next(i for i, line in enumerate(lines) if line.startswith("Deleted")
               and " table " not in line)
    assert new < old, lines
    results = held.stop()
    assert not [r for r in results if r.broken], [r for r in results if r.broken][:3]
