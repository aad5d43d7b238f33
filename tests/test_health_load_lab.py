"""Health under load, end to end: the real ecmpd in a lab whose lines are modem-like
(tbf with a deep buffer), with real iperf3 load.  A saturated WAN is slow, not dead and
stays in the route; a dead one still leaves — also while its line is full, after a
carrier flap, and under an ICMP flood aimed at its address.  Precise timings are the
bench's (figure 9); these tests hold the verdicts, with budgets wide enough for a busy
2-core machine."""

from __future__ import annotations

import re
import time

import pytest

from lab.lines import Line
from lab.runner import Ecmpd, config_for
from lab.topology import make_spec

pytestmark = pytest.mark.lab

RATES = {"north": 20, "south": 40, "west": 60}
"""Download Mbit/s per WAN; upload is a quarter (DSL/cable-like)."""


@pytest.fixture
def lines3(make_lab):
    lab = make_lab(make_spec(3, names=list(RATES)))
    for name, rate in RATES.items():
        lab.shape(name, Line(rate, rate / 4, buffer_s=1.0))
    lab.start_servers()
    return lab


def start(lab, config) -> Ecmpd:
    d = Ecmpd(lab, config)
    d.start()
    d.wait_states({w.name: "up" for w in lab.spec.wans})
    return d


def transitions(log: str) -> list[str]:
    """The log's state changes that took a WAN out of the route."""
    return [line for line in log.splitlines() if "leaves the route" in line]


def wait_srtt(d: Ecmpd, names: list[str], at_least: float, timeout: float = 20.0) -> dict:
    """Wait until every WAN in `names` has a target whose srtt is >= `at_least` s: proof
    that its line really is saturated (queueing), not just busy."""
    def full(st) -> bool:
        return all(max((t["srtt_ms"] or 0) for t in st["wans"][n]["targets"].values())
                   >= at_least * 1000 for n in names)
    return d.wait_for(full, timeout, f"srtt >= {at_least}s on {names}")


def test_saturated_lines_stay_in_the_route_and_no_transfer_breaks(lines3):
    # dual-stack: the IPv4 load fills the queue the IPv6 probes wait in too, with no
    # IPv6 traffic to prove the line alive; IPv6 stays in as well
    d = start(lines3, config_for(lines3, targets="both", ipv6=True))
    try:
        load = lines3.load(seconds=25, streams_per_wan=1)
        st = wait_srtt(d, list(RATES), 0.3)
        timeouts = {n: w["timeout_ms"] for n, w in st["wans"].items()}
        assert max(timeouts.values()) > 250, timeouts  # the timeout followed the RTT
        results = load.wait(timeout=90)
        broken = [r for r in results if r.broken]
        assert not broken, broken
        assert {r.wan for r in results} == set(RATES)
        assert not transitions(d.log()), transitions(d.log())
        st = d.status()
        assert all(w["state"] == "up" and w["active"] for w in st["wans"].values()), st
        assert all(w["ipv6"]["state"] == "up" and w["ipv6"]["active"]
                   for w in st["wans"].values()), st
    finally:
        d.stop()


def fault_when_saturated(lab, d: Ecmpd, wan: str, seconds: int, family: int | None = None):
    """IPv4 load on `wan` until its line queues (srtt >= 0.3 s), then its ISP dead (of
    `family` only, if given): the load and the fault's moment (monotonic)."""
    load = lab.load(wans=[wan], seconds=seconds, streams_per_wan=1)
    wait_srtt(d, [wan], 0.3)
    t0 = time.monotonic()
    lab.fault(wan, "dead", family=family)
    return load, t0


def test_a_dead_isp_leaves_fast_while_its_line_is_saturated(lines3):
    d = start(lines3, config_for(lines3, targets="both", ipv6=True))
    try:
        load, t0 = fault_when_saturated(lines3, d, "north", 40)
        st = d.wait_states({"north": "down"}, timeout=10)
        took = time.monotonic() - t0
        # 1 s of buffer drains first (dead and slow look alike until then); bench: ~1.2 s
        assert took <= 3.0, f"north left the route {took:.2f}s after its ISP died"
        d.wait_states({"north": "down"}, timeout=10, family=6)
        took6 = time.monotonic() - t0
        # IPv6 waits the line's queue as IPv4 measures it, then the same rounds
        assert took6 <= 4.0, f"north's IPv6 left the route {took6:.2f}s after its ISP died"
        assert all(st["wans"][n]["state"] == "up" for n in ("south", "west")), st
        res = lines3.new_flows(40, timeout=3.0)
        assert all(r.ok for r in res) and {r.wan for r in res} <= {"south", "west"}
        load.stop()
    finally:
        d.stop()


