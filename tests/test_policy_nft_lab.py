"""Policies in ecmpd's ``table inet`` on a real dataplane (root, bare namespaces of this
test): libnftables takes the table whole, and the first packet of a matching new
connection gets its policy's mark.

A client behind a router with two veth "WANs" to two ISP namespaces.  The router's main
table sends everything via ISP 2; an ip rule on each policy's mark (what the routing side
of ecmpd installs) sends marked packets to WAN 1's table, via ISP 1, and ecmpd's WAN
marks to their WANs' tables as ecmpd does.  The witnesses are each policy's named
counter and a counter of UDP arrivals in each ISP: a policy hit leaves by ISP 1, a miss
by ISP 2; a connection's later packets follow its pin and are not counted again.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from typing import Any, Callable

import pytest

from ecmpd import nftrules, policyrules
from ecmpd.configmodel import Config, Policy
from lab import netns
from lab.driver import tool_env
from lab.wait import expect
from tests import test_nft_inet_lab as inet
from tests.test_nft_inet_lab import CLIENT4, MASK
from tests.test_policyrules import fwcost_like

pytestmark = pytest.mark.lab

UDP, TCP = 17, 6
METERED4 = "192.168.50.3"
ROUTES = (10, 11, 12, 13)
"""The policies' route values; each one's mark leads to WAN 1's table."""


def examples(first: int) -> tuple[Policy, ...]:
    """The issue's examples (and an interface), at positions `first`...: VoIP to a
    provider's prefix via one WAN; one host only via the metered WAN; a destination that
    must never use WAN 2 (both families)."""
    return (
        Policy(first, ("w1",), 10, name="voip", dst=("198.51.100.0/24",), proto=(UDP,),
               dport=((5060, 5060), (10000, 20000))),
        Policy(first + 1, ("w1",), 11, name="metered host", src=(f"{METERED4}/32",)),
        Policy(first + 2, ("w1",), 12, name="never w2",
               dst=("203.0.113.0/24", "2001:db8:ffff::/48")),
        Policy(first + 3, ("w1",), 13, iif=("r-lan",), proto=(UDP,), dport=((7000, 7000),)),
    )


def generated(count: int, seed: int = 19) -> tuple[Policy, ...]:
    """`count` policies of mixed shapes and both families, shuffled (the worst order
    for grouping), none of them matching this test's traffic."""
    rnd = random.Random(seed)
    r = rnd.randrange

    def fields(kind: int) -> dict[str, Any]:
        return [
            lambda: {"dst": (f"10.{r(256)}.{r(256)}.0/24",)},
            lambda: {"dst": (f"2001:db8:{r(0x1000, 0xe000):x}::/48",)},
            lambda: {"src": (f"192.168.{r(100, 200)}.{r(256)}/32",)},
            lambda: {"src": (f"fd00::{r(65536):x}/128",), "proto": (TCP,),
                     "dport": ((443, 443),)},
            lambda: {"proto": (UDP,), "dport": ((p := r(30000, 60000), p + r(10)),)},
            lambda: {"dst": (f"172.16.{r(256)}.0/24", f"2001:db8:1:{r(65536):x}::/64"),
                     "proto": (TCP, UDP), "dport": ((p := r(1, 65536), p),)},
            lambda: {"iif": (f"lan{r(50)}",), "src": (f"10.{r(100, 200)}.0.0/16",)},
            lambda: {"dst": (f"198.18.{r(256)}.{r(256)}/32",), "sport": ((p := r(1, 65536), p),)},
        ][kind]()

    return tuple(Policy(i, ("w1",), ROUTES[i % len(ROUTES)], **fields(r(8)))
                 for i in range(1, count + 1))


def config(policies: tuple[Policy, ...]) -> Config:
    return replace(inet.config(), policies=policies)


ISP_NFT = """table inet isp {
  counter arrived {}
  chain arrivals {
    type filter hook prerouting priority 0;
    iifname "i0" meta l4proto udp counter name "arrived";
  }
}"""


