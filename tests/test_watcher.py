"""Unit tests of ecmpd.watcher: kernel events → typed events for the daemon, with a fake
sink and fake netlink sockets (no root, no namespaces).  Events are real pyroute2 message
objects, so the `msg.get(...)` lookups are the ones the daemon sees (e.g. RTA_TABLE over
the header's 8-bit table for tables above 255).  What an event means for the daemon's
state is ecmpd.events' business (tests/test_state.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import types
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Awaitable, Callable, Iterator

import pytest

import ecmpd.netlinkimport  # noqa: F401  (pyroute2 loaded the way ecmpd loads it)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ecmpd import watcher as watcher_mod
from ecmpd.events import (AddressesChanged, DefaultsChanged, DefaultsRead, LinkChanged,
                          Resynced,
                          RouteChanged, RuleChanged,
                          RulesetChanged)
from ecmpd.netlinkimport import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE,
                                 RTMGRP_LINK)
from ecmpd.configmodel import Config, Wan
from ecmpd.ownaddr import RTMGRP_IPV6_IFADDR
from ecmpd.state import Default, Link
from ecmpd.watcher import Watcher
from lab.wait import until_async

IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
LINK_OK = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
ECMPD_PROTO = 236
RTMGRP_IPV6_ROUTE, RTMGRP_IPV6_RULE = 0x400, 0x40000     # linux/rtnetlink.h
ENOBUFS = OSError(errno.ENOBUFS, "No buffer space available")


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 20))     # a hang fails


# ---- pyroute2-shaped messages ---------------------------------------------------------

def link_msg(event: str, name: str, index: int, flags: int) -> ifinfmsg:
    m = ifinfmsg()
    m["index"], m["flags"], m["event"] = index, flags, event
    m["attrs"] = [("IFLA_IFNAME", name)]
    return m


def addr_msg(event: str, index: int, local: str, prefixlen: int = 24) -> ifaddrmsg:
    m = ifaddrmsg()
    m["index"], m["prefixlen"], m["flags"], m["event"] = index, prefixlen, 0, event
    m["family"] = socket.AF_INET
    m["attrs"] = [("IFA_LOCAL", local), ("IFA_ADDRESS", local)]
    return m


def route_msg(event: str, table: int, dst_len: int = 0, proto: int = ECMPD_PROTO,
              family: int = 4) -> rtmsg:
    m = rtmsg()
    # the header holds 8 bits (RT_TABLE_COMPAT 252 above 255); RTA_TABLE the real id
    m["table"] = table if table < 256 else 252
    m["dst_len"], m["proto"], m["event"] = dst_len, proto, event
    m["family"] = socket.AF_INET if family == 4 else socket.AF_INET6
    attrs: list = [("RTA_TABLE", table),
                   ("RTA_GATEWAY", "192.0.2.1" if family == 4 else "fe80::1"), ("RTA_OIF", 11)]
    if dst_len:
        attrs.append(("RTA_DST", "203.0.113.0" if family == 4 else "2001:db8:113::"))
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

LINKS = {"eth1": Link(11, True, False), "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.10", 24),), 12: (("198.51.100.99", 24),)}
ADDRS6 = {12: (("2001:db8::10", 64),)}
LOCAL = frozenset({"192.0.2.10", "198.51.100.99", "2001:db8::10"})


class Sink:
    """What the watcher uses of the daemon; `log` records the order of everything."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.log = log if log is not None else []
        self.events: list[Any] = []
        self.started = True
        self.fail: Exception | None = None
        self.submit_error: Exception | None = None

    def submit(self, event: Any) -> None:
        if self.submit_error is not None:
            raise self.submit_error
        self.events.append(event)
        self.log.append(f"submit {type(event).__name__}")

    async def _dump(self, what: str, value: Any) -> Any:
        self.log.append(f"dump {what}")
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return dict(value) if self.started else None

    async def dump_links(self):
        return await self._dump("links", LINKS)

    async def dump_addresses(self, family=4):
        if family == 4:
            return await self._dump("addresses", ADDRS)
        return await self._dump("addresses6", ADDRS6)

    async def dump_defaults(self, table=None, family=4):
        return {}

    async def dump_local(self):
        await asyncio.sleep(0)
        return LOCAL if self.started else None


