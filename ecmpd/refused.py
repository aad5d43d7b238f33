"""Nexthops the kernel refuses, and the multipath route installed without them.

The kernel checks every nexthop of a route it is given (``fib_check_nh``): a gateway it
cannot reach through the interface without ``onlink`` (an off-subnet gateway, another
WAN's gateway), a gateway that is a local address, an interface that is down.  One bad
nexthop fails the whole multipath update, and then no other WAN's change lands either.
So the WAN tables go first (one nexthop each: a refusal there names its WAN), and the
multipath route is installed without the nexthops refused there; should the kernel still
refuse it, the nexthop without which it takes the route is found by trying.

Invariant: a failed update leaves the kernel's route as it was (``replace`` is one
netlink request), so every try either lands a route or changes nothing.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import replace

from .desired import UNICAST, Nexthop, RouteSpec
from .netlinkimport import NetlinkError

log = logging.getLogger("ecmpd")

Key = tuple[str, int]
"""(gateway, interface index) of a nexthop, as `RouteSpec.hops`."""
Refused = MutableMapping[Key, str]
"""Nexthop -> the kernel's error for it."""
Put = Callable[[RouteSpec], Awaitable[object]]
"""Install a route (netlink ``replace``); raises NetlinkError when the kernel refuses."""


def key(h: Nexthop) -> Key:
    return (h.gateway, h.oif)


def error_text(exc: NetlinkError) -> str:
    """The kernel's error as words ("Network is unreachable")."""
    code = getattr(exc, "code", 0) or 0
    return os.strerror(code) if code else str(exc)


NOT_ABOUT_NEXTHOPS = frozenset({errno.ENOMEM, errno.ENOBUFS, errno.EPERM, errno.EBUSY,
                                errno.EINTR, errno.EAGAIN})
"""Errors of the moment or of the process, never a verdict on a nexthop."""


def about_a_nexthop(exc: NetlinkError) -> bool:
    """Whether the kernel's error may be about a nexthop (not memory, rights, a busy
    socket): only such an error makes a nexthop refused."""
    return getattr(exc, "code", 0) not in NOT_ABOUT_NEXTHOPS


def single_hop(spec: RouteSpec) -> Nexthop | None:
    """The one nexthop of a plain unicast route (a WAN table's), else None."""
    return spec.nexthops[0] if spec.kind == UNICAST and len(spec.nexthops) == 1 else None


def refused_single(spec: RouteSpec, exc: NetlinkError, refused: Refused) -> bool:
    """Record that the kernel refused plain route `spec` (`exc`) as a refusal of its
    nexthop; False when `spec` is no plain unicast route, or `exc` is about no nexthop
    (ENOMEM, EPERM, ...)."""
    hop = single_hop(spec)
    if hop is None or not about_a_nexthop(exc):
        return False
    refused[key(hop)] = error_text(exc)
    return True


async def install_main(spec: RouteSpec, have: RouteSpec | None, refused: Refused,
                       put: Put) -> int:
    """Install the multipath route `spec` (`have`: the kernel's now) without the
    nexthops in `refused`; when the kernel still refuses it, without the first nexthop
    whose absence makes it take the route (added to `refused`), and so on.  With no
    nexthop left the kernel's route stays.  Returns the number of changes made (0/1)."""
    hops = [h for h in spec.nexthops if key(h) not in refused]
    while hops:
        route = replace(spec, nexthops=tuple(hops))
        if have is not None and have.same_as(route):
            return 0
        try:
            await put(route)
            return 1
        except NetlinkError as exc:
            first = exc
        if not about_a_nexthop(first):
            # no nexthop is to blame: the next pass tries the whole route again
            log.warning("cannot set route %s: %s", route, first)
            return 0
        if len(hops) == 1:
            refused[key(hops[0])] = error_text(first)
            break
        for h in hops:
            rest = replace(route, nexthops=tuple(x for x in hops if x is not h))
            if have is not None and have.same_as(rest):
                refused[key(h)] = error_text(first)
                return 0
            try:
                await put(rest)
            except NetlinkError:
                continue
            refused[key(h)] = error_text(first)
            return 1
        # more than one bad nexthop, or the route itself refused: give up on this pass
        log.warning("cannot set route %s: %s", route, first)
        return 0
    return 0


def by_wan(refused: Mapping[Key, str], hops: Mapping[str, Key]) -> dict[str, str]:
    """WAN name -> the kernel's error, for the WANs (`hops`: name -> its nexthop) whose
    nexthop is in `refused`."""
    return {name: refused[k] for name, k in hops.items() if k in refused}
