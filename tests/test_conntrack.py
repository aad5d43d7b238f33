"""conntrack: count and flush entries by ecmpd's marks (root, lab).

The router is programmed by hand (not by ecmpd): each client address is routed out of
one WAN, an nft rule gives its new connections a ct mark (some with bits outside
ecmpd's mask, some with another WAN's mark or no WAN mark at all), and masquerade.
`count_marks`/`flush_mark` act on the namespace of the calling process, so they run
in a short Python process inside the router namespace; the `conntrack` CLI there is
the independent witness.  ``nf_conntrack_tcp_loose=0`` keeps a flushed connection from
being picked up again mid-stream, so "gone" stays gone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from lab import Lab, netns, seed_spec
from lab.driver import HeldFlows, tool_env
from lab.wait import until

pytestmark = pytest.mark.lab

MASK = 0xFF0000
WAN1, WAN2 = 0x10000, 0x20000
# client address -> (WAN it is routed out of, ct mark of its connections, flows held)
CLIENTS: dict[str, tuple[str, int, int]] = {
    "192.168.0.2": ("wlan1", 0x10000, 3),
    "192.168.0.4": ("wlan1", 0x10001, 2),     # bits outside the mask: still wlan1's
    "192.168.0.3": ("wlan2", 0x20000, 2),
    "192.168.0.5": ("wlan2", 0x1020000, 2),   # bits outside the mask: still wlan2's
    "192.168.0.6": ("wlan2", 0x1, 2),         # no WAN bits at all
    "192.168.0.7": ("wlan2", 0x30000, 1),     # another WAN's mark (0x30000 & 0x10000 != 0)
}
TABLES = {"wlan1": (101, "10.111.0.1"), "wlan2": (102, "10.112.0.1")}

SNIPPET = r'''
import asyncio, json, sys
from ecmpd import conntrack
op, args = sys.argv[1], json.loads(sys.argv[2])
if op == "count":
    print(json.dumps(asyncio.run(conntrack.count_marks(args["marks"], args["mask"]))))
else:
    print(json.dumps(asyncio.run(conntrack.flush_mark(args["mark"], args["mask"]))))
'''


def in_router(lab: Lab, op: str, **args: Any) -> Any:
    """Run conntrack.<op> inside the router namespace; its JSON result."""
    out = lab.run(lab.ns_router, sys.executable, "-c", SNIPPET, op, json.dumps(args)).stdout
    return json.loads(out)


def setup_router(lab: Lab) -> None:
    """Source routing per WAN, ct marks by client and WAN, masquerade; strict conntrack."""
    ip = [f"route add default via {gw} table {t}" for t, gw in TABLES.values()]
    ip += [f"rule add from {c} lookup {TABLES[wan][0]}" for c, (wan, _, _) in CLIENTS.items()]
    lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join(ip) + "\n")
    marks = "\n".join(f'    ct state new oifname "{wan}" ip saddr {c} ct mark set {mark:#x}'
                      for c, (wan, mark, _) in CLIENTS.items())
    lab.nft(lab.ns_router, f"""
table ip ctlab {{
  chain post {{
    type filter hook postrouting priority -150; policy accept;
{marks}
  }}
  chain nat {{
    type nat hook postrouting priority 100; policy accept;
    oifname "wlan1" masquerade
    oifname "wlan2" masquerade
  }}
}}""")
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
            "net.netfilter.nf_conntrack_tcp_loose=0", "net.netfilter.nf_conntrack_acct=1")


def entries(lab: Lab) -> dict[tuple[str, int], dict[str, int]]:
    """TCP conntrack entries to port 5000: (client, client port) -> {mark, reply_packets}."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "-p", "tcp", "--dport", "5000").stdout
    found = {}
    for line in out.splitlines():
        src = re.search(r"src=(\S+) dst=\S+ sport=(\d+)", line)
        packets = re.findall(r"packets=(\d+)", line)
        mark = re.search(r"mark=(\d+)", line)
        assert src and len(packets) == 2, f"unexpected conntrack line: {line}"
        found[(src.group(1), int(src.group(2)))] = {
            "mark": int(mark.group(1)) if mark else 0, "reply_packets": int(packets[1])}
    return found


def wan_of_mark(mark: int) -> str | None:
    return {WAN1: "wlan1", WAN2: "wlan2"}.get(mark & MASK)


@pytest.fixture
def held(make_lab: Any) -> tuple[Lab, HeldFlows]:
    """A lab with CLIENTS' flows held open through the hand-made router."""
    if shutil.which("conntrack") is None:
        pytest.skip("needs the conntrack CLI (Debian package conntrack)")
    lab = make_lab(replace(seed_spec(), client_extra=5))
    setup_router(lab)
    lab.start_servers()
    sources = [c for c, (_, _, n) in CLIENTS.items() for _ in range(n)]
    flows = lab.hold_flows(len(sources), byte_interval=0.1, sources=sources)
    assert flows.wait_established(10) == len(sources)
    return lab, flows


