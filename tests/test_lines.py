"""Real lines in the lab (`lab.lines`, `.load`, `.flood`): tc rendering and output
parsing (pure), then shaping, the iperf3 load and the ICMP flood on real traffic (root)."""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Callable

import pytest

from lab import Lab, Line, LoadError
from lab import flood as fl
from lab import lines as ln
from lab import load as ld
from lab.wait import until

MakeLab = Callable[..., Lab]
LAB = pytest.mark.lab

# ------------------------------------------------------------------ pure: tc


def test_line_validates() -> None:
    assert Line(20, 5) == Line(20, 5, 1.0, 0, 0)
    for bad in (dict(down_mbit=0, up_mbit=1), dict(down_mbit=1, up_mbit=1, buffer_s=0),
                dict(down_mbit=1, up_mbit=1, delay_ms=-1)):
        with pytest.raises(ValueError):
            Line(**bad)


def test_burst_is_4ms_of_line_but_at_least_two_frames() -> None:
    assert ln.burst_bytes(1) == 2 * 1514          # 500 B of line would drop every full frame
    assert ln.burst_bytes(20) == 10000
    assert ln.burst_bytes(1000) == 500000


def test_tbf_rendering() -> None:
    assert ln.tbf_argv("cust", 20, 1.0) == [
        "tc", "qdisc", "replace", "dev", "cust", "root", "handle", "1:", "tbf",
        "rate", "20000kbit", "burst", "10000", "latency", "1000ms"]
    assert ln.tbf_argv("wlan1", 0.5, 0.25)[-6:] == ["rate", "500kbit", "burst", "3028",
                                                    "latency", "250ms"]
    assert ln.unshape_argv("wlan1") == ["tc", "qdisc", "del", "dev", "wlan1", "root"]


def test_netem_goes_above_the_tbf_only_when_present_and_asked() -> None:
    line = Line(8, 2, buffer_s=0.5, delay_ms=20, jitter_ms=5)
    netem, tbf = ln.shape_argvs("cust", 8, line, netem=True)
    assert netem == ["tc", "qdisc", "replace", "dev", "cust", "root", "handle", "1:", "netem",
                     "limit", "100000", "delay", "20ms", "5ms"]
    assert tbf[5:9] == ["parent", "1:1", "handle", "10:"] and tbf[-1] == "500ms"
    assert ln.shape_argvs("cust", 8, line, netem=False) == [ln.tbf_argv("cust", 8, 0.5)]
    assert ln.shape_argvs("cust", 8, Line(8, 2), netem=True) == [ln.tbf_argv("cust", 8, 1.0)]
    assert ln.netem_argv("lo", 1)[-2:] == ["delay", "1ms"]


def test_parse_qdiscs() -> None:
    text = ('[{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{"rate":2500000,'
            '"burst":10000,"lat":1000000},"bytes":4381373,"packets":2900,"drops":481,'
            '"overlimits":0,"requeues":0,"backlog":996212,"qlen":660}]')
    assert ln.parse_qdiscs(text) == [ln.Qdisc("tbf", True, 20.0, 10000, 1.0, 4381373, 481, 996212)]
    assert ln.parse_qdiscs('[{"kind":"noqueue","handle":"0:","root":true,"options":{}}]') == [
        ln.Qdisc("noqueue", True)]
    assert ln.parse_qdiscs("") == []


# ------------------------------------------------------------------ pure: other output


def test_parse_ss_established_and_listening() -> None:
    est = ("0      0      [::ffff:203.0.113.10]:5202 [::ffff:10.111.0.2]:40000\n"
           "ESTAB 0 0 192.168.0.2:25000 203.0.113.10:5201\n"
           "SYN-SENT 0 1 192.168.0.2:51234 203.0.113.10:5203 users:((\"iperf3\",pid=9,fd=5))\n")
    assert ld.parse_ss(est) == [("203.0.113.10", 5202, "10.111.0.2", 40000),
                                ("192.168.0.2", 25000, "203.0.113.10", 5201),
                                ("192.168.0.2", 51234, "203.0.113.10", 5203)]
    lst = ("LISTEN 0 4096 *:5201 *:*\nLISTEN 0 4096 0.0.0.0:5000 0.0.0.0:*\n"
           "LISTEN 0 5 [::]:5202 [::]:*\n")
    assert ld.parse_listening(lst) == {5000, 5201, 5202}


def _report(intervals: list[int], received: int | None, error: str | None = None) -> str:
    data: dict = {"intervals": [{"sum": {"bytes": b, "seconds": 1.0}} for b in intervals]}
    if received is not None:
        data["end"] = {"sum_received": {"bytes": received, "seconds": 2.5}}
    if error:
        data["error"] = error
    return json.dumps(data)