class EventSource:
    """A fake rtnetlink event socket: each `get()` yields one scripted batch of messages,
    then raises the batch's exception (None: blocks until cancelled)."""

    def __init__(self, n: int, log: list[str], batches: list[tuple[list, BaseException | None]]
                 ) -> None:
        self.n, self.log, self.batches = n, log, list(batches)
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
        self.log.append(f"close {self.n}")


class Subscriptions:
    """The watcher's socket factory: the n-th socket opened plays `scripts[n]`."""

    def __init__(self, log: list[str], *scripts: list) -> None:
        self.log, self.scripts = log, list(scripts)
        self.made: list[EventSource] = []

    def __call__(self) -> EventSource:
        n = len(self.made)
        self.log.append(f"open {n}")
        s = EventSource(n, self.log, self.scripts[n] if n < len(self.scripts) else [])
        self.made.append(s)
        return s


def started(*scripts: list) -> tuple[Watcher, Sink, Subscriptions]:
    """A watcher reading scripted sockets (no nft socket)."""
    log: list[str] = []
    sink, subs = Sink(log), Subscriptions(log, *scripts)
    return Watcher(sink, subscription=subs), sink, subs


async def start_rtnl(w: Watcher) -> None:
    await w._subscribe()
    w._task = asyncio.get_running_loop().create_task(w._rtnl_loop())


async def handle(*msgs: Any) -> list[Any]:
    sink = Sink()
    w = Watcher(sink)
    for m in msgs:
        await w._handle(m)
    return sink.events


# ---- one message, one event ------------------------------------------------------------

@pytest.mark.parametrize("flags, link", [
    (LINK_OK, Link(11, True, True)),
    (IFF_UP, Link(11, True, False)),          # carrier lost
    (IFF_LOWER_UP, Link(11, False, False)),   # administratively down: no carrier either
    (0, Link(11, False, False)),
])
def test_newlink_reports_the_link(flags, link) -> None:
    assert run(handle, link_msg("RTM_NEWLINK", "eth1", 11, flags)) == [LinkChanged("eth1", link)]


def test_dellink_reports_the_interface_gone() -> None:
    assert run(handle, link_msg("RTM_DELLINK", "eth2", 12, 0)) == [LinkChanged("eth2", None)]


@pytest.mark.parametrize("event, removed", [("RTM_NEWADDR", False), ("RTM_DELADDR", True)])
def test_address_changes_are_reported_with_the_reread_table(event, removed) -> None:
    async def body() -> tuple[list, list]:
        sink = Sink()
        await Watcher(sink)._handle(addr_msg(event, 12, "198.51.100.99"))
        return sink.events, sink.log
    events, log = run(body)
    assert events == [AddressesChanged(12, removed, ADDRS, LOCAL, 4)]
    assert log == ["dump addresses", "submit AddressesChanged"]


@pytest.mark.parametrize("event, removed", [("RTM_NEWADDR", False), ("RTM_DELADDR", True)])
def test_an_ipv6_address_change_rereads_the_ipv6_addresses(event, removed) -> None:
    """An IPv6 address event re-reads the IPv6 table only (never the IPv4 one) and
    reports it as IPv6's, with the router's own addresses."""
    msg = addr_msg(event, 12, "2001:db8::10", 64)
    msg["family"] = socket.AF_INET6
    async def body() -> tuple[list, list]:
        sink = Sink()
        await Watcher(sink)._handle(msg)
        return sink.events, sink.log
    events, log = run(body)
    assert events == [AddressesChanged(12, removed, ADDRS6, LOCAL, 6)]
    assert log == ["dump addresses6", "submit AddressesChanged"]


def test_address_change_before_start_reports_no_table() -> None:
    async def body() -> list:
        sink = Sink()
        sink.started = False
        await Watcher(sink)._handle(addr_msg("RTM_DELADDR", 11, "192.0.2.10"))
        return sink.events
    assert run(body) == [AddressesChanged(11, True, None)]


