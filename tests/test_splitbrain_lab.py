"""Split-brain detection against real kernels: two routers' namespaces on one bridge both
holding the same IPv4 and IPv6 address (two masters) are seen by the checks
(`python3 -m ecmpd.splitbrain` in one of them: ARP probe, DAD neighbour solicitation);
the address removed from the other, the checks find nobody again.  An address only
this router holds, and one nobody holds, are never a sighting."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lab import netns
from lab.wait import until

pytestmark = pytest.mark.lab

VIP4, VIP6, ALONE, NOBODY = "192.168.88.1", "fd00:88::1", "192.168.88.2", "192.168.88.9"


def segment(make_netns) -> tuple[str, str, str]:
    """Namespaces a and b (lan0 each) on a bridge in a third; their MACs."""
    a, b, sw = make_netns("sba"), make_netns("sbb"), make_netns("sbs")
    netns.ip(sw, "link", "add", "br0", "type", "bridge")
    netns.ip(sw, "link", "set", "br0", "up")
    for ns, port in ((a, "pa"), (b, "pb")):
        netns.ip(sw, "link", "add", port, "type", "veth", "peer", "name", "lan0", "netns", ns)
        netns.ip(sw, "link", "set", port, "master", "br0", "up")
        netns.ip(ns, "link", "set", "lan0", "up")
        # both hold the VIPs, as two keepalived masters would (keepalived adds IPv6
        # VIPs without DAD)
        netns.ip(ns, "addr", "add", f"{VIP4}/24", "dev", "lan0")
        netns.ip(ns, "addr", "add", f"{VIP6}/64", "dev", "lan0", "nodad")
    netns.ip(a, "addr", "add", f"{ALONE}/24", "dev", "lan0")
    mac = json.loads(netns.ip(b, "-j", "link", "show", "lan0").stdout)[0]["address"]
    return a, b, mac


def test_two_holders_of_a_floating_address_are_seen_and_the_end_of_it_too(make_netns):
    a, b, mac_b = segment(make_netns)
    began = time.monotonic()
    proc = subprocess.Popen(netns.exec_argv(a, sys.executable, "-m", "ecmpd.splitbrain",
                                            "--interval", "0.2",
                                            f"lan0={VIP4},{VIP6},{ALONE},{NOBODY}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checks: list[list[list[str]]] = []

    def read_until(want: list[list[str]], what: str) -> None:
        def seen() -> bool:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"the checks stopped: {proc.stderr.read()}")
            checks.append(json.loads(line))
            return checks[-1] == want
        until(seen, 10, lambda _: f"{what}; the last checks: {checks[-5:]}")

    try:
        both = [["lan0", VIP4, mac_b], ["lan0", VIP6, mac_b]]
        read_until(both, "both addresses seen held by b")
        detected = time.monotonic() - began
        netns.ip(b, "addr", "del", f"{VIP4}/24", "dev", "lan0")
        netns.ip(b, "addr", "del", f"{VIP6}/64", "dev", "lan0")
        # the first check after the removal may still hold an answer sent before it
        read_until([], "nobody else holds them any more")
        netns.ip(b, "addr", "add", f"{VIP6}/64", "dev", "lan0", "nodad")
        read_until([["lan0", VIP6, mac_b]], "b holds the IPv6 one again")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"split brain seen {detected:.2f} s after the checks started (interval 0.2 s)")
    # never a sighting of an address only a holds, or nobody holds
    assert not [s for c in checks for s in c if s[1] in (ALONE, NOBODY)], checks
