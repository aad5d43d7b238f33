"""Other programs' default-route churn costs ecmpd no reconcile (issue #16, item 6): the
event predicate, the kernel filter that applies it earlier, the watcher's bounded
re-reads of a learning WAN's tables and the rate-limited gateway log line."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Address

import pytest

from ecmpd import events as ev
from ecmpd.configmodel import Config, Wan
from ecmpd.rtfilter import route_event_program
from ecmpd.state import Default, Link, initial
from ecmpd.watcher import READS, Watcher

from tests.test_rtfilter import route_msg as raw_route, run_bpf, validate
from tests.test_watcher import route_msg

AUTO = Config(("lan0",), (Wan("w", "eth1", None),))
FIXED = Config(("lan0",), (Wan("w", "eth1", IPv4Address("192.0.2.1")),))


@pytest.mark.parametrize("table, proto, reconcile", [
    (254, 236, True), (254, None, True), (254, 16, False), (254, 3, False),
    (1001, 16, True), (1001, 236, True), (100, 236, False)])
def test_only_ecmpd_routes_in_main_reconcile(table, proto, reconcile) -> None:
    st = initial(FIXED, {}, {}, (), 0.0)
    assert bool(ev.step(st, ev.RouteChanged(table, 0, proto), 0.0)[1]) is reconcile


def test_the_proto_refines_but_does_not_tell_reports_apart() -> None:
    assert ev.RouteChanged(254, 0, 16) == ev.RouteChanged(254, 0)


@pytest.mark.parametrize("order", ["little", "big"])
def test_the_kernel_filter_drops_other_programs_defaults_in_main(order: str) -> None:
    prog = route_event_program([range(1001, 1256)], order, proto=236)
    validate(prog)

    def passes(table: int, proto: int, dst_len: int = 0, **kw) -> bool:
        msg = bytearray(raw_route(table=table, dst_len=dst_len, order=order, **kw))
        msg[21] = proto                                # rtm_protocol
        return bool(run_bpf(prog, bytes(msg)))

    assert passes(254, 236) and not passes(254, 16) and not passes(254, 3)
    assert passes(1001, 16) and passes(1001, 236) and not passes(100, 236)
    assert not passes(254, 236, dst_len=24)
    assert passes(1001, 16, table_attr=False)          # rtm_table 252: kept


def test_an_unchanged_table_reread_changes_nothing() -> None:
    links = {"eth1": Link(11, True, True)}
    addrs = {11: (("192.0.2.10", 24),)}
    d = (Default(0, 11, "192.0.2.1"),)
    st = initial(AUTO, links, addrs, (), 0.0, {254: d})
    assert ev.step(st, ev.DefaultsChanged(254, d), 1.0) == (st, ())


def test_a_gateway_that_moves_logs_under_one_key() -> None:
    links = {"eth1": Link(11, True, True)}
    addrs = {11: (("192.0.2.10", 24),)}
    st = initial(AUTO, links, addrs, (), 0.0, {254: (Default(0, 11, "192.0.2.1"),)})
    _, effects = ev.step(st, ev.DefaultsChanged(254, (Default(0, 11, "192.0.2.254"),)), 1.0)
    logs = [e for e in effects if isinstance(e, ev.Log)]
    assert [(e.level, e.key) for e in logs] == [(25, "gateway w")]
    assert ev.Reconcile(urgent=True) in effects


class Sink:
    def __init__(self) -> None:
        self.events: list = []
        self.reads = 0
        self.tables: list[tuple[int, int | None]] = []
        """(IP version, table) of every read, in order."""

    def submit(self, event) -> None:
        self.events.append(event)

    async def dump_defaults(self, table=None, family=4):
        self.reads += 1
        self.tables.append((family, table))
        return {table: (Default(self.reads, 11, "192.0.2.1" if family == 4 else "fe80::1"),)}


def test_a_burst_of_changes_is_read_a_bounded_number_of_times_and_the_last_is_read() -> None:
    async def body() -> tuple[Sink, int]:
        sink = Sink()
        w = Watcher(sink)
        w.follow(AUTO)
        burst = 200
        for _ in range(burst):
            await w._handle(route_msg("RTM_NEWROUTE", 254, proto=16))
        at_once = sink.reads
        await asyncio.sleep(3 / READS[1])
        return sink, at_once

    sink, at_once = asyncio.run(asyncio.wait_for(body(), 10))
    assert at_once == READS[0]                 # the first few at once, then held
    assert sink.reads == READS[0] + 1          # one read for everything held back
    reads = [e for e in sink.events if isinstance(e, ev.DefaultsChanged)]
    assert reads[-1].defaults == (Default(sink.reads, 11, "192.0.2.1"),)
    assert {(e.family, e.table) for e in reads} == {(4, 254)} and len(reads) == sink.reads
    assert len([e for e in sink.events if isinstance(e, ev.RouteChanged)]) == 200


def test_held_changes_are_read_after_the_token_comes() -> None:
    async def body() -> list[int]:
        sink = Sink()
        w = Watcher(sink)
        w.follow(AUTO)
        counts = []
        for _ in range(READS[0] + 1):
            await w._handle(route_msg("RTM_NEWROUTE", 254, proto=16))
        counts.append(sink.reads)
        await asyncio.sleep(2 / READS[1])
        counts.append(sink.reads)
        await w._handle(route_msg("RTM_DELROUTE", 77, proto=16))   # a token is back
        counts.append(sink.reads)
        await w.stop()
        return counts

    assert asyncio.run(asyncio.wait_for(body(), 10)) == [READS[0], READS[0] + 1, READS[0] + 2]


def test_held_tables_of_the_two_versions_are_read_apart() -> None:
    """Table 254 of IPv4 and of IPv6 are two tables: held back in one burst, each is read
    once, in its own version, when the token comes."""
    async def body() -> Sink:
        sink = Sink()
        w = Watcher(sink)
        w.follow(AUTO)
        for _ in range(READS[0]):
            await w._handle(route_msg("RTM_NEWROUTE", 254, proto=16))
        for family in (6, 4, 6, 4):
            await w._handle(route_msg("RTM_NEWROUTE", 254, proto=16, family=family))
        held = len(sink.tables)
        await asyncio.sleep(3 / READS[1])
        await w.stop()
        assert held == READS[0]
        return sink

    sink = asyncio.run(asyncio.wait_for(body(), 10))
    assert sink.tables == [(4, 254)] * READS[0] + [(4, 254), (6, 254)]
    reads = [e for e in sink.events if isinstance(e, ev.DefaultsChanged)]
    assert [(e.family, e.table) for e in reads[-2:]] == [(4, 254), (6, 254)]
    assert reads[-1].defaults == (Default(sink.reads, 11, "fe80::1"),)


def test_the_daemon_rate_limits_keyed_log_lines(caplog) -> None:
    from ecmpd.daemon import Daemon
    d = Daemon(FIXED, "/nonexistent.yaml")
    caplog.set_level(logging.INFO, logger="ecmpd")

    async def body() -> None:
        for i in range(50):
            d._carry_out([ev.Log(25, f"w: gateway a -> b{i}", "gateway w"),
                          ev.Log(20, f"other {i}")])
    asyncio.run(body())
    assert sum("gateway" in r.message for r in caplog.records) == 1
    assert sum("other" in r.message for r in caplog.records) == 50