@pytest.mark.parametrize("event, table, dst_len", [
    ("RTM_DELROUTE", 254, 0), ("RTM_NEWROUTE", 1002, 0), ("RTM_DELROUTE", 1255, 0),
    ("RTM_DELROUTE", 100, 0), ("RTM_NEWROUTE", 1001, 32),
])
def test_route_events_carry_the_real_table(event, table, dst_len) -> None:
    assert run(handle, route_msg(event, table, dst_len)) == [RouteChanged(table, dst_len)]


@pytest.mark.parametrize("priority, reported", [(1000, 1000), (1511, 1511), (None, 0)])
def test_rule_events_carry_the_priority(priority, reported) -> None:
    assert run(handle, rule_msg("RTM_DELRULE", priority)) == [RuleChanged(reported)]


def test_other_programs_default_routes_are_reread_while_a_wan_learns_its_gateway() -> None:
    """A DHCP client's default route (proto dhcp, 16) in any table: that table is re-read
    in the route's IP version and reported as that version's; ecmpd's own routes, other
    prefixes and configs without `gateway: auto` / `gateway6: auto` read nothing."""
    class Defaults(Sink):
        async def dump_defaults(self, table=None, family=4):
            self.log.append(f"dump defaults {table} {family}")
            return {table: (Default(0, 11, "192.0.2.1" if family == 4 else "fe80::1"),)}

    def events(cfg, *msgs) -> tuple[list, list]:
        async def body() -> tuple[list, list]:
            sink = Defaults()
            w = Watcher(sink)
            w.follow(cfg)
            for m in msgs:
                await w._handle(m)
            return sink.events, [line for line in sink.log if "defaults" in line]
        return run(body)

    auto = Config(("lan0",), (Wan("w", "eth1", None),))
    fixed = Config(("lan0",), (Wan("w", "eth1", IPv4Address("192.0.2.1")),))
    auto6 = Config(("lan0",), (Wan("w", "eth1", None, families=(6,)),))
    fixed6 = Config(("lan0",), (Wan("w", "eth1", None, gateway6=IPv6Address("fe80::1"),
                                    families=(6,)),))
    learned = DefaultsChanged(77, (Default(0, 11, "192.0.2.1"),), 4)
    learned6 = DefaultsChanged(77, (Default(0, 11, "fe80::1"),), 6)
    assert events(auto, route_msg("RTM_NEWROUTE", 77, proto=16)) == (
        [RouteChanged(77, 0), learned], ["dump defaults 77 4"])
    assert events(auto6, route_msg("RTM_NEWROUTE", 77, proto=16, family=6)) == (
        [RouteChanged(77, 0), learned6], ["dump defaults 77 6"])
    assert events(auto, route_msg("RTM_NEWROUTE", 1001), route_msg("RTM_NEWROUTE", 77, 24, 16),
                  ) == ([RouteChanged(1001, 0), RouteChanged(77, 24)], [])
    assert events(fixed, route_msg("RTM_DELROUTE", 254, proto=16)) == (
        [RouteChanged(254, 0)], [])
    assert events(fixed6, route_msg("RTM_DELROUTE", 254, proto=16, family=6)) == (
        [RouteChanged(254, 0)], [])