def test_parse_iperf3_reports() -> None:
    assert ld.parse_iperf3(_report([100, 200], 290)) == (290, 2.5, None)       # completed
    assert ld.parse_iperf3(_report([100, 200], 0, "interrupt - the client has terminated")) \
        == (300, 2.0, "interrupt - the client has terminated")                 # no server count
    assert ld.parse_iperf3(_report([100], None, "error - Connection reset by peer")) \
        == (100, 1.0, "error - Connection reset by peer")
    assert ld.parse_iperf3("iperf3: error") == (0, 0.0, "no JSON report")
    r = ld.StreamResult("download", "wlan1", "wlan1", 5201, 25000, 1_000_000, 2.0, False)
    assert r.mbit == 4.0 and ld.StreamResult("upload", None, None, 1, 1, 0, 0, True).mbit == 0


def test_iperf3_client_argv_ipv4_unchanged_ipv6_adds_6_and_the_source() -> None:
    v4 = ld.client_argv("203.0.113.10", 5201, 25000, 10, "download", "reno", 10, 10.0)
    assert v4 == ["iperf3", "-c", "203.0.113.10", "-p", "5201", "--cport", "25000", "-t", "10",
                  "-J", "--connect-timeout", "10000", "-C", "reno", "-R", "--rcv-timeout",
                  "10000"]
    v6 = ld.client_argv("2001:db8:feed::10", 5202, 25001, 5, "upload", None, 2.5, 10.0, 6,
                        "fd00::2")
    assert v6 == ["iperf3", "-c", "2001:db8:feed::10", "-p", "5202", "--cport", "25001", "-t",
                  "5", "-J", "--connect-timeout", "10000", "-6", "-B", "fd00::2",
                  "--snd-timeout", "2500"]


def test_route_get_script_and_the_ends_of_each_version() -> None:
    assert ld.route_get_script("2001:db8:feed::10", "fd00::2", "Local", [(1, 5201), (2, 5202)]) \
        == ("route get 2001:db8:feed::10 from fd00::2 iif Local ipproto tcp sport 1 dport 5201\n"
            "route get 2001:db8:feed::10 from fd00::2 iif Local ipproto tcp sport 2 dport 5202\n")

    class FakeLab:
        def __init__(self, spec) -> None:
            self.spec = spec
            self.clients = [spec.client_address.split("/")[0]]

    from lab.topology import seed_spec
    lab = FakeLab(seed_spec())
    assert ld.family_ends(lab, 4) == ("203.0.113.10", "192.168.0.2")
    assert ld.family_ends(lab, 6) == ("2001:db8:feed::10", "fd00::2")
    with pytest.raises(ValueError):
        ld.family_ends(lab, 5)
    from dataclasses import replace
    with pytest.raises(LoadError):
        ld.family_ends(FakeLab(replace(seed_spec(), lan_address6=None)), 6)


def test_parse_ping() -> None:
    text = ("64 bytes from 10.111.0.1: icmp_seq=1 ttl=64 time=0.052 ms\n"
            "64 bytes from 10.111.0.1: icmp_seq=3 ttl=64 time=1003 ms\n")
    assert ln.parse_ping(text) == [0.052, 1003.0]


# ------------------------------------------------------------------ pure: flood packets


def test_flood_packets_are_valid_icmp() -> None:
    reply = fl.echo_reply(0x1234, 7)
    assert fl.checksum(reply) == 0 and reply[:2] == b"\0\0"
    assert struct.unpack("!HH", reply[4:8]) == (0x1234, 7) and len(reply) == 64
    unr = fl.unreachable("10.111.0.2", "198.51.100.9", 0x4321, 9)
    assert fl.checksum(unr) == 0 and unr[:2] == b"\x03\x01"
    quoted = unr[8:]
    assert len(quoted) == 28 and fl.checksum(quoted[:20]) == 0       # IP header + 8 bytes
    assert quoted[12:20] == socket.inet_aton("10.111.0.2") + socket.inet_aton("198.51.100.9")
    assert quoted[20] == 8 and struct.unpack("!HH", quoted[24:28]) == (0x4321, 9)
    ring = fl.packets("echo-reply", "10.111.0.2", 5)
    assert len(ring) == fl.RING and len(set(ring)) == fl.RING
    with pytest.raises(ValueError):
        fl.packets("smurf", "10.111.0.2", 5)
    assert fl.random_ident(avoid=range(0x10000 - 1)) == 0xFFFF