class Net(inet.Net):
    """The namespaces of `tests.test_nft_inet_lab` (client, router, isp1, isp2), new
    connections via ISP 2 by main's default routes, each policy mark to WAN 1's table,
    UDP arrivals counted in each ISP, a second client address."""

    def __init__(self, make_netns: Callable[[str], str]) -> None:
        super().__init__(make_netns)
        netns.ip(self.client, "addr", "add", f"{METERED4}/24", "dev", "c0")
        for isp in self.isp.values():
            netns.nft(isp, ISP_NFT)
        rules = [f"rule add priority 1100 fwmark {route << 16:#x}/{MASK:#x} lookup 101"
                 for route in ROUTES]
        for version in ("-4", "-6"):
            netns.run(["ip", "-n", self.router, version, "-batch", "-"],
                      input="\n".join(rules) + "\n")
        self.default_via(2)

    def counts(self, positions: tuple[int, ...]) -> dict[str, int]:
        """UDP arrivals at each ISP, and the counters of the policies at `positions`."""
        out = {}
        for i, isp in self.isp.items():
            listing = json.loads(netns.run_in(isp, "nft", "-j", "list", "counters").stdout)
            (c,) = [o["counter"] for o in listing["nftables"] if "counter" in o]
            out[f"isp{i}"] = c["packets"]
        mine = nftrules.parse_counters(self.nft_json(nftrules.counters_command("ecmpd")),
                                       "ecmpd")
        out.update({f"pol_{p}": mine[("policy", p)] for p in positions})
        out["other policies"] = sum(n for (kind, p), n in mine.items()
                                    if kind == "policy" and p not in positions)
        return out

    def send(self, dst: str, dport: int, *, src: str = "", sport: int = 0,
             count: int = 1) -> None:
        """`count` UDP datagrams of one connection from the client."""
        family = "AF_INET6" if ":" in dst else "AF_INET"
        code = (f"import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); "
                f"s.bind(({src!r}, {sport})); "
                f"[s.sendto(b'x', ({dst!r}, {dport})) for _ in range({count})]")
        netns.run_in(self.client, sys.executable, "-c", code)


def check_traffic(net: Net, first: int) -> None:
    """Send each case and expect where it leaves and which policy counted it."""
    voip, metered, never, by_iif = range(first, first + 4)
    positions = (voip, metered, never, by_iif)
    want = {"isp1": 0, "isp2": 0, **{f"pol_{p}": 0 for p in positions}, "other policies": 0}
    expect(lambda: net.counts(positions), want, 5, "nothing counted yet")
    cases = [
        (dict(dst="198.51.100.7", dport=5060), "isp1", voip),
        (dict(dst="198.51.100.7", dport=15000), "isp1", voip),
        (dict(dst="198.51.100.7", dport=9999), "isp2", None),       # port outside
        (dict(dst="192.0.2.1", dport=5060), "isp2", None),          # prefix outside
        (dict(dst="192.0.2.1", dport=80, src=METERED4), "isp1", metered),
        (dict(dst="192.0.2.1", dport=80, src=CLIENT4), "isp2", None),
        (dict(dst="203.0.113.5", dport=80), "isp1", never),
        (dict(dst="2001:db8:ffff::5", dport=80), "isp1", never),
        (dict(dst="2001:db8:eeee::5", dport=80), "isp2", None),
        (dict(dst="192.0.2.9", dport=7000), "isp1", by_iif),
        # one connection, three packets: the first is steered and counted, the others
        # follow the connection's pin to WAN 1
        (dict(dst="198.51.100.8", dport=5060, sport=40000, count=3), "isp1", voip),
    ]
    for kw, isp, policy in cases:
        net.send(**kw)                                      # type: ignore[arg-type]
        want[isp] += kw.get("count", 1)                     # type: ignore[operator]
        if policy is not None:
            want[f"pol_{policy}"] += 1
        expect(lambda: net.counts(positions), want, 5, f"after {kw}")


