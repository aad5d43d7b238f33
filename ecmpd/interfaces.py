"""The router's interfaces and addresses as rtnetlink dumps report them (pyroute2
AsyncIPRoute, on the daemon's socket: `ecmpd.kernel`): links with their flags, and each
interface's addresses of one IP version, the one ecmpd uses first."""

from __future__ import annotations

import socket

from .netlinkimport import AsyncIPRoute

AF = {4: socket.AF_INET, 6: socket.AF_INET6}
"""IP version -> address family."""
VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
"""Address family -> IP version."""


IFF_UP, IFF_POINTOPOINT, IFF_LOWER_UP = 0x1, 0x10, 0x10000


def link_state(msg) -> dict:
    """{index, up, carrier, pointopoint} of a link from its netlink message."""
    flags = msg.get("flags", 0)
    up = bool(flags & IFF_UP)
    return {"index": msg["index"], "up": up, "carrier": up and bool(flags & IFF_LOWER_UP),
            "pointopoint": bool(flags & IFF_POINTOPOINT)}


async def read_links(ipr: AsyncIPRoute) -> dict[str, dict]:
    """Interface name → {index, up, carrier} for every link."""
    return {msg.get("ifname"): link_state(msg) async for msg in await ipr.link("dump")}


async def read_addresses(ipr: AsyncIPRoute, family: int = 4) -> dict[int, list[tuple]]:
    """Interface index → its addresses of IP version `family`, (address, prefixlen),
    primary first; IPv4 on a point-to-point link with a peer address (address,
    prefixlen, peer).  IPv6: global addresses only, usable ones (not tentative, not
    failed duplicate detection), stable ones before deprecated and temporary ones."""
    if family == 6:
        return await _read_addresses6(ipr)
    out: dict[int, list[tuple]] = {}
    secondary: dict[int, list[tuple]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET):
        local, peer = msg.get("local"), msg.get("address")
        addr = local or peer
        if addr:
            entry: tuple = (str(addr), msg["prefixlen"])
            if local and peer and peer != local:
                entry += (str(peer),)
            # primaries in the kernel's order (the first one is the interface's address)
            into = secondary if msg["flags"] & 0x01 else out  # IFA_F_SECONDARY
            into.setdefault(msg["index"], []).append(entry)
    for index, extra in secondary.items():
        out.setdefault(index, []).extend(extra)
    return out


IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
RT_SCOPE_UNIVERSE = 0


async def _read_addresses6(ipr: AsyncIPRoute) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    later: dict[int, list[tuple]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET6):
        addr = msg.get("address")
        flags = msg.get("IFA_FLAGS") or msg.get("flags") or 0
        if (not addr or msg.get("scope", RT_SCOPE_UNIVERSE) != RT_SCOPE_UNIVERSE
                or flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)):
            continue
        # a privacy (temporary) address changes every day: the stable one goes first
        into = later if flags & (IFA_F_DEPRECATED | IFA_F_TEMPORARY) else out
        into.setdefault(msg["index"], []).append((str(addr), msg["prefixlen"]))
    for index, extra in later.items():
        out.setdefault(index, []).extend(extra)
    return out