def test_a_link_or_address_that_goes_rereads_the_defaults_once_while_learning() -> None:
    """The kernel drops the routes via a gateway a deleted address reached, or via a link
    set down, without a route event: while a WAN learns its gateway, one re-read of
    every table's default routes of each IP version follows (one for a burst)."""
    class Defaults(Sink):
        async def dump_defaults(self, table=None, family=4):
            self.log.append(f"dump defaults {table} {family}")
            return {254: (Default(0, 11, "192.0.2.1" if family == 4 else "fe80::1"),)}

    async def body(cfg, *msgs) -> tuple[list, list]:
        sink = Defaults()
        w = Watcher(sink)
        w.follow(cfg)
        for m in msgs:
            await w._handle(m)
        await asyncio.sleep(0.01)
        return sink.events, [line for line in sink.log if "defaults" in line]

    auto = Config(("lan0",), (Wan("w", "eth1", None),))
    fixed = Config(("lan0",), (Wan("w", "eth1", IPv4Address("192.0.2.1")),))
    gone6 = addr_msg("RTM_DELADDR", 11, "2001:db8::10", 64)
    gone6["family"] = socket.AF_INET6
    gone = (addr_msg("RTM_DELADDR", 11, "192.0.2.10"), link_msg("RTM_NEWLINK", "eth1", 11, 0),
            link_msg("RTM_DELLINK", "eth1", 11, 0))
    read = [DefaultsRead({254: (Default(0, 11, "192.0.2.1"),)}, 4),
            DefaultsRead({254: (Default(0, 11, "fe80::1"),)}, 6)]
    for burst in (gone, (gone6, *gone[1:])):         # an IPv4 or an IPv6 address gone
        events, dumps = asyncio.run(body(auto, *burst))
        assert dumps == ["dump defaults None 4", "dump defaults None 6"]
        assert [e for e in events if isinstance(e, DefaultsRead)] == read
        assert events[-2:] == read
    events, dumps = asyncio.run(body(fixed, *gone))
    assert dumps == [] and not any(isinstance(e, DefaultsRead) for e in events)
    # an address added, a link up: nothing went
    _, dumps = asyncio.run(body(auto, addr_msg("RTM_NEWADDR", 11, "192.0.2.10"),
                                link_msg("RTM_NEWLINK", "eth1", 11, 0x10001)))
    assert dumps == []


def test_unrelated_events_are_ignored() -> None:
    assert run(handle, {"event": "RTM_NEWNEIGH", "index": 11}, {"event": None}) == []


def test_the_watcher_writes_nothing_but_events() -> None:
    """It reads the sink's dumps and calls submit: nothing else of the daemon's."""
    class Strict(Sink):
        def __setattr__(self, name: str, value: Any) -> None:
            if getattr(self, "sealed", False):
                raise AssertionError(f"the watcher wrote sink.{name}")
            super().__setattr__(name, value)

    async def body() -> list:
        sink = Strict()
        sink.sealed = True
        w = Watcher(sink)
        for m in (link_msg("RTM_NEWLINK", "eth1", 11, 0), addr_msg("RTM_NEWADDR", 11, "x"),
                  route_msg("RTM_DELROUTE", 254), rule_msg("RTM_NEWRULE", 1001)):
            await w._handle(m)
        await w.resync()
        return sink.events
    assert len(run(body)) == 5


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


def test_nft_readable_drains_the_socket_and_reports_once() -> None:
    sink = Sink()
    w = Watcher(sink)
    with nft_pair() as (a, b):
        for _ in range(3):
            b.send(b"nft event")
        w._nft = a
        w._nft_readable()
        assert sink.events == [RulesetChanged()] and w.events == 1
        with pytest.raises(BlockingIOError):
            a.recv(100)                       # everything was read
        w._nft = None


def test_nft_read_error_still_reports() -> None:
    class Overrun:
        def recv(self, n: int) -> bytes:
            raise ENOBUFS

    sink = Sink()
    w = Watcher(sink)
    w._nft = Overrun()  # type: ignore[assignment]
    w._nft_readable()
    assert sink.events == [RulesetChanged()]


def test_nft_events_reach_the_sink_through_the_loop_until_stop() -> None:
    async def body() -> None:
        sink = Sink()
        w = Watcher(sink)
        with nft_pair() as (a, b):
            w._nft = a
            asyncio.get_running_loop().add_reader(a.fileno(), w._nft_readable)
            b.send(b"ruleset changed")
            await until_async(lambda: sink.events == [RulesetChanged()], message="the nft event")
            await w.stop()
            assert w._nft is None and a.fileno() == -1      # reader removed, closed
    run(body)


# ---- resync, overflow and the event loop ------------------------------------------------

def test_resync_reports_both_dumps_as_one_event() -> None:
    async def body() -> Sink:
        sink = Sink()
        await Watcher(sink).resync()
        return sink
    sink = run(body)
    assert sink.events == [Resynced(LINKS, ADDRS, {}, LOCAL, ADDRS6, {})]
    assert sink.log == ["dump links", "dump addresses", "dump addresses6", "submit Resynced"]


