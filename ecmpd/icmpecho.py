"""ICMP echo on icmplib's public socket API, one socket per WAN, filtered in the kernel.

`EchoSocket` keeps one privileged `icmplib.ICMPv4Socket` / `ICMPv6Socket` bound to a WAN's
address (and device) and reports every answer to one of its requests through a callback,
however late, up to `keep` seconds; deciding what is late is the caller's job.  Both
families work alike; an IPv6 target may be link-local with its scope (``fe80::1%wan1``):
icmplib's ``send`` resolves the scope, the socket is bound to the device anyway, and a
reply's source is compared without it.

Only icmplib's public names are used: ``ICMPv4Socket`` / ``ICMPv6Socket`` (``send``,
``receive``, ``blocking``, ``is_closed``, ``close`` and the ``sock`` property, the raw
socket, which the docs allow "if the feature you want is not yet implemented": the
device binding, the two filters and the receive stamp below are socket options no
icmplib version offers), ``ICMPRequest`` (``time``), ``ICMPReply`` and the exceptions.

Why the kernel filters: a raw ICMP socket receives every ICMP packet to its address, so
an internet host flooding echo replies or unreachables at a WAN address would wake
Python up for each one (about half a core and lost probes at 150k packets/s).  A classic
BPF program (`bpf_program`) lets through only echo replies carrying this socket's
identifier and ICMP errors quoting an echo request with it; ICMP_FILTER drops the other
types even earlier.  The program also lets through only packets icmplib's parser reads
right: it reads at fixed offsets (20-byte IPv4 headers) and needs the identifier and the
sequence, so IPv4 packets with IP options (outside or in the quoted header; our requests
carry none, and neither do the replies of hosts we probe) and truncated ones stay in the
kernel.  Hence also every packet that reaches the reader is one ``receive`` returns.

Why not icmplib's ``AsyncSocket`` (``await receive(None, timeout)`` in one reader task,
the documented way to read from a loop): (1) its replies have no source address
(``ICMPReply.source`` is None: it reads with ``loop.sock_recv``), so an echo reply could
not be checked to come from the address the request went to; (2) measured in
bench/echo_reader.py (veth pair, 3 interleaved runs of 10 000 replies per family), its
reading costs 7.5-8.6x the CPU per reply of the reader before it (74519b9: recvmsg and
the private parser) and 2.7-4.5x in all with sending, and adds 2.5-3.4x the latency
between the kernel's receipt and the callback (p50 ~125 us against 35-53 us): a
``wait_for`` task plus a reader added and removed per reply; (3) like the blocking
``receive`` it drops a reply read after its own wall-clock deadline; (4) its
``finally`` removes the reader of icmplib's socket, so the socket cannot be closed
before the cancelled task has run: ``close`` could not be synchronous.  So the reader
is the loop's: ``loop.add_reader`` on the raw socket and, each time it is readable, one
blocking ``ICMPSocket.receive(None, READ_TIMEOUT)`` (1.9-2.3x the old reader's CPU per
reply, ~25 us; 1.4-1.9x in all; p50 65-100 us added).  The socket holds a packet icmplib
can parse (the filter), so ``receive`` returns at once; READ_TIMEOUT only bounds what a
surprise could cost (the loop blocked that long) and is long enough that a reply is not
lost to ``receive``'s "read after the deadline" check (it would take a preemption of
that length between two of its statements).  ``receive`` leaves the socket in timeout
mode, in which ``send`` would wait for room in a full send buffer: `send` makes it
non-blocking again first.  The filter keeps a flood out as before: at 75-135k foreign
packets/s the process uses 0.5 % of a core and answers every probe (without the filter:
25-97 % and up to 87 % of the probes lost).

The RTT is measured from icmplib's ``ICMPRequest.time`` (the wall clock just before
``sendto``) to the kernel's receipt of the reply: its receive stamp of the last packet
read on the socket (SIOCGSTAMPNS, asked right after ``receive``), so it leaves out the
time the reply waited for a busy loop (64 WANs' rounds start in one burst).  Without a
stamp it is icmplib's ``ICMPReply.time`` (the wall clock just after the read).  It is
never more than `Answer.age`, measured on the loop's monotonic clock from the send to
the read: a wall-clock step does not make an RTT up.

Requests are icmplib's (``send(ICMPRequest(...))``), on icmplib's socket classes with
three of their hooks overridden (`_ICMPv4Socket`, `_ICMPv6Socket`): icmplib sets the TTL
and the traffic class by ``setsockopt`` before every request and sums every request in
Python.  The options are the same for every request of ours, so they are set when they
change (once); the IPv4 sum is the same ones'-complement sum over 16-bit words, done by
``struct`` in one call; the IPv6 one is left to the kernel, which writes the checksum of
every packet sent on a raw ICMPv6 socket whatever the field held (RFC 3542 3.1; Linux
subtracts the field and stores its own).  Measured per request on loopback (one
``timeit`` of 20 000): icmplib's ``send`` 159 us, of which the Python sum 31 us and the
two ``setsockopt`` 11 us (``getaddrinfo`` on the literal, 40 us, stays: it resolves an
IPv6 scope).  At the default interval, 3 WANs x 2 targets per IP version send 30-60
requests a second.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import icmplib

log = logging.getLogger(__name__)

PAYLOAD = b"ecmpd probe " + bytes(range(44))
"""56 bytes of echo payload, as ping(8) sends; fixed, so no random bytes per request."""
READ_TIMEOUT = 0.05
"""``receive``'s timeout when the socket is readable (see the module docstring)."""
TTL = 64
"""The TTL (hop limit) of requests."""
# per family: echo reply type, error types that quote the offending packet
_V4 = (0, frozenset({3, 11, 12}))  # unreachable, time exceeded, parameter problem
_V6 = (129, frozenset({1, 2, 3, 4}))  # unreachable, too big, time exceeded, parameter problem
_SOL_RAW, _ICMP_FILTER = 255, 1  # ICMP_FILTER (IPv4), ICMP6_FILTER (IPv6): bit set = dropped
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; the socket module does not define it
SIOCGSTAMPNS = 0x8907  # <asm-generic/sockios.h>: the receive stamp of the last packet read
_TIMESPEC = struct.Struct("@qq")
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
    ICMP errors quoting an echo request with it, each with the identifier and sequence
    where icmplib's parser reads them.  An IPv4 raw socket's packet starts with the IP
    header (only 20-byte ones pass, outside and quoted); an IPv6 one with the ICMPv6
    header.  Loads beyond the packet's end drop it, so truncated packets never pass."""
    ok, drop = 0x40000, 0  # accept: the whole packet (up to 256 KiB)
    if family == 4:
        return [                  # pc  instruction          meaning
            (0x30, 0, 0, 0),      # 0   ldb [0]              version and IHL
            (0x15, 0, 19, 0x45),  # 1   jeq #0x45 / -> 21    IPv4 without options
            (0x30, 0, 0, 20),     # 2   ldb [20]             ICMP type
            (0x15, 3, 0, 0),      # 3   jeq #0 -> 7          echo reply
            (0x15, 6, 0, 3),      # 4   jeq #3 -> 11         destination unreachable
            (0x15, 5, 0, 11),     # 5   jeq #11 -> 11        time exceeded
            (0x15, 4, 14, 12),    # 6   jeq #12 -> 11 / 21   parameter problem
            (0x28, 0, 0, 24),     # 7   ldh [24]             identifier
            (0x15, 0, 12, ident),  # 8  jeq #ident / -> 21
            (0x28, 0, 0, 26),     # 9   ldh [26]             sequence (there)
            (0x06, 0, 0, ok),     # 10  ret #0x40000         accept
            (0x30, 0, 0, 28),     # 11  ldb [28]             quoted version and IHL
            (0x15, 0, 8, 0x45),   # 12  jeq #0x45 / -> 21    without options
            (0x30, 0, 0, 37),     # 13  ldb [37]             quoted IP protocol
            (0x15, 0, 6, 1),      # 14  jeq #1 / -> 21       ICMP
            (0x30, 0, 0, 48),     # 15  ldb [48]             quoted ICMP type
            (0x15, 0, 4, 8),      # 16  jeq #8 / -> 21       echo request
            (0x28, 0, 0, 52),     # 17  ldh [52]             quoted identifier
            (0x15, 0, 2, ident),  # 18  jeq #ident / -> 21
            (0x28, 0, 0, 54),     # 19  ldh [54]             quoted sequence (there)
            (0x06, 0, 0, ok),     # 20  ret #0x40000         accept
            (0x06, 0, 0, drop),   # 21  ret #0               drop
        ]
    return [                      # pc  instruction          meaning
        (0x30, 0, 0, 0),          # 0   ldb [0]              ICMPv6 type
        (0x15, 4, 0, 129),        # 1   jeq #129 -> 6        echo reply
        (0x15, 7, 0, 1),          # 2   jeq #1 -> 10         destination unreachable
        (0x15, 6, 0, 2),          # 3   jeq #2 -> 10         packet too big
        (0x15, 5, 0, 3),          # 4   jeq #3 -> 10         time exceeded
        (0x15, 4, 12, 4),         # 5   jeq #4 -> 10 / 18    parameter problem
        (0x28, 0, 0, 4),          # 6   ldh [4]              identifier
        (0x15, 0, 10, ident),     # 7   jeq #ident / -> 18
        (0x28, 0, 0, 6),          # 8   ldh [6]              sequence (there)
        (0x06, 0, 0, ok),         # 9   ret #0x40000         accept
        (0x30, 0, 0, 14),         # 10  ldb [14]             quoted next header: our requests
        (0x15, 0, 6, 58),         # 11  jeq #58 / -> 18      have no extension headers
        (0x30, 0, 0, 48),         # 12  ldb [48]             quoted ICMPv6 type
        (0x15, 0, 4, 128),        # 13  jeq #128 / -> 18     echo request
        (0x28, 0, 0, 52),         # 14  ldh [52]             quoted identifier
        (0x15, 0, 2, ident),      # 15  jeq #ident / -> 18
        (0x28, 0, 0, 54),         # 16  ldh [54]             quoted sequence (there)
        (0x06, 0, 0, ok),         # 17  ret #0x40000         accept
        (0x06, 0, 0, drop),       # 18  ret #0               drop
    ]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program, so the buffer may go afterwards."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in program))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class _Options:
    """icmplib's per-request option hooks, applied when the value changes: every request
    of ours has the same TTL and traffic class (icmplib would ``setsockopt`` both before
    each one)."""

    _applied: dict[str, int]

    def _once(self, name: str, value: int, apply: Callable[[int], None]) -> None:
        applied = self.__dict__.setdefault("_applied", {})
        if applied.get(name) != value:
            apply(value)
            applied[name] = value

    def _set_ttl(self, ttl: int) -> None:
        self._once("ttl", ttl, super()._set_ttl)  # type: ignore[misc]

    def _set_traffic_class(self, traffic_class: int) -> None:
        self._once("tc", traffic_class, super()._set_traffic_class)  # type: ignore[misc]


