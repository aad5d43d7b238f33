"""The split-brain checks' frames, their parser, the BPF filter and the judgement
(ecmpd.splitbrain), pure (no root; tests/test_splitbrain_lab.py asks real kernels)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ecmpd import splitbrain as sb
from ecmpd.icmpecho import internet_checksum
from ecmpd.role import Sighting

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000002")


def arp(op: int, sha: bytes, spa: str, tpa: str, src: bytes | None = None) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha,
                       ipaddress.IPv4Address(spa).packed, bytes(6),
                       ipaddress.IPv4Address(tpa).packed)
    return sb.BROADCAST + (src or sha) + b"\x08\x06" + body


def na(src_mac: bytes, target: str, icmp_type: int = sb.NA) -> bytes:
    body = struct.pack("!BBHI", icmp_type, 0, 0, 0x60000000) + \
        ipaddress.IPv6Address(target).packed
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + \
        ipaddress.IPv6Address(target).packed + ipaddress.IPv6Address("ff02::1").packed
    return b"\x33\x33\x00\x00\x00\x01" + src_mac + b"\x86\xdd" + ip6 + body


def test_the_arp_probe_asks_from_0_0_0_0() -> None:
    f = sb.arp_probe(MAC, "192.168.88.1")
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", f[14:42])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert (sha, spa, tha, tpa) == (MAC, bytes(4), bytes(6), bytes([192, 168, 88, 1]))
    assert sb.parse(f) is None            # a probe claims nothing, ours or another's


def test_the_neighbour_solicitation_is_dad_style_with_a_valid_checksum() -> None:
    f = sb.ns_probe(MAC, "fd00:88::1:2345")
    assert f[:6] == bytes.fromhex("3333ff012345") and f[12:14] == b"\x86\xdd"
    ip6 = f[14:54]
    assert ip6[0] >> 4 == 6 and ip6[6] == 58 and ip6[7] == 255
    src, dst = ip6[8:24], ip6[24:40]
    assert src == bytes(16)
    assert ipaddress.IPv6Address(dst) == ipaddress.IPv6Address("ff02::1:ff01:2345")
    body = f[54:]
    assert len(body) == 24 and body[0] == sb.NS and body[1] == 0     # no SLLA option
    assert ipaddress.IPv6Address(body[8:24]) == ipaddress.IPv6Address("fd00:88::1:2345")
    pseudo = src + dst + struct.pack("!IxxxB", len(body), 58)
    assert internet_checksum(pseudo + body) == 0
    assert sb.parse(f) is None
    assert sb.probe(MAC, "fd00::1")[12:14] == b"\x86\xdd"
    assert sb.probe(MAC, "10.0.0.1")[12:14] == b"\x08\x06"


@pytest.mark.parametrize("frame, expected", [
    (arp(2, OTHER, "192.168.88.1", "0.0.0.0"), ("192.168.88.1", "02:00:00:00:00:02")),
    # a second master's gratuitous ARP (a request for its own address)
    (arp(1, OTHER, "192.168.88.1", "192.168.88.1"), ("192.168.88.1", "02:00:00:00:00:02")),
    (arp(1, OTHER, "0.0.0.0", "192.168.88.1"), None),          # someone else's probe
    (na(OTHER, "fd00:88::1"), ("fd00:88::1", "02:00:00:00:00:02")),
    (na(OTHER, "fd00:88::1", icmp_type=sb.NS), None),
    (b"\x00" * 13, None),
    (arp(2, OTHER, "192.168.88.1", "0.0.0.0")[:30], None),     # truncated
])
def test_parse_tells_who_holds_what(frame: bytes, expected) -> None:
    assert sb.parse(frame) == expected


def run_bpf(prog, frame: bytes) -> int:
    """A classic BPF interpreter for the instructions NA_FILTER uses."""
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x28:
            acc = struct.unpack_from("!H", frame, k)[0] if k + 2 <= len(frame) else None
        elif code == 0x30:
            acc = frame[k] if k < len(frame) else None
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
        if acc is None:
            return 0                    # the kernel drops a frame read beyond its end
        pc += 1


def test_the_filter_lets_only_neighbour_advertisements_through() -> None:
    assert run_bpf(sb.NA_FILTER, na(OTHER, "fd00::1")) > 0
    assert run_bpf(sb.NA_FILTER, na(OTHER, "fd00::1", icmp_type=sb.NS)) == 0
    assert run_bpf(sb.NA_FILTER, arp(2, OTHER, "10.0.0.1", "0.0.0.0")) == 0
    udp6 = bytearray(na(OTHER, "fd00::1"))
    udp6[20] = 17
    assert run_bpf(sb.NA_FILTER, bytes(udp6)) == 0
    assert run_bpf(sb.NA_FILTER, b"\x00" * 20) == 0


def test_judge_keeps_floating_addresses_on_their_interface_from_others() -> None:
    wanted = {"lan0": ("192.168.88.1", "fd00:88::1"), "eth1": ("198.51.100.10",)}
    heard = [("lan0", "192.168.88.1", "02:00:00:00:00:02"),
             ("lan0", "192.168.88.1", "02:00:00:00:00:02"),     # twice: one sighting
             ("lan0", "fd00:88:0::1", "02:00:00:00:00:03"),     # spelled otherwise
             ("lan0", "192.168.88.1", "02:00:00:00:00:01"),     # ours (a vmac)
             ("eth1", "192.168.88.1", "02:00:00:00:00:02"),     # not floating there
             ("lan0", "192.168.88.7", "02:00:00:00:00:02")]     # not floating at all
    assert sb.judge(wanted, heard, {"02:00:00:00:00:01"}) == (
        Sighting("lan0", "192.168.88.1", "02:00:00:00:00:02"),
        Sighting("lan0", "fd00:88:0::1", "02:00:00:00:00:03"))
    assert sb.judge(wanted, [], set()) == ()


def test_a_vrrp_mac_is_never_this_routers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """keepalived's use_vmac gives both routers the same virtual MAC: an answer from it
    is the other router's."""
    macs = {"lan0": bytes.fromhex("020000000001"), "vrrp.51": bytes.fromhex("00005e000133"),
            "vrrp6.51": bytes.fromhex("00005e000233"), "lo": bytes(6)}
    monkeypatch.setattr(sb.socket, "if_nameindex", lambda: list(enumerate(macs, 1)))
    monkeypatch.setattr(sb, "hwaddr", macs.get)
    assert sb.own_macs() == {"02:00:00:00:00:01"}
