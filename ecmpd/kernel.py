"""The daemon's one rtnetlink socket for dumps and changes, its lock, and its reads.

Invariant: the kernel runs one dump at a time per netlink socket (a second, concurrent
dump fails with EBUSY), so every use of `Kernel.ipr` holds `Kernel.lock` — the
reconciler's passes, the ledger's handovers, the status snapshot's read and the dumps
below, which the watcher and the start-up call.  This is the only place that opens the
socket; the watcher's event subscription is a socket of its own (`ecmpd.watcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import gateways, interfaces, ownaddr
from .desired import table_range
from .netlinkimport import AsyncIPRoute
from .state import Addresses, Defaults, Link, State


class Kernel:
    """The rtnetlink socket of the daemon whose state `current()` returns."""

    def __init__(self, current: Callable[[], State],
                 factory: Callable[[], AsyncIPRoute] = AsyncIPRoute) -> None:
        self.current = current
        self._factory = factory
        self.ipr: AsyncIPRoute | None = None
        """The socket (None before `open` and after `close`); hold `lock` to use it."""
        self.lock = asyncio.Lock()

    def open(self) -> None:
        """Open the socket (at start, in the daemon's loop)."""
        self.ipr = self._factory()

    def close(self) -> None:
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None

    async def dump_links(self) -> dict[str, Link] | None:
        """Every link, from a dump (None while closed)."""
        if self.ipr is None:
            return None
        async with self.lock:
            return {n: Link.of(v) for n, v in (await interfaces.read_links(self.ipr)).items()}

    async def dump_addresses(self, family: int = 4) -> Addresses | None:
        """Every address of IP version `family` (IPv6: global ones), from a dump (None
        while closed)."""
        if self.ipr is None:
            return None
        async with self.lock:
            return {i: tuple(a) for i, a in
                    (await interfaces.read_addresses(self.ipr, family)).items()}

    async def dump_local(self) -> ownaddr.Local | None:
        """Every address of the router, both families, from a dump (None while closed)."""
        if self.ipr is None:
            return None
        async with self.lock:
            return await ownaddr.read(self.ipr)

    async def dump_defaults(self, table: int | None = None,
                            family: int = 4) -> Defaults | None:
        """Other programs' default routes of IP version `family`: of `table`, or (None)
        of every table where an `auto` gateway of that version may be learned; {} when
        no WAN learns one (None while closed)."""
        if self.ipr is None:
            return None
        st = self.current()
        cfg = st.cfg
        if not gateways.learns(cfg, family):
            return {}
        async with self.lock:
            if table is not None:
                return {table: await gateways.read_table(self.ipr, table, cfg.route_proto,
                                                         family)}
            return await gateways.read_defaults(
                self.ipr, cfg.route_proto, table_range(cfg),
                st.defaults if family == 4 else st.defaults6, family)