class _ICMPv4Socket(_Options, icmplib.ICMPv4Socket):
    """icmplib's IPv4 socket; its checksum summed by ``struct`` (same result)."""

    def _checksum(self, data: bytes) -> int:
        return internet_checksum(data)


class _ICMPv6Socket(_Options, icmplib.ICMPv6Socket):
    """icmplib's IPv6 socket; the checksum left to the kernel (it writes it anyway)."""

    def _checksum(self, data: bytes) -> int:
        return 0


def internet_checksum(data: bytes) -> int:
    """RFC 1071's checksum of `data` (an odd length padded with a zero byte), as icmplib's
    ``_checksum`` returns it."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def receipt_stamp(fd: int) -> float | None:
    """The kernel's wall-clock receive stamp of the last packet read on socket `fd`
    (SIOCGSTAMPNS); None when it has none (the first call turns stamping on)."""
    try:
        sec, nsec = _TIMESPEC.unpack(fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(_TIMESPEC.size)))
    except OSError:
        return None
    return sec + nsec * 1e-9


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
            self._icmp = (_ICMPv6Socket if self._v6 else _ICMPv4Socket)(
                address=source, privileged=True)
        except icmplib.ICMPLibError as e:  # icmplib keeps the OSError only as the context
            cause = e.__context__
            code = cause.errno if isinstance(cause, OSError) else None
            raise OSError(code, f"echo socket on {source}: {e}") from e
        self._ident = _new_ident()
        sock = self._icmp.sock  # the raw socket: icmplib's public property
        try:
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
        self._fd = sock.fileno()
        receipt_stamp(self._fd)  # turns the kernel's receive stamps on (SOCK_TIMESTAMP)
        self._seq = 0
        # seq -> (address, key, sent at (loop time), sent at (icmplib's wall clock))
        self._pending: dict[int, tuple[str, bytes, float, float]] = {}
        self._loop.add_reader(self._fd, self._readable)

    @property
    def ident(self) -> int:
        """This socket's echo identifier (distinct among the process's open sockets)."""
        return self._ident

    def send(self, address: str) -> int | None:
        """Send one echo request to `address`; its sequence number, or None when the send
        failed (logged at debug).  `address` must be a literal (no name lookups here); an
        IPv6 one may carry a scope (``fe80::1%wan1``)."""
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
        request = icmplib.ICMPRequest(address, self._ident, seq, payload=PAYLOAD, ttl=TTL)
        try:
            if self._sock.gettimeout() != 0.0:  # receive() left a timeout: never wait here
                self._icmp.blocking = False
            self._icmp.send(request)  # icmplib resolves a scope; the kernel sums ICMPv6
        except (icmplib.ICMPLibError, OSError) as e:  # no route, filtered, buffer full, ...
            log.debug("ping %s from %s: send failed: %s", address, self.source, e)
            return None
        pending.pop(seq, None)  # a wrapped sequence goes to the end: the dict stays in order
        pending[seq] = (address, key, now, request.time)  # at most 65536: the seq space
        return seq

    def _readable(self) -> None:
        """Read one reply (the loop calls again while more are queued); never raises into
        the loop."""
        if self._icmp.is_closed:
            return
        try:
            reply = self._icmp.receive(None, READ_TIMEOUT)
        except icmplib.TimeoutExceeded:  # nothing after all, or read after the deadline
            return
        except (icmplib.ICMPLibError, OSError) as e:  # a pending socket error, reported once
            log.debug("echo socket %s: %s", self.source, e)
            return
        try:
            self._handle(reply, self._loop.time())
        except Exception:  # noqa: BLE001 - a bad packet or callback must not stop reading
            log.exception("echo socket %s: answer handling failed", self.source)

    def _handle(self, reply: icmplib.ICMPReply, now: float) -> None:
        """One reply from icmplib, read at loop time `now`."""
        if reply.id != self._ident:  # the BPF filter already checked the id
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
        if error is None and not self._from(reply.source, key):
            return  # an echo reply counts only from the address the request went to
        del self._pending[seq]
        age = max(0.0, now - sent)
        stamp = receipt_stamp(self._fd)
        # never more than the loop saw: a wall-clock step must not make an RTT up
        rtt = min(age, max(0.0, (reply.time if stamp is None else stamp) - wall))
        self._on_answer(Answer(address, seq, rtt, error, age))

    def _from(self, source: str | None, key: bytes) -> bool:
        """Whether `source` (icmplib's, with a scope for a link-local address) is `key`."""
        try:
            return socket.inet_pton(self._family, (source or "").partition("%")[0]) == key
        except OSError:
            return False

    def close(self) -> None:
        """Stop reading and close the socket; idempotent.  Nothing is reported afterwards."""
        if self._icmp.is_closed:
            return
        self._loop.remove_reader(self._fd)
        self._icmp.close()
        _live.discard(self._ident)
        self._pending.clear()
