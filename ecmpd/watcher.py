"""Kernel events for the daemon: links, addresses, routes, rules (rtnetlink) and nftables
ruleset changes (nfnetlink), read in the daemon's loop and reported as typed events
(`ecmpd.events`) to `sink.submit`.  The watcher keeps no state of the daemon's and
decides nothing: what an event means is `ecmpd.events.step`'s business.

Lost events (ENOBUFS: the socket overflowed, or any error reading it) are followed by a
resync that supersedes everything before it: the subscription socket is closed with its
backlog and a new one opened *before* links and addresses are dumped, so no change after
the dump is missed and none from before it is replayed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .netlinkimport import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE,
                            RTMGRP_LINK, AsyncIPRoute)

from . import gateways, interfaces, ownaddr, rtfilter
from .interfaces import VERSION
from .desired import table_range
from .configmodel import FAMILIES, Config
from .events import (AddressesChanged, DefaultsChanged, DefaultsRead, Event, LinkChanged,
                     Resynced, RouteChanged, RuleChanged, RulesetChanged)
from .state import Addresses, Defaults, Link

log = logging.getLogger("ecmpd")

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RCVBUF = 4 * 1024 * 1024
RTMGRP_IPV6_ROUTE, RTMGRP_IPV6_RULE = 0x400, 1 << (19 - 1)  # RTNLGRP_IPV6_ROUTE, _RULE
GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | ownaddr.RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
          | RTMGRP_IPV4_RULE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_RULE)

RETRY = 1.0
"""Seconds between attempts to subscribe again when subscribing fails."""
READS = (4, 20.0)
"""Re-reads of other programs' default routes at once (a DHCP client's delete and add),
then per second while they keep changing (a token bucket): the read held back comes
when a token does, so the last change is always read."""


class Sink(Protocol):
    """Where the watcher's events go: the daemon, the state's one owner."""

    def submit(self, event: Event) -> None: ...


class Reads(Protocol):
    """The dumps the watcher needs (`ecmpd.kernel.Kernel`'s, under its lock; None: no
    netlink socket yet)."""

    async def dump_links(self) -> Mapping[str, Link] | None: ...

    async def dump_addresses(self, family: int = 4) -> Addresses | None: ...

    async def dump_local(self) -> ownaddr.Local | None: ...

    async def dump_defaults(self, table: int | None = None,
                            family: int = 4) -> Defaults | None: ...


class Watcher:
    """Turns kernel events into `Event`s for `sink`."""

    def __init__(self, sink: Sink, subscription: Callable[[], Any] | None = None,
                 reads: Reads | None = None) -> None:
        self.sink = sink
        self.reads: Reads = reads if reads is not None else sink  # type: ignore[assignment]
        """The kernel's dumps (default: `sink` provides them too, as test doubles do)."""
        self._subscription = subscription
        """Opens an rtnetlink event socket (default: `AsyncIPRoute`)."""
        self._ipr: Any = None
        self._task: asyncio.Task[None] | None = None
        self._nft: socket.socket | None = None
        self.events = 0
        """Kernel event messages read."""
        self.resyncs = 0
        """Resynchronisations after lost events."""
        self._program: list | None = None
        """The kernel filter for route events (`ecmpd.rtfilter`); None: not filtered."""
        self._reread: asyncio.Task[None] | None = None
        self._reread_due = False
        self._tokens: tuple[float, float] = (float(READS[0]), 0.0)
        """(re-read tokens left, loop time they were counted)."""
        self._held: set[tuple[int, int]] = set()
        """Tables whose default routes changed and wait for a token to be re-read."""
        self._holding: asyncio.Task[None] | None = None
        self._learning: tuple[int, range] | None = None
        """(ecmpd's route proto, its tables) while a WAN learns its gateway: other
        programs' default routes are then re-read when they change."""

    async def start(self) -> None:
        """Subscribe to rtnetlink and nftables multicast groups."""
        await self._subscribe()
        self._task = asyncio.get_running_loop().create_task(self._rtnl_loop())
        self._open_nft()

    async def _subscribe(self) -> None:
        """Open a new subscription socket, then close the old one with its backlog (the
        new one is subscribed first: no event falls in between)."""
        ipr = (self._subscription or AsyncIPRoute)()
        try:
            await ipr.bind(groups=GROUPS)
        except BaseException:
            ipr.close()
            raise
        try:
            ipr.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except (OSError, AttributeError):
            pass
        self._filter(ipr)
        old, self._ipr = self._ipr, ipr
        if old is not None:
            old.close()

    def follow(self, cfg: Config) -> None:
        """Watch `cfg`'s routing tables: a router carrying a full BGP table sends a route
        event per foreign route, and the kernel drops them before they reach Python
        (only default routes pass: of any table while a WAN learns its gateway, else of
        ecmpd's tables and its own in main)."""
        learning = gateways.learns(cfg)
        self._learning = (cfg.route_proto, table_range(cfg)) if learning else None
        self._program = (rtfilter.route_event_program() if learning else
                         rtfilter.route_event_program((table_range(cfg),),
                                                      proto=cfg.route_proto))
        if self._ipr is not None:
            self._filter(self._ipr)

    def _filter(self, ipr: Any) -> None:
        if self._program is None:
            return
        try:
            rtfilter.attach(ipr.socket, self._program)
        except (OSError, AttributeError) as exc:
            log.warning("cannot filter route events in the kernel (%s): every route "
                        "event reaches ecmpd", exc)

    def _open_nft(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                 NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        except OSError as exc:
            log.warning("cannot watch nftables changes (%s): checking every reconcile only", exc)
            return
        self._nft = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._nft_readable)

    def _nft_readable(self) -> None:
        assert self._nft is not None
        try:
            while self._nft.recv(65536):
                pass
        except BlockingIOError:
            pass
        except OSError:
            pass  # ENOBUFS included: the reconcile re-reads the whole table anyway
        self.events += 1
        self.sink.submit(RulesetChanged())

    def _reread_defaults(self) -> None:
        """Re-read other programs' default routes soon (one read for a burst)."""
        self._reread_due = True
        if self._reread is None or self._reread.done():
            self._reread = asyncio.get_running_loop().create_task(self._read_defaults())

    async def _read_defaults(self) -> None:
        while self._reread_due:
            self._reread_due = False
            await asyncio.sleep(0)          # let the rest of a burst be read first
            for family in FAMILIES:
                defaults = await self.reads.dump_defaults(family=family)
                if defaults is not None:
                    self.sink.submit(DefaultsRead(defaults, family))

    def _token(self) -> float:
        """Take a re-read token: 0 when one was there, else the seconds until one is."""
        tokens, at = self._tokens
        now = asyncio.get_running_loop().time()
        tokens = min(float(READS[0]), tokens + (now - at) * READS[1])
        if tokens >= 1:
            self._tokens = (tokens - 1, now)
            return 0.0
        self._tokens = (tokens, now)
        return (1 - tokens) / READS[1]

    async def _table_changed(self, table: tuple[int, int]) -> None:
        """Another program changed the default routes of `table` (IP version, id): re-read
        it now, or (a burst) once a token comes, one read for every change held back
        meanwhile."""
        if table in self._held or self._holding is not None and not self._holding.done():
            self._held.add(table)
            return
        wait = self._token()
        if wait:
            self._held.add(table)
            self._holding = asyncio.get_running_loop().create_task(self._read_held(wait))
            return
        await self._read_table(table)

    async def _read_held(self, wait: float) -> None:
        while self._held:
            await asyncio.sleep(wait)
            if wait := self._token():
                continue
            tables, self._held = self._held, set()
            for table in sorted(tables):
                try:
                    await self._read_table(table)
                except Exception as exc:    # the next change (or a resync) reads it
                    log.warning("cannot re-read the IPv%d default routes of table %d: %s",
                                *table, exc)
            wait = 1 / READS[1]     # a change meanwhile is read a token later

    async def _read_table(self, table: tuple[int, int]) -> None:
        family, number = table
        defaults = await self.reads.dump_defaults(number, family)
        self.sink.submit(DefaultsChanged(number, None if defaults is None
                                         else defaults.get(number, ()), family))

    async def stop(self) -> None:
        """Unsubscribe and close the sockets."""
        for task in (self._reread, self._holding):
            if task is not None:
                task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._nft is not None:
            asyncio.get_running_loop().remove_reader(self._nft.fileno())
            self._nft.close()
            self._nft = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _rtnl_loop(self) -> None:
        while True:
            try:
                # pyroute2's get() ends after each batch of messages: ask again; one that
                # ends without any is a dead subscription (never spin on it)
                got = 0
                async for msg in self._ipr.get():
                    got += 1
                    self.events += 1
                    await self._handle(msg)
                if got:
                    continue
                log.warning("netlink: the event stream ended: resubscribing")
                await asyncio.sleep(RETRY / 10)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                lost = "lost events" if exc.errno == errno.ENOBUFS else str(exc)
                log.warning("netlink: %s: resynchronising from a full dump", lost)
            except Exception:
                log.exception("netlink event handling failed: resynchronising")
            await self._recover()

    async def _recover(self) -> None:
        """Drop the backlog (a new socket), then resync: the dump supersedes it."""
        self.resyncs += 1
        while True:
            try:
                await self._subscribe()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("netlink: cannot subscribe to kernel events (%s): retrying", exc)
                await asyncio.sleep(RETRY)
        try:
            await self.resync()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("netlink resynchronisation failed; watching on")

    async def resync(self) -> None:
        """Report links, addresses and other programs' default routes from full dumps
        (`Resynced`)."""
        links = await self.reads.dump_links()
        if links is None:
            return
        addresses = await self.reads.dump_addresses()
        addresses6 = await self.reads.dump_addresses(6)
        if addresses is None or addresses6 is None:
            return
        defaults = await self.reads.dump_defaults()
        defaults6 = await self.reads.dump_defaults(family=6)
        self.sink.submit(Resynced(links, addresses, defaults, await self.reads.dump_local(),
                                  addresses6, defaults6))

    async def _handle(self, msg: Any) -> None:
        event = msg.get("event")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            link = Link.of(interfaces.link_state(msg)) if event == "RTM_NEWLINK" else None
            self.sink.submit(LinkChanged(msg.get("ifname"), link))
            if self._learning is not None and (link is None or not link.up):
                self._reread_defaults()     # its routes went, silently
        elif event in ("RTM_NEWADDR", "RTM_DELADDR"):
            # re-read rather than patched: the kernel's primary/secondary order decides
            # which address is the WAN's
            family = VERSION.get(msg.get("family"), 4)
            addresses = await self.reads.dump_addresses(family)
            local = await self.reads.dump_local()
            self.sink.submit(AddressesChanged(msg.get("index"), event == "RTM_DELADDR",
                                              addresses, local, family))
            if self._learning is not None and event == "RTM_DELADDR":
                self._reread_defaults()     # routes via a gateway it reached went, silently
        elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            table, dst_len = msg.get("table"), msg.get("dst_len")
            self.sink.submit(RouteChanged(table, dst_len, msg.get("proto")))
            if (dst_len == 0 and self._learning is not None
                    and msg.get("proto") != self._learning[0] and table not in self._learning[1]):
                # another program's default route: re-read its table (a replace, an
                # append and a delete all look alike here)
                await self._table_changed((VERSION.get(msg.get("family"), 4), table))
        elif event in ("RTM_NEWRULE", "RTM_DELRULE"):
            self.sink.submit(RuleChanged(msg.get("priority") or 0))