def test_the_issues_examples_mark_only_what_they_match(make_netns) -> None:
    net = Net(make_netns)
    net.nft_json(nftrules.replace_commands(config(examples(1))))
    check_traffic(net, 1)
    text = netns.run_in(net.router, "nft", "list", "chain", "inet", "ecmpd", "policies").stdout
    assert "ip daddr . meta l4proto . th dport vmap @polmap_1" in text
    voip = netns.run_in(net.router, "nft", "list", "map", "inet", "ecmpd", "polmap_1").stdout
    assert "198.51.100.0/24 . udp . 10000-20000 : goto pol_1" in voip
    # the listing, fed back as text, is the same table (names that parse, dry-run output)
    listed = netns.run_in(net.router, "nft", "list", "table", "inet", "ecmpd").stdout
    netns.run_in(net.router, "nft", "delete", "table", "inet", "ecmpd")
    netns.nft(net.router, listed)


def check_loaded(net: Net, cfg: Config) -> None:
    """The kernel holds the maps and rules ecmpd rendered, element for element."""
    listing = net.nft_json({"nftables": [{"list": {"table": {"family": "inet",
                                                             "name": "ecmpd"}}}]})
    maps = {o["map"]["name"]: len(o["map"].get("elem", []))
            for o in listing["nftables"] if "map" in o}
    lay = policyrules.layout(cfg.policies)
    assert maps == {m.name: len(m.elements) for m in lay.maps}
    rules = [o["rule"] for o in listing["nftables"] if "rule" in o]
    for chain, items in lay.chains.items():
        assert sum(r["chain"] == chain for r in rules) == len(items), chain
    assert sum(r["chain"].startswith("pol_") for r in rules) == len(cfg.policies)
    assert nftrules.listing_digest(listing) == nftrules.digest(cfg)


def test_a_thousand_interleaved_policies_of_one_wan_set_take_a_lookup_per_shape(
        make_netns) -> None:
    """Figure 13's interleaved shapes (one policy each, six shapes rotating) on one WAN
    set, then the issue's examples: a lookup per shape, not per shape change."""
    net = Net(make_netns)
    interleaved = tuple(replace(p, use=("w1",), route=ROUTES[0])
                        for p in fwcost_like(1000)[:-1])
    cfg = config(interleaved + examples(1000))
    net.nft_json(nftrules.replace_commands(cfg))
    check_loaded(net, cfg)
    assert len(policyrules.layout(cfg.policies).chains["policies"]) <= 12
    check_traffic(net, 1000)


def test_a_thousand_mixed_policies_load_and_match_behind_their_groups(make_netns) -> None:
    net = Net(make_netns)
    policies = generated(1000) + examples(1001)
    cfg = config(policies)
    net.nft_json(nftrules.replace_commands(cfg))
    check_loaded(net, cfg)
    check_traffic(net, 1001)
    # ecmpd's own reads: the counters straight from netlink, the same as nft lists them,
    # and a check of an unchanged table that does not list it
    seen = firewall_reads(net.router)
    listed = nftrules.parse_counters(net.nft_json(nftrules.counters_command("ecmpd")), "ecmpd")
    assert seen["all"] == {str(k): n for k, n in listed.items()}
    assert len(seen["all"]) == 4 + len(policies)
    assert seen["wans"] == {str(k): n for k, n in listed.items() if k[0] != "policy"}
    assert seen["adopted"] is False and seen["ensured"] == [False] * 3
    assert max(seen["ensure_s"]) < 0.05, seen["ensure_s"]  # a listing takes ~0.3 s here


FIREWALL = """
import json, time
from ecmpd.firewall import Firewall
from tests.test_policy_nft_lab import config, examples, generated
fw = Firewall(config(generated(1000) + examples(1001)))
out = {"adopted": fw.ensure(), "ensured": [], "ensure_s": []}
for _ in range(3):
    t = time.perf_counter()
    out["ensured"].append(fw.ensure())
    out["ensure_s"].append(time.perf_counter() - t)
out["all"] = {str(k): n for k, n in fw.read_counters().items()}
out["wans"] = {str(k): n for k, n in fw.read_counters(policies=False).items()}
print(json.dumps(out))
"""


def firewall_reads(ns: str) -> dict[str, Any]:
    """What ecmpd's `Firewall` (run in `ns`) finds: it adopts the table, then checks it
    three times; its counters with and without the policies'."""
    out = subprocess.run(netns.exec_argv(ns, sys.executable, "-c", FIREWALL),
                         capture_output=True, text=True, timeout=120, env=tool_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
