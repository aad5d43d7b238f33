"""Orphans: ``kill -9``, then a restart with other ownership numbers.

ecmpd recognises its objects only by numbers from its config (tables.base,
rules.priority, route.metric, route.proto, nft.table).  Killed with no chance to clean
up and restarted with other numbers, it used to leave the old rules, table routes, nft
table and the old metric-0 multipath route behind — and that route outranks the new one
and never fails over.  With the ledger (``<socket>.owned.json``) the restarted daemon
hands the old objects over (the new ones first, then the old ones go), deletes the old
nft table, and leaves everything foreign alone.

Needs the daemon to call the ledger (`Ledger.take_over` / `settle`) and the stray-route
warning (`routing.stray_warnings`) at start.
"""

from __future__ import annotations

import json
import time

import pytest

from ecmpd import ledger
from ecmpd.desired import Owned
from lab.runner import Ecmpd, add_foreign, config_for, kernel_dump

pytestmark = pytest.mark.lab

FOREIGN = [
    "rule add priority 1001 lookup 2100",                          # old range, other table
    "rule add priority 3001 fwmark 0x10000/0xff0000 lookup 2600",  # new range, other table
    "rule add priority 999 lookup main suppress_prefixlength 0",   # outside both
    "route add default via 10.112.0.1 table 2100",                 # a foreign table
    "route add default via 10.111.0.1 proto 236 table 2400",       # our proto, not our table
    "route add default via 10.112.0.1 metric 100",                 # main default, foreign
    "route add 198.51.100.0/24 via 10.111.0.1 proto 236",          # our proto, not default
    "route add default via 10.111.0.1 table 1001 metric 50",       # old table, foreign proto
    "route add default via 10.111.0.1 table 2001 metric 50",       # new table, foreign proto
]
FOREIGN_NFT = """table ip theirs {
  chain their_forward { type filter hook forward priority 10; policy accept; counter; }
}
"""
NEW = {"tables": {"base": 2000}, "rules": {"priority": 3000}, "route": {"metric": 10},
       "nft": {"table": "ecmpd2"}}


def ours(lab, proto: int = 236) -> dict:
    """ecmpd-looking objects in the router: default routes with `proto` (table, metric),
    rules in 1000..1512 and 3000..3512 by (priority, table), nft tables ecmpd*."""
    routes = json.loads(lab.run(lab.ns_router, "ip", "-4", "-N", "-j", "route", "show", "table",
                                "all", "proto", str(proto)).stdout)
    rules = json.loads(lab.run(lab.ns_router, "ip", "-N", "-j", "rule").stdout)
    nft = json.loads(lab.run(lab.ns_router, "nft", "-j", "list", "tables").stdout)
    return {
        "routes": sorted((int(r.get("table", 254)), r.get("metric", 0)) for r in routes
                         if r["dst"] == "default" and int(r.get("table", 254)) != 2400),
        "rules": sorted((r["priority"], int(r["table"])) for r in rules
                        if (1000 <= r["priority"] <= 1512 or 3000 <= r["priority"] <= 3512)
                        and int(r["table"]) not in (2100, 2600)),
        "nft": sorted(t["table"]["name"] for t in nft["nftables"] if "table" in t
                      and t["table"]["name"].startswith("ecmpd")),
    }


OLD_OBJECTS = {
    "routes": [(1000, 0), (1001, 0), (1001, 4294967295), (1002, 0), (1002, 4294967295)],
    "rules": [(1000, 254), (1001, 1001), (1002, 1002), (1257, 1001), (1258, 1002),
              (1512, 1000)],
    "nft": ["ecmpd"],
}
NEW_OBJECTS = {
    "routes": [(2000, 10), (2001, 0), (2001, 4294967295), (2002, 0), (2002, 4294967295)],
    "rules": [(3000, 254), (3001, 2001), (3002, 2002), (3257, 2001), (3258, 2002),
              (3512, 2000)],
    "nft": ["ecmpd2"],
}


