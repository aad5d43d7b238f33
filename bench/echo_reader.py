"""EchoSocket's readers measured against each other: CPU per 10 000 replies, the RTT the
loop adds, and a flood of foreign ICMP that the kernel filter must keep out of Python.

    sudo PYTHONPATH=. .venv/bin/python -m bench.echo_reader [--reps 3] [--replies 10000]

Builds a one-WAN lab (`lab.Lab`, prefix ``eer`` + random; always torn down): the router
``rtr`` (wan1 10.101.0.2, fd00:254::1, fe80::1) and its ISP ``isp1`` (cust 10.101.0.1,
fd00:254::2, fe80::2) on a veth pair; the ISP's kernel answers the echo requests.
Then it runs itself inside ``rtr`` (``--inside``) and interleaves, per repetition and
family, three readers on the same workloads:

* ``74519b9``: the reader before this change, copied verbatim below (BASELINE_74519B9):
  ``loop.add_reader`` + ``recvmsg`` (kernel stamp) + icmplib's private ``_parse_reply``;
  requests built with the private ``_create_packet`` and sent with ``sendto``.
* ``AsyncSocket``: icmplib's documented asyncio path, one reader task per socket doing
  ``await AsyncSocket(sock).receive(None, 1.0)`` (TimeoutExceeded ignored); requests by
  icmplib's public ``send``; everything else as ``ecmpd.icmpecho`` (its replies carry no
  source address, so this variant cannot check who answered).
* ``receive``: ``ecmpd.icmpecho.EchoSocket`` as shipped: ``loop.add_reader`` + icmplib's
  public blocking ``receive(None, READ_TIMEOUT)``, public ``send``.

Workloads: ``burst`` sends 64 requests back to back and waits for their answers, until
`--replies` answers: CPU seconds (process time) per 10 000 replies, in all and without
the time spent inside ``send`` (the reader's share).  ``single`` sends one request at a
time (2 000): the RTT the loop adds, the loop's read time minus the kernel's receipt
stamp (age - rtt), median and p99.  ``flood``: 20 probes/s for 3 s while the target
floods the WAN address with echo replies and unreachables of a foreign identifier (what
the BPF filter drops): share of a core, answers, flood rate; the control row is the
shipped reader with the filter detached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icmplib

from ecmpd import icmpecho

REPO = Path(__file__).resolve().parent.parent
WAN6, TGT6 = "fd00:254::1", "fd00:254::2"
DEVICE = "wan1"
LL6 = f"fe80::2%{DEVICE}"
BURST = 64
SINGLE = 2000
FLOOD_SECONDS = 3.0


# --- (a) the baseline: ecmpd/icmpecho.py at commit 74519b9, verbatim --------------------

BASELINE_74519B9 = r'''
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import icmplib

log = logging.getLogger(__name__)

PAYLOAD = b"ecmpd probe " + bytes(range(44))
"""56 bytes of echo payload, as ping(8) sends; fixed, so no random bytes per request."""
BATCH = 64
"""Packets read per reader callback at most: the loop calls again while more are queued."""
# per family: echo reply type, error types that quote the offending packet
_V4 = (0, frozenset({3, 11, 12}))  # unreachable, time exceeded, parameter problem
_V6 = (129, frozenset({1, 2, 3, 4}))  # unreachable, too big, time exceeded, parameter problem
_SOL_RAW, _ICMP_FILTER = 255, 1  # ICMP_FILTER (IPv4), ICMP6_FILTER (IPv6): bit set = dropped
TTL = 64
"""The TTL of IPv4 requests (icmplib's default), set once on the socket."""
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; also the SCM type of its ancillary data
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; the socket module does not define it
_live: set[int] = set()  # identifiers of the open EchoSockets of this process


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer to one of our requests."""

    address: str  # the destination the request was sent to
    seq: int
    rtt: float  # seconds from send to the kernel's receipt (else to the loop's read)
    error: int | None  # None for an echo reply; else the ICMP(v6) error type quoting our request
    age: float | None = None  # seconds from send to the loop's read (None: = rtt)


def bpf_program(family: int, ident: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF (code, jt, jf, k) accepting only echo replies with identifier `ident` and
    ICMP errors quoting an echo request with it.  An IPv4 raw socket's packet starts with
    the IP header (variable IHL, likewise the quoted one); an IPv6 one with the ICMPv6
    header.  Loads beyond the packet's end drop it, so truncated packets never pass."""
    ok, drop = 0x40000, 0  # accept: the whole packet (up to 256 KiB)
    if family == 4:
        return [                  # pc  instruction          meaning
            (0xB1, 0, 0, 0),      # 0   ldxb 4*([0]&0xf)     X = IP header length
            (0x50, 0, 0, 0),      # 1   ldb [x+0]            ICMP type
            (0x15, 4, 0, 0),      # 2   jeq #0 -> 7          echo reply
            (0x15, 5, 0, 3),      # 3   jeq #3 -> 9          destination unreachable
            (0x15, 4, 0, 11),     # 4   jeq #11 -> 9         time exceeded
            (0x15, 3, 0, 12),     # 5   jeq #12 -> 9         parameter problem
            (0x06, 0, 0, drop),   # 6   ret #0               any other type
            (0x48, 0, 0, 4),      # 7   ldh [x+4]            identifier
            (0x15, 11, 12, ident),  # 8 jeq #ident -> 20 / 21
            (0x50, 0, 0, 17),     # 9   ldb [x+17]           quoted IP protocol
            (0x15, 0, 10, 1),     # 10  jeq #1 / -> 21       ICMP
            (0x50, 0, 0, 8),      # 11  ldb [x+8]            quoted version and IHL
            (0x54, 0, 0, 0x0F),   # 12  and #0xf
            (0x64, 0, 0, 2),      # 13  lsh #2               quoted IP header length
            (0x0C, 0, 0, 0),      # 14  add x
            (0x07, 0, 0, 0),      # 15  tax                  X = quoted ICMP header - 8
            (0x50, 0, 0, 8),      # 16  ldb [x+8]            quoted ICMP type
            (0x15, 0, 3, 8),      # 17  jeq #8 / -> 21       echo request
            (0x48, 0, 0, 12),     # 18  ldh [x+12]           quoted identifier
            (0x15, 0, 1, ident),  # 19  jeq #ident / -> 21
            (0x06, 0, 0, ok),     # 20  ret #0x40000         accept
            (0x06, 0, 0, drop),   # 21  ret #0               drop
        ]
    return [                      # pc  instruction          meaning
        (0x30, 0, 0, 0),          # 0   ldb [0]              ICMPv6 type
        (0x15, 4, 0, 129),        # 1   jeq #129 -> 6        echo reply
        (0x15, 5, 0, 1),          # 2   jeq #1 -> 8          destination unreachable
        (0x15, 4, 0, 2),          # 3   jeq #2 -> 8          packet too big
        (0x15, 3, 0, 3),          # 4   jeq #3 -> 8          time exceeded
        (0x15, 2, 9, 4),          # 5   jeq #4 -> 8 / 15     parameter problem
        (0x28, 0, 0, 4),          # 6   ldh [4]              identifier
        (0x15, 6, 7, ident),      # 7   jeq #ident -> 14 / 15
        (0x30, 0, 0, 14),         # 8   ldb [14]             quoted next header: our requests
        (0x15, 0, 5, 58),         # 9   jeq #58 / -> 15      have no extension headers
        (0x30, 0, 0, 48),         # 10  ldb [48]             quoted ICMPv6 type
        (0x15, 0, 3, 128),        # 11  jeq #128 / -> 15     echo request
        (0x28, 0, 0, 52),         # 12  ldh [52]             quoted identifier
        (0x15, 0, 1, ident),      # 13  jeq #ident / -> 15
        (0x06, 0, 0, ok),         # 14  ret #0x40000         accept
        (0x06, 0, 0, drop),       # 15  ret #0               drop
    ]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program, so the buffer may go afterwards."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in program))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _without_options(packet: bytes) -> bytes:
    """`packet` (IPv4) with IP options cut out of the outer and the quoted IP header:
    icmplib's parser reads at fixed offsets for 20-byte headers."""
    if packet[0] & 0x0F != 5:
        packet = packet[:20] + packet[(packet[0] & 0x0F) * 4:]
    if len(packet) > 28 and packet[20] != 0 and packet[28] & 0x0F != 5:
        packet = packet[:48] + packet[28 + (packet[28] & 0x0F) * 4:]
    return packet


def _new_ident() -> int:
    """A 16-bit identifier no open EchoSocket of this process uses, from icmplib's own
    counter (so icmplib's ping functions in this process draw distinct ones too)."""
    for _ in range(0x10000):
        ident = icmplib.utils.unique_identifier()
        if ident not in _live:
            _live.add(ident)
            return ident
    raise OSError(errno.EADDRINUSE, "every ICMP echo identifier is in use")


class EchoSocket:
    """One raw ICMP(v6) socket bound to `source` (and `device`), any number of requests in
    flight; `on_answer` gets the first answer to each request sent in the last `keep`
    seconds.  Needs CAP_NET_RAW; the constructor raises OSError when it cannot open."""

    def __init__(self, source: str, on_answer: Callable[[Answer], None],
                 device: str | None = None, keep: float = 10.0) -> None:
        self.source = source
        self.device = device
        self._on_answer = on_answer
        self._keep = keep
        self._v6 = ":" in source
        self._family = socket.AF_INET6 if self._v6 else socket.AF_INET
        self._reply, self._errors = _V6 if self._v6 else _V4
        self._loop = asyncio.get_running_loop()
        socket.inet_pton(self._family, source)  # OSError unless a literal (icmplib: "" = any)
        try:
            self._icmp = (icmplib.ICMPv6Socket if self._v6 else icmplib.ICMPv4Socket)(
                address=source, privileged=True)
        except icmplib.ICMPLibError as e:  # icmplib keeps the OSError only as the context
            cause = e.__context__
            code = cause.errno if isinstance(cause, OSError) else None
            raise OSError(code, f"echo socket on {source}: {e}") from e
        self._ident = _new_ident()
        try:
            sock = self._icmp.sock
            if device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            blocked = [0xFFFFFFFF] * (8 if self._v6 else 1)
            for t in (self._reply, *self._errors):
                blocked[t >> 5] &= ~(1 << (t & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6 if self._v6 else _SOL_RAW, _ICMP_FILTER,
                            struct.pack(f"={len(blocked)}I", *blocked))
            attach_filter(sock, bpf_program(6 if self._v6 else 4, self._ident))
            self._icmp.blocking = False
            while True:  # drop what was queued before the filters were in place
                sock.recv(1024)
        except BlockingIOError:
            pass
        except BaseException:
            self._icmp.close()
            _live.discard(self._ident)
            raise
        self._sock = sock
        if not self._v6:   # set once, not by icmplib's send() on every request
            self._icmp._set_ttl(TTL)
        # the kernel stamps each reply on receipt: an RTT without the time the reply
        # waited for a busy loop (64 WANs' rounds start in one burst)
        self._stamped = hasattr(sock, "recvmsg")
        if self._stamped:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                self._stamped = False
        self._seq = 0
        # seq -> (address, key, sent at (loop time), sent at (wall clock))
        self._pending: dict[int, tuple[str, bytes, float, float]] = {}
        self._loop.add_reader(sock.fileno(), self._readable)

    @property
    def ident(self) -> int:
        """This socket's echo identifier (distinct among the process's open sockets)."""
        return self._ident

    def send(self, address: str) -> int | None:
        """Send one echo request to `address`; its sequence number, or None when the send
        failed (logged at debug).  `address` must be a literal (no name lookups here)."""
        if self._icmp.is_closed:
            return None
        try:
            key = socket.inet_pton(self._family, address.partition("%")[0])
        except OSError as e:
            log.debug("ping %s from %s: not an address: %s", address, self.source, e)
            return None
        now = self._loop.time()
        pending = self._pending
        while pending:  # in send order (see below): drop the expired ones from the front
            first = next(iter(pending))
            if pending[first][2] >= now - self._keep:
                break
            del pending[first]
        seq = self._seq = (self._seq + 1) & 0xFFFF
        wall = time.time()  # before the send: the reply's stamp can come before it returns
        try:
            if self._v6:   # icmplib resolves a scope (fe80::1%wan); the kernel checksums
                self._icmp.send(icmplib.ICMPRequest(address, self._ident, seq, payload=PAYLOAD))
            else:          # icmplib's packet, without a lookup and two setsockopt per request
                self._sock.sendto(self._icmp._create_packet(self._ident, seq, PAYLOAD),
                                  (address, 0))
        except (icmplib.ICMPLibError, OSError) as e:  # no route, filtered, buffer full, ...
            log.debug("ping %s from %s: send failed: %s", address, self.source, e)
            return None
        pending.pop(seq, None)  # a wrapped sequence goes to the end: the dict stays in order
        pending[seq] = (address, key, now, wall)  # at most 65536 entries: the seq space
        return seq

    def _readable(self) -> None:
        """Read what is queued (up to BATCH packets); never raises into the loop."""
        for _ in range(BATCH):
            if self._icmp.is_closed:  # on_answer may close us
                return
            stamp = None
            try:
                if self._stamped:
                    packet, ancillary, _, peer = self._sock.recvmsg(1024, _ANCILLARY)
                    for level, kind, data in ancillary:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = _TIMESPEC.unpack_from(data)
                            stamp = sec + nsec * 1e-9
                else:
                    packet, peer = self._sock.recvfrom(1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # a pending socket error, reported once; data may follow
                log.debug("echo socket %s: %s", self.source, e)
                continue
            try:
                self._handle(packet, peer[0], self._loop.time(), stamp)
            except Exception:  # noqa: BLE001 - a bad packet or callback must not stop reading
                log.exception("echo socket %s: answer handling failed", self.source)

    def _handle(self, packet: bytes, peer: str, now: float, stamp: float | None = None) -> None:
        """One packet from `peer` read at loop time `now`; `stamp`: the kernel's wall-clock
        time of its receipt (None: not known)."""
        if not self._v6:
            packet = _without_options(packet)
        reply = self._icmp._parse_reply(packet, peer, now)
        if reply is None or reply.id != self._ident:  # the BPF filter already checked the id
            return
        if reply.type == self._reply:
            error = None
        elif reply.type in self._errors:
            error = reply.type
        else:
            return
        seq = reply.sequence
        entry = self._pending.get(seq)
        if entry is None:  # unknown, pruned or already answered
            return
        address, key, sent, wall = entry
        if now - sent > self._keep:
            return
        if error is None and socket.inet_pton(self._family, peer.partition("%")[0]) != key:
            return  # an echo reply counts only from the address the request went to
        del self._pending[seq]
        age = max(0.0, now - sent)
        # never more than the loop saw: a wall-clock step must not make an RTT up
        rtt = age if stamp is None else min(age, max(0.0, stamp - wall))
        self._on_answer(Answer(address, seq, rtt, error, age))

    def close(self) -> None:
        """Stop reading and close the socket; idempotent.  Nothing is reported afterwards."""
        if self._icmp.is_closed:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._icmp.close()
        _live.discard(self._ident)
        self._pending.clear()
'''


def baseline() -> types.ModuleType:
    """BASELINE_74519B9 as a module (it uses icmplib's private _parse_reply and
    _create_packet: it runs with icmplib 3 only)."""
    mod = types.ModuleType("icmpecho_74519b9")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(BASELINE_74519B9, "icmpecho@74519b9", "exec"), mod.__dict__)  # noqa: S102
    return mod


# --- (b) icmplib's AsyncSocket reader ----------------------------------------------------


class AsyncSocketEcho(icmpecho.EchoSocket):
    """ecmpd.icmpecho.EchoSocket with icmplib's AsyncSocket reader task instead of the
    loop's reader.  AsyncSocket's replies have no source (None), so echo replies are not
    checked against the address the request went to."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._loop.remove_reader(self._fd)
        self._async = icmplib.AsyncSocket(self._icmp)
        self._task = self._loop.create_task(self._reader())

    async def _reader(self) -> None:
        while True:
            try:
                reply = await self._async.receive(None, 1.0)
            except icmplib.TimeoutExceeded:
                continue
            except icmplib.SocketUnavailableError:
                return
            except icmplib.ICMPLibError:
                continue
            try:
                self._handle(reply, self._loop.time())
            except Exception:  # noqa: BLE001
                pass

    def _from(self, source: str | None, key: bytes) -> bool:
        return True  # AsyncSocket does not say

    def close(self) -> None:
        """The socket may close only once the task has ended: receive()'s `finally`
        removes the reader of icmplib's socket, which must still be there."""
        if self._icmp.is_closed or self._task.done() and self._task.cancelled():
            return
        self._pending.clear()
        self._task.cancel()
        self._task.add_done_callback(lambda _: self._icmp.close())

    async def aclose(self) -> None:
        self.close()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


# --- the workloads -----------------------------------------------------------------------


def cpu() -> float:
    return time.process_time()


class Collector:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.want = 0
        self.done = asyncio.Event()

    def __call__(self, a: Any) -> None:
        self.answers.append(a)
        if len(self.answers) >= self.want:
            self.done.set()

    async def wait(self, want: int, timeout: float = 2.0) -> None:
        self.want = want
        if len(self.answers) < want:
            self.done.clear()
            try:
                await asyncio.wait_for(self.done.wait(), timeout)
            except TimeoutError:
                pass


Factory = Callable[[str, Callable[[Any], None]], Any]


async def close(s: Any) -> None:
    if isinstance(s, AsyncSocketEcho):
        await s.aclose()
    else:
        s.close()


async def burst(make: Factory, source: str, target: str, replies: int) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    await asyncio.sleep(0.05)
    sent = lost = 0
    in_send = 0.0
    c0 = cpu()
    while len(got.answers) < replies:
        t0 = cpu()
        for _ in range(BURST):
            sent += s.send(target) is not None
        in_send += cpu() - t0
        await got.wait(sent)
        lost += sent - len(got.answers)
        sent = len(got.answers)
    total = cpu() - c0
    n = len(got.answers)
    await close(s)
    return {"cpu": total / n * 10000, "reader": (total - in_send) / n * 10000,
            "send_us": in_send / (n + lost) * 1e6, "lost": lost}


async def single(make: Factory, source: str, target: str) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    await asyncio.sleep(0.05)
    for i in range(SINGLE):
        s.send(target)
        await got.wait(i + 1)
    await close(s)
    added = sorted((a.age - a.rtt) * 1e6 for a in got.answers)
    return {"added_p50": statistics.median(added),
            "added_p99": added[int(len(added) * 0.99) - 1], "answers": len(got.answers)}


FLOODER = r"""
import socket, struct, sys, time

def checksum(data):
    data += b"\0" * (len(data) & 1)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF

def icmp(kind, code, rest, v6=False):  # the kernel sums ICMPv6
    head = struct.pack("!BBH", kind, code, 0)
    return struct.pack("!BBH", kind, code, 0 if v6 else checksum(head + rest)) + rest

def echo(kind, ident, seq, v6=False):
    return icmp(kind, 0, struct.pack("!HH", ident, seq) + bytes(56), v6)

def ip4(src, dst, payload):
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 1, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload

def ip6(src, dst, payload):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 58, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload

ident, seconds, v6 = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "6"
wan, me = sys.argv[4], sys.argv[5]  # the router's address, ours
other, packets = ident ^ 0x8000, []
for seq in range(1, 257):  # a foreign identifier; the sequences are the ones we use
    if v6:
        packets.append(echo(129, other, seq, v6=True))
        quoted = ip6(wan, "fd00:254::9", echo(128, other, seq, v6=True))
        packets.append(icmp(1, 3, b"\0" * 4 + quoted, True))
    else:
        packets.append(ip4(me, wan, echo(0, other, seq)))
        quoted = ip4(wan, "192.0.2.9", echo(8, other, seq)[:8])
        packets.append(ip4(me, wan, icmp(3, 1, b"\0" * 4 + quoted)))
if v6:
    tx, to = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6), (wan, 0)
else:
    tx, to = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW), (wan, 0)
print("ready", flush=True)
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    for p in packets:
        try:
            tx.sendto(p, to)
        except OSError:
            pass
    sent += len(packets)
print(sent / (time.monotonic() - start), flush=True)
"""


async def flood(make: Factory, source: str, target: str, target_ns: str,
                detach: bool = False) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    if detach:
        s._sock.setsockopt(1, 27, 0)  # SO_DETACH_FILTER: the control
    v = "6" if ":" in source else "4"
    flooder = subprocess.Popen(
        ["ip", "netns", "exec", target_ns, sys.executable, "-c", FLOODER, str(s.ident),
         str(FLOOD_SECONDS + 0.5), v, source, target], stdout=subprocess.PIPE, text=True)
    assert flooder.stdout is not None and flooder.stdout.readline().strip() == "ready"
    await asyncio.sleep(0.25)
    sent, c0, w0 = 0, cpu(), time.monotonic()
    while time.monotonic() - w0 < FLOOD_SECONDS:
        sent += (s.send(target) is not None) + (s.send(target) is not None)
        await asyncio.sleep(0.1)
    core = (cpu() - c0) / (time.monotonic() - w0)
    await got.wait(sent, 1.0)
    rate = float(flooder.communicate()[0])
    await close(s)
    rtts = sorted(a.rtt for a in got.answers)
    return {"core": core, "sent": sent, "answered": len(got.answers), "flood_pps": rate,
            "max_rtt_ms": rtts[-1] * 1e3 if rtts else float("nan")}


async def inside(args: argparse.Namespace) -> dict[str, Any]:
    old = baseline()
    readers: dict[str, Factory] = {
        "74519b9": lambda src, cb: old.EchoSocket(src, cb, device=DEVICE),
        "AsyncSocket": lambda src, cb: AsyncSocketEcho(src, cb, device=DEVICE),
        "receive": lambda src, cb: icmpecho.EchoSocket(src, cb, device=DEVICE),
    }
    families = {"IPv4": (args.wan4, args.gw4), "IPv6": (WAN6, TGT6)}
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.reps):  # interleaved: every reader in every repetition
        for fam, (src, dst) in families.items():
            for name, make in readers.items():
                r = await burst(make, src, dst, args.replies)
                r.update(await single(make, src, dst))
                rows.setdefault(f"{fam} {name}", []).append(r)
    # link-local with scope, the shipped reader only (a check that it works)
    ll = await single(readers["receive"], WAN6, LL6)
    floods: dict[str, dict[str, float]] = {}
    for fam, (src, dst) in families.items():
        for name, make in readers.items():
            floods[f"{fam} {name}"] = await flood(make, src, dst, args.target_ns)
        floods[f"{fam} receive, no filter"] = await flood(readers["receive"], src, dst,
                                                          args.target_ns, detach=True)
    return {"rows": {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
                     for k, v in rows.items()}, "link_local": ll, "floods": floods}


# --- the namespaces, and the table ---------------------------------------------------------


def build(lab: Any) -> tuple[str, str, str, str]:
    """The lab's router and ISP with IPv6 on the WAN: (router ns, ISP ns, router's IPv4
    address on the WAN, the ISP's)."""
    from lab import netns
    from lab.wait import until
    wan = lab.spec.wans[0]
    assert wan.name == DEVICE
    rtr, isp = lab.ns_router, lab.ns_isp(wan.name)
    netns.ip_batch(rtr, [f"addr add {WAN6}/64 dev {DEVICE} nodad",
                         f"addr add fe80::1/64 dev {DEVICE} nodad"])
    netns.ip_batch(isp, [f"addr add {TGT6}/64 dev cust nodad", "addr add fe80::2/64 dev cust nodad"])
    netns.sysctl(isp, {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0})
    until(lambda: netns.run_in(rtr, "ping", "-c1", "-W0.2", TGT6, check=False).returncode == 0,
          15, "IPv6 on the WAN", interval=0.1)
    return rtr, isp, str(wan.interface.ip), wan.gateway


def table(out: dict[str, Any]) -> str:
    lines = ["| reader | CPU s / 10k replies | of which reader | send us/request | "
             "RTT added p50 us | p99 us |", "|---|---|---|---|---|---|"]
    rows = out["rows"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['cpu']:.3f} | {r['reader']:.3f} | {r['send_us']:.1f} | "
                     f"{r['added_p50']:.0f} | {r['added_p99']:.0f} |")
    lines.append("")
    lines.append("Ratios to 74519b9 (CPU per reply in all / reader only / RTT added p50):")
    for fam in ("IPv4", "IPv6"):
        base = rows[f"{fam} 74519b9"]
        for name in ("AsyncSocket", "receive"):
            r = rows[f"{fam} {name}"]
            lines.append(f"  {fam} {name}: {r['cpu'] / base['cpu']:.2f}x / "
                         f"{r['reader'] / base['reader']:.2f}x / "
                         f"{r['added_p50'] / base['added_p50']:.2f}x")
    ll = out["link_local"]
    lines += ["", f"link-local {LL6} (receive): {ll['answers']}/{SINGLE} answered, "
                  f"RTT added p50 {ll['added_p50']:.0f} us", "",
              "| flood (20 probes/s, 3 s) | share of a core | answered/sent | flood pps | "
              "max RTT ms |", "|---|---|---|---|---|"]
    for k, f in out["floods"].items():
        lines.append(f"| {k} | {f['core']:.3f} | {f['answered']}/{f['sent']} | "
                     f"{f['flood_pps']:.0f} | {f['max_rtt_ms']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--replies", type=int, default=10000)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target-ns", help=argparse.SUPPRESS)
    ap.add_argument("--wan4", help=argparse.SUPPRESS)
    ap.add_argument("--gw4", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        print(json.dumps(asyncio.run(inside(args))))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, raw sockets)")
    from lab import Lab, make_spec, netns
    with Lab(make_spec(1), prefix=netns.random_prefix("eer")) as lab:
        p, t, wan4, gw4 = build(lab)
        r = subprocess.run(netns.exec_argv(p, sys.executable, "-m", "bench.echo_reader",
                                           "--inside", "--target-ns", t, "--wan4", wan4,
                                           "--gw4", gw4, "--reps", str(args.reps),
                                           "--replies", str(args.replies)),
                           cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode:
        sys.exit(r.stderr)
    print(table(json.loads(r.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
