"""Tests for ecmpd.prober.

Pure part: Window, judge() and a Prober driven by a fake ping on a virtual-time event
loop (asyncio's timers run against a clock that jumps instead of waiting).
Root part (marker `lab`): a real Prober in a network namespace of its own, run in a
subprocess with `ip netns exec`, probing a peer namespace over a veth pair.
The echo socket itself is tested in test_icmpecho.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ecmpd.prober
from ecmpd.icmpecho import IcmpPinger
from ecmpd.model import ProbeSettings
from ecmpd.prober import (
    GRACE,
    Prober,
    RoundResult,
    TargetSample,
    Window,
    judge,
    spacing,
)

REPO = Path(__file__).resolve().parent.parent


def S(addr: str, sent: int, received: int, rtt: float | None = None) -> TargetSample:
    return TargetSample(addr, sent, received, rtt)


# --- Window ------------------------------------------------------------------------


def test_window_empty() -> None:
    w = Window(3)
    assert (len(w), w.size, w.loss_pct(), w.mean_rtt(), w.per_target()) == (0, 3, 0.0, None, {})
    with pytest.raises(ValueError):
        Window(0)


def test_window_stats_and_sliding() -> None:
    w = Window(3)
    w.add([S("a", 2, 2, 0.010), S("b", 2, 0)])
    assert w.loss_pct() == pytest.approx(50.0)
    assert w.mean_rtt() == pytest.approx(0.010)
    w.add([S("a", 2, 1, 0.040), S("b", 2, 1, 0.100)])
    # replies: a 2x10ms + 1x40ms, b 1x100ms -> mean weighted by replies
    assert w.mean_rtt() == pytest.approx((0.020 + 0.040 + 0.100) / 4)
    assert w.per_target() == {
        "a": (pytest.approx(25.0), pytest.approx(0.060 / 3)),
        "b": (pytest.approx(75.0), pytest.approx(0.100)),
    }
    w.add([S("a", 2, 2, 0.010), S("b", 2, 2, 0.010)])
    w.add([S("a", 2, 2, 0.010), S("b", 2, 2, 0.010)])  # the first round drops out
    assert len(w) == 3
    assert w.loss_pct() == pytest.approx(100.0 * 2 / 12)
    assert w.per_target()["b"][0] == pytest.approx(100.0 / 6)


def test_window_resized_keeps_newest() -> None:
    w = Window(4)
    for i in range(4):
        w.add([S("a", 1, 1 if i >= 2 else 0, 0.01)])
    small = w.resized(2)
    assert (len(small), small.size, small.loss_pct()) == (2, 2, 0.0)
    big = w.resized(10)
    assert (len(big), big.loss_pct()) == (4, 50.0)


# --- judge -------------------------------------------------------------------------

OK2 = [S("10.0.0.1", 2, 2, 0.01), S("203.0.113.10", 2, 1, 0.02)]
HALF = [S("10.0.0.1", 2, 2, 0.01), S("203.0.113.10", 2, 0)]
NONE = [S("10.0.0.1", 2, 0), S("203.0.113.10", 2, 0)]


@dataclass
class Case:
    samples: list[TargetSample]
    settings: dict[str, Any]
    ok: bool
    reason: str
    history: tuple[list[TargetSample], ...] = ()


CASES = {
    "all answered": Case(OK2, {}, True, "2/2 targets answered"),
    "one silent, quorum 1": Case(
        HALF, {}, True, "1/2 targets answered (silent: 203.0.113.10)"),
    "one silent, quorum 2": Case(
        HALF, {"quorum": 2}, False, "1/2 targets answered (silent: 203.0.113.10)"),
    "all silent": Case(
        NONE, {}, False, "0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)"),
    "no targets": Case([], {}, False, "0/0 targets answered"),
    "quorum beats loss": Case(
        NONE, {"max_loss": 1.0, "max_rtt": 0.001}, False,
        "0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)"),
    "loss over window": Case(
        [S("a", 1, 1, 0.01)], {"max_loss": 20.0}, False, "loss 30% > 20% over 10 rounds",
        history=tuple([[S("a", 1, 0)]] * 3 + [[S("a", 1, 1, 0.01)]] * 6)),
    "loss at the limit passes": Case(
        [S("a", 1, 1, 0.01)], {"max_loss": 30.0}, True, "1/1 targets answered",
        history=tuple([[S("a", 1, 0)]] * 3 + [[S("a", 1, 1, 0.01)]] * 6)),
    "loss fraction": Case(
        [S("a", 3, 2, 0.01)], {"max_loss": 20.0}, False, "loss 33.3% > 20% over 1 round"),
    "old loss slid out": Case(
        [S("a", 1, 1, 0.01)], {"max_loss": 20.0, "window": 3}, True, "1/1 targets answered",
        history=([S("a", 1, 0)], [S("a", 1, 1, 0.01)], [S("a", 1, 1, 0.01)])),
    "rtt over window": Case(
        [S("a", 1, 1, 0.700)], {"max_rtt": 0.5}, False, "rtt 612ms > 500ms",
        history=([S("a", 1, 1, 0.524)],)),
    "rtt under the limit": Case(
        [S("a", 1, 1, 0.400)], {"max_rtt": 0.5}, True, "1/1 targets answered",
        history=([S("a", 1, 1, 0.590)],)),
    "small rtt formatting": Case(
        [S("a", 1, 1, 0.0045)], {"max_rtt": 0.002}, False, "rtt 4.5ms > 2ms"),
    "loss beats rtt": Case(
        [S("a", 2, 1, 0.9)], {"max_loss": 10.0, "max_rtt": 0.5}, False,
        "loss 50% > 10% over 1 round"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_judge(name: str) -> None:
    c = CASES[name]
    settings = ProbeSettings(**c.settings)
    w = Window(settings.window)
    for past in c.history:
        w.add(past)
    r = judge(c.samples, settings, w, at=7.5)
    assert (r.ok, r.reason) == (c.ok, c.reason)
    assert r.samples == tuple(c.samples) and r.at == 7.5
    assert len(w) == min(len(c.history) + 1, settings.window)  # the round went in


def test_spacing() -> None:
    assert spacing(ProbeSettings(interval=0.2, count=2)) == pytest.approx(0.02)
    assert spacing(ProbeSettings(interval=0.04, count=4)) == pytest.approx(0.005)


# --- Prober on virtual time -----------------------------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        real = self._selector  # type: ignore[has-type]
        loop = self

        class Jumping:
            def select(self, timeout: float | None = None) -> Any:
                if timeout is None:
                    raise RuntimeError("virtual time: nothing scheduled (deadlock)")
                loop.now += max(0.0, timeout)
                return real.select(0)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        self._selector = Jumping()

    def time(self) -> float:
        return self.now


def vrun(coro_fn: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro_fn())


@dataclass
class Call:
    address: str
    source: str
    timeout: float
    at: float


class FakePing:
    """Records calls; behaviour per call from `rtt(call_index, address)`.

    A float sleeps that long and returns it; an exception instance is raised; None
    sleeps the timeout and returns None; "hang" never returns.
    """

    def __init__(self, rtt: Callable[[int, str], Any] = lambda i, a: 0.01) -> None:
        self.calls: list[Call] = []
        self.rtt = rtt

    def record(self, address: str, source: str, timeout: float) -> Any:
        """Note the call; its scripted behaviour (an exception instance is raised)."""
        i = len(self.calls)
        self.calls.append(Call(address, source, timeout, asyncio.get_running_loop().time()))
        v = self.rtt(i, address)
        if isinstance(v, BaseException):
            raise v
        return v

    async def __call__(self, address: str, source: str, timeout: float) -> float | None:
        v = self.record(address, source, timeout)
        if v == "hang":
            await asyncio.Event().wait()
        if v is None:
            await asyncio.sleep(timeout)
            return None
        await asyncio.sleep(v)
        return v


async def collect(p: Prober, results: list[RoundResult], n: int,
                  during: Callable[[int], None] = lambda k: None) -> None:
    """Run `p` until `n` results arrived (virtual deadline), then cancel it."""
    task = asyncio.get_running_loop().create_task(p.run())
    deadline = asyncio.get_running_loop().time() + 10_000
    seen = 0
    while len(results) < n:
        assert asyncio.get_running_loop().time() < deadline, "prober produced no rounds"
        await asyncio.sleep(0.001)
        while seen < len(results):
            seen += 1
            during(seen)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def starts(calls: list[Call], per_round: int) -> list[float]:
    return [calls[i].at for i in range(0, len(calls), per_round)]


def test_cadence_counts_and_spacing() -> None:
    ping = FakePing()
    results: list[RoundResult] = []
    st = ProbeSettings(interval=1.0, timeout=0.5, count=3)
    p = Prober("wan1", ["a", "b"], st, results.append, source="192.0.2.1", ping=ping)

    async def main() -> None:
        await collect(p, results, 5)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    vrun(main)
    assert [r.ok for r in results[:5]] == [True] * 5
    assert results[0].samples == (S("a", 3, 3, 0.01), S("b", 3, 3, 0.01))
    assert results[0].reason == "2/2 targets answered"
    gap = spacing(st)
    for k in range(5):
        rnd = ping.calls[6 * k: 6 * k + 6]
        for a in "ab":
            assert [c.at for c in rnd if c.address == a] == pytest.approx(
                [k + i * gap for i in range(3)])
        assert {(c.source, c.timeout) for c in rnd} == {("192.0.2.1", 0.5)}
        assert results[k].at == pytest.approx(k + 2 * gap + 0.01)
    assert p.last() is results[-1]
    assert len(p.window()) == len(results)


def test_overlapping_rounds_are_delivered_in_order() -> None:
    # round k takes 2.5 s when k is even, 0.5 s when odd; a round starts every second
    ping = FakePing(lambda i, a: 2.5 if i % 2 == 0 else 0.5)
    results: list[RoundResult] = []
    delivered: list[float] = []
    st = ProbeSettings(interval=1.0, timeout=3.0, count=1)

    def on_round(r: RoundResult) -> None:
        results.append(r)
        delivered.append(asyncio.get_running_loop().time())

    p = Prober("wan1", ["a"], st, on_round, source="192.0.2.1", ping=ping)
    vrun(lambda: collect(p, results, 6))
    assert [c.at for c in ping.calls[:6]] == pytest.approx([0, 1, 2, 3, 4, 5])
    assert [r.samples[0].rtt for r in results[:6]] == [2.5, 0.5] * 3
    # round 1 ended (at 1.5) before round 0 (at 2.5) but was delivered after it
    assert [r.at for r in results[:4]] == pytest.approx([2.5, 1.5, 4.5, 3.5])
    assert delivered[:4] == pytest.approx([2.5, 2.5, 4.5, 4.5])


def test_stall_skips_missed_slots() -> None:
    loop_ref: list[asyncio.AbstractEventLoop] = []

    def rtt(i: int, a: str) -> float:
        if i == 2:  # the loop is blocked for 3.5 s while round 2 starts
            loop_ref[0].now += 3.5  # type: ignore[attr-defined]
        return 0.01

    ping = FakePing(rtt)
    results: list[RoundResult] = []
    p = Prober("wan1", ["a"], ProbeSettings(interval=1.0, count=1), results.append,
               source="192.0.2.1", ping=ping)

    async def main() -> None:
        loop_ref.append(asyncio.get_running_loop())
        await collect(p, results, 7)

    vrun(main)
    # slots 3 and 4 are skipped, slot 5 starts late at 5.5, then back on the grid
    assert [c.at for c in ping.calls[:7]] == pytest.approx([0, 1, 2, 5.5, 6, 7, 8])


def test_no_address_then_address() -> None:
    ping = FakePing()
    results: list[RoundResult] = []
    p = Prober("wan1", ["a"], ProbeSettings(interval=1.0, count=2), results.append, ping=ping)

    def during(k: int) -> None:
        if k == 2:
            p.source = "198.51.100.7"

    vrun(lambda: collect(p, results, 4, during))
    assert [(r.ok, r.reason, r.samples) for r in results[:2]] == [
        (False, "no address on wan1", ())] * 2
    assert len(p.window()) >= 2 and p.window().loss_pct() == 0.0  # no-address rounds skipped
    assert results[2].ok and results[3].ok
    assert ping.calls and {c.source for c in ping.calls} == {"198.51.100.7"}


def test_failures_count_as_lost_and_never_kill_the_prober() -> None:
    behaviours = {
        "err": OSError(101, "Network is unreachable"),
        "perm": PermissionError(1, "Operation not permitted"),
        "hang": "hang",
        "none": None,
        "late": 0.52,  # a reply after the 0.5 s timeout (but within the grace) is lost
        "good": 0.02,
    }
    ping = FakePing(lambda i, a: behaviours[a])
    results: list[RoundResult] = []
    st = ProbeSettings(interval=1.0, timeout=0.5, count=2, quorum=1)
    p = Prober("wan1", list(behaviours), st, results.append, source="192.0.2.1", ping=ping)
    vrun(lambda: collect(p, results, 3))
    for r in results[:3]:
        assert r.ok
        assert r.reason == "1/6 targets answered (silent: err, perm, hang, none, late)"
        assert {s.address: (s.sent, s.received) for s in r.samples} == {
            a: (2, 2 if a == "good" else 0) for a in behaviours}
    # the hanging ping was cancelled: the round ended by timeout + grace
    assert results[0].at == pytest.approx(spacing(st) + 0.5 + GRACE)


def test_on_round_errors_are_contained() -> None:
    results: list[RoundResult] = []

    def on_round(r: RoundResult) -> None:
        results.append(r)
        raise RuntimeError("callback bug")

    p = Prober("wan1", ["a"], ProbeSettings(interval=1.0), on_round, source="x",
               ping=FakePing())
    vrun(lambda: collect(p, results, 3))
    assert len(results) >= 3


def test_update_takes_effect_next_round() -> None:
    ping = FakePing(lambda i, a: None if a == "c" else 0.01)
    results: list[RoundResult] = []
    p = Prober("wan1", ["a", "b"], ProbeSettings(interval=1.0, count=1, window=10),
               results.append, source="192.0.2.1", ping=ping)

    def during(k: int) -> None:
        if k == 2:
            p.update(["c"], ProbeSettings(interval=2.0, count=2, window=3, timeout=0.3))

    vrun(lambda: collect(p, results, 5, during))
    # updated after round 1 was delivered (t = 1.01): round 2 (t = 2) uses the new targets
    assert [tuple(s.address for s in r.samples) for r in results[:5]] == [
        ("a", "b"), ("a", "b"), ("c",), ("c",), ("c",)]
    assert results[2].reason == "0/1 targets answered (silent: c)"
    assert results[2].samples[0].sent == 2 and ping.calls[-1].timeout == 0.3
    assert p.window().size == 3 and len(p.window()) == 3
    # slot 2 was already due one old interval after slot 1; then the new interval
    firsts = [c.at for c in ping.calls if c.address == "a"] + [
        c.at for c in ping.calls if c.address == "c"][::2]
    assert firsts[:5] == pytest.approx([0, 1, 2, 4, 6])


class FuturePing(FakePing):
    """Like FakePing, but returns Futures as `IcmpPinger` does (no task per request): a
    float resolves after that long, None after the timeout, "hang" never; an exception
    instance is raised by the call itself."""

    def __call__(self, address: str, source: str,  # type: ignore[override]
                 timeout: float) -> asyncio.Future[Any]:
        v = self.record(address, source, timeout)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if v != "hang":
            loop.call_later(timeout if v is None else v,
                            lambda: fut.done() or fut.set_result(v))
        return fut


def test_future_pings_match_coroutine_pings_without_tasks() -> None:
    behaviours = {"err": OSError(101, "Network is unreachable"), "hang": "hang",
                  "none": None, "late": 0.52, "good": 0.02, "slow": 0.3}
    st = ProbeSettings(interval=1.0, timeout=0.5, count=3, quorum=1)
    out: dict[str, list[RoundResult]] = {}
    tasks: dict[str, int] = {}
    for kind, ping in (("coroutine", FakePing(lambda i, a: behaviours[a])),
                       ("future", FuturePing(lambda i, a: behaviours[a]))):
        results: list[RoundResult] = []
        p = Prober("wan1", list(behaviours), st, results.append, source="192.0.2.1",
                   ping=ping)  # type: ignore[arg-type]

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
                tasks[kind] = tasks.get(kind, 0) + 1
                return asyncio.Task(coro, loop=loop, **kw)

            loop.set_task_factory(factory)
            await collect(p, results, 3)
            loop.set_task_factory(None)

        vrun(main)
        out[kind] = results[:3]
        gap = spacing(st)
        assert [c.at for c in ping.calls if c.address == "good"][:6] == pytest.approx(
            [0, gap, 2 * gap, 1, 1 + gap, 1 + 2 * gap])
    assert [(r.ok, r.reason, r.samples, r.at) for r in out["future"]] == \
        [(r.ok, r.reason, r.samples, r.at) for r in out["coroutine"]]
    r = out["future"][0]
    assert r.reason == "2/6 targets answered (silent: err, hang, none, late)"
    assert {s.address: s.received for s in r.samples}["slow"] == 3
    # the hanging requests were given up timeout + GRACE after the round's last request
    assert r.at == pytest.approx(2 * spacing(st) + 0.5 + GRACE)
    # Prober.run is the only task: rounds and requests run on callbacks
    assert tasks == {"coroutine": 1 + 3 * 6 * 3, "future": 1}


def test_probers_share_the_clock_grid() -> None:
    pings = [FakePing(), FakePing()]
    results: list[list[RoundResult]] = [[], []]
    probers = [Prober(f"wan{i}", ["a"], ProbeSettings(interval=1.0, count=1),
                      results[i].append, source="192.0.2.1", ping=pings[i]) for i in (0, 1)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)
        tasks = [loop.create_task(probers[0].run())]
        await asyncio.sleep(0.45)
        tasks.append(loop.create_task(probers[1].run()))
        deadline = loop.time() + 100
        while min(len(r) for r in results) < 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    vrun(main)
    # started at 0.3 and 0.75: both wait for the next multiple of the interval
    for ping in pings:
        assert [c.at for c in ping.calls[:3]] == pytest.approx([1, 2, 3])


class FakeEchoSocket:
    """Stands in for EchoSocket: replies after 10 ms; records opens and closes."""

    opened: list[FakeEchoSocket] = []

    def __init__(self, source: str) -> None:
        if source == "203.0.113.99":
            raise OSError(99, "Cannot assign requested address")
        self.source = source
        self.pings = 0
        self.closed = False
        FakeEchoSocket.opened.append(self)

    def ping(self, address: str, timeout: float) -> asyncio.Future[float | None]:
        assert not self.closed
        self.pings += 1
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, lambda: fut.done() or fut.set_result(0.01))
        return fut

    def close(self) -> None:
        self.closed = True


def test_default_pinger_keeps_one_socket_per_source(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEchoSocket.opened = []
    monkeypatch.setattr(ecmpd.prober, "IcmpPinger",
                        lambda: IcmpPinger(factory=FakeEchoSocket))  # type: ignore[arg-type]
    results: list[RoundResult] = []
    p = Prober("wan1", ["a", "b"], ProbeSettings(interval=1.0, count=2), results.append,
               source="192.0.2.1")

    def during(k: int) -> None:
        if k == 3:
            p.source = "203.0.113.99"  # cannot be bound: rounds fail, nothing raised
        if k == 5:
            p.source = "198.51.100.7"

    vrun(lambda: collect(p, results, 8, during))
    assert [r.ok for r in results[:8]] == [True] * 3 + [False] * 2 + [True] * 3
    first, second = FakeEchoSocket.opened
    assert (first.source, second.source) == ("192.0.2.1", "198.51.100.7")
    assert first.pings == 3 * 4 and first.closed  # every request of 3 rounds, one socket
    assert second.pings >= 3 * 4 and second.closed  # closed when the prober stopped


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError):
        Prober("wan1", ["a"], ProbeSettings(interval=0), lambda r: None)
    p = Prober("wan1", ["a"], ProbeSettings(), lambda r: None)
    with pytest.raises(ValueError):
        p.update(["a"], ProbeSettings(count=0))


# --- root part: a real Prober between two namespaces --------------------------------

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"),
    reason="needs root, ip and nft",
)

PROBER_SCRIPT = r"""
import asyncio, json, sys
from ecmpd.model import ProbeSettings
from ecmpd.prober import Prober