def test_resync_reports_each_versions_default_routes_as_its_own() -> None:
    class Defaults(Sink):
        async def dump_defaults(self, table=None, family=4):
            assert table is None
            return {254: (Default(0, 11, "192.0.2.1" if family == 4 else "fe80::1"),)}

    async def body() -> Sink:
        sink = Defaults()
        await Watcher(sink).resync()
        return sink
    [resynced] = run(body).events
    assert resynced == Resynced(LINKS, ADDRS, {254: (Default(0, 11, "192.0.2.1"),)}, LOCAL,
                                ADDRS6, {254: (Default(0, 11, "fe80::1"),)})


def test_resync_before_start_reports_nothing() -> None:
    async def body() -> Sink:
        sink = Sink()
        sink.started = False
        await Watcher(sink).resync()
        return sink
    assert run(body).events == []


@pytest.mark.parametrize("error", [ENOBUFS, OSError(errno.EBADMSG, "Bad message"),
                                   ValueError("undecodable message")])
def test_lost_events_drop_the_backlog_and_resync_from_a_new_subscription(error, caplog) -> None:
    """The backlog queued before the overflow is never read: the socket holding it is
    closed and a new one opened before the dumps, so nothing after them is missed."""
    stale = link_msg("RTM_DELLINK", "eth2", 12, 0)
    fresh = link_msg("RTM_NEWLINK", "eth1", 11, LINK_OK)

    async def body() -> tuple[Watcher, Sink, Subscriptions]:
        w, sink, subs = started([([rule_msg("RTM_DELRULE", 1001)], error), ([stale], None)],
                                [([fresh], None)])
        await start_rtnl(w)
        await until_async(lambda: len(sink.events) == 3, message="the event after the resync")
        assert not w._task.done()
        await w.stop()
        return w, sink, subs

    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        w, sink, subs = run(body)
    assert sink.events == [RuleChanged(1001), Resynced(LINKS, ADDRS, {}, LOCAL, ADDRS6, {}),
                           LinkChanged("eth1", Link(11, True, True))]
    assert sink.log == ["open 0", "submit RuleChanged", "open 1", "close 0", "dump links",
                        "dump addresses", "dump addresses6", "submit Resynced",
                        "submit LinkChanged", "close 1"]
    assert subs.made[0].gets == 1 and subs.made[0].batches == [([stale], None)]  # never read
    assert (w.events, w.resyncs) == (2, 1)
    if error is ENOBUFS:
        assert "lost events" in caplog.text
    assert "resynchronising" in caplog.text


def test_an_error_while_handling_an_event_resyncs_and_the_loop_keeps_running() -> None:
    class Buggy(Sink):
        bugs = 2

        def submit(self, event: Any) -> None:
            if self.bugs:
                self.bugs -= 1
                raise RuntimeError("daemon bug")
            super().submit(event)

    async def body() -> None:
        log: list[str] = []
        sink = Buggy(log)
        subs = Subscriptions(log, [([link_msg("RTM_NEWLINK", "eth1", 11, IFF_UP)], None)],
                             [([route_msg("RTM_DELROUTE", 254)], None)])
        w = Watcher(sink, subscription=subs)
        await start_rtnl(w)
        # the event fails, the resync's submit fails too: still watching, on a new socket
        await until_async(lambda: sink.events == [RouteChanged(254, 0)],
                          message="the event after the errors")
        assert sink.bugs == 0 and len(subs.made) == 2
        assert not w._task.done()
        await w.stop()
    run(body)


def test_a_failing_resync_does_not_end_the_loop(caplog) -> None:
    async def body() -> Sink:
        w, sink, subs = started([([], ENOBUFS)], [([], ENOBUFS)],
                                [([route_msg("RTM_DELROUTE", 1001)], None)])
        sink.fail = OSError(errno.EBUSY, "Device or resource busy")
        await start_rtnl(w)
        await until_async(lambda: sink.events == [RouteChanged(1001, 0)], message="the route event")
        assert [s.closed for s in subs.made] == [True, True, False]
        assert not w._task.done()
        await w.stop()
        return sink
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        sink = run(body)
    assert sink.log.count("dump links") == 2
    assert "resynchronisation failed" in caplog.text


