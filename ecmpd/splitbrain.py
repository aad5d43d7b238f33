"""Split-brain detection: does another host hold one of the pair's floating addresses?

While this router is master (`ecmpd.role`), once every `ha.detect_interval` it asks each
segment a floating address lives on (`configha.floating`: the VIPs on the LAN
interfaces, each WAN's SNAT address on its interface) who holds it, the way duplicate
address detection does, so that the question itself claims nothing:

* IPv4: an ARP probe (RFC 5227: sender IP 0.0.0.0, as ``arping -D``), broadcast; a
  host holding the address answers with an ARP reply;
* IPv6: a neighbour solicitation from ``::`` to the address's solicited-node group
  (RFC 4862 DAD); a host holding it answers with a neighbour advertisement to all nodes.

Any ARP packet whose sender IP, or any neighbour advertisement whose target, is a
floating address, arriving on its interface from a MAC address that is none of this
router's, is a `Sighting`: another master (keepalived's gratuitous ARPs and unsolicited
advertisements of a second master count too, between checks).  The kernel does not
loop a router's own transmissions back to it; an answer from one of its own interfaces'
MACs (another of its interfaces on the same segment) is left out, but not from a VRRP
virtual MAC (keepalived's ``use_vmac``): both routers of a pair have the same one.

Two AF_PACKET sockets on the daemon's loop (`loop.add_reader`, no thread): one for
ARP (little traffic), one for IPv6 with a classic BPF filter that lets only ICMPv6
neighbour advertisements through (a router forwards a lot of IPv6).  The kernel's own
duplicate address detection would answer only for addresses being added, and
``arping``/``ndisc6`` would cost a process per address and check.

`frames`, `parse` and `judge` are pure; `Detector` does the I/O.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Mapping

from .icmpecho import internet_checksum
from .role import Sighting

log = logging.getLogger("ecmpd")

ETH_P_ARP, ETH_P_IP, ETH_P_IPV6 = 0x0806, 0x0800, 0x86DD
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SIOCGIFHWADDR = 0x8927
ICMPV6, NS, NA = 58, 135, 136
BROADCAST = b"\xff" * 6

# classic BPF: accept an Ethernet frame carrying IPv6 whose next header is ICMPv6 and
# whose ICMPv6 type is a neighbour advertisement (no extension headers: NAs have none)
NA_FILTER = (
    (0x28, 0, 0, 12), (0x15, 0, 5, ETH_P_IPV6),   # ldh [12]; jne 0x86dd -> drop
    (0x30, 0, 0, 20), (0x15, 0, 3, ICMPV6),       # ldb [20]; jne 58 -> drop
    (0x30, 0, 0, 54), (0x15, 0, 1, NA),           # ldb [54]; jne 136 -> drop
    (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0))        # accept; drop


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# ---- frames --------------------------------------------------------------------------

def arp_probe(src_mac: bytes, address: str) -> bytes:
    """An ARP probe for IPv4 `address` (who has it? from 0.0.0.0), broadcast."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, src_mac, bytes(4), bytes(6),
                      ipaddress.IPv4Address(address).packed)
    return BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP) + arp


