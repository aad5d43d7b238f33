"""Health end to end: each fault mode on each WAN of a 3-WAN lab takes that WAN out of
the route, new flows keep working through the others, the WAN comes back after heal;
healthy WANs' long-lived flows never break; only the failed WAN's conntrack entries go;
5% random loss does not make a WAN flap."""

from __future__ import annotations

import re

import pytest

from lab.runner import Ecmpd, config_for
from lab.wait import during, within

pytestmark = pytest.mark.lab

MODES = ("dead", "upstream", "carrier")


@pytest.fixture
def lab3_names() -> list[str]:
    return ["north", "south", "west"]


@pytest.fixture
def daemon(lab3):
    d = Ecmpd(lab3, config_for(lab3, targets="beyond"))
    d.start()
    try:
        d.wait_states({w.name: "up" for w in lab3.spec.wans})
        lab3.start_servers()
        yield d
    finally:
        d.stop()


def ct_marks(lab, mark: int) -> int:
    """conntrack entries in the router namespace whose mark & 0xff0000 == mark."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "-p", "tcp", check=False).stdout
    return sum(1 for m in re.findall(r"mark=(\d+)", out) if int(m) & 0xFF0000 == mark)


def test_every_fault_mode_on_every_wan(lab3, daemon):
    names = [w.name for w in lab3.spec.wans]
    for wan in names:
        others = [n for n in names if n != wan]
        for mode in MODES:
            lab3.fault(wan, mode)
            st = daemon.wait_states({wan: "down"}, timeout=10)
            assert not st["wans"][wan]["active"]
            assert all(st["wans"][o]["state"] == "up" and st["wans"][o]["active"] for o in others)
            nexthops = {h["interface"] for h in st["route"]["nexthops"]}
            assert nexthops == set(others), (wan, mode, st["route"])
            res = lab3.new_flows(60, timeout=3.0)
            assert all(r.ok for r in res), (wan, mode, [r for r in res if not r.ok][:3])
            assert {r.wan for r in res} <= set(others)
            lab3.heal(wan)
            st = daemon.wait_states({wan: "up"}, timeout=10)
            assert {h["interface"] for h in st["route"]["nexthops"]} == set(names)
    # the reasons were logged once per change, naming what failed
    log = daemon.log()
    assert "carrier lost" in log
    assert "targets answered" in log


def test_healthy_flows_survive_a_fault_and_heal_and_only_the_failed_wans_entries_go(lab3, daemon):
    held = lab3.hold_flows(150, byte_interval=0.1)
    held.wait_established()
    marks = {w["interface"]: int(w["mark"], 16) for w in daemon.status()["wans"].values()}
    assert all(ct_marks(lab3, m) > 0 for m in marks.values())
    lab3.fault("south", "dead")
    daemon.wait_states({"south": "down"})
    within(lambda: not ct_marks(lab3, marks["south"]), 5)
    assert ct_marks(lab3, marks["south"]) == 0
    assert ct_marks(lab3, marks["north"]) > 0 and ct_marks(lab3, marks["west"]) > 0
    lab3.heal("south")
    daemon.wait_states({"south": "up"})
    results = held.stop()
    healthy = [r for r in results if r.wan in ("north", "west")]
    assert len(healthy) > 50
    broken = [r for r in healthy if r.broken]
    assert not broken, f"{len(broken)} flows on healthy WANs broke: {broken[:3]}"
    assert any(r.broken for r in results if r.wan == "south")  # its flows were cut, as designed


def test_all_wans_down_keeps_the_last_route(lab3, daemon):
    for w in lab3.spec.wans:
        lab3.fault(w.name, "dead")
    st = daemon.wait_states({w.name: "down" for w in lab3.spec.wans})
    st = daemon.wait_for(lambda s: s["route"]["kept_last"], what="kept_last")
    assert st["route"]["present"] and st["route"]["nexthops"]
    assert any("keeping the last route" in w for w in st["warnings"])
    for w in lab3.spec.wans:
        lab3.heal(w.name)
    st = daemon.wait_states({w.name: "up" for w in lab3.spec.wans})
    assert not st["route"]["kept_last"]


def test_five_percent_loss_does_not_flap(make_lab):
    lab = make_lab()
    d = Ecmpd(lab, config_for(lab))    # defaults: the gateway is the only target
    d.start()
    try:
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        lab.set_loss("wlan1", 5)
        lab.set_loss("wlan2", 5)
        worst = 0.0

        def steady() -> None:
            nonlocal worst
            st = d.status()
            for name in ("wlan1", "wlan2"):
                wan = st["wans"][name]
                assert wan["state"] in ("up", "falling") and wan["active"], wan
                worst = max([worst] + [t["loss_pct"] or 0 for t in wan["targets"].values()])

        during(15, steady, interval=0.1)     # ~75 probe rounds per WAN
        assert "-> DOWN" not in d.log()
        assert worst > 0, "the prober never saw the loss: the test proved nothing"
    finally:
        lab.set_loss("wlan1", 0)
        lab.set_loss("wlan2", 0)
        d.stop()
