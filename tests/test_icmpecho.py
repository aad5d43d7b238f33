"""Tests for ecmpd.icmpecho.

Pure part: checksum, echo request bytes, reply parsing, IcmpPinger with a fake socket.
Root part (marker `lab`): real raw sockets in a namespace of their own, run in a
subprocess with `ip netns exec`, pinging a peer namespace over a veth pair.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecmpd.icmpecho import PAYLOAD, IcmpPinger, checksum, echo_request, parse_reply

REPO = Path(__file__).resolve().parent.parent


# --- packets -------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the one's complement sum of these bytes is 0xddf2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF & ~0xDDF2
    assert checksum(b"\x01") == 0xFFFF & ~0x0100  # odd length: padded with a zero byte
    assert checksum(b"") == 0xFFFF


def test_echo_request_v4_and_v6() -> None:
    p = echo_request(4, 0x1234, 0xBEEF)
    kind, code, _, ident, seq = struct.unpack("!BBHHH", p[:8])
    assert (kind, code, ident, seq, p[8:]) == (8, 0, 0x1234, 0xBEEF, PAYLOAD)
    assert len(PAYLOAD) == 56
    assert checksum(p) == 0  # a correct checksum sums the whole packet to zero
    for seq in (0, 1, 0x7FFF, 0xFFFF):
        assert checksum(echo_request(4, 0xFFFF, seq)) == 0
    p6 = echo_request(6, 7, 9)
    assert struct.unpack("!BBHHH", p6[:8]) == (128, 0, 0, 7, 9)  # the kernel sums ICMPv6


def ip4(proto: int, payload: bytes, options: int = 0) -> bytes:
    """An IPv4 header (with `options` 4-byte words of options) and `payload`."""
    ihl = 5 + options
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 1, 0, 64,
                       proto, 0, socket.inet_aton("192.0.2.1"), socket.inet_aton("10.0.0.1"))
    return head + b"\x01" * (options * 4) + payload


def ip6(next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                       socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                       socket.inet_pton(socket.AF_INET6, "2001:db8::2")) + payload


def icmp(kind: int, code: int, rest: bytes) -> bytes:
    return struct.pack("!BBH", kind, code, 0) + rest


REQ4 = echo_request(4, 0x4242, 77)
REQ6 = echo_request(6, 0x4242, 77)
UDP = struct.pack("!HHHH", 5000, 53, 8, 0)

PARSE_CASES = {
    "v4 echo reply": (4, ip4(1, icmp(0, 0, struct.pack("!HH", 0x4242, 77) + PAYLOAD)),
                      (0, 0x4242, 77)),
    "v4 reply, IP options": (4, ip4(1, icmp(0, 0, struct.pack("!HH", 1, 2)), options=2),
                             (0, 1, 2)),
    "v4 unreachable quoting our request": (
        4, ip4(1, icmp(3, 1, b"\0" * 4 + ip4(1, REQ4[:8]))), (3, 0x4242, 77)),
    "v4 time exceeded, quoted header with options": (
        4, ip4(1, icmp(11, 0, b"\0" * 4 + ip4(1, REQ4[:8], options=1))), (11, 0x4242, 77)),
    "v4 unreachable quoting UDP": (4, ip4(1, icmp(3, 3, b"\0" * 4 + ip4(17, UDP))), None),
    "v4 unreachable quoting a reply": (
        4, ip4(1, icmp(3, 1, b"\0" * 4 + ip4(1, icmp(0, 0, struct.pack("!HH", 1, 2))))), None),
    "v4 echo request (looped back)": (4, ip4(1, REQ4), None),
    "v4 redirect": (4, ip4(1, icmp(5, 1, b"\0" * 4 + ip4(1, REQ4[:8]))), None),
    "v4 truncated error": (4, ip4(1, icmp(3, 1, b"\0" * 4 + ip4(1, REQ4[:8])[:24])), None),
    "v4 truncated reply": (4, ip4(1, icmp(0, 0, b"\x42")), None),
    "v4 empty": (4, b"", None),
    "v6 echo reply": (6, icmp(129, 0, struct.pack("!HH", 0x4242, 77) + PAYLOAD),
                      (129, 0x4242, 77)),
    "v6 unreachable quoting our request": (
        6, icmp(1, 3, b"\0" * 4 + ip6(58, REQ6[:8])), (1, 0x4242, 77)),
    "v6 too big quoting our request": (
        6, icmp(2, 0, struct.pack("!I", 1280) + ip6(58, REQ6[:8])), (2, 0x4242, 77)),
    "v6 unreachable quoting UDP": (6, icmp(1, 4, b"\0" * 4 + ip6(17, UDP)), None),
    "v6 neighbour solicitation": (6, icmp(135, 0, b"\0" * 20), None),
    "v6 echo request": (6, REQ6, None),
}


@pytest.mark.parametrize("name", list(PARSE_CASES))
def test_parse_reply(name: str) -> None:
    family, packet, expected = PARSE_CASES[name]
    assert parse_reply(family, packet) == expected


# --- IcmpPinger -----------------------------------------------------------------------


class FakeSocket:
    """An EchoSocket stand-in: every ping answers `rtt` at once."""

    def __init__(self, source: str, log: list[str], rtt: float = 0.001) -> None:
        if source.endswith(".99"):
            raise OSError(99, "Cannot assign requested address")
        self.source = source
        self.log = log
        self.rtt = rtt
        log.append(f"open {source}")

    def ping(self, address: str, timeout: float) -> asyncio.Future[float | None]:
        self.log.append(f"ping {address} from {self.source}")
        fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        fut.set_result(self.rtt)
        return fut

    def close(self) -> None:
        self.log.append(f"close {self.source}")


def test_pinger_reuses_and_reopens_its_socket() -> None:
    log: list[str] = []
    pinger = IcmpPinger(factory=lambda source: FakeSocket(source, log))  # type: ignore[arg-type,return-value]

    async def main() -> list[float | None]:
        return [await pinger("10.0.0.1", "192.0.2.1", 1.0),
                await pinger("10.0.0.2", "192.0.2.1", 1.0),
                await pinger("10.0.0.1", "192.0.2.99", 1.0),  # cannot bind: lost
                await pinger("10.0.0.1", "192.0.2.99", 1.0),  # tried again
                await pinger("10.0.0.1", "192.0.2.2", 1.0)]

    assert asyncio.run(main()) == [0.001, 0.001, None, None, 0.001]
    pinger.close()
    pinger.close()  # idempotent
    assert log == ["open 192.0.2.1", "ping 10.0.0.1 from 192.0.2.1",
                   "ping 10.0.0.2 from 192.0.2.1", "close 192.0.2.1",
                   "open 192.0.2.2", "ping 10.0.0.1 from 192.0.2.2", "close 192.0.2.2"]


# --- root part: real raw sockets between two namespaces -------------------------------

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"),
    reason="needs root, ip and nft",
)

ECHO_SCRIPT = r"""
import asyncio, json
from ecmpd.icmpecho import EchoSocket, echo_request, icmp_ping

