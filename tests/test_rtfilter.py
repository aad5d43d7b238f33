"""rtfilter: the classic BPF program for the rtnetlink event socket.

Without root: the program, run by a small classic-BPF interpreter on crafted netlink
messages in both byte orders.  In a lab (root): a subscribed socket with the filter
attached while 100 000 routes are added and removed in the router namespace sees only
the default-route events that concern ecmpd; one without it sees every one of them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from ecmpd import rtfilter
from ecmpd.rtfilter import RTM_DELROUTE, RTM_NEWROUTE, route_event_program

RANGE = range(1001, 1256)

# ---- a classic BPF interpreter, as the kernel runs SO_ATTACH_FILTER programs ----------

KNOWN = {0x20, 0x28, 0x30, 0x80, 0x64, 0x4C, 0x07, 0x05, 0x15, 0x25, 0x35, 0x45, 0x06}


def validate(program: list[tuple[int, int, int, int]]) -> None:
    """What the kernel checks before attaching: known opcodes, jumps inside, a final ret."""
    assert 0 < len(program) <= 4096 and program[-1][0] & 0x07 == 0x06
    for pc, (code, jt, jf, k) in enumerate(program):
        assert code in KNOWN, f"{pc}: unexpected opcode {code:#x}"
        if code == 0x05:
            assert pc + 1 + k < len(program), f"{pc}: jump out of the program"
        elif code & 0x07 == 0x05:
            assert pc + 1 + max(jt, jf) < len(program), f"{pc}: jump out of the program"
        assert 0 <= k <= 0xFFFFFFFF and 0 <= jt < 256 and 0 <= jf < 256


def run_bpf(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """Run a classic BPF program on `packet`; the bytes to accept (0: drop)."""
    a = x = pc = 0
    for _ in range(len(program)):  # classic BPF only jumps forward
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x80:                      # ld len
            a = len(packet)
        elif cls == 0x00:                     # ld abs: out of the packet drops it
            n = {0x20: 4, 0x28: 2, 0x30: 1}[code]
            if k + n > len(packet):
                return 0
            a = int.from_bytes(packet[k:k + n], "big")
        elif code == 0x64:                    # lsh #k
            a = (a << k) & 0xFFFFFFFF
        elif code == 0x4C:                    # or x
            a |= x
        elif code == 0x07:                    # tax
            x = a
        elif code == 0x05:                    # ja
            pc += k
        elif cls == 0x05:
            hit = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if hit else jf
        elif cls == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")
    raise AssertionError("ran off the end of the program")


# ---- crafted messages ------------------------------------------------------------------

def route_msg(kind: int = RTM_NEWROUTE, dst_len: int = 0, table: int = 254,
              flags: int = 0, order: str = "little", table_attr: bool = True,
              first_attr: int | None = None) -> bytes:
    """An rtnetlink route message as the kernel sends it (RTA_TABLE first)."""
    e = "<" if order == "little" else ">"
    rtm = struct.pack(f"{e}BBBBBBBBI", 2, dst_len, 0, 0, table if table < 256 else 252,
                      3, 0, 1, 0)
    attrs = b""
    if first_attr is not None:
        attrs += struct.pack(f"{e}HHI", 8, first_attr, 7)
    if table_attr:
        attrs += struct.pack(f"{e}HHI", 8, 15, table)
    attrs += struct.pack(f"{e}HHI", 8, 6, 100)       # RTA_PRIORITY
    body = rtm + attrs
    return struct.pack(f"{e}IHHII", 16 + len(body), kind, flags, 0, 0) + body


def other_msg(kind: int, order: str = "little", size: int = 40) -> bytes:
    e = "<" if order == "little" else ">"
    return struct.pack(f"{e}IHHII", size, kind, 0, 0, 0) + bytes(size - 16)


PROGRAMS = {order: {"tables": route_event_program([RANGE], order),
                    "prefix": route_event_program(None, order)}
            for order in ("little", "big")}

# name: (message kwargs, passes with tables, passes with prefix only)
CASES = {
    "main default": (dict(table=254), True, True),
    "main default, deleted": (dict(table=254, kind=RTM_DELROUTE), True, True),
    "main /24 (a BGP prefix)": (dict(table=254, dst_len=24), False, False),
    "main /1": (dict(table=254, dst_len=1), False, False),
    "table 100 /24": (dict(table=100, dst_len=24), False, False),
    "table 100 default (a VRF)": (dict(table=100), False, True),
    "ecmpd table 1001 default": (dict(table=1001), True, True),
    "ecmpd table 1255 default": (dict(table=1255), True, True),
    "table 1000 default (just below)": (dict(table=1000), False, True),
    "table 1256 default (just above)": (dict(table=1256), False, True),
    "table 0x10003e9 default (low bytes of 1001)": (dict(table=0x10003E9), False, True),
    "table 5000 /16": (dict(table=5000, dst_len=16), False, False),
    "table 252 itself": (dict(table=252), False, True),
    "ecmpd table 1001 deleted": (dict(table=1001, kind=RTM_DELROUTE), True, True),
    "part of a dump (NLM_F_MULTI), /24": (dict(dst_len=24, flags=0x2, table=100), True, True),
    "no RTA_TABLE, rtm_table 252": (dict(table=1001, table_attr=False), True, True),
    "no RTA_TABLE, table 100": (dict(table=100, table_attr=False), False, True),
    "RTA_TABLE not first, big table": (dict(table=1001, first_attr=6), True, True),
    "RTA_TABLE not first, table 100": (dict(table=100, first_attr=6), False, True),
}


@pytest.mark.parametrize("order", ["little", "big"])
def test_programs_are_valid_classic_bpf(order: str) -> None:
    for prog in PROGRAMS[order].values():
        validate(prog)


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("name", list(CASES))
def test_route_messages(order: str, name: str) -> None:
    kw, with_tables, prefix_only = CASES[name]
    msg = route_msg(order=order, **kw)
    assert bool(run_bpf(PROGRAMS[order]["tables"], msg)) is with_tables, name
    assert bool(run_bpf(PROGRAMS[order]["prefix"], msg)) is prefix_only, name


@pytest.mark.parametrize("order", ["little", "big"])
def test_every_other_message_passes_whole(order: str) -> None:
    # link, address, rule events, errors, done; a truncated route message
    for kind in (16, 17, 20, 21, 32, 33, 2, 3, 0x1800, 0x1900):
        for prog in PROGRAMS[order].values():
            assert run_bpf(prog, other_msg(kind, order)) == 0xFFFFFFFF, kind
    short = route_msg(order=order, dst_len=24)[:24]
    for prog in PROGRAMS[order].values():
        assert run_bpf(prog, short) == 0xFFFFFFFF


def test_the_byte_order_matters() -> None:
    """A program for the other byte order misreads the type: it must be the host's."""
    msg = route_msg(order="little", dst_len=24)
    assert run_bpf(PROGRAMS["little"]["tables"], msg) == 0
    assert run_bpf(PROGRAMS["big"]["tables"], msg) != 0    # not recognised as a route
    assert route_event_program([RANGE]) == PROGRAMS[sys.byteorder]["tables"]


