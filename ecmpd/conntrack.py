"""Conntrack by ecmpd's marks: count a WAN's connections, delete only a WAN's.

Deleting uses pyroute2's asyncio conntrack socket; counting reads a raw dump (see
`count_marks`).  Neither blocks the daemon's loop.  IPv4 and IPv6 entries alike: the
requests by mark carry family AF_UNSPEC (the kernel then takes entries of every
family), the ones by address that address's family.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from ipaddress import ip_address

from .interfaces import AF
from .netlinkimport import AsyncNFCTSocket, NFCTAttrTuple

log = logging.getLogger("ecmpd")
ICMP, ICMPV6 = socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6
PINGS = frozenset((ICMP, ICMPV6))
"""Protocols of ecmpd's probes (and pings): not connections to report."""


def _address(address: str) -> tuple[int, str]:
    """(AF_INET or AF_INET6, the address in the kernel's text form) of an address
    literal (an IPv6 scope, ``%dev``, is dropped: conntrack tuples have none)."""
    addr = ip_address(address.split("%", 1)[0])
    return AF[addr.version], str(addr)


async def flush_mark(mark: int, mask: int, family: int | None = None) -> bool:
    """Delete the conntrack entries whose ``mark & mask == mark``: of both IP versions
    (`family` None: one kernel request, AF_UNSPEC), or of version `family` only.

    The kernel's flush by mark ignores the family it is asked for (seen on 6.x: a flush
    with family AF_INET removed the IPv6 entries too, and a WAN whose IPv4 went DOWN
    reset its healthy IPv6 connections), so one version's flush is a dump of that
    version by mark (filtered in the kernel) and one delete per entry.  Entries of every
    other WAN, and unmarked ones, are never touched.
    """
    if family is not None:
        return await _delete(AF[family], {"mark": mark, "mark_mask": mask},
                             lambda orig, reply: True,
                             f"mark {mark:#x}/{mask:#x} (IPv{family})", (mark, mask)) >= 0
    ct = None
    try:
        ct = AsyncNFCTSocket(socket.AF_UNSPEC)
        await ct.flush(mark=mark, mark_mask=mask)
        return True
    except Exception as exc:  # a netlink error must never stop the daemon
        log.warning("conntrack flush of mark %#x/%#x failed: %s", mark, mask, exc)
        return False
    finally:
        if ct is not None:
            ct.close()


async def flush_probes(source: str) -> int:
    """Delete the ICMP (IPv4) or ICMPv6 (IPv6 `source`) conntrack entries that the
    router's address `source` started.

    These are a WAN's own probes (and pings from that address).  An entry created while
    the WAN's link was down may have been routed, NATed and pinned through another WAN;
    probes reuse their echo identifier, so such an entry would otherwise live for good.
    The dump is filtered in the kernel by protocol (and, IPv4, source); returns how
    many went.
    """
    try:
        family, addr = _address(source)
    except ValueError as exc:
        log.warning("conntrack flush of probes from %s: %s", source, exc)
        return 0
    proto = ICMPV6 if family == socket.AF_INET6 else ICMP
    # the kernel's IPv6 address filter matches the opposite (every other address; seen
    # on 6.x): IPv6 dumps are filtered by protocol only
    flt = NFCTAttrTuple(family=family, proto=proto,
                        saddr=addr if family == socket.AF_INET else None)
    return max(0, await _delete(
        family, {"tuple_orig": flt},
        lambda orig, reply: _same(orig.saddr, addr) and orig.proto == proto,
        f"probes from {source}"))


async def flush_address(address: str) -> int:
    """Delete the conntrack entries whose replies go to `address`: connections
    masqueraded to it and the router's own from it.  Once a WAN's address is gone (a
    PPP reconnect, a new DHCP lease) they cannot work any more; deleted, their next
    packet starts a new connection (NATed to the WAN's address now) instead of being
    sent with a source address that no longer exists.  `address` may be IPv4 or IPv6.
    Returns how many went."""
    try:
        family, addr = _address(address)
    except ValueError as exc:
        log.warning("conntrack flush of connections to %s: %s", address, exc)
        return 0
    # IPv6: the whole IPv6 table, matched here (see flush_probes)
    flt = ({"tuple_reply": NFCTAttrTuple(family=family, daddr=addr)}
           if family == socket.AF_INET else {})
    return max(0, await _delete(
        family, flt, lambda orig, reply: reply is not None and _same(reply.daddr, addr),
        f"connections to {address}"))


def _same(kernel_addr: object, addr: str) -> bool:
    """Whether an address pyroute2 decoded from a tuple is `addr` (normalized)."""
    try:
        return kernel_addr is not None and str(ip_address(str(kernel_addr))) == addr
    except ValueError:
        return False