async def main():
    out = {
        "answers": await icmp_ping("10.250.1.2", "10.250.1.1", 5.0),
        "bad_source": await icmp_ping("10.250.1.2", "10.250.1.99", 0.3),  # bind fails
        "unreachable": await icmp_ping("10.9.9.9", "10.250.1.1", 0.3),   # ENETUNREACH
        "own": await icmp_ping("10.250.1.1", "10.250.1.1", 5.0),  # our request looped back
        "v6": await icmp_ping("fd00:250::2", "fd00:250::1", 5.0),
    }
    s = EchoSocket("10.250.1.1")
    out["packets"] = all(s.packet(q) == echo_request(4, s._ident, q)
                         for q in (0, 1, 0x1234, 0xFFFE, 0xFFFF))
    # many requests in flight on one socket; .3 drops echo requests
    futs = [s.ping(a, 1.0) for _ in range(5) for a in ("10.250.1.2", "10.250.1.3")]
    out["many"] = [r is not None for r in await asyncio.gather(*futs)]
    # nothing in flight: no timer left to wake the loop up
    out["idle"] = not s._pending and not [
        h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]
    # one timer per socket, armed for the earliest deadline and re-armed for the next
    late = s.ping("10.250.1.3", 0.8)
    soon = s.ping("10.250.1.3", 0.2)
    done, _ = await asyncio.wait([late, soon], return_when=asyncio.FIRST_COMPLETED)
    out["soon_first"] = soon in done and late not in done
    out["both_lost"] = [await asyncio.wait_for(late, 30), soon.result()] == [None, None]
    # an ICMP error answers at once: the rejected request (.4) completes before a
    # dropped one sent earlier with the same timeout
    dropped = s.ping("10.250.1.3", 20.0)
    rejected = s.ping("10.250.1.4", 20.0)
    done, _ = await asyncio.wait([dropped, rejected], return_when=asyncio.FIRST_COMPLETED)
    out["error_first"] = rejected in done and dropped not in done
    out["rejected"] = rejected.result()
    out["after_error"] = await s.ping("10.250.1.2", 5.0)  # the socket still works
    s.close()
    out["closed"] = dropped.done() and dropped.result() is None
    out["ping_closed"] = await s.ping("10.250.1.2", 1.0)
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


