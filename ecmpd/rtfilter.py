"""A kernel-side filter for ecmpd's rtnetlink event socket: route events that cannot
concern ecmpd are dropped before they are queued, so a router that also carries a BGP
table (a million routes added, withdrawn, flapping) never wakes ecmpd up for them and
never overruns its socket (ENOBUFS, then a full resync).

`route_event_program` returns a classic BPF program (SO_ATTACH_FILTER) and `attach`
puts it on a socket.  The program drops an RTM_NEWROUTE / RTM_DELROUTE message when

* its destination prefix is not /0 (``rtm_dst_len != 0``): ecmpd has only default
  routes; or, when `tables` are given,
* its table is neither main (254) nor in one of `tables`; or, when `proto` is given too,
  it is in main with another ``rtm_protocol`` (another program's, which no reconcile
  reads: a DHCP client or a routing daemon churning it never wakes ecmpd up).  The
  header's ``rtm_table``
  is one byte (tables above 255 show as RT_TABLE_COMPAT, 252), so the real id is read
  from the ``RTA_TABLE`` attribute, which the kernel puts first in every route message;
  a message without it there is judged by ``rtm_table``, and passes when that is 252.

Everything else passes untouched: links, addresses, rules, errors, acknowledgements, and
every part of a multipart (``NLM_F_MULTI``) message, i.e. a dump answer, which carries
many routes in one buffer.  Netlink fields are in host byte order while BPF loads are
big-endian, so the program is built for a byte order (the host's by default): half-words
are compared with byte-swapped constants, and the 32-bit table id is assembled byte by
byte.  The filter is the same predicate the daemon applies to route events
(`ecmpd.events._ours`), only earlier.

Usage (the watcher, after subscribing)::

    rtfilter.attach(ipr.socket, rtfilter.route_event_program([table_range(cfg)]))

Attaching again replaces the program (e.g. after a reload that moves tables.base).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from collections.abc import Iterable, Sequence

Insn = tuple[int, int, int, int]
"""(code, jt, jf, k): one classic BPF instruction, as struct sock_filter."""

SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLM_F_MULTI = 0x2
RT_TABLE_COMPAT, RT_TABLE_MAIN = 252, 254
RTA_TABLE = 15
NLMSG_HDRLEN, RTMSG_LEN = 16, 12
OFF_TYPE, OFF_FLAGS = 4, 6                      # in struct nlmsghdr
OFF_DST_LEN = NLMSG_HDRLEN + 1                  # struct rtmsg: family, dst_len, ...
OFF_TABLE = NLMSG_HDRLEN + 4                    # ... src_len, tos, table
OFF_PROTO = NLMSG_HDRLEN + 5                    # ... protocol
OFF_ATTR = NLMSG_HDRLEN + RTMSG_LEN             # the first attribute: len, type, value
PASS, DROP = 0xFFFFFFFF, 0

# opcodes
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_W_LEN = 0x20, 0x28, 0x30, 0x80
ALU_LSH_K, ALU_OR_X = 0x64, 0x4C
JA, JEQ, JGT, JGE, JSET = 0x05, 0x15, 0x25, 0x35, 0x45
RET_K, TAX = 0x06, 0x07


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8)


class _Asm:
    """A tiny assembler: jumps name labels; offsets are resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def program(self) -> list[Insn]:
        out: list[Insn] = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            def rel(target: str | int) -> int:
                if isinstance(target, int):
                    return target
                off = self.labels[target] - pc - 1
                if not 0 <= off < 256:
                    raise ValueError(f"jump from {pc} to {target} out of reach")
                return off
            if code == JA:
                out.append((code, 0, 0, rel(jt)))
            else:
                out.append((code, rel(jt), rel(jf), k & 0xFFFFFFFF))
        return out