def test_an_ipv6_outage_leaves_while_ipv4_saturates_the_line(lines3):
    # IPv4 downloads fill north's queue; its ISP then drops IPv6 only.  IPv6 probes look
    # queued until IPv4's replies to later requests overtake them (first in, first out):
    # IPv6 leaves; IPv4, saturated, stays in and its transfers go on
    d = start(lines3, config_for(lines3, targets="both", ipv6=True))
    try:
        load, t0 = fault_when_saturated(lines3, d, "north", 12, family=6)
        d.wait_states({"north": "down"}, timeout=10, family=6)
        took6 = time.monotonic() - t0
        # ~1 s of queue first, then interval + timeout of overtaking, then the fast
        # follow-ups; bench figure 11 has the timing
        assert took6 <= 4.0, f"north's IPv6 left the route {took6:.2f}s after it died"
        results = load.wait(timeout=60)
        assert results and not [r for r in results if r.broken], results
        assert not transitions(d.log()) or all("IPv6" in t for t in transitions(d.log())), \
            transitions(d.log())
        st = d.status()
        assert st["wans"]["north"]["state"] == "up" and st["wans"]["north"]["active"], st
    finally:
        d.stop()


def probe_entries(lab, source: str) -> list[str]:
    """conntrack lines of ICMP entries started by `source` in the router namespace."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "-p", "icmp", "-s", source,
                  check=False).stdout
    return [line for line in out.splitlines() if "src=" in line]


def test_after_a_carrier_flap_probes_stay_on_their_wan_and_a_dead_isp_is_seen(make_lab):
    lab = make_lab()
    d = start(lab, config_for(lab, targets="beyond"))
    try:
        wan1 = str(lab.spec.wan("wlan1").interface.ip)
        lab.fault("wlan1", "carrier")
        d.wait_states({"wlan1": "down"})
        time.sleep(1.0)  # probe rounds while the link is down: none may leave by wlan2
        lab.heal("wlan1")
        d.wait_states({"wlan1": "up"})
        # every probe entry from wlan1's address is NATed to nothing and marked wlan1's
        mark1 = int(d.status()["wans"]["wlan1"]["mark"], 16)
        for line in probe_entries(lab, wan1):
            assert f"dst={wan1}" in line.split("src=", 2)[2], line  # reply to wlan1 itself
            marks = [int(m) for m in re.findall(r"mark=(\d+)", line)]
            assert all(m & 0xFF0000 in (0, mark1) for m in marks), line
        t0 = time.monotonic()
        lab.fault("wlan1", "dead")
        d.wait_states({"wlan1": "down"}, timeout=10)
        took = time.monotonic() - t0
        assert took <= 2.0, f"wlan1 left the route {took:.2f}s after its ISP died (after a flap)"
    finally:
        d.stop()


def test_an_icmp_flood_at_a_wan_address_causes_no_transition(make_lab):
    lab = make_lab()
    d = start(lab, config_for(lab, targets="both"))
    try:
        before = len(d.log())
        for kind in ("echo-reply", "unreachable"):
            res = lab.flood("wlan1", pps=150_000, seconds=4, kind=kind).wait()
            assert res.router_pps > 20_000, res  # the flood really reached the router
        assert "->" not in d.log()[before:], d.log()[before:]
        st = d.status()
        assert all(w["state"] == "up" and w["active"] for w in st["wans"].values()), st
    finally:
        d.stop()


def test_the_default_quorum_takes_out_a_wan_whose_upstream_died(make_lab):
    lab = make_lab()
    config = config_for(lab)
    for w in lab.spec.wans:  # the gateway and one target beyond it; no quorum: majority
        config["wans"][w.name]["probe"] = {"targets": ["gateway", lab.upstream_address(w.name)]}
    d = start(lab, config)
    try:
        lab.fault("wlan2", "upstream")
        st = d.wait_states({"wlan2": "down"}, timeout=10)
        assert "silent: " + lab.upstream_address("wlan2") in st["wans"]["wlan2"]["reason"]
        assert st["wans"]["wlan1"]["state"] == "up"
        lab.heal("wlan2")
        d.wait_states({"wlan2": "up"}, timeout=15)
    finally:
        d.stop()