def ns_probe(src_mac: bytes, address: str) -> bytes:
    """A DAD neighbour solicitation for IPv6 `address`: from ``::`` to its
    solicited-node group, without a source link-layer option (RFC 4861 7.2.2)."""
    target = ipaddress.IPv6Address(address).packed
    group = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + target[13:]
    src = bytes(16)
    body = struct.pack("!BBHI", NS, 0, 0, 0) + target
    pseudo = src + group + struct.pack("!IxxxB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", internet_checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, 255) + src + group
    dst_mac = b"\x33\x33" + group[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def probe(src_mac: bytes, address: str) -> bytes:
    """The probe frame for `address` of either IP version."""
    return ns_probe(src_mac, address) if ":" in address else arp_probe(src_mac, address)


def parse(frame: bytes) -> tuple[str, str] | None:
    """(address, MAC) a frame says a host holds: an ARP packet's sender (not 0.0.0.0), or
    a neighbour advertisement's target and the frame's source MAC; None: neither."""
    if len(frame) < 14:
        return None
    kind = struct.unpack_from("!H", frame, 12)[0]
    if kind == ETH_P_ARP and len(frame) >= 42:
        htype, ptype, hlen, plen, _op = struct.unpack_from("!HHBBH", frame, 14)
        if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
            return None
        sha, spa = frame[22:28], frame[28:32]
        if spa == bytes(4):
            return None                 # a probe: claims nothing
        return str(ipaddress.IPv4Address(spa)), mac_text(sha)
    if kind == ETH_P_IPV6 and len(frame) >= 14 + 40 + 24:
        if frame[20] != ICMPV6 or frame[54] != NA:
            return None
        target = frame[14 + 40 + 8:14 + 40 + 24]
        return str(ipaddress.IPv6Address(target)), mac_text(frame[6:12])
    return None


def judge(wanted: Mapping[str, Iterable[str]], heard: Iterable[tuple[str, str, str]],
          own_macs: Iterable[str]) -> tuple[Sighting, ...]:
    """The sightings among `heard` ((interface, address, MAC) of the frames received):
    a floating address `wanted` on that interface, from a MAC none of `own_macs`."""
    want = {(i, ipaddress.ip_address(a)) for i, addrs in wanted.items() for a in addrs}
    mine = set(own_macs)
    out = {Sighting(i, a, m) for i, a, m in heard
           if m not in mine and (i, ipaddress.ip_address(a)) in want}
    return tuple(sorted(out))


# ---- the kernel -------------------------------------------------------------------------

def hwaddr(ifname: str) -> bytes | None:
    """The Ethernet address of interface `ifname` (None: none, or no such interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            got = fcntl.ioctl(s, SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    family = struct.unpack_from("H", got, 16)[0]
    return got[18:24] if family == 1 else None      # ARPHRD_ETHER


VRRP_MACS = (bytes.fromhex("00005e0001"), bytes.fromhex("00005e0002"))
"""VRRP's virtual MACs (IPv4, IPv6) less the router id: keepalived's ``use_vmac``
gives both routers the same one, so it is never taken for this router's own."""


def own_macs() -> set[str]:
    """The Ethernet addresses of every interface of this namespace, but VRRP's."""
    out = set()
    for _, name in socket.if_nameindex():
        mac = hwaddr(name)
        if mac is not None and mac != bytes(6) and mac[:5] not in VRRP_MACS:
            out.add(mac_text(mac))
    return out


def _attach(sock: socket.socket, prog: tuple[tuple[int, int, int, int], ...]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.setblocking(False)
    while True:                     # what arrived before the filter
        try:
            sock.recv(65536)
        except BlockingIOError:
            return


class Detector:
    """Checks the floating addresses every `interval` seconds and reports each check's
    sightings to `report` (on the loop).  `floating()`: interface -> its floating
    addresses now."""

    def __init__(self, floating: Callable[[], Mapping[str, tuple[str, ...]]],
                 report: Callable[[tuple[Sighting, ...]], None], interval: float) -> None:
        self.floating = floating
        self.report = report
        self.interval = interval
        self._socks: list[socket.socket] = []
        self._heard: list[tuple[str, str, str]] = []
        self.checks = 0
        """Checks done (status -v)."""

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        arp.setblocking(False)
        na = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        _attach(na, NA_FILTER)
        self._socks = [arp, na]
        for s in self._socks:
            loop.add_reader(s.fileno(), self._read, s)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self._socks:
            loop.remove_reader(s.fileno())
            s.close()
        self._socks = []

    def _read(self, sock: socket.socket) -> None:
        for _ in range(64):         # bounded: the loop serves others between bursts
            try:
                frame, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("split-brain socket: %s", exc)
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            got = parse(frame)
            if got is not None and len(self._heard) < 4096:
                self._heard.append((addr[0], *got))

    def send(self) -> int:
        """One probe per floating address on its interface; the number sent."""
        sent = 0
        for ifname, addrs in self.floating().items():
            mac = hwaddr(ifname)
            if mac is None:
                continue            # no such interface (yet), or not Ethernet
            for a in addrs:
                sock, proto = (self._socks[1], ETH_P_IPV6) if ":" in a else (self._socks[0],
                                                                              ETH_P_ARP)
                try:
                    sock.sendto(probe(mac, a), (ifname, proto))
                    sent += 1
                except OSError as exc:      # link down: nothing to ask
                    log.debug("split-brain probe for %s on %s: %s", a, ifname, exc)
        return sent

    async def run(self) -> None:
        """Check until cancelled."""
        self.open()
        try:
            while True:
                self._heard = []
                self.send()
                await asyncio.sleep(self.interval)
                heard, self._heard = self._heard, []
                self.checks += 1
                self.report(judge(self.floating(), heard, own_macs()))
        finally:
            self.close()


def main(argv: list[str] | None = None) -> int:
    """``python3 -m ecmpd.splitbrain [--interval S] [--checks N] IFACE=ADDR[,ADDR]...``:
    the checks alone, one JSON line of sightings per check (the lab's test; a look at a
    segment by hand)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="ecmpd.splitbrain")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--checks", type=int, default=0, help="stop after N checks (0: never)")
    p.add_argument("where", nargs="+", metavar="IFACE=ADDR[,ADDR]")
    args = p.parse_args(argv)
    floating = {i: tuple(a.split(",")) for i, _, a in (w.partition("=") for w in args.where)}

    async def run() -> None:
        done = asyncio.Event()

        def report(seen: tuple[Sighting, ...]) -> None:
            print(json.dumps([[s.interface, s.address, s.mac] for s in seen]), flush=True)
            if args.checks and det.checks >= args.checks:
                done.set()
        det = Detector(lambda: floating, report, args.interval)
        task = asyncio.get_running_loop().create_task(det.run())
        await done.wait()
        task.cancel()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
