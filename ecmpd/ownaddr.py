"""The router's own addresses as probe targets: read them, and what follows from them.

A probe sent to one of the router's own addresses never leaves it: the kernel answers
it locally, so the target "answers" with the WAN's ISP dead and the WAN would never
fail over.  ecmpd therefore tracks every local address of the router (every
interface, IPv4 and IPv6, fed by netlink) and counts a target that is one of them as
failed (`ecmpd.prober.Prober.follow`); `--check` run on the router refuses one.

Addresses are kept as normalized strings (`normal`): ``str(ipaddress.ip_address(x))``,
so one address is spelled one way whatever reported it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import ip_address
from typing import Any

RTMGRP_IPV6_IFADDR = 0x100
"""rtnetlink multicast group of IPv6 address changes (linux/rtnetlink.h)."""

Local = frozenset[str]
"""The router's own addresses, both families, normalized."""


def normal(addr: Any) -> str | None:
    """`addr` spelled the one way ecmpd compares addresses (None: not an address)."""
    try:
        return str(ip_address(str(addr).split("%", 1)[0]))
    except ValueError:
        return None


def of_messages(msgs: Iterable[Any]) -> Local:
    """The local addresses in rtnetlink address messages (a dump): IFA_LOCAL, or
    IFA_ADDRESS where there is no IFA_LOCAL (IPv6; on a point-to-point link
    IFA_ADDRESS is the peer's, and IFA_LOCAL is set)."""
    out = set()
    for msg in msgs:
        a = normal(msg.get("local") or msg.get("address"))
        if a is not None:
            out.add(a)
    return frozenset(out)


async def read(ipr: Any) -> Local:
    """Every address of the namespace `ipr` works in, both families (an AsyncIPRoute)."""
    return of_messages([msg async for msg in await ipr.addr("dump")])


def read_now() -> Local | None:
    """Every address of the current namespace, both families, read synchronously for
    `--check`; None when they cannot be read (no netlink, a sandbox): the check that
    needs them is skipped."""
    try:
        from pyroute2.iproute.linux import IPRoute

        with IPRoute() as ipr:
            return of_messages(ipr.addr("dump", family=socket.AF_UNSPEC))
    except Exception:
        return None


def own(local: Local, targets: Sequence[str]) -> tuple[str, ...]:
    """The `targets` that are among the router's own addresses `local`, in order."""
    return tuple(t for t in targets if normal(t) in local)


def reason(target: str) -> str:
    """Why target `target` counts as failed."""
    return f"target {target} is this router's own address"


def changes(before: Mapping[str, Sequence[str]],
            after: Mapping[str, Sequence[str]]) -> list[tuple[int, str]]:
    """(level, message) log lines for WANs' own-address targets (WAN name -> targets)
    going from `before` to `after`: a WARNING once when a target becomes one of the
    router's own addresses, INFO when it stops being one."""
    out = []
    for name, now in after.items():
        was = before.get(name, ())
        out += [(logging.WARNING, f"{name}: {reason(t)}: it counts as failed (the router "
                                  f"answers it itself, whatever the WAN's ISP does)")
                for t in now if t not in was]
        out += [(logging.INFO, f"{name}: target {t} is no longer this router's own address")
                for t in was if t not in now]
    return out
