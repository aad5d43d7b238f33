"""Conntrack by ecmpd's marks: count a WAN's connections, delete only a WAN's.

Uses pyroute2's asyncio conntrack socket so the daemon's loop never blocks on it.
"""

from __future__ import annotations

import logging

from .netlinkimport import AsyncNFCTSocket

log = logging.getLogger("ecmpd")
ICMP = 1


async def flush_mark(mark: int, mask: int) -> bool:
    """Delete the conntrack entries whose ``mark & mask == mark`` (one kernel request).

    Entries of every other WAN, and unmarked ones, are never touched.
    """
    ct = AsyncNFCTSocket()
    try:
        await ct.flush(mark=mark, mark_mask=mask)
        return True
    except Exception as exc:  # a netlink error must never stop the daemon
        log.warning("conntrack flush of mark %#x/%#x failed: %s", mark, mask, exc)
        return False
    finally:
        ct.close()


async def count_marks(marks: dict[str, int], mask: int) -> dict[str, int]:
    """Number of TCP/UDP/... (not ICMP) conntrack entries per name whose
    ``mark & mask`` equals its mark."""
    counts = {name: 0 for name in marks}
    by_mark = {mark: name for name, mark in marks.items()}
    ct = AsyncNFCTSocket()
    try:
        async for entry in await ct.dump():
            if entry.get_nested("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO", "CTA_PROTO_NUM") == ICMP:
                continue  # ecmpd's own probes (and pings) are not connections to report
            name = by_mark.get((entry.get_attr("CTA_MARK") or 0) & mask)
            if name is not None:
                counts[name] += 1
    except Exception as exc:
        log.warning("conntrack dump failed: %s", exc)
    finally:
        ct.close()
    return counts
