"""Kernel events for the daemon: links, addresses, routes, rules (rtnetlink) and
nftables ruleset changes (nfnetlink), all read in the daemon's loop.

* carrier lost / link down / address removed on a WAN → that WAN is DOWN at once;
  carrier back → RISING (probes decide the rest);
* any change to an ecmpd route, an ip rule in ecmpd's range, or the nft ruleset →
  a reconcile, which puts back whatever is missing (and finds nothing to do when the
  event was ecmpd's own change);
* a lost event (ENOBUFS, or any error reading the socket) → a full resync from dumps.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import TYPE_CHECKING

from .netlinkimport import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE,
                             RTMGRP_LINK, AsyncIPRoute)

from . import routing
from .desired import MAIN_TABLE, rule_range, table_range

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("ecmpd")

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RCVBUF = 4 * 1024 * 1024


class Watcher:
    """Turns kernel events into daemon calls."""

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self._ipr: AsyncIPRoute | None = None
        self._task: asyncio.Task[None] | None = None
        self._nft: socket.socket | None = None
        self.events = 0

    async def start(self) -> None:
        """Subscribe to rtnetlink and nftables multicast groups."""
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR
                             | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE)
        try:
            self._ipr.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except (OSError, AttributeError):
            pass
        self._task = asyncio.get_running_loop().create_task(self._rtnl_loop())
        self._open_nft()

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
            pass  # ENOBUFS included: the reconcile below re-reads the whole table
        self.events += 1
        self.daemon.kick()

    async def stop(self) -> None:
        """Unsubscribe and close the sockets."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._nft is not None:
            asyncio.get_running_loop().remove_reader(self._nft.fileno())
            self._nft.close()
            self._nft = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _rtnl_loop(self) -> None:
        assert self._ipr is not None
        while True:
            try:
                async for msg in self._ipr.get():
                    self.events += 1
                    await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                lost = "lost events" if exc.errno == errno.ENOBUFS else str(exc)
                log.warning("netlink: %s: resynchronising from a full dump", lost)
                await self._resync_logged()
            except Exception:
                log.exception("netlink event handling failed: resynchronising")
                await self._resync_logged()

    async def _resync_logged(self) -> None:
        # Fix: an exception from resync() inside the handlers above used to end this
        # task silently, and ecmpd stopped watching the kernel.
        try:
            await self.resync()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("netlink resynchronisation failed; watching on")

    async def resync(self) -> None:
        """Re-read links and addresses, re-derive carrier states, reconcile."""
        d = self.daemon
        if d.ipr is None:
            return
        async with d.netlink_lock:    # Fix: unlocked, it raced a reconcile's dump (EBUSY)
            d.links = await routing.read_links(d.ipr)
            d.addresses = await routing.read_addresses(d.ipr)
        for rt in list(d.wans.values()):
            d.on_link(rt.wan, "resync")
        d.kick()

    async def _handle(self, msg) -> None:
        d = self.daemon
        event = msg.get("event")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            name = msg.get("ifname")
            old = d.links.get(name)
            if event == "RTM_DELLINK":
                d.links.pop(name, None)
            else:
                # a renamed interface keeps its index: forget its old name
                for other in [n for n, l in d.links.items()
                              if l["index"] == msg["index"] and n != name]:
                    del d.links[other]
                    for rt in list(d.wans.values()):
                        if rt.wan.interface == other:
                            d.on_link(rt.wan, f"interface renamed to {name}")
                            d.kick()
                d.links[name] = routing.link_state(msg)
            new = d.links.get(name)
            wan_link = False
            for rt in list(d.wans.values()):
                if rt.wan.interface == name:
                    wan_link = True
                    why = ("interface removed" if new is None else
                           "link down" if not new["up"] else
                           "carrier lost" if not new["carrier"] else "carrier up")
                    d.on_link(rt.wan, why)
            # Fix: a WAN link set admin down loses its routes without any RTM_DELROUTE,
            # and coming back up sends none either (nor does DOWN -> RISING reconcile):
            # the WAN's table route stayed missing.  Its up flag and index feed the
            # desired state, so a change of them reconciles.
            if event == "RTM_DELLINK" or (wan_link and (
                    old is None or (old["up"], old["index"]) != (new["up"], new["index"]))):
                d.kick()
        elif event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if d.ipr is not None:
                async with d.netlink_lock:    # Fix: see resync()
                    d.addresses = await routing.read_addresses(d.ipr)
            index = msg.get("index")
            for rt in list(d.wans.values()):
                link = d.links.get(rt.wan.interface)
                if link and link["index"] == index:
                    removed = event == "RTM_DELADDR"
                    d.on_link(rt.wan, "address removed" if removed else "address added")
            d.kick()
        elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            table = msg.get("table")
            if msg.get("dst_len") == 0 and (table == MAIN_TABLE or table in table_range(d.cfg)):
                # Fix: a NEWROUTE with ecmpd's own proto used to be ignored, so somebody
                # replacing ecmpd's route under its proto (other nexthops, another
                # gateway in a WAN table) went uncorrected; after ecmpd's own change
                # the reconcile simply finds nothing to do.
                d.kick()
        elif event in ("RTM_NEWRULE", "RTM_DELRULE"):
            if (msg.get("priority") or 0) in rule_range(d.cfg):
                d.kick()