def out(r):
    print(json.dumps({"ok": r.ok, "reason": r.reason,
                      "samples": [[s.address, s.sent, s.received] for s in r.samples]}),
          flush=True)

st = ProbeSettings(interval=0.2, timeout=1.0, count=2, quorum=int(sys.argv[2]))
asyncio.run(Prober("wan1", sys.argv[3:], st, out, source=sys.argv[1]).run())
"""

def sh(*args: str) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr.strip()}"


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces: A 10.250.0.1/24 <-veth-> B 10.250.0.2/24 + .3/24."""
    a, b = f"ecmpdprb{os.getpid()}a", f"ecmpdprb{os.getpid()}b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "wan", "type", "veth", "peer", "name", "peer", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.250.0.1/24", "dev", "wan")
        sh("ip", "-n", b, "addr", "add", "10.250.0.2/24", "dev", "peer")
        sh("ip", "-n", b, "addr", "add", "10.250.0.3/24", "dev", "peer")
        for ns, dev in ((a, "wan"), (b, "peer"), (a, "lo"), (b, "lo")):
            sh("ip", "-n", ns, "link", "set", "dev", dev, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def nft(ns: str, script: str) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"nft in {ns}: {r.stderr.strip()}\n{script}"


def drop_echo_to(ns: str, *addrs: str) -> None:
    rules = "".join(f"ip daddr {a} icmp type echo-request drop\n" for a in addrs)
    nft(ns, "table ip ecmpdprobetest\ndelete table ip ecmpdprobetest\n"
            f"table ip ecmpdprobetest {{ chain probe_in {{ type filter hook input priority 0;\n"
            f"{rules}}}\n}}\n")


class Rounds:
    """Reads the JSON round lines of a prober subprocess."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        self.sel.register(proc.stdout, selectors.EVENT_READ)

    def next(self, deadline: float) -> dict[str, Any]:
        while time.monotonic() < deadline:
            if self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()  # type: ignore[union-attr]
                assert line, f"prober exited: {self.proc.stderr.read()}"  # type: ignore[union-attr]
                return json.loads(line)
        raise AssertionError("no probe round before the deadline")

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], within: float = 15.0) -> dict:
        deadline = time.monotonic() + within
        seen = []
        while True:
            try:
                r = self.next(deadline)
            except AssertionError:
                raise AssertionError(f"no matching round; last rounds: {seen[-3:]}") from None
            seen.append(r)
            if pred(r):
                return r


@NEEDS_ROOT
@pytest.mark.lab
def test_real_prober_between_namespaces(netns: tuple[str, str]) -> None:
    a, b = netns
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a, sys.executable, "-c", PROBER_SCRIPT,
         "10.250.0.1", "2", "10.250.0.2", "10.250.0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        rounds = Rounds(proc)
        full = [["10.250.0.2", 2, 2], ["10.250.0.3", 2, 2]]
        good = rounds.wait_for(lambda r: r["samples"] == full)
        assert (good["ok"], good["reason"]) == (True, "2/2 targets answered")

        drop_echo_to(b, "10.250.0.3")
        half = "1/2 targets answered (silent: 10.250.0.3)"
        rounds.wait_for(lambda r: r["reason"] == half)
        for _ in range(3):  # every round started after the rule fails the quorum of 2
            r = rounds.next(time.monotonic() + 15)
            assert (r["ok"], r["reason"]) == (False, half)

        drop_echo_to(b, "10.250.0.2", "10.250.0.3")
        silent = "0/2 targets answered (silent: 10.250.0.2, 10.250.0.3)"
        r = rounds.wait_for(lambda r: r["reason"] == silent)
        assert not r["ok"] and r["samples"] == [["10.250.0.2", 2, 0], ["10.250.0.3", 2, 0]]

        nft(b, "delete table ip ecmpdprobetest\n")
        rounds.wait_for(lambda r: r["ok"])
        for _ in range(3):
            r = rounds.next(time.monotonic() + 15)
            assert (r["ok"], r["reason"]) == (True, "2/2 targets answered")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