def test_count_marks_counts_each_wan_under_the_mask(held: tuple[Lab, HeldFlows]) -> None:
    lab, flows = held
    table = entries(lab)
    assert sorted(e["mark"] for e in table.values()) == sorted(
        m for _, m, n in CLIENTS.values() for _ in range(n))
    counts = in_router(lab, "count", mask=MASK,
                       marks={"wlan1": WAN1, "wlan2": WAN2, "wan3": 0x30000, "wan4": 0x40000})
    assert counts == {"wlan1": 5, "wlan2": 4, "wan3": 1, "wan4": 0}
    # another mask position: the same entries seen through 0x00ff (only the 0x1 bits count)
    assert in_router(lab, "count", mask=0xFF, marks={"low": 0x1}) == {"low": 2 + 2}  # 0x10001, 0x1
    assert not any(r.broken for r in flows.stop())


def test_flush_mark_removes_only_that_wans_entries(held: tuple[Lab, HeldFlows]) -> None:
    lab, flows = held
    before = entries(lab)
    wlan1 = {k for k, e in before.items() if wan_of_mark(e["mark"]) == "wlan1"}
    assert {c for c, _ in wlan1} == {"192.168.0.2", "192.168.0.4"} and len(wlan1) == 5

    assert in_router(lab, "flush", mark=WAN1, mask=MASK) is True

    after = entries(lab)
    assert set(after) == set(before) - wlan1
    assert {k: e["mark"] for k, e in after.items()} == \
        {k: e["mark"] for k, e in before.items() if k not in wlan1}
    assert in_router(lab, "count", mask=MASK, marks={"wlan1": WAN1, "wlan2": WAN2}) == \
        {"wlan1": 0, "wlan2": 4}
    # the surviving connections keep carrying traffic on their entries: wait until each
    # one has seen at least 5 more reply packets (about 5 echo rounds)
    now: dict = {}

    def carried() -> bool:
        now.clear()
        now.update(entries(lab))
        assert set(now) == set(after), "entries appeared or vanished after the flush"
        return all(now[k]["reply_packets"] >= after[k]["reply_packets"] + 5 for k in after)

    until(carried, 10, lambda _: f"no traffic on the surviving entries: {now}", interval=0.1)
    results = flows.stop()
    assert len(results) == 12
    survivors = [r for r in results if r.bind not in ("192.168.0.2", "192.168.0.4")]
    assert len(survivors) == 7 and {r.wan for r in survivors} == {"wlan2"}
    assert not any(r.broken for r in survivors), [r for r in survivors if r.broken]


def _nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    import struct
    raw = struct.pack("=HH", 4 + len(payload), kind | (0x8000 if nested else 0)) + payload
    return raw + b"\0" * ((4 - len(raw) % 4) % 4)


def test_parse_entry_picks_mark_and_protocol_from_a_raw_message():
    from ecmpd.conntrack import parse_entry
    proto = _nla(2, _nla(1, bytes([6])) + _nla(2, b"\x30\x39"), nested=True)   # TCP, a port
    ip = _nla(1, _nla(1, bytes([10, 0, 0, 1])), nested=True)
    body = _nla(1, ip + proto, nested=True) + _nla(7, b"\0\0\0\x05") \
        + _nla(8, (0x1020000).to_bytes(4, "big"))
    assert parse_entry(body, 0, len(body)) == (0x1020000, 6)
    icmp = _nla(1, _nla(2, _nla(1, bytes([1])), nested=True), nested=True)
    assert parse_entry(icmp, 0, len(icmp)) == (0, 1)
    assert parse_entry(b"\x02\x00", 0, 2) == (0, 0)          # truncated: nothing, no crash


# ------------------------------------------------- both families, bare namespaces

DUAL_SNIPPET = r'''
import asyncio, json, sys
from ecmpd import conntrack
op, args = sys.argv[1], json.loads(sys.argv[2])
fn = {"count": conntrack.count_marks, "flush": conntrack.flush_mark,
      "probes": conntrack.flush_probes, "address": conntrack.flush_address}[op]
print(json.dumps(asyncio.run(fn(**args))))
'''

V4, V6A, V6B, PEER4, PEER6 = "10.77.0.1", "fd00:77::1", "fd00:77::3", "10.77.0.2", "fd00:77::2"
# (source, destination, UDP port): port 5001 is marked 0x10000, 5002 0x20000, 5003 0x1
DUAL_FLOWS = [(V4, PEER4, 5001), (V4, PEER4, 5002), (V4, PEER4, 5003),
              (V6A, PEER6, 5001), (V6A, PEER6, 5002),
              (V6B, PEER6, 5001), (V6B, PEER6, 5003)]
SEND = r'''
import json, socket, sys
for src, dst, port in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(b"x", (dst, port))
'''


def dual_entries(ns: str) -> set[tuple[str, str, str]]:
    """(protocol, source, destination port or '-') of every conntrack entry in `ns`,
    both families, read with the conntrack CLI (the witness)."""
    found = set()
    for family in ("ipv4", "ipv6"):
        out = netns.run_in(ns, "conntrack", "-L", "-f", family).stdout
        for line in out.splitlines():
            src = re.search(r"src=(\S+)", line)
            dport = re.search(r"dport=(\d+)", line)
            assert src, f"unexpected conntrack line: {line}"
            found.add((line.split()[0], src.group(1), dport.group(1) if dport else "-"))
    return found