def test_subscribing_again_is_retried_until_it_works(monkeypatch, caplog) -> None:
    monkeypatch.setattr(watcher_mod, "RETRY", 0.01)
    log: list[str] = []
    subs = Subscriptions(log, [([], ENOBUFS)], [], [], [([rule_msg("RTM_NEWRULE", 1000)], None)])
    failures = [OSError(errno.EMFILE, "Too many open files")] * 2

    def flaky() -> EventSource:
        s = subs()
        if len(subs.made) in (2, 3):
            async def refuse(groups: int = 0) -> None:
                raise failures.pop()
            s.bind = refuse  # type: ignore[method-assign]
        return s

    async def body() -> Sink:
        sink = Sink(log)
        w = Watcher(sink, subscription=flaky)
        await start_rtnl(w)
        await until_async(lambda: RuleChanged(1000) in sink.events,
                          message="the event on the 4th socket")
        await w.stop()
        return sink
    with caplog.at_level(logging.ERROR, logger="ecmpd"):
        sink = run(body)
    assert [s.closed for s in subs.made] == [True, True, True, True]
    assert sink.events == [Resynced(LINKS, ADDRS, {}, LOCAL, ADDRS6, {}), RuleChanged(1000)]
    assert caplog.text.count("cannot subscribe to kernel events") == 2


def test_an_ended_event_stream_is_resubscribed() -> None:
    class Ends(EventSource):
        async def get(self):
            if self.n == 0:
                return
            async for m in super().get():
                yield m

    class Subs(Subscriptions):
        def __call__(self) -> EventSource:
            s = Ends(len(self.made), self.log, self.scripts[len(self.made)])
            self.made.append(s)
            return s

    async def body() -> Sink:
        log: list[str] = []
        sink = Sink(log)
        w = Watcher(sink, subscription=Subs(log, [], [([rule_msg("RTM_NEWRULE", 1000)], None)]))
        await start_rtnl(w)
        await until_async(lambda: RuleChanged(1000) in sink.events,
                          message="the event on the new socket")
        await w.stop()
        return sink
    assert run(body).events == [Resynced(LINKS, ADDRS, {}, LOCAL, ADDRS6, {}),
                                RuleChanged(1000)]


def test_stop_cancels_the_loop_and_closes_the_socket() -> None:
    async def body() -> None:
        w, sink, subs = started([([route_msg("RTM_DELROUTE", 254)], None)])
        await start_rtnl(w)
        await until_async(lambda: len(sink.events) == 1, message="the first event")
        task = w._task
        await w.stop()
        assert task is not None and task.cancelled()
        assert subs.made[0].closed and w._ipr is None
        await w.stop()                          # a second stop is harmless
    run(body)


def test_stop_of_a_watcher_never_started_is_harmless() -> None:
    run(Watcher(Sink()).stop)


def test_start_subscribes_to_the_groups_of_both_versions_and_survives_without_nft(monkeypatch,
                                                                     caplog) -> None:
    def no_netlink_netfilter(*a: Any, **kw: Any) -> socket.socket:
        raise OSError(errno.EPERM, "Operation not permitted")

    shim = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket)
                                    if k.isupper()})
    shim.socket = no_netlink_netfilter
    monkeypatch.setattr(watcher_mod, "socket", shim)

    async def body() -> None:
        w, sink, subs = started([([link_msg("RTM_NEWLINK", "eth1", 11, IFF_UP)], None)])
        await w.start()
        s = subs.made[0]
        assert s.bound_groups == (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
                                  | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE
                                  | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_RULE)
        assert (socket.SOL_SOCKET, socket.SO_RCVBUF, watcher_mod.RCVBUF) in s.socket.opts
        assert w._nft is None
        await until_async(lambda: sink.events == [LinkChanged("eth1", Link(11, True, False))],
                          message="the first event")
        await w.stop()
        assert s.closed
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        run(body)
    assert "cannot watch nftables changes" in caplog.text
