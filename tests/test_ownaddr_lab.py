"""A probe target that is one of the router's own addresses, end to end: the real ecmpd in
a lab.  The kernel answers such a target itself, so before ecmpd knew better the WAN
stayed UP with its ISP dead.  Now the target counts as failed, and the WAN is out of
the route (never in it, or within a second of the target becoming local), with the
reason in `ecmpctl status --json` and one WARNING in the log; also on a saturated line,
whose traffic must not keep it in."""

from __future__ import annotations

import time
from ipaddress import IPv4Interface

import pytest

from lab.lines import Line
from lab.runner import Ecmpd, config_for, kernel_hops
from lab.wait import during

pytestmark = pytest.mark.lab

OUT_BUDGET = 1.0
"""Seconds from the ISP dying (or the target becoming local) to the WAN out of the route."""


def own(lab, wan: str) -> str:
    return str(IPv4Interface(lab.spec.wan(wan).address).ip)


def wan1_in_kernel(lab) -> bool:
    return any(h[1] == "wlan1" for h in kernel_hops(lab))


def stays_out(d: Ecmpd, lab, seconds: float) -> int:
    """Check for `seconds` that wlan1 is neither active in status nor in the kernel's
    route; how many times it was checked."""
    def out() -> None:
        st = d.status()["wans"]["wlan1"]
        assert not st["active"] and not wan1_in_kernel(lab), st

    return during(seconds, out)


def out_within(d: Ecmpd, lab, t0: float) -> float:
    """Seconds from `t0` until wlan1 is out of the kernel's route (polled; fails past
    the budget)."""
    while wan1_in_kernel(lab):
        took = time.monotonic() - t0
        assert took <= OUT_BUDGET, f"wlan1 still in the route {took:.2f}s on"
    return time.monotonic() - t0


def test_a_wan_whose_only_target_is_its_own_address_never_carries_flows(make_lab) -> None:
    lab = make_lab()
    config = config_for(lab)
    me = own(lab, "wlan1")
    del config["wans"]["wlan1"]["address"]      # absent: nothing in the file to check against
    config["wans"]["wlan1"]["probe"] = {"targets": [me]}
    lab.start_servers()
    d = Ecmpd(lab, config)
    d.start()
    try:
        st = d.wait_states({"wlan1": "down", "wlan2": "up"})
        w1 = st["wans"]["wlan1"]
        why = f"target {me} is this router's own address"
        assert why in w1["reason"], w1
        assert w1["targets"][me]["reason"] == why
        assert st["wans"]["wlan2"]["targets"][lab.spec.wan("wlan2").gateway]["reason"] is None
        assert not wan1_in_kernel(lab)
        warned = [line for line in d.log().splitlines() if why in line and "WARNING" in line]
        assert len(warned) == 1, d.log()
        lab.fault("wlan1", "dead")
        assert stays_out(d, lab, OUT_BUDGET) > 3
        res = lab.new_flows(10, timeout=3.0)
        assert all(r.ok for r in res) and {r.wan for r in res} == {"wlan2"}, res
        assert len([line for line in d.log().splitlines() if why in line
                    and "WARNING" in line]) == 1
    finally:
        d.stop()


@pytest.mark.parametrize("saturated", [False, True], ids=["idle", "saturated"])
def test_a_target_that_becomes_local_takes_the_wan_out_within_a_second(make_lab,
                                                                      saturated) -> None:
    lab = make_lab()
    config = config_for(lab, targets="beyond")
    target = lab.upstream_address("wlan1")
    config["wans"]["wlan1"]["probe"] = {"targets": [target]}
    if saturated:
        lab.shape("wlan1", Line(20, 5, buffer_s=0.5))
        lab.start_servers()
    d = Ecmpd(lab, config)
    d.start()
    load = None
    try:
        d.wait_states({"wlan1": "up", "wlan2": "up"})
        if saturated:
            load = lab.load(wans=["wlan1"], seconds=20, streams_per_wan=1)
            d.wait_for(lambda st: (st["wans"]["wlan1"]["targets"][target]["srtt_ms"] or 0)
                       >= 100, 15, "wlan1's line saturated (srtt >= 100 ms)")
        # the router takes the target's address (on its LAN side): the kernel answers it
        t0 = time.monotonic()
        lab.run(lab.ns_router, "ip", "addr", "add", f"{target}/32", "dev",
                lab.spec.lan_interface)
        took = out_within(d, lab, t0)
        print(f"out of the route {took:.3f}s after the target became local")
        st = d.wait_states({"wlan1": "down", "wlan2": "up"}, timeout=2)
        assert f"target {target} is this router's own address" in st["wans"]["wlan1"]["reason"]
        t1 = time.monotonic()
        lab.fault("wlan1", "dead")                  # and its ISP dies: it stays out
        stays_out(d, lab, OUT_BUDGET)
        assert time.monotonic() - t1 < OUT_BUDGET + 2.0
        # followed back: the address goes, the ISP heals, the WAN returns
        lab.run(lab.ns_router, "ip", "addr", "del", f"{target}/32", "dev",
                lab.spec.lan_interface)
        lab.heal("wlan1")
        st = d.wait_states({"wlan1": "up"}, timeout=10)
        assert st["wans"]["wlan1"]["targets"][target]["reason"] is None
        assert "no longer this router's own address" in d.log()
    finally:
        if load is not None:
            load.stop()
        d.stop()