def route_event_program(tables: Sequence[range] | None = None,
                        byteorder: str = sys.byteorder, proto: int | None = None) -> list[Insn]:
    """The classic BPF program (see the module docstring).

    `tables`: ranges of table ids whose default routes concern ecmpd besides main
    (ecmpd's: ``[desired.table_range(cfg)]``; during a renumbering reload the old range
    as well); None: no table check, only the prefix length.  `byteorder`: ``"little"``
    or ``"big"``, the byte order of the netlink messages (the host's).  `proto`: with
    `tables`, main's default routes pass only with this protocol (ecmpd's)."""
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder {byteorder!r}")
    big = byteorder == "big"
    h = (lambda v: v) if big else _swap16
    a = _Asm()
    a.op(LD_W_LEN)
    a.op(JGE, NLMSG_HDRLEN + RTMSG_LEN, 0, "pass")    # too short to judge
    a.op(LD_H_ABS, OFF_TYPE)
    a.op(JEQ, h(RTM_NEWROUTE), "route", 0)
    a.op(JEQ, h(RTM_DELROUTE), "route", "pass")
    a.label("route")
    a.op(LD_H_ABS, OFF_FLAGS)
    a.op(JSET, h(NLM_F_MULTI), "pass", 0)            # a dump: never filtered
    a.op(LD_B_ABS, OFF_DST_LEN)
    a.op(JEQ, 0, 0, "drop")                          # not a default route
    if tables is None:
        a.op(RET_K, PASS)
    else:
        main = "pass" if proto is None else "main"
        a.op(LD_B_ABS, OFF_TABLE)
        a.op(JEQ, RT_TABLE_MAIN, main, 0)
        a.op(LD_W_LEN)
        a.op(JGE, OFF_ATTR + 8, 0, "header")          # room for RTA_TABLE (len 8)?
        a.op(LD_H_ABS, OFF_ATTR + 2)                 # the first attribute's type
        a.op(JEQ, h(RTA_TABLE), 0, "header")
        if big:
            a.op(LD_W_ABS, OFF_ATTR + 4)
        else:                                        # A = the little-endian u32 there
            a.op(LD_B_ABS, OFF_ATTR + 7)
            for i in (6, 5, 4):
                a.op(ALU_LSH_K, 8)
                a.op(TAX)
                a.op(LD_B_ABS, OFF_ATTR + i)
                a.op(ALU_OR_X)
        a.op(JA, 0, "check")
        a.label("header")
        a.op(LD_B_ABS, OFF_TABLE)
        a.op(JEQ, RT_TABLE_COMPAT, "pass", 0)        # a big table, id unknown: keep it
        a.label("check")
        a.op(JEQ, RT_TABLE_MAIN, main, 0)
        for n, r in enumerate(t for t in tables if len(t)):
            a.op(JGE, r.start, 0, f"next{n}")
            a.op(JGT, r.stop - 1, f"next{n}", "pass")
            a.label(f"next{n}")
        a.op(RET_K, DROP)
        if proto is not None:
            a.label("main")
            a.op(LD_B_ABS, OFF_PROTO)
            a.op(JEQ, proto & 0xFF, "pass", "drop")
    a.label("pass")
    a.op(RET_K, PASS)
    a.label("drop")
    a.op(RET_K, DROP)
    return a.program()


def pack(program: Iterable[Insn]) -> bytes:
    """The program as an array of struct sock_filter."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def attach(sock: object, program: Sequence[Insn] | None = None) -> None:
    """Attach `program` (default: `route_event_program()`, prefix length only) to
    `sock`: a socket, a file descriptor, or anything with ``setsockopt`` (pyroute2's
    ``ipr.socket``).  Replaces a program attached before."""
    prog = list(program) if program is not None else route_event_program()
    code = ctypes.create_string_buffer(pack(prog))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(code))  # struct sock_fprog
    if isinstance(sock, int):
        sock = socket.socket(fileno=sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        finally:
            sock.detach()
        return
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # type: ignore[attr-defined]


def detach(sock: object) -> None:
    """Remove the filter from `sock` (no error when none is attached)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)  # type: ignore[attr-defined]
    except OSError:
        pass
