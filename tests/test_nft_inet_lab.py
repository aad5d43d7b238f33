"""ecmpd's ``table inet`` on a real dataplane (root, bare namespaces of this test).

A client on a ULA/RFC 1918 LAN behind a router with two veth "WANs", each to an ISP
namespace that owns the same "internet" server addresses (both families) and has no
route back to the LAN: a reply arrives only if the router masqueraded (NAT44 / NAT66).
The table is loaded with ``nft -j`` (libnftables) from `nftrules.replace_commands`; the
router's ip rules are those ecmpd makes (``lookup main suppress_prefixlength 0``, then
fwmark → the WAN's table).  The witnesses are ping itself, the ``conntrack`` CLI and the
table's own named counters, polled with deadlines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable

import pytest

from ecmpd import nftrules
from ecmpd.configmodel import Config, Wan
from lab import netns
from lab.wait import until

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("conntrack") is None,
                                 reason="needs the conntrack CLI (Debian package conntrack)")]

SERVER4, SERVER6 = "203.0.113.1", "2001:db8:ffff::1"
CLIENT4, CLIENT6 = "192.168.50.2", "fd00:50::2"
MASK = 0xFF0000
# WAN id -> (router's IPv4, ISP's IPv4 = gateway, router's IPv6, ISP's IPv6 = gateway6)
WAN_ADDR = {1: ("10.201.0.2", "10.201.0.1", "2001:db8:201::2", "2001:db8:201::1"),
            2: ("10.202.0.2", "10.202.0.1", "2001:db8:202::2", "2001:db8:202::1")}


def config() -> Config:
    wans = tuple(Wan(f"w{i}", f"r-w{i}", IPv4Address(a[1]), 1, i,
                     gateway6=IPv6Address(a[3]), families=(4, 6))
                 for i, a in WAN_ADDR.items())
    return Config(lan_interfaces=("r-lan",), wans=wans)


class Net:
    """The four namespaces: client, router, isp1, isp2."""

    def __init__(self, make_netns: Callable[[str], str]) -> None:
        self.client, self.router = make_netns("i6c"), make_netns("i6r")
        self.isp = {i: make_netns(f"i6i{i}") for i in WAN_ADDR}
        self._veth(self.client, "c0", self.router, "r-lan")
        netns.ip_batch(self.client, [
            "link set c0 up", f"addr add {CLIENT4}/24 dev c0",
            f"addr add {CLIENT6}/64 dev c0 nodad",
            "route add default via 192.168.50.1", "route add default via fd00:50::1"])
        router = ["link set r-lan up", "addr add 192.168.50.1/24 dev r-lan",
                  "addr add fd00:50::1/64 dev r-lan nodad"]
        rules = ["rule add priority 1000 lookup main suppress_prefixlength 0"]
        for i, (r4, gw4, r6, gw6) in WAN_ADDR.items():
            isp = self.isp[i]
            self._veth(self.router, f"r-w{i}", isp, "i0")
            netns.ip_batch(isp, [
                "link set lo up", "link set i0 up", f"addr add {gw4}/24 dev i0",
                f"addr add {gw6}/64 dev i0 nodad",
                f"addr add {SERVER4}/32 dev lo", f"addr add {SERVER6}/128 dev lo"])
            router += [f"link set r-w{i} up", f"addr add {r4}/24 dev r-w{i}",
                       f"addr add {r6}/64 dev r-w{i} nodad",
                       f"route add default via {gw4} table {100 + i}",
                       f"route add default via {gw6} table {100 + i}"]
            rules.append(f"rule add priority 1001 fwmark {i << 16:#x}/{MASK:#x} "
                         f"lookup {100 + i}")
        netns.ip_batch(self.router, router + rules)
        netns.run(["ip", "-n", self.router, "-6", "-batch", "-"], input="\n".join(rules) + "\n")
        netns.sysctl(self.router, {"net.ipv4.ip_forward": 1,
                                   "net.ipv6.conf.all.forwarding": 1,
                                   "net.netfilter.nf_conntrack_icmp_timeout": 600,
                                   "net.netfilter.nf_conntrack_icmpv6_timeout": 600})
        self.default_via(1)

    @staticmethod
    def _veth(ns_a: str, a: str, ns_b: str, b: str) -> None:
        netns.run(["ip", "link", "add", a, "netns", ns_a, "type", "veth",
                   "peer", "name", b, "netns", ns_b])

    def default_via(self, wan: int) -> None:
        """Main's default routes (what picks the WAN of a new connection) via `wan`."""
        _, gw4, _, gw6 = WAN_ADDR[wan]
        netns.ip_batch(self.router, [f"route replace default via {gw4}",
                                     f"route replace default via {gw6}"])

    def nft_json(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = netns.run_in(self.router, "nft", "-j", "-f", "-", input=json.dumps(doc)).stdout
        return json.loads(out) if out.strip() else {}

    def counters(self) -> dict[tuple[int, int], int]:
        return nftrules.parse_counters(self.nft_json(nftrules.counters_command("ecmpd")),
                                       "ecmpd")

    def conntrack(self, family: str, proto: str) -> list[dict[str, str]]:
        """The router's entries: {src, dst, reply_dst, id, mark} each."""
        out = netns.run_in(self.router, "conntrack", "-L", "-f", family, "-p", proto).stdout
        found = []
        for line in out.splitlines():
            src, dst = re.findall(r"src=(\S+)", line), re.findall(r"dst=(\S+)", line)
            ident, mark = re.search(r"id=(\d+)", line), re.search(r"mark=(\d+)", line)
            assert len(src) == 2 and len(dst) == 2 and ident, f"unexpected line: {line}"
            found.append({"src": src[0], "dst": dst[0], "reply_dst": dst[1],
                          "id": ident.group(1), "mark": mark.group(1) if mark else "0"})
        return found


def ping(ns: str, dst: str, count: int = 3, src: str | None = None) -> None:
    netns.run_in(ns, "ping", "-c", str(count), "-i", "0.05", "-W", "5",
                 *(("-I", src) if src else ()), dst)


def test_nat_pinning_and_counters_of_both_families(make_netns: Callable[[str], str]) -> None:
    net = Net(make_netns)
    # without ecmpd's table the ISPs cannot answer the LAN (no route back: no NAT)
    assert netns.run_in(net.client, "ping", "-c", "1", "-W", "1", SERVER6,
                        check=False).returncode != 0
    net.nft_json(nftrules.replace_commands(config()))
    assert net.counters() == {(f, w): 0 for w in WAN_ADDR for f in (4, 6)}

    # NAT44 and NAT66 out of WAN 1; the answers count as evidence, by family
    ping(net.client, SERVER4, 3)
    ping(net.client, SERVER6, 4)
    assert net.counters() == {(4, 1): 3, (6, 1): 4, (4, 2): 0, (6, 2): 0}
    (e4,) = net.conntrack("ipv4", "icmp")
    assert (e4["src"], e4["reply_dst"], e4["mark"]) == (CLIENT4, WAN_ADDR[1][0], str(0x10000))
    (e6,) = net.conntrack("ipv6", "icmpv6")
    assert (e6["src"], e6["reply_dst"], e6["mark"]) == (CLIENT6, WAN_ADDR[1][2], str(0x10000))

    # the gateways' own answers (and the neighbour discovery they need) are not evidence
    for i, (_, gw4, _, gw6) in WAN_ADDR.items():
        ping(net.router, gw4, 2)
        ping(net.router, gw6, 2)
    assert net.counters() == {(4, 1): 3, (6, 1): 4, (4, 2): 0, (6, 2): 0}

    # an IPv6 connection stays pinned to WAN 1 after the route moves new ones to WAN 2
    held = subprocess.Popen(netns.exec_argv(net.client, "ping", "-i", "0.05", "-W", "5",
                                            SERVER6),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def held_entry() -> dict[str, str] | None:
            return next((e for e in net.conntrack("ipv6", "icmpv6")
                         if e["id"] != e6["id"] and e["src"] == CLIENT6), None)

        pinned = until(held_entry, 10, "the held IPv6 flow in conntrack")
        assert (pinned["reply_dst"], pinned["mark"]) == (WAN_ADDR[1][2], str(0x10000))
        net.default_via(2)
        start = net.counters()[(6, 1)]
        until(lambda: net.counters()[(6, 1)] >= start + 10, 10,
              lambda _: f"the pinned flow's replies stopped coming by WAN 1: {net.counters()}")
        # a new connection of each family leaves by WAN 2, NATed to its address
        ping(net.client, SERVER6, 3)
        ping(net.client, SERVER4, 2)
        assert net.counters()[(6, 2)] == 3 and net.counters()[(4, 2)] == 2
        new6 = [e for e in net.conntrack("ipv6", "icmpv6")
                if e["src"] == CLIENT6 and e["id"] not in (e6["id"], pinned["id"])]
        assert [(e["reply_dst"], e["mark"]) for e in new6] == [(WAN_ADDR[2][2], str(0x20000))]
        assert [(e["reply_dst"], e["mark"]) for e in net.conntrack("ipv4", "icmp")
                if e["src"] == CLIENT4 and e["id"] != e4["id"]] == \
            [(WAN_ADDR[2][0], str(0x20000))]
        # the held flow is still on WAN 1, its entry unchanged, still answered there
        again = [e for e in net.conntrack("ipv6", "icmpv6") if e["id"] == pinned["id"]]
        assert len(again) == 1
        (again,) = again
        assert again["src"] == CLIENT6 and (again["reply_dst"], again["mark"]) == \
            (WAN_ADDR[1][2], str(0x10000))
        start = net.counters()[(6, 1)]
        until(lambda: net.counters()[(6, 1)] >= start + 5, 10, "more pinned replies by WAN 1")
        assert held.poll() is None
    finally:
        held.kill()
        held.wait(10)
    assert net.counters()[(4, 1)] == 3          # IPv4 on WAN 1 saw nothing new
