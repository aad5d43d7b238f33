"""ICMP echo on icmplib's persistent socket layer, one socket per WAN, filtered in the kernel.

`EchoSocket` keeps one privileged `icmplib.ICMPv4Socket` / `ICMPv6Socket` bound to a WAN's
address (and device) and reports every answer to one of its requests through a callback,
however late, up to `keep` seconds; deciding what is late is the caller's job.

Why the kernel filters: a raw ICMP socket receives every ICMP packet to its address, so
an internet host flooding echo replies or unreachables at a WAN address would wake
Python up for each one (about half a core and lost probes at 150k packets/s).  A classic
BPF program (`bpf_program`) lets through only echo replies carrying this socket's
identifier and ICMP errors quoting an echo request with it; ICMP_FILTER drops the other
types even earlier.

Why the reader calls `recvfrom` and icmplib's `_parse_reply` rather than
`ICMPSocket.receive(None, timeout)`: `receive` reads the packet first and then raises
TimeoutExceeded if its wall-clock budget is spent, so `timeout=0` loses every reply and
any small timeout loses those read after a preemption, while the final, empty call
blocks the event loop for at least a millisecond (poll() rounds up).  `_parse_reply` is
icmplib's own parser (private, hence the `<4` pin); it assumes 20-byte IPv4 headers, so
`_without_options` cuts IP options out first.

IPv4 requests are icmplib's packets (`_create_packet`) sent with ``sendto`` on its
socket: its ``send`` adds a ``getaddrinfo`` and two ``setsockopt`` calls per request for
a destination and TTL that never change.  The codec stays icmplib's (measured: building
a request 7.1 us and parsing a reply 2.2 us, against 0.8 us for both by hand; at 64 WANs
x 2 targets that is about 1 % of a core, the price of not keeping a codec of our own).
"""

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