def test_parse_snmp() -> None:
    text = ("Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 2371584\n"
            "Icmp: InMsgs InErrors\nIcmp: 750150 0\n")
    assert fl.parse_snmp(text) == {"IpForwarding": 1, "IpDefaultTTL": 64,
                                   "IpInReceives": 2371584, "IcmpInMsgs": 750150,
                                   "IcmpInErrors": 0}


# ------------------------------------------------------------------ lab


def _route(lab: Lab, wans: list[str] | None = None) -> None:
    """What ecmpd would do, bare: an l4-hash multipath default route and masquerade."""
    wans = wans or [w.name for w in lab.spec.wans]
    hops = [a for w in wans for a in ("nexthop", "via", lab.spec.wan(w).gateway, "dev", w)]
    lab.run("rtr", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1")
    lab.run("rtr", "ip", "route", "replace", "default", *hops)
    masq = "".join(f'    oifname "{w}" masquerade\n' for w in wans)
    lab.nft("rtr", "add table ip labnat\ndelete table ip labnat\ntable ip labnat {\n"
                   "  chain post {\n    type nat hook postrouting priority 100; policy accept;\n"
                   f"{masq}  }}\n}}\n")


def _rx_bytes(lab: Lab, wan: str) -> int:
    link = json.loads(lab.run("rtr", "ip", "-j", "-s", "link", "show", "dev", wan).stdout)
    return link[0]["stats64"]["rx"]["bytes"]


def _poll(what: str, fn: Callable[[], object], timeout: float, every: float = 0.1) -> object:
    return until(fn, timeout, what, every)


@LAB
def test_shaped_lines_give_their_rate_and_bufferbloat_and_unshape_restores(
        make_lab: MakeLab) -> None:
    lab = make_lab()
    _route(lab)
    lab.shape("wlan1", Line(down_mbit=8, up_mbit=2, buffer_s=1.0))
    lab.shape("wlan2", Line(down_mbit=16, up_mbit=4, buffer_s=1.0))
    lab.shape("wlan2", Line(down_mbit=16, up_mbit=4, buffer_s=1.0))  # idempotent
    q = ln.qdiscs(lab, "wlan1")
    assert (q["down"][0].kind, q["down"][0].rate_mbit, q["up"][0].rate_mbit) == ("tbf", 8, 2)
    gw1, gw2 = (lab.spec.wan(w).gateway for w in ("wlan1", "wlan2"))
    idle = ln.ping_rtts(lab, "rtr", gw1, 5, 0.05) + ln.ping_rtts(lab, "rtr", gw2, 5, 0.05)
    assert len(idle) == 10 and max(idle) < 50
    # Download fills wlan1, upload fills wlan2, at the same time; RTT under load.
    down = lab.load(["wlan1"], upload=False, seconds=7)
    up = lab.load(["wlan2"], download=False, seconds=7)
    for gw in (gw1, gw2):
        _poll(f"RTT via {gw} >= 0.5 s",
              lambda: max(ln.ping_rtts(lab, "rtr", gw, 2, 0.2) or [0]) >= 500, 5, every=0)
    (d,), (u,) = down.wait(), up.wait()
    assert (d.wan, d.control_wan, u.wan, u.control_wan) == ("wlan1",) * 2 + ("wlan2",) * 2
    assert not d.broken and not u.broken
    assert 0.8 * 8 <= d.mbit <= 1.2 * 8, d
    assert 0.8 * 4 <= u.mbit <= 1.2 * 4, u
    _poll("idle RTT again", lambda: max(ln.ping_rtts(lab, "rtr", gw1, 3, 0.05) or [1e9]) < 50, 3)
    lab.unshape("wlan1")
    lab.unshape("wlan1")  # idempotent
    assert [q.kind for q in sum(ln.qdiscs(lab, "wlan1").values(), [])] == ["noqueue", "noqueue"]
    (free,) = lab.load(["wlan1"], upload=False, seconds=1).wait()
    assert free.wan == "wlan1" and free.mbit > 3 * 8


@LAB
def test_load_lands_on_the_chosen_wan_or_says_why_not(make_lab: MakeLab) -> None:
    lab = make_lab()
    with pytest.raises(LoadError, match="does not route the LAN"):
        lab.load(seconds=1)
    _route(lab, ["wlan1"])
    with pytest.raises(LoadError, match=r"\['wlan2'\] are not nexthops"):
        lab.load(["wlan2"], seconds=1)
    _route(lab)
    load = lab.load(streams_per_wan=2, seconds=2)
    assert load.wans == ["wlan1"] * 2 + ["wlan2"] * 2 + ["wlan1"] * 2 + ["wlan2"] * 2
    results = load.wait()
    assert [r.direction for r in results] == ["download"] * 4 + ["upload"] * 4
    for r in results:
        assert r.wan == r.control_wan and not r.broken and r.bytes > 0, r
    assert len({r.port for r in results}) == 8
    # With the client's socket hash cleared, the router's `ip route get` predicts each flow.
    assert ld.CLEAR_HASH in lab.run("lan", "tc", "filter", "show", "dev", "eth0", "egress").stdout
    assert load.route_get([(r.cport, r.port) for r in results]) == [r.wan for r in results]
    # Unpinned: the streams go where the router hashes them, and say where.
    for r in lab.load(upload=False, pin=False, seconds=1).wait():
        assert r.wan in ("wlan1", "wlan2") and not r.broken


@LAB
def test_faults_on_a_saturated_line_and_the_queue_they_leave(make_lab: MakeLab) -> None:
    lab = make_lab()
    _route(lab)
    rate = 8
    lab.shape("wlan1", Line(down_mbit=rate, up_mbit=2, buffer_s=1.0))
    load = lab.load(["wlan1"], upload=False, seconds=20)
    full = rate * 1e6 / 8 * 0.5  # half the buffer, in bytes
    _poll("tbf backlog", lambda: ln.qdiscs(lab, "wlan1")["down"][0].backlog >= full, 6)
    # dead: the nft drop runs before the qdisc, so what is queued still drains to the router.
    backlog = ln.qdiscs(lab, "wlan1")["down"][0].backlog
    before = _rx_bytes(lab, "wlan1")
    lab.fault("wlan1", "dead")
    _poll("queue drained", lambda: ln.qdiscs(lab, "wlan1")["down"][0].backlog == 0, 3)
    drained = _rx_bytes(lab, "wlan1") - before
    assert drained >= 0.8 * backlog, (drained, backlog)
    time.sleep(0.3)
    assert _rx_bytes(lab, "wlan1") - before == drained  # nothing new gets through
    lab.heal("wlan1")
    _poll("backlog again", lambda: ln.qdiscs(lab, "wlan1")["down"][0].backlog >= full, 8)
    # carrier: link down purges the queue; the tbf itself survives down/up.
    before = _rx_bytes(lab, "wlan1")
    lab.fault("wlan1", "carrier")
    time.sleep(0.3)
    assert _rx_bytes(lab, "wlan1") - before < 10_000
    lab.heal("wlan1")
    assert [q[0].kind for q in ln.qdiscs(lab, "wlan1").values()] == ["tbf", "tbf"]
    # loss and upstream still apply on the shaped (and loaded) line.
    lab.set_loss("wlan1", 100)
    assert ln.ping_rtts(lab, "rtr", lab.spec.wan("wlan1").gateway, 3, 0.1) == []
    lab.set_loss("wlan1", 0)
    def upstream_answers() -> bool:
        return lab.run("rtr", "ping", "-c", "2", "-i", "0.1", "-W", "2", "-I", "wlan1",
                       lab.upstream_address("wlan1"), check=False).returncode == 0
    lab.fault("wlan1", "upstream")
    assert not upstream_answers()
    lab.heal("wlan1")
    assert upstream_answers()
    results = load.stop()
    assert all(r.wan == "wlan1" and r.bytes > 0 for r in results), results


@LAB
def test_flood_reaches_the_router_at_the_measured_rate(make_lab: MakeLab) -> None:
    lab = make_lab()
    _route(lab)
    r = lab.flood("wlan1", pps=150_000, seconds=2).wait()
    assert r.kind == "echo-reply" and r.errors == 0
    assert r.pps >= 0.5 * 150_000 and r.pps <= 1.05 * 150_000, r  # 1 process: ~750k max here
    assert r.router_icmp >= 0.95 * r.sent and r.router_pps >= 0.8 * r.pps, r
    u = lab.flood("wlan2", pps=20_000, seconds=1, kind="unreachable", ident=4242).wait()
    assert (u.kind, u.ident) == ("unreachable", 4242) and u.router_icmp >= 0.9 * u.sent
    # A shaped line lets through only its rate: 98-byte frames at 20 Mbit/s = 25.5k pps.
    lab.shape("wlan1", Line(down_mbit=20, up_mbit=5))
    s = lab.flood("wlan1", pps=100_000, seconds=3)
    time.sleep(0.5)
    rate = s.router_rate(1.0)
    res = s.wait()
    assert 0.8 * 25_510 <= rate <= 1.2 * 25_510, rate
    assert res.router_pps <= 1.2 * 25_510, res
    if res.pps > 1.2 * 25_510:       # the sender outran the line (a busy machine may not)
        assert res.router_rx < res.sent, res  # tbf drops the rest