def sh(*args: str, stdin: str | None = None) -> None:
    r = subprocess.run(args, input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr.strip()}"


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    """A: 10.250.1.1/24, fd00:250::1 <-veth-> B: 10.250.1.2-4/24, fd00:250::2; B drops
    echo requests to .3 and rejects those to .4 (ICMP host unreachable)."""
    a, b = f"ecmpdecho{os.getpid()}a", f"ecmpdecho{os.getpid()}b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "wan", "type", "veth", "peer", "name", "peer", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.250.1.1/24", "dev", "wan")
        sh("ip", "-n", a, "addr", "add", "fd00:250::1/64", "dev", "wan", "nodad")
        for addr in ("10.250.1.2/24", "10.250.1.3/24", "10.250.1.4/24"):
            sh("ip", "-n", b, "addr", "add", addr, "dev", "peer")
        sh("ip", "-n", b, "addr", "add", "fd00:250::2/64", "dev", "peer", "nodad")
        for ns, dev in ((a, "wan"), (b, "peer"), (a, "lo"), (b, "lo")):
            sh("ip", "-n", ns, "link", "set", "dev", dev, "up")
        sh("ip", "netns", "exec", b, "nft", "-f", "-", stdin=(
            "table ip echotest { chain input { type filter hook input priority 0;\n"
            "ip daddr 10.250.1.3 icmp type echo-request drop\n"
            "ip daddr 10.250.1.4 icmp type echo-request reject with icmp type host-unreachable\n"
            "}\n}\n"))
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@NEEDS_ROOT
@pytest.mark.lab
def test_echo_socket_between_namespaces(netns: tuple[str, str]) -> None:
    a, _ = netns
    run = subprocess.run(
        ["ip", "netns", "exec", a, sys.executable, "-c", ECHO_SCRIPT],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert isinstance(out["answers"], float) and 0 <= out["answers"] <= 5.0
    assert out["bad_source"] is None and out["unreachable"] is None
    assert isinstance(out["own"], float)
    assert isinstance(out["v6"], float)
    assert out["packets"]
    assert out["many"] == [True, False] * 5
    assert out["idle"]
    assert out["soon_first"] and out["both_lost"]
    assert out["error_first"] and out["rejected"] is None
    assert isinstance(out["after_error"], float)
    assert out["closed"] and out["ping_closed"] is None