def test_several_ranges_and_small_tables() -> None:
    prog = route_event_program([range(101, 356), range(2001, 2256)], "little")
    validate(prog)
    for table, ok in [(101, True), (200, True), (252, True), (355, True), (356, False),
                      (100, False), (2001, True), (2255, True), (2256, False), (1001, False),
                      (254, True), (255, True), (253, True), (50, False)]:
        assert bool(run_bpf(prog, route_msg(table=table))) is ok, table
    assert route_event_program([range(0)], "little")    # an empty range is left out


def test_attach_to_a_socket_and_to_a_descriptor() -> None:
    """The kernel accepts the program (a socket of our own, nothing subscribed)."""
    import socket
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        rtfilter.attach(s, route_event_program([RANGE]))
        rtfilter.attach(s.fileno())
        rtfilter.detach(s)
    with pytest.raises(ValueError):
        route_event_program([RANGE], "middle")


# ---- in a lab: what reaches userspace --------------------------------------------------

COUNTER = textwrap.dedent("""
    import json, socket, sys, time, resource
    from ecmpd import rtfilter
    mode = sys.argv[1]
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)        # SO_RCVBUFFORCE: 4 MiB
    s.bind((0, 0x40))                                     # RTMGRP_IPV4_ROUTE
    if mode == "tables":
        rtfilter.attach(s, rtfilter.route_event_program([range(1001, 1256)]))
    elif mode == "prefix":
        rtfilter.attach(s)
    s.settimeout(120.0)     # the first message may come only at the batch's end
    print("ready", flush=True)
    seen, lost, start = [], 0, None
    while True:
        try:
            data = s.recv(1 << 16)
        except socket.timeout:
            break
        except OSError:
            lost += 1                                     # ENOBUFS
            continue
        start = start or time.monotonic()
        s.settimeout(3.0)       # then: done once the messages stop
        off = 0
        while off + 16 <= len(data):
            ln, kind = int.from_bytes(data[off:off+4], sys.byteorder), \\
                int.from_bytes(data[off+4:off+6], sys.byteorder)
            if kind in (24, 25):
                dst_len, table = data[off + 17], data[off + 20]
                if data[off + 30] == 15:                  # RTA_TABLE first
                    table = int.from_bytes(data[off + 32:off + 36], sys.byteorder)
                seen.append([kind, dst_len, table])
            off += (ln + 3) & ~3
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seen": seen, "lost": lost, "cpu": ru.ru_utime + ru.ru_stime}))
""")

