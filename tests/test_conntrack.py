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
import sys
from dataclasses import replace
from typing import Any

import pytest

from lab import Lab, seed_spec
from lab.driver import HeldFlows
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