async def _delete(family: int, dump_filter: dict, match, what: str,
                  mark: tuple[int, int] | None = None) -> int:
    """Delete the `family` entries of a dump filtered in the kernel by `dump_filter`
    (kernels before 5.8 ignore it, IPv6 addresses are not filtered right: so
    `match(orig, reply)` decides, and `mark` (value, mask), when given, must match).
    Returns how many went, -1 when the dump failed (logged)."""
    ct = None
    try:
        ct = AsyncNFCTSocket(family)
        found = []
        async for m in await ct.dump(**dump_filter):
            fam = m.get("nfgen_family")
            if fam != family:
                continue
            orig = NFCTAttrTuple.from_netlink(fam, m.get_attr("CTA_TUPLE_ORIG"))
            raw = m.get_attr("CTA_TUPLE_REPLY")
            reply = NFCTAttrTuple.from_netlink(fam, raw) if raw else None
            if mark is not None and ((m.get_attr("CTA_MARK") or 0) & mark[1]) != mark[0]:
                continue
            if match(orig, reply):
                found.append(orig)
        gone = 0
        for tup in found:
            try:
                await ct.entry("del", tuple_orig=tup)
                gone += 1
            except Exception as exc:  # gone meanwhile: fine
                log.debug("conntrack delete of %s failed: %s", tup, exc)
        return gone
    except Exception as exc:  # a netlink error must never stop the daemon
        log.warning("conntrack flush of %s failed: %s", what, exc)
        return -1
    finally:
        if ct is not None:
            ct.close()


async def count_marks(marks: dict[str, int], mask: int) -> dict[str, int]:
    """Number of conntrack entries, IPv4 and IPv6, that are neither ICMP nor ICMPv6, per
    name whose ``mark & mask`` equals its mark.

    One dump of the whole table (both families) read from a raw netlink socket, with only the mark and
    the protocol number picked out of each entry: status stays cheap (no per-entry
    objects) on a router with tens of thousands of connections.
    """
    counts = {name: 0 for name in marks}
    by_mark = {mark: name for name, mark in marks.items()}
    try:
        async for ct_mark, proto in dump_marks():
            if proto in PINGS:
                continue  # ecmpd's own probes (and pings) are not connections to report
            name = by_mark.get(ct_mark & mask)
            if name is not None:
                counts[name] += 1
    except OSError as exc:
        log.warning("conntrack dump failed: %s", exc)
    return counts


NETLINK_NETFILTER = 12
CT_GET = (1 << 8) | 1            # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_PROTO_NUM, CTA_MARK = 1, 2, 1, 8
_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")


def _attrs(buf: bytes, start: int, end: int):
    """(type, value start, value end) of the netlink attributes in buf[start:end]."""
    while start + 4 <= end:
        length, kind = _ATTR.unpack_from(buf, start)
        if length < 4:
            return
        yield kind & 0x3FFF, start + 4, start + length
        start += (length + 3) & ~3


def parse_entry(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(ct mark, protocol number) of one ctnetlink message body (after nfgenmsg)."""
    mark = proto = 0
    for kind, a, b in _attrs(buf, start, end):
        if kind == CTA_MARK and b - a >= 4:
            mark = int.from_bytes(buf[a:a + 4], "big")
        elif kind == CTA_TUPLE_ORIG:
            for k2, a2, b2 in _attrs(buf, a, b):
                if k2 == CTA_TUPLE_PROTO:
                    for k3, a3, b3 in _attrs(buf, a2, b2):
                        if k3 == CTA_PROTO_NUM and b3 > a3:
                            proto = buf[a3]
    return mark, proto


async def dump_marks():
    """Yield (ct mark, protocol number) for every conntrack entry, IPv4 and IPv6 (one
    dump with family AF_UNSPEC)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                         NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        sock.send(_HDR.pack(_HDR.size + len(body), CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + body)
        while True:
            buf = await loop.sock_recv(sock, 1 << 16)
            # sock_recv returns without suspending while data is queued: a big table
            # (40 000 entries: ~0.4 s) would hold the loop, and the probes, for all of it
            await asyncio.sleep(0)
            pos = 0
            while pos + _HDR.size <= len(buf):
                length, kind, _flags, _seq, _pid = _HDR.unpack_from(buf, pos)
                if length < _HDR.size:
                    return
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    errno = -int.from_bytes(buf[pos + 16:pos + 20], "little", signed=True)
                    if errno:
                        raise OSError(errno, os.strerror(errno))
                    return
                yield parse_entry(buf, pos + _HDR.size + 4, pos + length)
                pos += (length + 3) & ~3
    finally:
        sock.close()
