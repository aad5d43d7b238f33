"""The lab traffic tool: outage() and result parsing (pure); serve/flows/hold on loopback
inside a namespace of our own (root)."""

from __future__ import annotations

import json
import math
from typing import Callable

import pytest

from lab import driver, netns
from lab.traffic import (FlowResult, fault_offset, main, outage, parse_flows,
                               parse_held)


def flows_at(*spec: tuple[float, bool]) -> list[FlowResult]:
    return [FlowResult(t=t, ok=ok, source="10.0.0.1" if ok else None, latency=None)
            for t, ok in spec]


# ------------------------------------------------------------------ outage()


def test_outage_zero_when_nothing_failed_after_the_fault() -> None:
    assert outage([], 1.0) == 0.0
    assert outage(flows_at((0.0, True), (1.0, True), (2.0, True)), 0.5) == 0.0
    # A failure before the fault is not this fault's outage.
    assert outage(flows_at((0.0, False), (1.0, True), (2.0, True)), 0.5) == 0.0


def test_outage_from_first_failure_to_lasting_recovery() -> None:
    res = flows_at((0.0, True), (1.0, True), (2.0, False), (3.0, False), (4.0, True), (5.0, True))
    assert outage(res, 1.5) == pytest.approx(2.0)
    # The fault time itself counts as "at/after".
    assert outage(res, 2.0) == pytest.approx(2.0)


def test_outage_recovery_must_last_to_the_end() -> None:
    res = flows_at((1.0, False), (2.0, True), (3.0, False), (4.0, True), (5.0, True))
    assert outage(res, 0.5) == pytest.approx(3.0)  # flickering success at 2.0 is no recovery


def test_outage_is_infinite_when_never_recovered_and_input_is_sorted() -> None:
    assert outage(flows_at((1.0, True), (2.0, False), (3.0, False)), 0.0) == math.inf
    shuffled = flows_at((4.0, True), (2.0, False), (1.0, True), (3.0, True))
    assert outage(shuffled, 0.0) == pytest.approx(1.0)


def test_fault_offset_maps_wall_clock_to_t() -> None:
    res = [FlowResult(t=0.5, ok=True, source=None, latency=None, wall=1000.5)]
    assert fault_offset(res, 1002.0) == pytest.approx(2.0)


# ------------------------------------------------------------------ parsing


def test_parse_flows_takes_the_last_json_line() -> None:
    out = "warming up\n" + json.dumps([
        {"t": 0.0, "ok": True, "source": "10.111.0.2", "latency": 0.002, "error": None,
         "bind": "192.168.0.3", "wall": 12.5},
        {"t": 0.1, "ok": False, "source": None, "latency": None, "error": "timeout"},
    ]) + "\n"
    a, b = parse_flows(out)
    assert (a.ok, a.source, a.latency, a.bind, a.wall, a.wan) == (
        True, "10.111.0.2", 0.002, "192.168.0.3", 12.5, None)
    assert (b.t, b.ok, b.source, b.error, b.latency, b.bind) == (0.1, False, None, "timeout", None, None)


def test_parse_held_and_bad_output() -> None:
    out = "established 2\n" + json.dumps([
        {"source": "10.111.0.2", "broken": False, "error": None, "broken_at": None},
        {"source": "10.112.0.2", "broken": True, "error": "closed", "broken_at": 1.25,
         "broken_wall": 99.0},
    ])
    ok, broken = parse_held(out)
    assert (ok.broken, ok.source) == (False, "10.111.0.2")
    assert (broken.broken, broken.error, broken.broken_at, broken.broken_wall) == (
        True, "closed", 1.25, 99.0)
    with pytest.raises(ValueError):
        parse_flows("established 2\n")
    with pytest.raises(ValueError):
        parse_flows("[1, 2]\n")
    with pytest.raises(KeyError):
        parse_held('[{"source": null}]')


def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["flows", "--count", "3"])  # --server is required
    with pytest.raises(SystemExit):
        main(["nonsense"])


# ------------------------------------------------------------------ the tool, for real (root)


@pytest.fixture
def loopback_ns(make_netns: Callable[[str], str]) -> str:
    """A fresh namespace with only `lo` up; destroyed afterwards."""
    return make_netns("lo")


@pytest.mark.lab
def test_serve_flows_hold_on_loopback(loopback_ns: str) -> None:
    ns = loopback_ns
    server = driver.start_server(ns, 5000)
    try:
        tcp = driver.run_flows(ns, "127.0.0.1", 5, interval=0.02)
        assert [(r.ok, r.source) for r in tcp] == [(True, "127.0.0.1")] * 5
        assert all(r.t >= i * 0.02 for i, r in enumerate(tcp))  # never starts early
        udp = driver.run_flows(ns, "127.0.0.2", 3, proto="udp", sources=["127.0.0.5", "127.0.0.6"])
        assert [(r.ok, r.source, r.bind) for r in udp] == [
            (True, "127.0.0.5", "127.0.0.5"), (True, "127.0.0.6", "127.0.0.6"),
            (True, "127.0.0.5", "127.0.0.5")]
        refused = driver.run_flows(ns, "127.0.0.1", 1, port=5999)
        assert not refused[0].ok and "ConnectionRefused" in (refused[0].error or "")

        held = driver.start_hold(ns, "127.0.0.1", 4, byte_interval=0.01)
        assert held.wait_established() == 4
        driver.run_flows(ns, "127.0.0.1", 1)  # let some echoes pass meanwhile
        assert [(h.broken, h.source) for h in held.stop()] == [(False, "127.0.0.1")] * 4

        held = driver.start_hold(ns, "127.0.0.1", 2, byte_interval=0.01)
        assert held.wait_established() == 2
        assert held.broken() == 0
    finally:
        server.terminate()
        server.wait()
    assert held.wait_broken() == 2  # the server went away: every flow breaks
    assert all(h.broken and h.broken_at is not None and h.error for h in held.stop())


@pytest.mark.lab
def test_flows_keep_their_schedule_when_flows_hang(loopback_ns: str) -> None:
    """Each flow is its own task: flows that time out do not delay the next starts."""
    netns.nft(loopback_ns, "table ip t {\n chain input {\n"
              "  type filter hook input priority 0;\n  tcp dport 5998 drop\n }\n}\n")
    res = driver.run_flows(loopback_ns, "127.0.0.1", 6, interval=0.05, timeout=2.0, port=5998)
    assert [(r.ok, r.error) for r in res] == [(False, "timeout")] * 6
    assert res[-1].t < res[0].t + 2.0  # the last started before the first timed out