def test_a_restart_with_other_numbers_after_kill9_leaves_no_orphans(make_lab, tmp_path):
    lab = make_lab()
    add_foreign(lab, FOREIGN, FOREIGN_NFT)
    lab.start_servers()
    before = kernel_dump(lab)
    workdir = str(tmp_path / "ecmpd")
    d = Ecmpd(lab, config_for(lab), workdir=workdir).start()
    try:
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        assert ours(lab) == OLD_OBJECTS
        record = ledger.load(d.socket + ledger.SUFFIX)
        assert [o.numbers() for o in record] == [(236, 0, 1000, 1000, "ecmpd", 0xFF0000)]
        d.kill9()
        assert ours(lab) == OLD_OBJECTS                 # killed: everything left in place
        # restart with other ownership numbers (same runtime directory)
        d.write_config(config_for(lab, **NEW))
        t = time.monotonic()
        d.start()
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        took = time.monotonic() - t
        assert "handing them over" in d.log()
        assert ours(lab) == NEW_OBJECTS, d.log()[-3000:]
        record = ledger.load(d.socket + ledger.SUFFIX)
        assert record == (Owned(236, 10, 2000, 3000, "ecmpd2", 0xFF0000, (1, 2)),)
        mine = [r for r in json.loads(lab.run(lab.ns_router, "ip", "-j", "route", "show",
                                              "default", "table", "2000").stdout)
                if r.get("protocol") == "236"]
        assert [(r["metric"], sorted(h["dev"] for h in r["nexthops"])) for r in mine] == \
            [(10, ["wlan1", "wlan2"])]
        # the foreign objects are all still there, untouched
        rules = lab.run(lab.ns_router, "ip", "rule").stdout
        assert "1001:\tfrom all lookup 2100" in rules and "999:\tfrom all lookup main" in rules
        assert "3001:\tfrom all fwmark 0x10000/0xff0000 lookup 2600" in rules
        for table, want in (("2100", "default via 10.112.0.1"), ("2400", "proto 236"),
                            ("1001", "metric 50"), ("2001", "metric 50")):
            assert want in lab.run(lab.ns_router, "ip", "route", "show", "table", table).stdout
        assert "theirs" in lab.run(lab.ns_router, "nft", "list", "tables").stdout
        # the new route fails over: no old metric-0 route outranks it
        lab.fault("wlan1", "dead")
        d.wait_states({"wlan1": "down", "wlan2": "up"}, timeout=5)
        defaults = lab.run(lab.ns_router, "ip", "route", "show", "default", "table",
                           "2000").stdout
        assert defaults.splitlines()[0].split()[:6] == \
            "default via 10.112.0.1 dev wlan2 proto".split(), defaults
        flows = lab.new_flows(40, timeout=2.0)
        assert all(r.ok and r.wan == "wlan2" for r in flows), flows[:3]
        print(f"\nrestart with new numbers: all WANs up {took:.2f}s after launch")
        lab.heal("wlan1")
    finally:
        d.stop()
    # stopped: nothing of ecmpd's is left, under either numbering, and all else is as before
    assert ours(lab) == {"routes": [], "rules": [], "nft": []}
    after = kernel_dump(lab)
    assert after[0] == before[0] and after[1] == before[1]
    assert json.loads(after[2]) == json.loads(before[2])


def test_an_own_proto_route_at_another_metric_is_warned_about(make_lab, tmp_path):
    """Without a record of it (an ecmpd from before the ledger, or another one), a
    default route with ecmpd's proto at another metric is left alone, with a warning."""
    lab = make_lab()
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.112.0.1", "proto",
            "236", "metric", "77")
    d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path / "e")).start()
    try:
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        assert "a default route with ecmpd's proto 236 at metric 77 (via 10.112.0.1) sits " \
               "below ecmpd's route at route.metric 0" in d.log()
        # and status says so, for as long as the route is there
        assert any("at metric 77" in w for w in d.status()["warnings"])
        assert "metric 77" in lab.run(lab.ns_router, "ip", "route", "show", "default").stdout
    finally:
        d.stop()
    assert "metric 77" in lab.run(lab.ns_router, "ip", "route", "show", "default").stdout