ROUTES = 100_000


@pytest.mark.lab
def test_a_subscribed_socket_sees_only_what_concerns_ecmpd(make_lab) -> None:
    lab = make_lab()
    counters = {}
    for mode in ("tables", "prefix", "none"):
        proc = lab.popen(lab.ns_router, sys.executable, "-c", COUNTER, mode,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        counters[mode] = proc
    gw = "10.111.0.1"
    half = ROUTES // 2
    lines = [f"route add 11.{i >> 8 & 255}.{i & 255}.0/24 via {gw} table 100 proto bgp"
             for i in range(half)]
    lines += [f"route add 100.{i >> 8 & 255}.{i & 255}.0/24 via {gw} proto bgp"
              for i in range(half)]
    interesting = [f"route add default via {gw} proto 236 metric 7",       # main: passes
                   f"route add default via {gw} proto 236 table 1001",     # ours: passes
                   f"route add default via {gw} table 100",                # a VRF default
                   f"route add default via {gw} table 5000"]               # another table
    lines += interesting + [line.replace(" add ", " del ", 1) for line in interesting]
    t = time.monotonic()
    lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join(lines) + "\n", timeout=300)
    took = time.monotonic() - t
    out = {}
    for mode, proc in counters.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[mode] = json.loads(stdout.strip().splitlines()[-1])
    seen = {m: out[m]["seen"] for m in out}
    print(f"\n{len(lines)} route changes in {took:.1f}s; reached userspace: "
          + ", ".join(f"{m}: {len(seen[m])} messages, {out[m]['lost']} overruns, "
                      f"{out[m]['cpu']:.2f}s CPU" for m in out))
    assert seen["tables"] == [[24, 0, 254], [24, 0, 1001], [25, 0, 254], [25, 0, 1001]]
    assert out["tables"]["lost"] == 0
    assert sorted(map(tuple, seen["prefix"])) == sorted(
        [(k, 0, t) for k in (24, 25) for t in (254, 1001, 100, 5000)])
    assert out["prefix"]["lost"] == 0
    # without the filter every change arrives (or the socket overruns trying)
    assert len(seen["none"]) + out["none"]["lost"] > 1000
    assert len(seen["none"]) >= min(len(lines), 10_000) or out["none"]["lost"] > 0