def ct_op(ns: str, op: str, **args: Any) -> Any:
    out = subprocess.run(netns.exec_argv(ns, sys.executable, "-c", DUAL_SNIPPET, op,
                                         json.dumps(args)),
                         capture_output=True, text=True, check=True, env=tool_env()).stdout
    return json.loads(out)


def dual_setup(make_netns: Any) -> tuple[str, set, set]:
    """A namespace with the UDP flows `DUAL_FLOWS` (marked by port) and a ping from each
    address (marked 0x10000), both families: (namespace, UDP entries, ping entries)."""
    here, peer = make_netns("ct6"), make_netns("ct6peer")
    netns.run(["ip", "link", "add", "r0", "netns", here, "type", "veth",
               "peer", "name", "p0", "netns", peer])
    netns.ip_batch(here, ["link set r0 up", f"addr add {V4}/24 dev r0",
                          f"addr add {V6A}/64 dev r0 nodad", f"addr add {V6B}/64 dev r0 nodad"])
    netns.ip_batch(peer, ["link set p0 up", f"addr add {PEER4}/24 dev p0",
                          f"addr add {PEER6}/64 dev p0 nodad"])
    netns.sysctl(here, {"net.netfilter.nf_conntrack_udp_timeout": 600,
                        "net.netfilter.nf_conntrack_icmp_timeout": 600,
                        "net.netfilter.nf_conntrack_icmpv6_timeout": 600})
    netns.nft(here, """
table inet ctlab {
  chain out {
    type filter hook output priority -150; policy accept;
    ct state new udp dport 5001 ct mark set 0x10000
    ct state new udp dport 5002 ct mark set 0x20000
    ct state new udp dport 5003 ct mark set 0x1
    ct state new meta l4proto { icmp, ipv6-icmp } ct mark set 0x10000
  }
}""")
    subprocess.run(netns.exec_argv(here, sys.executable, "-c", SEND, json.dumps(DUAL_FLOWS)),
                   check=True)
    for src, dst in ((V4, PEER4), (V6A, PEER6), (V6B, PEER6)):
        netns.run_in(here, "ping", "-c", "1", "-W", "5", "-I", src, dst)
    udp = {("udp", s, str(p)) for s, _, p in DUAL_FLOWS}
    pings = {("icmp", V4, "-"), ("icmpv6", V6A, "-"), ("icmpv6", V6B, "-")}
    assert dual_entries(here) == udp | pings
    return here, udp, pings


@pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs the conntrack CLI")
def test_both_families_are_counted_and_flushed(make_netns: Any) -> None:
    """IPv4 and IPv6 entries side by side: counted and flushed by mark in one request,
    by source (probes) and by reply address per family, never the other family's."""
    here, udp, pings = dual_setup(make_netns)

    # counted in both families; the pings (marked like 5001) are not connections
    assert ct_op(here, "count", marks={"a": 0x10000, "b": 0x20000, "c": 0x30000},
                 mask=MASK) == {"a": 3, "b": 2, "c": 0}
    # probes of one IPv6 source: its ICMPv6 entry only
    assert ct_op(here, "probes", source=V6B) == 1
    assert dual_entries(here) == udp | pings - {("icmpv6", V6B, "-")}
    # an IPv6 address gone: everything whose replies go to it, nothing of the others
    assert ct_op(here, "address", address=V6A) == 3
    udp -= {("udp", V6A, "5001"), ("udp", V6A, "5002")}
    assert dual_entries(here) == udp | {("icmp", V4, "-")}
    # by mark: IPv4 and IPv6 in one request, the other marks untouched
    assert ct_op(here, "flush", mark=0x10000, mask=MASK) is True
    assert dual_entries(here) == {("udp", V4, "5002"), ("udp", V4, "5003"),
                                  ("udp", V6B, "5003")}
    assert ct_op(here, "count", marks={"a": 0x10000, "b": 0x20000}, mask=MASK) == \
        {"a": 0, "b": 1}
    # the IPv4 paths still work next to IPv6 entries
    assert ct_op(here, "address", address=V4) == 2
    assert dual_entries(here) == {("udp", V6B, "5003")}


@pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs the conntrack CLI")
def test_one_versions_flush_by_mark_leaves_the_other_versions_entries(make_netns: Any) -> None:
    """A WAN whose IPv4 goes DOWN loses its IPv4 connections only (the kernel's flush by
    mark ignores the family it is given: ecmpd deletes that version's entries itself)."""
    here, udp, pings = dual_setup(make_netns)
    assert ct_op(here, "flush", mark=0x10000, mask=MASK, family=4) is True
    gone4 = {("udp", V4, "5001"), ("icmp", V4, "-")}
    assert dual_entries(here) == (udp | pings) - gone4
    assert ct_op(here, "flush", mark=0x20000, mask=MASK, family=6) is True
    assert dual_entries(here) == (udp | pings) - gone4 - {("udp", V6A, "5002")}
