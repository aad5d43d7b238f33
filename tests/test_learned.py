"""Unit tests of ecmpd.learned: learned gateways of both IP versions remembered across a
restart, and a hostile or stale file never giving a WAN a gateway it cannot have."""

from __future__ import annotations

import json
import os

import pytest

from ecmpd import learned
from ecmpd.configmodel import Config, Wan
from ecmpd.health import Phase
from ecmpd.decision import decide
from ecmpd.state import Default, Link, gateway, initial, plane

CFG = Config(lan_interfaces=("lan0",),
             wans=(Wan("wlan1", "eth1", None, id=1, gateway6=None, families=(4, 6)),
                   Wan("wlan2", "eth2", None, id=2)))
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.10", 24),), 12: (("198.51.100.10", 24),)}
ADDRS6 = {11: (("2001:db8:1::2", 64),)}
LOCAL = frozenset({"192.0.2.10", "198.51.100.10", "2001:db8:1::2"})
ROUTES = {254: (Default(0, 11, "192.0.2.1"), Default(0, 12, "198.51.100.1"))}
ROUTES6 = {254: (Default(1024, 11, "fe80::1"),)}


def start(defaults=None, defaults6=None, addrs=ADDRS, addrs6=ADDRS6):
    return initial(CFG, LINKS, addrs, (), 0.0, defaults or {}, LOCAL, addrs6, defaults6 or {})


def test_what_was_learned_is_recorded_per_wan_and_version_and_given_back_at_start(tmp_path):
    before = start(ROUTES, ROUTES6)
    recs = learned.records(before)
    assert recs == {("wlan1", 4): ("eth1", "192.0.2.10", "192.0.2.1", False),
                    ("wlan1", 6): ("eth1", "2001:db8:1::2", "fe80::1", False),
                    ("wlan2", 4): ("eth2", "198.51.100.10", "198.51.100.1", False)}
    store = learned.LearnedStore(str(tmp_path / "learned.json"))
    assert store.save(recs)
    # a restart while no default route names a gateway (a client between two leases)
    bare = start()
    assert gateway(bare, CFG.wans[0]) is None
    assert bare.wan("wlan1").health.reason == "waiting for a gateway"
    st = learned.seed(bare, store.load(bare))
    assert gateway(st, CFG.wans[0]) == "192.0.2.1"
    assert gateway(plane(st, 6), plane(st, 6).cfg.wans[0]) == "fe80::1"
    assert st.wan("wlan1").health.state is Phase.INIT          # earns its place: no verdict yet
    d = decide(st, None)
    assert {t.nexthops[0].gateway for t in d.desired.tables if t.nexthops} == {
        "192.0.2.1", "198.51.100.1"}
    assert [t.nexthops[0].gateway for t in d.desired6.tables if t.nexthops] == ["fe80::1"]


def test_a_route_present_at_start_wins_over_the_record(tmp_path):
    store = learned.LearnedStore(str(tmp_path / "learned.json"))
    store.save(learned.records(start(ROUTES, ROUTES6)))
    now = start({254: (Default(0, 11, "192.0.2.254"),)})
    st = learned.seed(now, store.load(now))
    assert gateway(st, CFG.wans[0]) == "192.0.2.254"
    assert gateway(st, CFG.wans[1]) == "198.51.100.1"


@pytest.mark.parametrize("change, why", [
    ({"interface": "eth9"}, "it was learned on 'eth9'"),
    ({"address": "192.0.2.99"}, "address changed"),
    ({"gateway": "2001:db8::1"}, "not a gateway of that version"),
    ({"gateway": "224.0.0.1"}, "gateway must be a unicast IPv4 address"),
    ({"gateway": "198.51.100.10"}, "one of this router's own addresses"),
    ({"onlink": "yes"}, "not a gateway of that version"),
    ({"extra": 1}, "not a record"),
])
def test_a_record_that_no_longer_fits_is_left_out_with_a_warning(tmp_path, caplog, change, why):
    entry = {"interface": "eth1", "address": "192.0.2.10", "gateway": "192.0.2.1",
             "onlink": False, **change}
    path = tmp_path / "learned.json"
    path.write_text(json.dumps({"wlan1": {"4": entry}}))
    os.chmod(path, 0o644)
    assert learned.LearnedStore(str(path)).load(start()) == {}
    assert why in caplog.text


@pytest.mark.parametrize("doc", [[], "x", {"wlan1": []}, {"wlan1": {"5": {}}},
                                 {"nosuch": {"4": {}}}, {"wlan2": {"6": {}}}])
def test_a_file_of_another_shape_gives_nothing(tmp_path, doc):
    path = tmp_path / "learned.json"
    path.write_text(json.dumps(doc))
    assert learned.LearnedStore(str(path)).load(start()) == {}


def test_a_file_others_may_write_is_not_read(tmp_path):
    store = learned.LearnedStore(str(tmp_path / "learned.json"))
    store.save(learned.records(start(ROUTES, ROUTES6)))
    os.chmod(store.path, 0o666)
    assert store.load(start()) == {}
