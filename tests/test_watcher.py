"""Unit tests of ecmpd.watcher: kernel events → daemon calls, with a fake daemon and fake
netlink sockets (no root, no namespaces).  Events are real pyroute2 message objects, so
the `msg.get(...)` lookups are the ones the daemon sees (e.g. RTA_TABLE over the header's
8-bit table for tables above 255)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import types
from ipaddress import IPv4Address
from typing import Any, Awaitable, Callable, Iterator

import pytest

import ecmpd.netlinkimport  # noqa: F401  (pyroute2 loaded the way ecmpd loads it)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ecmpd import watcher as watcher_mod
from ecmpd.model import Config, Wan
from ecmpd.netlinkimport import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE,
                                 RTMGRP_LINK)
from ecmpd.watcher import Watcher

IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
LINK_OK = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
ECMPD_PROTO = 236

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), weight=1, id=1),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2)),
)
"""Tables 1001..1255 and rule priorities 1000..1511 are ecmpd's (defaults)."""


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(coro_fn(*args))


async def until(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Yield to the loop until `cond()` holds; fail after `deadline` seconds (hang guard)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


# ---- pyroute2-shaped messages ---------------------------------------------------------

def link_msg(event: str, name: str, index: int, flags: int) -> ifinfmsg:
    m = ifinfmsg()
    m["index"], m["flags"], m["event"] = index, flags, event
    m["attrs"] = [("IFLA_IFNAME", name)]
    return m


def addr_msg(event: str, index: int, local: str, prefixlen: int = 24,
             flags: int = 0) -> ifaddrmsg:
    m = ifaddrmsg()
    m["index"], m["prefixlen"], m["flags"], m["event"] = index, prefixlen, flags, event
    m["family"] = socket.AF_INET
    m["attrs"] = [("IFA_LOCAL", local), ("IFA_ADDRESS", local)]
    return m


def route_msg(event: str, table: int, dst_len: int = 0, proto: int = ECMPD_PROTO) -> rtmsg:
    m = rtmsg()
    # the header holds 8 bits (RT_TABLE_COMPAT 252 above 255); RTA_TABLE the real id
    m["table"] = table if table < 256 else 252
    m["dst_len"], m["proto"], m["event"] = dst_len, proto, event
    m["family"] = socket.AF_INET
    attrs: list = [("RTA_TABLE", table), ("RTA_GATEWAY", "192.0.2.1"), ("RTA_OIF", 11)]
    if dst_len:
        attrs.append(("RTA_DST", "203.0.113.0"))
    m["attrs"] = attrs
    return m


def rule_msg(event: str, priority: int | None, table: int = 1001) -> fibmsg:
    m = fibmsg()
    m["table"] = table if table < 256 else 252
    m["event"] = event
    attrs: list = [("FRA_TABLE", table)]
    if priority is not None:
        attrs.append(("FRA_PRIORITY", priority))
    m["attrs"] = attrs
    return m


# ---- fakes -----------------------------------------------------------------------------

class DumpIpr:
    """The daemon's AsyncIPRoute as routing.read_links/read_addresses use it."""

    def __init__(self, lock: asyncio.Lock, links: list, addrs: list) -> None:
        self.lock = lock
        self.links, self.addrs = links, addrs
        self.dumps: list[tuple[str, bool]] = []
        """(what, netlink lock held) per dump."""
        self.fail: Exception | None = None

    async def _dump(self, what: str, msgs: list):
        self.dumps.append((what, self.lock.locked()))
        if self.fail is not None:
            raise self.fail

        async def gen():
            for m in msgs:
                yield m
        return gen()

    async def link(self, cmd: str, **kw: Any):
        assert cmd == "dump"
        return await self._dump("link", self.links)

    async def addr(self, cmd: str, **kw: Any):
        assert cmd == "dump" and kw.get("family") == socket.AF_INET
        return await self._dump("addr", self.addrs)


class FakeDaemon:
    """What the watcher uses of ecmpd.daemon.Daemon, recording its calls."""

    def __init__(self, cfg: Config = CFG) -> None:
        self.cfg = cfg
        self.wans = {w.name: types.SimpleNamespace(wan=w) for w in cfg.wans}
        self.links: dict[str, dict] = {
            "lan0": {"index": 3, "up": True, "carrier": True},
            "eth1": {"index": 11, "up": True, "carrier": True},
            "eth2": {"index": 12, "up": True, "carrier": True},
        }
        self.addresses: dict[int, list[tuple[str, int]]] = {
            11: [("192.0.2.10", 24)], 12: [("198.51.100.10", 24)]}
        self.netlink_lock = asyncio.Lock()
        self.ipr: DumpIpr | None = None
        self.on_link_calls: list[tuple[str, str]] = []
        self.seen_at_on_link: list[tuple[dict | None, list | None]] = []
        """(the WAN's link, its addresses) as they were when on_link was called."""
        self.kicks = 0
        self.on_link_error: Exception | None = None

    def on_link(self, wan: Wan, reason: str) -> None:
        if self.on_link_error is not None:
            raise self.on_link_error
        self.on_link_calls.append((wan.name, reason))
        link = self.links.get(wan.interface)
        self.seen_at_on_link.append(
            (dict(link) if link else None,
             list(self.addresses.get(link["index"], [])) if link else None))

    def kick(self) -> None:
        self.kicks += 1


class EventSource:
    """A fake rtnetlink event socket: each `get()` yields one scripted batch of messages,
    then raises the batch's exception (None: blocks until cancelled)."""

    def __init__(self, batches: list[tuple[list, BaseException | None]]) -> None:
        self.batches = list(batches)
        self.gets = 0
        self.closed = False
        self.bound_groups: int | None = None
        self.socket = types.SimpleNamespace(opts=[], setsockopt=self._setsockopt)

    def _setsockopt(self, level: int, opt: int, value: int) -> None:
        self.socket.opts.append((level, opt, value))

    async def bind(self, groups: int = 0) -> None:
        self.bound_groups = groups

    async def get(self):
        self.gets += 1
        msgs, exc = self.batches.pop(0) if self.batches else ([], None)
        for m in msgs:
            yield m
        if exc is not None:
            raise exc
        await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True


def wan_dump_ipr(d: FakeDaemon) -> DumpIpr:
    """A dump showing eth1 without carrier and a new address on eth2."""
    return DumpIpr(d.netlink_lock,
                   links=[link_msg("RTM_NEWLINK", "lan0", 3, LINK_OK),
                          link_msg("RTM_NEWLINK", "eth1", 11, IFF_UP),
                          link_msg("RTM_NEWLINK", "eth2", 12, LINK_OK)],
                   addrs=[addr_msg("RTM_NEWADDR", 11, "192.0.2.10"),
                          addr_msg("RTM_NEWADDR", 12, "198.51.100.99")])


# ---- links -----------------------------------------------------------------------------

@pytest.mark.parametrize("before, flags, reason, kicks", [
    # carrier lost, the link still administratively up: the daemon decides (no reconcile)
    ({"up": True, "carrier": True}, IFF_UP, "carrier lost", 0),
    ({"up": True, "carrier": False}, LINK_OK, "carrier up", 0),
    # administratively down: the kernel drops the WAN's routes silently -> reconcile
    ({"up": True, "carrier": True}, IFF_LOWER_UP, "link down", 1),
    ({"up": True, "carrier": True}, 0, "link down", 1),
    # and back up: the WAN's table route must be put back
    ({"up": False, "carrier": False}, LINK_OK, "carrier up", 1),
    ({"up": False, "carrier": False}, IFF_UP, "carrier lost", 1),
])
def test_newlink_on_a_wan_reports_the_reason(before, flags, reason, kicks) -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.links["eth1"] = {"index": 11, **before}
        w = Watcher(d)
        await w._handle(link_msg("RTM_NEWLINK", "eth1", 11, flags))
        assert d.on_link_calls == [("wlan1", reason)]
        up = bool(flags & IFF_UP)
        assert d.links["eth1"] == {"index": 11, "up": up,
                                   "carrier": up and bool(flags & IFF_LOWER_UP)}
        # the daemon sees the new link state when it is called
        assert d.seen_at_on_link[0][0] == d.links["eth1"]
        assert d.kicks == kicks
        assert d.links["eth2"]["carrier"] and d.links["lan0"]["up"]
    run(body)


def test_newlink_of_a_wan_interface_seen_again_with_a_new_index_reconciles() -> None:
    async def body() -> None:
        d = FakeDaemon()
        del d.links["eth2"]
        w = Watcher(d)
        await w._handle(link_msg("RTM_NEWLINK", "eth2", 42, LINK_OK))
        assert d.links["eth2"]["index"] == 42
        assert d.on_link_calls == [("wlan2", "carrier up")]
        assert d.kicks == 1
        d.links["eth2"]["index"] = 41
        await w._handle(link_msg("RTM_NEWLINK", "eth2", 42, LINK_OK))
        assert d.kicks == 2
    run(body)


def test_newlink_on_a_non_wan_interface_only_updates_links() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(link_msg("RTM_NEWLINK", "lan0", 3, 0))
        await w._handle(link_msg("RTM_NEWLINK", "veth9", 99, LINK_OK))
        assert d.links["lan0"] == {"index": 3, "up": False, "carrier": False}
        assert d.links["veth9"] == {"index": 99, "up": True, "carrier": True}
        assert d.on_link_calls == [] and d.kicks == 0
    run(body)


def test_dellink_of_a_wan_removes_the_link_reports_it_and_reconciles() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(link_msg("RTM_DELLINK", "eth2", 12, 0))
        assert "eth2" not in d.links and "eth1" in d.links
        assert d.on_link_calls == [("wlan2", "interface removed")]
        assert d.seen_at_on_link == [(None, None)]
        assert d.kicks == 1
    run(body)


def test_dellink_of_another_interface_reconciles_without_on_link() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(link_msg("RTM_DELLINK", "lan0", 3, 0))
        assert "lan0" not in d.links
        assert d.on_link_calls == [] and d.kicks == 1
    run(body)


# ---- addresses -------------------------------------------------------------------------

@pytest.mark.parametrize("event, reason", [("RTM_NEWADDR", "address added"),
                                           ("RTM_DELADDR", "address removed")])
def test_address_change_on_a_wan_rereads_addresses_then_reports_and_reconciles(
        event: str, reason: str) -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        w = Watcher(d)
        await w._handle(addr_msg(event, 12, "198.51.100.99"))
        assert d.ipr.dumps == [("addr", True)]          # under the netlink lock
        assert d.addresses == {11: [("192.0.2.10", 24)], 12: [("198.51.100.99", 24)]}
        assert d.on_link_calls == [("wlan2", reason)]
        # on_link already sees the re-read addresses (the daemon's link_ok reads them)
        assert d.seen_at_on_link[0][1] == [("198.51.100.99", 24)]
        assert d.kicks == 1
        assert not d.netlink_lock.locked()
    run(body)


def test_address_change_elsewhere_calls_no_on_link() -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        w = Watcher(d)
        await w._handle(addr_msg("RTM_NEWADDR", 3, "10.0.0.1"))
        await w._handle(addr_msg("RTM_DELADDR", 77, "10.9.9.9"))
        assert d.on_link_calls == []
        assert [what for what, _ in d.ipr.dumps] == ["addr", "addr"]
    run(body)


def test_address_change_without_a_netlink_socket_still_reports() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(addr_msg("RTM_DELADDR", 11, "192.0.2.10"))
        assert d.on_link_calls == [("wlan1", "address removed")]
        assert d.kicks == 1
    run(body)


# ---- routes and rules ------------------------------------------------------------------

@pytest.mark.parametrize("event, table, proto", [
    ("RTM_DELROUTE", 254, ECMPD_PROTO),      # ecmpd's multipath route deleted
    ("RTM_DELROUTE", 254, 4),                # a foreign default in main (static)
    ("RTM_NEWROUTE", 254, 3),                # somebody added one (boot)
    ("RTM_NEWROUTE", 254, ECMPD_PROTO),      # replaced under ecmpd's own proto
    ("RTM_DELROUTE", 1001, ECMPD_PROTO),     # a WAN table (RTA_TABLE above 255)
    ("RTM_NEWROUTE", 1002, ECMPD_PROTO),
    ("RTM_DELROUTE", 1255, 4),               # the last table of the range
])
def test_default_route_events_in_main_or_ecmpd_tables_reconcile(event, table, proto) -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(route_msg(event, table, proto=proto))
        assert d.kicks == 1
        assert d.on_link_calls == []
    run(body)


@pytest.mark.parametrize("event, table, dst_len", [
    ("RTM_DELROUTE", 100, 0),        # another table's default
    ("RTM_DELROUTE", 1000, 0),       # table_base itself is not ecmpd's
    ("RTM_NEWROUTE", 1256, 0),       # past the range
    ("RTM_DELROUTE", 255, 0),        # table local
    ("RTM_DELROUTE", 254, 24),       # not a default route, in main
    ("RTM_NEWROUTE", 1001, 32),      # not a default route, in a WAN table
])
def test_other_route_events_do_not_reconcile(event, table, dst_len) -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(route_msg(event, table, dst_len=dst_len))
        assert d.kicks == 0
    run(body)


@pytest.mark.parametrize("event, priority, kicks", [
    ("RTM_DELRULE", 1000, 1),     # the `lookup main suppress_prefixlength 0` rule
    ("RTM_DELRULE", 1001, 1),     # a fwmark rule
    ("RTM_NEWRULE", 1257, 1),     # a `from <address>` rule
    ("RTM_NEWRULE", 1511, 1),     # the last priority of the range
    ("RTM_DELRULE", 999, 0),
    ("RTM_NEWRULE", 1512, 0),
    ("RTM_DELRULE", 32766, 0),    # the kernel's main rule
    ("RTM_NEWRULE", None, 0),     # no FRA_PRIORITY: priority 0
])
def test_rule_events_reconcile_only_inside_ecmpd_priority_range(event, priority,
                                                                kicks) -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle(rule_msg(event, priority))
        assert d.kicks == kicks
    run(body)


def test_the_ranges_follow_the_config() -> None:
    async def body() -> None:
        d = FakeDaemon(Config(lan_interfaces=(), wans=CFG.wans, table_base=2000,
                              rule_priority=500))
        w = Watcher(d)
        await w._handle(route_msg("RTM_DELROUTE", 1001))
        await w._handle(rule_msg("RTM_DELRULE", 1012))     # past 500 + 511
        await w._handle(rule_msg("RTM_DELRULE", 499))
        assert d.kicks == 0
        await w._handle(route_msg("RTM_DELROUTE", 2001))
        await w._handle(rule_msg("RTM_DELRULE", 500))
        await w._handle(rule_msg("RTM_DELRULE", 1011))
        assert d.kicks == 3
    run(body)


def test_unrelated_events_are_ignored() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w._handle({"event": "RTM_NEWNEIGH", "index": 11})
        await w._handle({"event": None})
        assert d.kicks == 0 and d.on_link_calls == []
    run(body)


# ---- nftables events -------------------------------------------------------------------

@contextlib.contextmanager
def nft_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking datagram socket standing in for the nfnetlink one, and its peer."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_nft_readable_drains_the_socket_and_reconciles_once() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        with nft_pair() as (a, b):
            for _ in range(3):
                b.send(b"nft event")
            w._nft = a
            w._nft_readable()
            assert d.kicks == 1 and w.events == 1
            with pytest.raises(BlockingIOError):
                a.recv(100)                       # everything was read
            w._nft = None
    run(body)


def test_nft_read_error_still_reconciles() -> None:
    class Overrun:
        def recv(self, n: int) -> bytes:
            raise OSError(errno.ENOBUFS, "No buffer space available")

    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        w._nft = Overrun()  # type: ignore[assignment]
        w._nft_readable()
        assert d.kicks == 1 and w.events == 1
    run(body)


def test_nft_events_reach_the_daemon_through_the_loop_until_stop() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        with nft_pair() as (a, b):
            w._nft = a
            asyncio.get_running_loop().add_reader(a.fileno(), w._nft_readable)
            b.send(b"ruleset changed")
            await until(lambda: d.kicks == 1, "the nft event's reconcile")
            await w.stop()
            assert w._nft is None and a.fileno() == -1      # reader removed, closed
    run(body)


# ---- resync and the event loop ---------------------------------------------------------

def test_resync_rereads_links_and_addresses_reports_every_wan_and_reconciles() -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        d.links["stale0"] = {"index": 50, "up": True, "carrier": True}
        w = Watcher(d)
        await w.resync()
        assert d.ipr.dumps == [("link", True), ("addr", True)]
        assert d.links == {"lan0": {"index": 3, "up": True, "carrier": True},
                           "eth1": {"index": 11, "up": True, "carrier": False},
                           "eth2": {"index": 12, "up": True, "carrier": True}}
        assert d.addresses == {11: [("192.0.2.10", 24)], 12: [("198.51.100.99", 24)]}
        assert sorted(d.on_link_calls) == [("wlan1", "resync"), ("wlan2", "resync")]
        # on_link runs after both re-reads
        assert all(link is not None and addrs for link, addrs in d.seen_at_on_link)
        assert d.kicks == 1
        assert not d.netlink_lock.locked()
    run(body)


def test_resync_without_a_netlink_socket_does_nothing() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w.resync()
        assert d.on_link_calls == [] and d.kicks == 0
    run(body)


def start_loop(w: Watcher, source: EventSource) -> None:
    w._ipr = source  # type: ignore[assignment]
    w._task = asyncio.get_running_loop().create_task(w._rtnl_loop())


@pytest.mark.parametrize("error", [
    OSError(errno.ENOBUFS, "No buffer space available"),
    OSError(errno.EBADMSG, "Bad message"),
    ValueError("undecodable message"),
])
def test_a_broken_event_stream_resyncs_and_the_loop_keeps_running(error, caplog) -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        w = Watcher(d)
        source = EventSource([
            ([rule_msg("RTM_DELRULE", 1001)], error),
            ([link_msg("RTM_DELLINK", "eth2", 12, 0)], None),
        ])
        start_loop(w, source)
        await until(lambda: "eth2" not in d.links, "the event after the error")
        assert source.gets == 2
        assert w.events == 2
        # the rule kick, the resync's kick, the DELLINK kick
        assert d.kicks == 3
        assert [what for what, _ in d.ipr.dumps] == ["link", "addr"]
        assert d.on_link_calls == [("wlan1", "resync"), ("wlan2", "resync"),
                                   ("wlan2", "interface removed")]
        assert not w._task.done()
        await w.stop()
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        run(body)
    if isinstance(error, OSError) and error.errno == errno.ENOBUFS:
        assert "lost events" in caplog.text
    assert "resynchronising" in caplog.text


def test_an_error_while_handling_an_event_resyncs_and_the_loop_keeps_running() -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        d.on_link_error = RuntimeError("daemon bug")
        w = Watcher(d)
        source = EventSource([([link_msg("RTM_NEWLINK", "eth1", 11, IFF_UP)], None),
                              ([route_msg("RTM_DELROUTE", 254)], None)])
        start_loop(w, source)
        # the first resync fails too (on_link raises): still watching
        await until(lambda: source.gets == 2, "the loop's second read")
        d.on_link_error = None
        await until(lambda: d.kicks >= 1, "the route event after the errors")
        assert not w._task.done()
        await w.stop()
    run(body)


def test_a_failing_resync_does_not_end_the_loop(caplog) -> None:
    async def body() -> None:
        d = FakeDaemon()
        d.ipr = wan_dump_ipr(d)
        d.ipr.fail = OSError(errno.EBUSY, "Device or resource busy")
        w = Watcher(d)
        source = EventSource([([], OSError(errno.ENOBUFS, "No buffer space available")),
                              ([], OSError(errno.ENOBUFS, "No buffer space available")),
                              ([route_msg("RTM_DELROUTE", 1001)], None)])
        start_loop(w, source)
        await until(lambda: d.kicks == 1, "the route event after two failed resyncs")
        assert source.gets == 3
        assert [what for what, _ in d.ipr.dumps] == ["link", "link"]
        assert not d.netlink_lock.locked()
        assert not w._task.done()
        await w.stop()
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        run(body)
    assert "resynchronisation failed" in caplog.text


def test_stop_cancels_the_loop_and_closes_the_socket() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        source = EventSource([([route_msg("RTM_DELROUTE", 254)], None)])
        start_loop(w, source)
        await until(lambda: d.kicks == 1, "the first event")
        task = w._task
        await w.stop()
        assert task is not None and task.cancelled()
        assert source.closed and w._ipr is None
        await w.stop()                          # a second stop is harmless
    run(body)


def test_stop_of_a_watcher_never_started_is_harmless() -> None:
    async def body() -> None:
        await Watcher(FakeDaemon()).stop()
    run(body)


def test_start_subscribes_to_the_four_groups_and_survives_without_nft(monkeypatch,
                                                                     caplog) -> None:
    made: list[EventSource] = []

    def fake_iproute() -> EventSource:
        s = EventSource([([link_msg("RTM_NEWLINK", "eth1", 11, IFF_UP)], None)])
        made.append(s)
        return s

    def no_netlink_netfilter(*a: Any, **kw: Any) -> socket.socket:
        raise OSError(errno.EPERM, "Operation not permitted")

    shim = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket)
                                    if k.isupper()})
    shim.socket = no_netlink_netfilter
    monkeypatch.setattr(watcher_mod, "AsyncIPRoute", fake_iproute)
    monkeypatch.setattr(watcher_mod, "socket", shim)

    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        await w.start()
        assert made and made[0].bound_groups == (RTMGRP_LINK | RTMGRP_IPV4_IFADDR
                                                 | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE)
        assert (socket.SOL_SOCKET, socket.SO_RCVBUF, watcher_mod.RCVBUF) \
            in made[0].socket.opts
        assert w._nft is None
        await until(lambda: d.on_link_calls == [("wlan1", "carrier lost")],
                    "the first event")
        await w.stop()
        assert made[0].closed
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        run(body)
    assert "cannot watch nftables changes" in caplog.text


def test_a_renamed_wan_interface_is_forgotten_under_its_old_name() -> None:
    async def body() -> None:
        d = FakeDaemon()
        w = Watcher(d)
        index = d.links["eth1"]["index"]
        await w._handle(link_msg("RTM_NEWLINK", "eth1old", index, LINK_OK))
        assert "eth1" not in d.links and d.links["eth1old"]["index"] == index
        assert ("wlan1", "interface renamed to eth1old") in d.on_link_calls
        assert d.kicks >= 1
    run(body)
