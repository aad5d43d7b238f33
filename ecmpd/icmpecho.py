"""ICMP echo through one persistent raw socket: many requests in flight, few syscalls.

`EchoSocket` is bound to one source address (a WAN's); every request gets the socket's
identifier and the next sequence number, replies are matched to requests by both, and one
timer per socket (armed for the earliest deadline) resolves the unanswered ones as lost.
`IcmpPinger` keeps one EchoSocket for a Prober and reopens it when the source changes.

This is a minimal echo implementation of its own, not icmplib's socket layer: icmplib's
``AsyncSocket.receive()`` adds and removes the reader per call and discards every packet
but the one reply it waits for, so one socket cannot serve concurrent requests, and
``ICMPSocket.send()`` costs a getaddrinfo, two setsockopt calls and a random payload with
a pure-Python checksum per packet.  Here a request costs one sendto and a reply one recv.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

PAYLOAD = b"ecmpd probe " + bytes(range(44))
"""56 bytes of echo payload, as ping(8) sends."""
# per family: socket family, protocol, echo request, echo reply, error types quoting a request
_V4 = (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0, frozenset({3, 4, 11, 12}))
_V6 = (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129, frozenset({1, 2, 3, 4}))
_ICMP_FILTER = 1  # SOL_RAW / IPPROTO_ICMPV6 option: bit set = type not delivered
_ids = itertools.count(os.getpid())  # echo identifiers, as icmplib and ping(8) pick them


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo_request(family: int, ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    """An ICMP (4) or ICMPv6 (6) echo request; the kernel fills in ICMPv6 checksums."""
    kind = (_V4 if family == 4 else _V6)[2]
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if family == 6:
        return head + payload
    return struct.pack("!BBHHH", kind, 0, checksum(head + payload), ident, seq) + payload


def parse_reply(family: int, packet: bytes) -> tuple[int, int, int] | None:
    """(ICMP type, identifier, sequence) of an echo reply, or of an ICMP error quoting an
    echo request (the request's identifier and sequence); None for anything else.

    IPv4 packets start with the IP header (raw sockets), IPv6 ones with the ICMPv6 header.
    """
    _, _, request, reply, errors = _V4 if family == 4 else _V6
    try:
        icmp = packet[(packet[0] & 0x0F) * 4:] if family == 4 else packet
        kind = icmp[0]
        if kind == reply:
            return (kind, *struct.unpack_from("!HH", icmp, 4))
        if kind not in errors:
            return None
        quoted = icmp[8:]  # the offending packet's IP header and first 8 bytes
        if family == 4:
            if quoted[9] != socket.IPPROTO_ICMP:
                return None
            inner = quoted[(quoted[0] & 0x0F) * 4:]
        else:
            if quoted[6] != socket.IPPROTO_ICMPV6:
                return None
            inner = quoted[40:]
        if inner[0] != request:
            return None
        return (kind, *struct.unpack_from("!HH", inner, 4))
    except (IndexError, struct.error):
        return None


class EchoSocket:
    """One raw ICMP socket bound to `source`, with any number of requests in flight.

    `ping()` returns a Future resolved with the reply's RTT, or None when the send
    failed, an ICMP error answered or `timeout` passed; it never raises.  Needs
    CAP_NET_RAW; the constructor raises OSError (e.g. `source` is not a local address).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.family = 6 if ":" in source else 4
        fam, proto, _, self._reply, errors = _V4 if self.family == 4 else _V6
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(fam, socket.SOCK_RAW, proto)
        try:
            self._sock.setblocking(False)
            self._sock.bind((source, 0))
            blocked = [0xFFFFFFFF] * (1 if self.family == 4 else 8)
            for t in (self._reply, *errors):  # the kernel drops everything else for us
                blocked[t >> 5] &= ~(1 << (t & 31))
            level = 255 if self.family == 4 else socket.IPPROTO_ICMPV6  # SOL_RAW
            self._sock.setsockopt(level, _ICMP_FILTER, struct.pack(f"={len(blocked)}I", *blocked))
        except OSError:
            self._sock.close()
            raise
        self._ident = next(_ids) & 0xFFFF
        self._seq = 0
        self._kind = _V4[2] if self.family == 4 else _V6[2]
        # one's complement sum of a request with sequence 0 and checksum 0: a request's
        # checksum is then this sum plus its sequence, folded and inverted
        self._partial = ~checksum(struct.pack("!BBHHH", self._kind, 0, 0, self._ident, 0)
                                  + PAYLOAD) & 0xFFFF
        # sequence -> (future, sent at, deadline)
        self._pending: dict[int, tuple[asyncio.Future[float | None], float, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def ping(self, address: str, timeout: float) -> asyncio.Future[float | None]:
        """Send one echo request to `address`; see the class."""
        fut: asyncio.Future[float | None] = self._loop.create_future()
        if self._sock.fileno() < 0:
            fut.set_result(None)
            return fut
        self._seq = seq = (self._seq + 1) & 0xFFFF
        try:
            self._sock.sendto(self.packet(seq), (address, 0))
        except OSError as e:  # no route, filtered, buffer full, source gone, ...
            log.debug("ping %s from %s: send failed: %s", address, self.source, e)
            fut.set_result(None)
            return fut
        now = self._loop.time()
        self._pending[seq] = (fut, now, now + timeout)
        if self._timer is None or self._timer.when() > now + timeout:
            self._arm(now + timeout)
        return fut

    def packet(self, seq: int) -> bytes:
        """The echo request with sequence `seq` (as `echo_request()` makes it, faster)."""
        if self.family == 6:  # the kernel fills in ICMPv6 checksums
            return struct.pack("!BBHHH", self._kind, 0, 0, self._ident, seq) + PAYLOAD
        total = self._partial + seq
        total = (total & 0xFFFF) + (total >> 16)
        return struct.pack("!BBHHH", self._kind, 0, ~total & 0xFFFF, self._ident, seq) + PAYLOAD

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Resolve the requests past their deadline as lost; re-arm for the next one."""
        self._timer = None
        now = self._loop.time()
        for seq, (fut, _, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[seq]
                if not fut.done():
                    fut.set_result(None)
        if self._pending:
            self._arm(min(d for _, _, d in self._pending.values()))

    def _readable(self) -> None:
        """One packet per call: the loop calls again while more are queued."""
        try:
            packet = self._sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # a pending socket error (reported once); data may follow
            log.debug("echo socket %s: %s", self.source, e)
            return
        parsed = parse_reply(self.family, packet)
        if parsed is None or parsed[1] != self._ident:
            return
        entry = self._pending.pop(parsed[2], None)
        if not self._pending and self._timer is not None:
            self._timer.cancel()  # idle: no wake-up for nothing
            self._timer = None
        if entry is None or entry[0].done():
            return
        fut, sent, _ = entry
        if parsed[0] == self._reply:
            fut.set_result(max(0.0, self._loop.time() - sent))
        else:  # an error about our request: lost, without waiting for the timeout
            log.debug("ping from %s: ICMP error type %d", self.source, parsed[0])
            fut.set_result(None)

    def close(self) -> None:
        """Stop reading, close the socket; requests in flight resolve as lost."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, _, _ in self._pending.values():
            if not fut.done():
                fut.set_result(None)
        self._pending.clear()


class IcmpPinger:
    """The default PingFn of a Prober: one `EchoSocket`, reopened when `source` changes.

    Call `close()` when done.  `factory` makes the socket (tests replace it).
    """

    def __init__(self, factory: Callable[[str], EchoSocket] = EchoSocket) -> None:
        self._factory = factory
        self._sock: EchoSocket | None = None

    def __call__(self, address: str, source: str, timeout: float) -> asyncio.Future[float | None]:
        if self._sock is None or self._sock.source != source:
            self.close()
            try:
                self._sock = self._factory(source)
            except OSError as e:
                log.debug("ping %s from %s: cannot open socket: %s", address, source, e)
                fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
                fut.set_result(None)
                return fut
        return self._sock.ping(address, timeout)

    def close(self) -> None:
        """Close the socket (a later call opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def icmp_ping(address: str, source: str, timeout: float) -> float | None:
    """One echo request on a socket of its own (a PingFn); every failure is None."""
    try:
        sock = EchoSocket(source)
    except OSError as e:
        log.debug("ping %s from %s: cannot open socket: %s", address, source, e)
        return None
    try:
        return await sock.ping(address, timeout)
    finally:
        sock.close()
