"""Tests for ecmpd.prober, without root, namespaces or real sockets.

The Prober gets a fake socket factory (`FakeNet`: records every send, answers each
request after a scripted delay, with an error, or never; can fail sends or fail to open)
and a controllable traffic counter.  Most tests run on a virtual-time event loop (a real
asyncio loop whose clock jumps to the next timer instead of sleeping), so timings are
exact and the tests are fast whatever the machine's load; two smoke tests run on a real
loop with short intervals and generous margins.

The last part replays recorded sequences of per-round observations (tests/data/*.json:
when each echo request was answered, and the WAN's traffic counter) through the real
Prober and the real health state machine.  The recordings are synthetic; they are made
by `make_recordings()` below, and a test checks that the committed files are exactly
what it produces (regenerate with `.venv/bin/python tests/test_prober.py`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ecmpd.prober
from ecmpd.health import Health, Phase, Verdict, step, takes_new_flows
from ecmpd.icmpecho import Answer
from ecmpd.judge import SLOW_LINE, SLOW_REPLIES, SLOW_TRAFFIC, RoundResult, judge
from ecmpd.judge import TargetSample as TS
from ecmpd.configmodel import ProbeSettings
from ecmpd.prober import FOLLOWUP_COPIES, LOSS_BURST, Prober, fast_window, silence_window, spacing
from lab.wait import until_async

GOOD, SLOW, FAILED = Verdict.GOOD, Verdict.SLOW, Verdict.FAILED
DATA = Path(__file__).resolve().parent / "data"
SOURCE, DEVICE = "192.0.2.1", "eth1"


# --- virtual time ----------------------------------------------------------------------


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


def now() -> float:
    return asyncio.get_running_loop().time()


# --- the fake network ------------------------------------------------------------------


@dataclass(eq=False)
class Sent:
    """One echo request as the fake socket saw it."""

    sock: FakeSocket
    seq: int | None
    """None: the send failed."""
    address: str
    at: float


Reply = Callable[[Sent], Any]
"""What happens to a request: a delay in seconds (a reply that long after the send),
("error", delay, type) (an ICMP error), or None (never answered)."""


class FakeSocket:
    """Stands in for `EchoSocket`: sequence numbers from 1; nothing reported after close."""

    def __init__(self, net: FakeNet, source: str, on_answer: Callable[[Answer], None],
                 device: str | None) -> None:
        self.net, self.source, self.device, self.on_answer = net, source, device, on_answer
        self.opened_at = now()
        self.sent: list[Sent] = []
        self.closed = False
        self.closed_at: float | None = None
        self._seq = 0

    def send(self, address: str) -> int | None:
        if self.closed:
            self.net.misuse.append(f"send({address}) on a closed socket")
            return None
        if self.net.fail_send(address, now()):
            s = Sent(self, None, address, now())
        else:
            self._seq += 1
            s = Sent(self, self._seq, address, now())
        self.sent.append(s)
        self.net.sent.append(s)
        if s.seq is not None:
            self._schedule(s, self.net.reply(s))
        return s.seq

    def _schedule(self, s: Sent, what: Any) -> None:
        if what is None:
            return
        if isinstance(what, tuple):
            _, delay, kind = what
            asyncio.get_running_loop().call_at(s.at + delay, self.answer, s, kind)
        else:
            asyncio.get_running_loop().call_at(s.at + what, self.answer, s)

    def answer(self, s: Sent, error: int | None = None) -> None:
        """Report the answer to `s` now (nothing once closed, as EchoSocket)."""
        if self.closed:
            return
        assert s.seq is not None
        self.net.answered.append((now(), s, error))
        self.on_answer(Answer(s.address, s.seq, max(0.0, now() - s.at), error))

    def close(self) -> None:
        self.closed = True
        self.closed_at = now()


class FakeNet:
    """A SocketFactory: opens FakeSockets and records everything."""

    def __init__(self, reply: Reply = lambda s: 0.01,
                 fail_open: Callable[[str, str | None], bool] = lambda src, dev: False,
                 fail_send: Callable[[str, float], bool] = lambda addr, t: False) -> None:
        self.reply, self.fail_open, self.fail_send = reply, fail_open, fail_send
        self.sockets: list[FakeSocket] = []
        self.opens: list[tuple[float, str, str | None]] = []
        self.sent: list[Sent] = []
        self.answered: list[tuple[float, Sent, int | None]] = []
        self.misuse: list[str] = []

    def __call__(self, source: str, on_answer: Callable[[Answer], None],
                 device: str | None) -> FakeSocket:
        self.opens.append((now(), source, device))
        if self.fail_open(source, device):
            raise OSError(99, "Cannot assign requested address")
        sock = FakeSocket(self, source, on_answer, device)
        self.sockets.append(sock)
        return sock

    def sends(self, address: str) -> list[float]:
        """When requests to `address` were sent (successfully or not)."""
        return [s.at for s in self.sent if s.address == address]

    def open_sockets(self) -> list[FakeSocket]:
        return [s for s in self.sockets if not s.closed]


class Traffic:
    """The WAN's counter of packets from beyond the gateway, as a function of time."""

    def __init__(self, fn: Callable[[float], int | None] = lambda t: 0) -> None:
        self.fn = fn
        self.reads: list[float] = []

    def __call__(self) -> int | None:
        self.reads.append(now())
        return self.fn(now())


def moving() -> Traffic:
    """A counter that moves all the time (100 packets a second)."""
    return Traffic(lambda t: int(t * 100))


class Run:
    """A Prober on fakes, and what it delivered."""

    def __init__(self, targets: Sequence[str] = ("a", "b"), net: FakeNet | None = None,
                 traffic: Traffic | None = None, quorum: int | None = None,
                 source: str | None = SOURCE, on_round: Callable[[RoundResult], None] | None = None,
                 line: Line | None = None, lean: Lean | None = None, rest: bool = True,
                 **settings: Any) -> None:
        self.net = net or FakeNet()
        self.traffic = traffic
        self.settings = ProbeSettings(**{"interval": 1.0, "timeout": 0.25, "count": 1,
                                         **settings})
        self.results: list[RoundResult] = []
        self.prober = Prober("wan1", targets, self.settings, on_round or self.results.append,
                             source=source, device=DEVICE, traffic=traffic, quorum=quorum,
                             sockets=self.net,
                             line_traffic=line.traffic if line else None,
                             line_sent=(line.newest if line else
                                        lean.newest if lean else None),
                             lean=lean.prompt if lean else None, rest=rest)

    async def drive(self, until: float, at: dict[float, Callable[[], Any]] | None = None,
                    start: float = 0.0, alone: bool = True) -> None:
        """Run the prober from `start` until `until` (loop time), calling `at[t]()` at t;
        then cancel it and check that it left nothing behind (no task either, when it
        runs `alone`)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start - loop.time())
        task = loop.create_task(self.prober.run())
        for t, fn in sorted((at or {}).items()):
            await asyncio.sleep(t - loop.time())
            fn()
        await asyncio.sleep(until - loop.time())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not self.net.open_sockets(), "the prober left its socket open"
        assert not self.net.misuse, self.net.misuse
        if alone:
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    def go(self, until: float, at: dict[float, Callable[[], Any]] | None = None,
           start: float = 0.0) -> list[RoundResult]:
        vrun(lambda: self.drive(until, at, start))
        return self.results

    def summary(self) -> list[tuple[float, Verdict, str]]:
        return [(round(r.at, 6), r.verdict, r.reason) for r in self.results]


def starts(net: FakeNet, address: str, count: int) -> list[float]:
    """The rounds' first requests to `address`."""
    return net.sends(address)[::count]


# --- basics ----------------------------------------------------------------------------


def test_spacing() -> None:
    assert spacing(ProbeSettings(interval=0.2, count=2)) == pytest.approx(0.02)
    assert spacing(ProbeSettings(interval=0.04, count=4)) == pytest.approx(0.005)


def test_bad_settings_rejected() -> None:
    for bad in (ProbeSettings(interval=0), ProbeSettings(timeout=0), ProbeSettings(count=0)):
        with pytest.raises(ValueError):
            Prober("wan1", ["a"], bad, lambda r: None, sockets=FakeNet())
    p = Prober("wan1", ["a"], ProbeSettings(), lambda r: None, sockets=FakeNet())
    with pytest.raises(ValueError):
        p.update(["a"], ProbeSettings(count=0))


def test_grid_cadence_and_early_completion() -> None:
    r = Run(("a", "b"), count=3, timeout=0.5)
    results = r.go(5.5, start=0.3)
    gap = spacing(r.settings)
    # started at 0.3: the first round waits for the next multiple of the interval
    for a in "ab":
        assert r.net.sends(a) == pytest.approx(
            [k + i * gap for k in range(1, 6) for i in range(3)])
    assert [x.verdict for x in results] == [GOOD] * 5
    assert results[0].samples[0] == TS("a", 3, 3, pytest.approx(0.01), True)
    assert results[0].reason == "2/2 targets answered" and not results[0].traffic
    # every round completes with its last answer, long before its deadline
    assert [x.at for x in results] == pytest.approx([k + 2 * gap + 0.01 for k in range(1, 6)])
    assert all(x.timeout == 0.5 for x in results)
    assert r.prober.last() is results[-1] and len(r.prober.window()) == 5
    # one socket for all rounds, on the WAN's address and device, closed on cancel
    assert [(s.source, s.device) for s in r.net.sockets] == [(SOURCE, DEVICE)]
    assert r.net.sockets[0].closed_at == pytest.approx(5.5)


def test_a_round_with_an_unanswered_request_waits_for_its_deadline() -> None:
    # b's second request of every round is never answered
    net = FakeNet(lambda s: None if s.address == "b" and len(net.sends("b")) % 2 == 0 else 0.01)
    r = Run(("a", "b"), net=net, count=2, quorum=2)
    results = r.go(3.5)
    gap = spacing(r.settings)
    assert [x.at for x in results] == pytest.approx([k + gap + 0.25 for k in range(4)])
    assert [x.samples[1] for x in results] == [TS("b", 2, 1, pytest.approx(0.01), True)] * 4
    assert all(x.verdict is GOOD for x in results)


def test_probers_share_the_clock_grid() -> None:
    runs = [Run(("a",)), Run(("a",))]

    async def main() -> None:
        await asyncio.gather(runs[0].drive(3.5, start=0.3, alone=False),
                             runs[1].drive(3.5, start=0.75, alone=False))

    vrun(main)
    for r in runs:  # both wait for the next multiple of the interval
        assert r.net.sends("a") == pytest.approx([1, 2, 3])


def test_stall_skips_missed_slots() -> None:
    loop_ref: list[VirtualTimeLoop] = []

    def reply(s: Sent) -> float:
        if len(r.net.sent) == 3:  # the loop is blocked for 3.5 s while round 2 starts
            loop_ref[0].now += 3.5
        return 0.01

    r = Run(("a",), net=FakeNet(reply))

    async def main() -> None:
        loop_ref.append(asyncio.get_running_loop())  # type: ignore[arg-type]
        await r.drive(8.5)

    vrun(main)
    # slots 3 and 4 are skipped, slot 5 starts late at 5.5, then back on the grid
    assert r.net.sends("a") == pytest.approx([0, 1, 2, 5.5, 6, 7, 8])


def test_on_round_errors_are_contained() -> None:
    got: list[RoundResult] = []

    def on_round(res: RoundResult) -> None:
        got.append(res)
        raise RuntimeError("callback bug")

    Run(("a",), on_round=on_round).go(3.5)
    assert len(got) == 4 and all(x.verdict is GOOD for x in got)


# --- in time, late, and the adaptive timeout --------------------------------------------


def rto(samples: Sequence[float], floor: float, ceiling: float) -> float:
    """RFC 6298's retransmission timeout after `samples` (reference for the prober)."""
    srtt = rttvar = None
    for r in samples:
        if srtt is None or rttvar is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
    if srtt is None or rttvar is None:
        return floor
    return min(ceiling, max(floor, srtt + 4 * rttvar))


def test_a_late_reply_is_lost_to_its_round_but_feeds_the_estimator() -> None:
    # (traffic moves: no silence check here, see below)
    r = Run(("a",), net=FakeNet(lambda s: 0.6), traffic=moving())
    results = r.go(2.9)
    # round 0: no estimate yet, timeout 0.25: the reply (0.6 s) is late
    assert (results[0].at, results[0].verdict, results[0].reason) == (0.25, SLOW, SLOW_TRAFFIC)
    assert results[0].samples == (TS("a", 1, 0, None, False),) and results[0].timeout == 0.25
    # the late reply set srtt 0.6, rttvar 0.3: round 1 waits 0.6 + 4 * 0.3 = 1.8 s
    assert results[1].timeout == pytest.approx(1.8)
    assert (results[1].at, results[1].verdict) == (pytest.approx(1.6), GOOD)
    assert results[1].samples == (TS("a", 1, 1, pytest.approx(0.6), True),)
    # second sample: rttvar 0.75 * 0.3 = 0.225 -> 0.6 + 0.9
    assert results[2].timeout == pytest.approx(1.5)
    assert r.prober.rtt("a") == (pytest.approx(0.6), pytest.approx(0.75 * 0.225))
    assert r.prober.rtt("nobody") == (None, None)


def test_a_reply_read_after_the_deadline_is_late_even_before_the_deadline_timer() -> None:
    """The loop stalls across a round's deadline and the reply is read first (a real
    socket's reply is an I/O event, run before the due timers): it is late (a sign of
    life, not an answer in time)."""
    r = Run(("a",), net=FakeNet(lambda s: None))

    def stalled_read() -> None:
        asyncio.get_running_loop().now = 0.3  # type: ignore[attr-defined]
        sock = r.net.sockets[0]
        sock.answer(sock.sent[0])

    results = r.go(0.5, at={0.2: stalled_read})
    assert [(x.at, x.verdict, x.reason) for x in results] == [(0.3, SLOW, SLOW_REPLIES)]
    assert results[0].samples == (TS("a", 1, 0, None, True),)


def test_the_timeout_follows_srtt_up_to_max_timeout() -> None:
    """Every reply, late ones too, feeds RFC 6298; each round uses the timeout of the
    replies that came before it started, clamped to [timeout, max_timeout]."""
    rtts = [0.05, 0.3, 0.7, 1.3, 2.1, 2.6, 2.9, 2.9, 2.9, 2.9, 2.9, 2.9, 2.9]
    net = FakeNet(lambda s: rtts[min(len(net.sent), len(rtts)) - 1])
    # traffic moves all the time: the silence check never fires, late rounds are SLOW
    r = Run(("a",), net=net, traffic=moving(), max_timeout=3.0)
    results = r.go(len(rtts) + 3.5)[:len(rtts)]
    arrivals = sorted((k + x, x) for k, x in enumerate(rtts))
    want = []
    for k, x in enumerate(rtts):
        t = rto([s for at, s in arrivals if at < k], 0.25, 3.0)
        late = x > t
        want.append((pytest.approx(t), SLOW if late else GOOD,
                     pytest.approx(k + (t if late else x))))
    assert [(x.timeout, x.verdict, x.at) for x in results] == want
    assert [x.reason for x in results if x.verdict is SLOW] == [SLOW_TRAFFIC] * sum(
        w[1] is SLOW for w in want)
    timeouts = [x.timeout for x in results]
    assert timeouts == sorted(timeouts) and timeouts[-1] == 3.0  # grew, and hit the ceiling
    assert 0.25 < timeouts[3] < 3.0
    assert r.prober.timeout() == 3.0
    assert results[-1].verdict is GOOD  # 2.9 s replies are in time at last


def test_the_timeout_is_the_largest_of_the_targets() -> None:
    net = FakeNet(lambda s: 0.4 if s.address == "slow" else 0.001)
    r = Run(("fast", "slow"), net=net, quorum=1)
    r.go(1.5)
    assert r.prober.timeout() == pytest.approx(rto([0.4, 0.4], 0.25, 4.0))
    assert r.results[1].timeout == pytest.approx(1.2)  # after the first 0.4 s reply
    r.prober.update(["fast"], r.settings)
    assert r.prober.timeout() == 0.25  # only the targets probed now count


# --- the silence check -------------------------------------------------------------------


def _line(rtt: float, dies_at: float) -> Reply:
    """Every request answered `rtt` after it was sent, until the line dies at `dies_at`."""
    return lambda s: rtt if s.at + rtt < dies_at else None


SILENT_AB = "0/2 targets answered within 250ms, no traffic (silent: a, b)"


def test_silence_fails_a_round_at_once_when_nothing_came() -> None:
    # replies 1.1 s late (interval 1 s): round 1 is SLOW by round 0's late replies,
    # then the estimate (timeout 2.75 s) catches up; the line dies at 5.5 s
    r = Run(("a", "b"), net=FakeNet(_line(1.1, 5.5)), count=2)
    gap = spacing(r.settings)
    results = r.go(8.9)
    assert r.summary()[:4] == [
        (0.27, FAILED, "0/2 targets answered (silent: a, b)"),  # nothing yet, no estimate
        (1.27, SLOW, SLOW_REPLIES),  # round 0's replies came during round 1
        (3.12, GOOD, "2/2 targets answered"),
        (4.12, GOOD, "2/2 targets answered"),
    ]
    assert results[2].timeout == pytest.approx(rto([1.1, 1.1], 0.25, 4.0))  # 2.75
    assert r.summary()[4] == (5.12, GOOD, "2/2 targets answered")  # the last replies
    # round 4's replies (5.1 s) came during round 5: it is not failed early; it is judged
    # SLOW at its deadline (last request + the adaptive timeout)
    at5, verdict5, reason5 = r.summary()[5]
    assert (verdict5, reason5) == (SLOW, SLOW_REPLIES)
    assert at5 == pytest.approx(5 + gap + results[5].timeout)
    # rounds 6, 7: nothing for the silence window (1.25 intervals: the interval is longer
    # than `timeout`) after their last request: FAILED at once, long before their deadlines
    silent = SILENT_AB.replace("250ms", "1250ms")
    assert r.summary()[6:] == [(k + gap + 1.25, FAILED, silent) for k in (6, 7)]
    assert all(x.timeout > 1.1 for x in results[5:])
    assert len(r.prober.window()) == len(results)


class Line:
    """The WAN's other IP version on the same line: its arrivals counter (`pps` packets a
    second until `frozen`) and its probes, sent every 50 ms, answered after the line's
    queue delay `delay(sent)` (first in, first out) until `frozen`."""

    def __init__(self, delay: Callable[[float], float], pps: float = 1000.0,
                 frozen: float = math.inf) -> None:
        self.delay, self.pps, self.frozen = delay, pps, frozen

    def traffic(self) -> int:
        return int(min(now(), self.frozen) * self.pps)

    def newest(self) -> tuple[float, float] | None:
        t = now()
        sends = [k * 0.05 for k in range(int(t / 0.05) + 1)]
        back = [s for s in sends if s + self.delay(s) <= min(t, self.frozen)]
        return (back[-1], self.delay(back[-1])) if back else None


class Lean:
    """The WAN's IPv4 prober as a resting IPv6 prober sees it: requests on the same
    grid (`interval`), answered `delay` later until `dead` (loop time); `prompt()` is
    its srtt + 4·rttvar."""

    def __init__(self, interval: float = 0.2, delay: float = 0.002,
                 dead: float = math.inf, prompt: float | None = 0.004) -> None:
        self.interval, self.delay, self.dead, self._prompt = interval, delay, dead, prompt

    def newest(self) -> tuple[float, float] | None:
        t = now()
        k = math.floor((min(t, self.dead) - self.delay) / self.interval + 1e-9)
        return (k * self.interval, self.delay) if k >= 0 else None

    def prompt(self) -> float | None:
        return self._prompt


def ramp(s: float) -> float:
    """A queue that fills fast from 1 s (1.5 s of delay a second) up to 1.5 s."""
    return 0.005 if s < 1.0 else min(1.5, 0.005 + 1.5 * (s - 1.0))


@pytest.mark.parametrize("line, fails", [
    (None, True),                                   # no other version: nothing to go by
    (Line(ramp, pps=10.0), True),                   # the other version idle too
    (Line(ramp), False),                            # its downloads fill the queue
])
def test_a_line_busy_with_the_other_version_is_slow_not_dead(line, fails):
    # an idle version's probes wait in a queue the other version's downloads fill: its
    # rounds are SLOW while the other version's arrivals flow and its replies do not
    # overtake this version's (first in, first out)
    r = Run(("a",), net=FakeNet(lambda s: ramp(s.at)), interval=0.2, count=2, line=line)
    results = r.go(8.0)
    verdicts = {x.verdict for x in results if x.at > 1.0}
    assert (FAILED in verdicts) is fails, r.summary()
    if not fails:
        assert SLOW_LINE in {x.reason for x in results}, r.summary()
        assert results[-1].verdict is GOOD or results[-1].reason == SLOW_LINE


def test_replies_overtaken_by_the_other_versions_are_lost_not_queued():
    # the queue holds 1 s; this version's ISP drops its packets from 4 s (replies to
    # earlier requests still come out of the queue until ~5 s): once the other
    # version's replies to requests sent more than interval + timeout + LOSS_BURST
    # later are back, the rounds fail
    delay = lambda s: 0.005 if s < 1.0 else 1.0  # noqa: E731
    net = FakeNet(lambda s: delay(s.at) if s.at < 4.0 else None)
    r = Run(("a",), net=net, interval=0.2, count=2, line=Line(delay))
    results = r.go(8.0)
    assert FAILED not in {x.verdict for x in results if x.at < 5.0}, r.summary()
    failed = [x.at for x in results if x.verdict is FAILED]
    assert failed and failed[0] <= 4.0 + 1.0 + 0.2 + 0.25 + LOSS_BURST + 0.3, r.summary()
    # the reason says why the other version's traffic did not save the round
    first = next(x for x in results if x.verdict is FAILED)
    assert "the other IP version's replies overtook this one's by" in first.reason
    # not before the queue plus that margin: a congested queue's loss burst is no outage
    assert failed[0] >= 4.0 + 1.0 + LOSS_BURST, r.summary()
    assert {x.verdict for x in results if x.at > failed[0] + 0.3} == {FAILED}, r.summary()


def test_a_busy_line_that_goes_silent_fails_as_fast_as_a_busy_line():
    # the other version's downloads kept the line busy; at 4 s the line dies whole (its
    # queue with it): this version's silence is evidence at once, as its own traffic's
    # would be (half the silence window), not after its adaptive timeout
    delay = lambda s: 0.005 if s < 1.0 else 0.6  # noqa: E731
    net = FakeNet(lambda s: delay(s.at) if s.at + delay(s.at) < 4.0 else None)
    r = Run(("a",), net=net, interval=0.2, count=2, line=Line(delay, frozen=4.0))
    results = r.go(7.0)
    failed = [x for x in results if x.verdict is FAILED]
    assert FAILED not in {x.verdict for x in results if x.at < 4.0}, r.summary()
    assert failed and failed[0].at <= 4.0 + 0.2 + spacing(r.settings) + \
        silence_window(r.settings, busy=True) + 0.01, r.summary()


def test_silence_does_not_fail_a_round_while_traffic_moves() -> None:
    r = Run(("a", "b"), net=FakeNet(_line(1.1, 5.5)), traffic=moving(), count=2)
    gap = spacing(r.settings)
    results = r.go(12.9)
    after = [x for x in results if x.at > 5.5]
    assert after and all(x.verdict is SLOW and x.reason == SLOW_TRAFFIC for x in after)
    for x in after:  # judged at their deadlines: last request + the adaptive timeout
        start = x.at - gap - x.timeout
        assert start == pytest.approx(round(start), abs=1e-6)
        assert x.timeout > 1.1 and x.traffic  # > srtt: without the counter, FAILED early


def test_silence_does_not_fail_a_round_when_late_replies_came() -> None:
    # probes hopelessly late (3.5 s; the ceiling 2 s) but replies keep coming: every
    # round sees late replies from both targets within its first 250 ms
    r = Run(("a", "b"), net=FakeNet(lambda s: 3.5), interval=0.2, count=2, max_timeout=2.0)
    results = r.go(8.0)
    late = [x for x in results if x.at > 3.6]
    assert len(late) >= 10
    assert {(x.verdict, x.reason) for x in late} == {(SLOW, SLOW_REPLIES)}
    assert {x.timeout for x in late[1:]} == {2.0}
    # before the first reply came back (3.5 s) nothing proved the line alive
    assert {x.verdict for x in results if x.at < 3.5} == {FAILED}


def test_silence_counts_life_only_from_the_quorum() -> None:
    # the gateway answers at once, the target beyond it very late and then not at all
    def reply(s: Sent) -> float | None:
        if s.address == "gw":
            return 0.001
        return 1.5 if s.at < 2.0 else None

    r = Run(("gw", "beyond"), net=FakeNet(reply), count=2)
    results = r.go(5.9)
    failed = [x for x in results if x.verdict is FAILED and x.at > 3.5]
    gap, quiet = spacing(r.settings), silence_window(r.settings)
    assert quiet == 1.25  # 1.25 intervals: the interval (1 s) is longer than the timeout
    assert [x.at for x in failed] == pytest.approx([k + gap + quiet for k in (3, 4)])
    assert {x.reason for x in failed} == {
        "1/2 targets answered within 1250ms, no traffic (silent: beyond)"}


def test_traffic_counts_only_when_it_moves_during_the_round() -> None:
    # the counter moves between rounds (at 0.5 s, 1.5 s, ...), never during one
    r = Run(("a",), net=FakeNet(lambda s: None), traffic=Traffic(lambda t: int(t + 0.5)))
    results = r.go(3.5)
    assert [(x.verdict, x.traffic) for x in results] == [(FAILED, False)] * 4


@pytest.mark.parametrize("traffic,verdict,reason", [
    (None, FAILED, "0/1 targets answered (silent: a)"),
    (Traffic(lambda t: None), FAILED, "0/1 targets answered (silent: a)"),  # unknown
    (Traffic(lambda t: 7), FAILED, "0/1 targets answered (silent: a)"),  # not moving
    (moving(), SLOW, SLOW_TRAFFIC),
    # a counter that restarted (the nft table was rewritten) moved too
    (Traffic(lambda t: 0 if t % 1.0 > 0.1 else 9000), SLOW, SLOW_TRAFFIC),
])
def test_deadline_verdict_slow_or_failed(traffic: Traffic | None, verdict: Verdict,
                                         reason: str) -> None:
    r = Run(("a",), net=FakeNet(lambda s: None), traffic=traffic)
    results = r.go(2.5)
    assert [(x.at, x.verdict, x.reason) for x in results] == [
        (0.25, verdict, reason), (1.25, verdict, reason), (2.25, verdict, reason)]
    assert [x.traffic for x in results] == [verdict is SLOW] * 3


def test_a_reply_to_a_newer_round_is_no_late_reply() -> None:
    """judge.py: "late replies prove life: a reply to any *earlier* request arriving
    during a round marks its target alive in that round".  At the default cadence
    (interval 0.2 s < timeout 0.25 s) rounds overlap: round 1's requests to b are lost,
    and b's in-time replies to round 2 (0.41 s) arrive before round 1's deadline (0.47 s).
    Nothing was late: round 1 is FAILED (quorum 2 of 2).  Round 2 loses a's second request,
    so it does not complete before round 1's deadline (round 1 is not stale)."""
    def reply(s: Sent) -> float | None:
        if s.address == "b" and 0.19 < s.at < 0.3:
            return None
        if s.address == "a" and abs(s.at - 0.42) < 1e-6:
            return None
        return 0.01

    r = Run(("a", "b"), net=FakeNet(reply), interval=0.2, count=2)
    results = r.go(0.9)
    round1 = next(x for x in results if x.at == pytest.approx(0.47))
    assert (round1.verdict, round1.reason) == (FAILED, "1/2 targets answered (silent: b)")
    assert round1.samples[1] == TS("b", 2, 0, None, False)


# --- delivery ------------------------------------------------------------------------------


def test_newest_verdict_wins() -> None:
    # round k takes 2.5 s when k is even, 0.5 s when odd; a round starts every second
    net = FakeNet(lambda s: 2.5 if len(net.sent) % 2 == 1 else 0.5)
    r = Run(("a",), net=net, timeout=3.0)
    results = r.go(7.9)
    # round 1 ended (at 1.5) before round 0 (at 2.5): round 0 is stale, and so on
    assert [(x.at, x.samples[0].rtt) for x in results] == [
        (1.5, 0.5), (3.5, 0.5), (5.5, 0.5), (7.5, 0.5)]
    assert r.prober.last() is results[-1]
    assert len(r.prober.window()) == 7  # stale rounds still count in the statistics
    assert r.prober.window().mean_rtt() == pytest.approx((3 * 2.5 + 4 * 0.5) / 7)


def test_a_stale_failure_is_not_delivered() -> None:
    # round 0 is never answered; its deadline (2.5 s) comes after rounds 1 and 2
    net = FakeNet(lambda s: None if s.at == 0 else 0.01)
    r = Run(("a",), net=net, timeout=2.5)
    results = r.go(4.5)
    assert [(x.at, x.verdict) for x in results] == [
        (1.01, GOOD), (2.01, GOOD), (3.01, GOOD), (4.01, GOOD)]
    assert r.prober.window().loss_pct() == 20.0  # but it was judged


# --- failures of the socket -------------------------------------------------------------


def test_send_failures_count_as_lost_without_waiting() -> None:
    net = FakeNet(fail_send=lambda addr, t: addr == "b")
    r = Run(("a", "b"), net=net, count=2, quorum=1)
    results = r.go(1.5)
    gap = spacing(r.settings)
    assert [x.at for x in results] == pytest.approx([gap + 0.01, 1 + gap + 0.01])
    assert results[0].samples[1] == TS("b", 2, 0, None, False)
    assert results[0].verdict is GOOD
    assert results[0].reason == "1/2 targets answered (silent: b)"
    # with the default quorum (2 of 2) the same round fails, still without waiting
    r2 = Run(("a", "b"), net=FakeNet(fail_send=lambda addr, t: addr == "b"), count=2)
    assert [(x.at, x.verdict) for x in r2.go(0.9)] == [(pytest.approx(gap + 0.01), FAILED)]


def test_all_sends_failing_fail_the_round_at_its_last_request() -> None:
    r = Run(("a", "b"), net=FakeNet(fail_send=lambda addr, t: True), count=3)
    results = r.go(1.5)
    gap = spacing(r.settings)
    assert [(x.at, x.verdict) for x in results] == [
        (pytest.approx(2 * gap), FAILED), (pytest.approx(1 + 2 * gap), FAILED)]
    assert results[0].samples == (TS("a", 3, 0, None, False), TS("b", 3, 0, None, False))
    assert results[0].reason == "0/2 targets answered (silent: a, b)"


def test_a_socket_that_cannot_open_fails_rounds_until_it_can() -> None:
    ok_from = 2.5
    r = Run(("a",), net=FakeNet(fail_open=lambda src, dev: now() < ok_from))
    results = r.go(4.5)
    assert [(x.at, x.verdict, x.reason, x.samples) for x in results[:3]] == [
        (float(k), FAILED, "cannot open the probe socket", ()) for k in range(3)]
    assert [x.verdict for x in results[3:]] == [GOOD, GOOD]
    assert [t for t, _, _ in r.net.opens] == [0, 1, 2, 3]  # retried every round, then kept
    assert len(r.net.sockets) == 1
    assert len(r.prober.window()) == 2  # rounds that sent nothing are not statistics


def test_no_address_fails_rounds_without_opening_a_socket() -> None:
    r = Run(("a",), source=None)
    r.go(2.5, at={1.5: lambda: r.prober.follow("198.51.100.7", r.prober.device)})
    assert [(x.at, x.verdict, x.reason, x.samples) for x in r.results[:2]] == [
        (0.0, FAILED, "no address on eth1", ()), (1.0, FAILED, "no address on eth1", ())]
    assert r.results[2].verdict is GOOD
    assert [(s, d) for _, s, d in r.net.opens] == [("198.51.100.7", DEVICE)]


def test_a_new_source_or_device_opens_a_new_socket() -> None:
    r = Run(("a",))

    def move() -> None:
        r.prober.follow("198.51.100.7", r.prober.device)

    def rename() -> None:
        r.prober.follow(r.prober.source, "eth9")

    results = r.go(5.5, at={1.5: move, 3.5: rename})
    assert [(t, s, d) for t, s, d in r.net.opens] == [
        (0, SOURCE, DEVICE), (2, "198.51.100.7", DEVICE), (4, "198.51.100.7", "eth9")]
    assert [s.closed_at for s in r.net.sockets] == [2, 4, 5.5]
    assert all(x.verdict is GOOD for x in results)


def test_reset_makes_the_next_round_open_a_new_socket() -> None:
    # replies take 0.5 s; reset() at 1.3 s while round 1's request is in flight
    r = Run(("a",), net=FakeNet(lambda s: 0.5), timeout=0.8)
    results = r.go(3.9, at={1.3: r.prober.reset})
    first, second = r.net.sockets
    assert (first.opened_at, first.closed_at, second.opened_at) == (0, 1.3, 2)
    assert [len(first.sent), len(second.sent)] == [2, 2]
    assert second.sent[0].seq == 1  # a new socket (the real one: a new identifier)
    # round 1's reply never came (the old socket is closed): failed by the silence check
    assert [(x.at, x.verdict) for x in results] == [
        (0.5, GOOD), (pytest.approx(1 + silence_window(r.settings)), FAILED), (2.5, GOOD),
        (3.5, GOOD)]
    assert [a for _, a, _ in r.net.answered] == [first.sent[0], second.sent[0], second.sent[1]]


# --- answers that are errors -------------------------------------------------------------


def test_error_answers_count_as_lost_and_resolve_the_request() -> None:
    net = FakeNet(lambda s: ("error", 0.005, 3) if s.address == "b" else 0.01)
    r = Run(("a", "b"), net=net)
    results = r.go(1.5)
    assert [(x.at, x.verdict, x.reason) for x in results] == [
        (0.01, FAILED, "1/2 targets answered (silent: b)"),  # no wait for b's deadline
        (1.01, FAILED, "1/2 targets answered (silent: b)")]
    assert results[0].samples[1] == TS("b", 1, 0, None, False)
    assert r.prober.rtt("b") == (None, None)  # an error is no RTT sample


@pytest.mark.parametrize("late,early_fail", [(None, False), (3, True)])
def test_a_late_error_is_no_sign_of_life(late: int | None, early_fail: bool) -> None:
    """Round 0's answers come late (a at 0.9 s: the timeout grows; b at 1.1 s, during
    round 1's silence window): a late reply keeps round 1 from failing early, a late
    error does not."""
    def reply(s: Sent) -> Any:
        if s.at > 0:
            return None
        if s.address == "a":
            return 0.9
        return 1.1 if late is None else ("error", 1.1, late)

    r = Run(("a", "b"), net=FakeNet(reply), quorum=1)
    results = r.go(2.5)
    silent = "0/2 targets answered within 1250ms, no traffic (silent: a, b)"
    assert results[0].at == 0.25
    assert [(x.at, x.reason) for x in results[1:]] == ([(2.25, silent)] if early_fail else [])


# --- fast follow-up rounds ------------------------------------------------------------


def _downs(results: list[RoundResult], down: int = 3) -> float | None:
    """When `down` failed rounds in a row were first delivered (the FSM's DOWN)."""
    streak = 0
    for r in results:
        streak = streak + 1 if r.verdict is FAILED else 0
        if streak >= down:
            return r.at
    return None


def test_a_failed_round_on_a_fast_line_is_followed_by_fast_rounds() -> None:
    # a 1 ms line dies at 1.05 s: the round of 1.2 s fails at its deadline (1.47 s), then
    # two fast rounds (two requests each at once, 50 ms to answer) fail: down=3 at ~1.57 s, where
    # the grid alone would need the rounds of 1.4 and 1.6 s (~1.87 s)
    r = Run(("a", "b"), net=FakeNet(_line(0.001, 1.05)), interval=0.2, count=2, down=3)
    results = r.go(2.5)
    at = _downs(results)
    assert at is not None and at == pytest.approx(1.2 + spacing(r.settings) + 0.25 + 0.1,
                                                  abs=0.01), r.summary()
    fast = [x for x in results if x.followup]
    assert len(fast) >= 2 and all(x.timeout == fast_window(r.settings) for x in fast)
    assert all(s.sent == FOLLOWUP_COPIES for x in fast for s in x.samples)


def test_a_fast_line_that_answers_the_follow_up_stays_up() -> None:
    # one round loses every request, the follow-up is answered: one failed round only
    lost = {1.0, 1.0 + spacing(ProbeSettings(interval=1.0, count=2))}
    r = Run(("a",), net=FakeNet(lambda s: None if round(s.at, 6) in lost else 0.001),
            interval=1.0, count=2, down=3)
    results = r.go(2.5)
    assert [x.verdict for x in results].count(FAILED) == 1, r.summary()
    assert _downs(results, 2) is None
    fast = [x for x in results if x.followup]
    assert [(x.at, x.verdict) for x in fast] == [(pytest.approx(1.0 + 0.02 + 0.25 + 0.001),
                                                  GOOD)]


def test_a_slow_idle_line_gets_no_follow_up() -> None:
    # replies take 0.3 s (no traffic counter): a fast round could not be answered in
    # 50 ms, so a failed round is not followed up (no false DOWN from one lost reply)
    r = Run(("a",), net=FakeNet(lambda s: None if 1.0 <= s.at < 1.1 else 0.3),
            interval=0.2, count=2, down=3)
    results = r.go(3.0)
    assert all(x.samples[0].sent == 2 for x in results if x.samples), r.summary()
    assert _downs(results) is None


def test_a_busy_line_that_goes_silent_is_followed_up_even_when_slow() -> None:
    # a saturated line (replies 1.5 s late, 1000 packets/s from beyond) stops at 3.0 s
    traffic = Traffic(lambda t: int(min(t, 3.0) * 1000))
    r = Run(("a", "b"), net=FakeNet(_line(1.5, 3.0)), traffic=traffic, interval=0.2,
            count=2, down=3)
    results = r.go(5.0)
    at = _downs(results)
    assert at is not None and at - 3.0 <= 0.6, r.summary()
    assert all(x.verdict is not FAILED for x in results if x.at < 3.0)


# --- update and quorum -------------------------------------------------------------------


def test_update_takes_effect_from_the_next_round() -> None:
    net = FakeNet(lambda s: None if s.address == "c" else 0.01)
    r = Run(("a", "b"), net=net, window=10)
    new = ProbeSettings(interval=2.0, count=2, window=3, timeout=0.3)
    results = r.go(8.5, at={1.005: lambda: r.prober.update(["c"], new)})
    # round 1 (started at 1) keeps the old targets; round 2 (slot 2: already due one
    # old interval after slot 1) uses the new ones, then the new interval
    assert [tuple(s.address for s in x.samples) for x in results] == [
        ("a", "b"), ("a", "b"), ("c",), ("c",), ("c",), ("c",)]
    assert results[2].reason == "0/1 targets answered (silent: c)"
    assert results[2].samples[0].sent == 2
    assert results[2].at == pytest.approx(2 + spacing(new) + 0.3)
    assert starts(net, "c", 2) == pytest.approx([2, 4, 6, 8])
    assert r.prober.window().size == 3 and len(r.prober.window()) == 3


def test_update_changes_the_quorum() -> None:
    net = FakeNet(lambda s: None if s.address in ("c", "d") else 0.01)
    r = Run(("a", "b", "c"), net=net)
    st = r.settings

    def to(targets: list[str], quorum: int | None) -> Callable[[], None]:
        return lambda: r.prober.update(targets, st, quorum)

    results = r.go(4.5, at={0.5: to(["a", "b", "c", "d"], None),   # majority: 3 of 4
                            1.5: to(["a", "b", "c", "d"], 2),
                            2.5: to(["a", "c"], None),             # 2 of 2
                            3.5: to(["a", "c"], 1)})
    assert [x.verdict for x in results] == [GOOD, FAILED, GOOD, FAILED, GOOD]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_default_quorum_is_a_majority(n: int) -> None:
    targets = [f"t{i}" for i in range(n)]
    for answering in range(n + 1):
        net = FakeNet(lambda s: 0.01 if int(s.address[1:]) < answering else None)
        results = Run(targets, net=net).go(0.5)
        assert results[0].verdict is (GOOD if answering >= n // 2 + 1 else FAILED), answering


# --- on a real event loop ------------------------------------------------------------------


def test_real_loop_cadence_and_early_completion() -> None:
    interval = 0.03
    r = Run(("a", "b"), net=FakeNet(lambda s: 0.002), interval=interval, count=2, timeout=0.5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(r.prober.run())
        await until_async(lambda: len(r.results) >= 8, 10.0, interval=0.005)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert all(x.verdict is GOOD for x in r.results)
    firsts = starts(r.net, "a", 2)
    for k, x in enumerate(r.results[:8]):
        assert x.at - firsts[k] < 0.25, "completes with its answers, not at the 0.5 s deadline"
    # on the grid: never before a slot, never two rounds in one slot
    for t in firsts:
        assert t / interval - math.floor(t / interval + 1e-6) < 0.9
    slots = [math.floor(t / interval + 1e-6) for t in firsts]
    assert slots == sorted(set(slots))
    assert r.net.sockets[0].closed


def test_real_loop_silence_check() -> None:
    # replies 0.3 s late grow the timeout beyond 0.2 s; then the line dies
    dead: list[float] = []
    r = Run(("a",), net=FakeNet(lambda s: None if dead else 0.3), interval=0.05, count=1,
            timeout=0.1, max_timeout=2.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(r.prober.run())
        await until_async(lambda: r.prober.timeout() > 0.2, 10.0, interval=0.005)
        dead.append(loop.time())
        await until_async(lambda: any("within" in x.reason for x in r.results), 10.0,
                          interval=0.005)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    failed = next(x for x in r.results if "within" in x.reason)
    assert failed.reason == "0/1 targets answered within 100ms, no traffic (silent: a)"
    assert failed.timeout > 0.15 and failed.verdict is FAILED



# --- targets that are the router's own addresses ------------------------------------------


def test_a_target_that_is_the_routers_own_address_is_not_probed_and_counts_as_failed() -> None:
    r = Run(("a", "b", "c"), quorum=2)
    r.prober.follow(SOURCE, DEVICE, ["b"])
    results = r.go(1.5)
    assert r.net.sends("b") == [] and len(r.net.sends("a")) == 2
    assert [x.verdict for x in results] == [GOOD, GOOD]     # a and c make the quorum
    assert results[0].samples[1] == TS("b", 1, 0, None, False, True)
    assert results[0].reason == ("2/3 targets answered; target b is this router's own "
                                 "address")


def test_a_round_that_cannot_make_its_quorum_without_own_addresses_fails_at_once() -> None:
    # b is answered by the kernel in no time: it must not keep the WAN up (nor traffic)
    r = Run(("b",), net=FakeNet(lambda s: 0.0001), traffic=moving(), down=3)
    r.prober.follow(SOURCE, DEVICE, ["b"])
    results = r.go(0.5)
    assert r.net.sends("b") == []
    # the grid round and its fast follow-ups, judged on the spot: DOWN with no wait
    assert [(x.at, x.verdict, x.followup) for x in results] == [
        (0.0, FAILED, False), (0.0, FAILED, True), (0.0, FAILED, True)]
    assert results[0].reason == "0/1 targets answered; target b is this router's own address"
    h = Health(Phase.UP)
    for x in results:
        h = step(h, x.verdict, 3, 5, x.reason)
    assert h.state is Phase.DOWN and "b is this router's own address" in h.reason


def test_own_addresses_are_followed_from_round_to_round() -> None:
    r = Run(("a",), net=FakeNet(lambda s: 0.001), down=1)
    results = r.go(4.5, at={1.5: lambda: r.prober.follow(SOURCE, DEVICE, {"a"}),
                            2.5: lambda: r.prober.follow(SOURCE, DEVICE, ())})
    assert [x.verdict for x in results] == [GOOD, GOOD, FAILED, GOOD, GOOD]
    assert r.net.sends("a") == pytest.approx([0.0, 1.0, 3.0, 4.0])


# --- recorded sequences ------------------------------------------------------------------
#
# A recording holds, per probe round: its start `t`, every echo request as
# [sent at, reply arrived at or null] per target, and the WAN's traffic counter as
# [time, value] change points within the round.  Times are seconds from the start.
# The prober sends on the same grid (interval, spacing), so the replay checks each
# request's send time and delivers the reply at its recorded arrival time.

PROBE = {"interval": 0.2, "timeout": 0.25, "max_timeout": 4.0, "count": 2, "down": 3, "up": 5,
         "quorum": None}
GATEWAY, BEYOND = "10.111.0.1", "192.0.2.10"
RECORDINGS = ("saturation", "saturation_death", "upstream_death", "random_loss")


def _r(x: float) -> float:
    return round(x, 6)


def _grid(duration: float, probe: dict[str, Any]) -> list[tuple[float, list[float]]]:
    """The rounds' start times and send times, as the prober makes them."""
    interval, count = probe["interval"], probe["count"]
    gap = min(0.02, interval / (2 * count))
    return [(k * interval, [k * interval + i * gap for i in range(count)])
            for k in range(int(round(duration / interval)))]


def _recording(name: str, about: str, targets: list[str], duration: float,
               arrival: Callable[[str, float], float | None],
               counter: list[tuple[float, int]], marks: dict[str, float]) -> dict[str, Any]:
    rounds = []
    grid = _grid(duration, PROBE)
    for k, (t, sends) in enumerate(grid):
        end = grid[k + 1][0] if k + 1 < len(grid) else duration
        echo = {a: [[_r(s), None if (x := arrival(a, s)) is None else _r(x)] for s in sends]
                for a in targets}
        points = [[_r(at), v] for at, v in counter if t <= at < end]
        rounds.append({"t": _r(t), "echo": echo, "counter": points})
    return {"name": name, "about": about, "probe": PROBE, "targets": targets,
            "duration": duration, "marks": marks, "rounds": rounds}


def _saturated(rng: random.Random, duration: float, die_at: float | None,
               drain: float) -> tuple[Callable[[str, float], float | None],
                                      list[tuple[float, int]], float | None]:
    """A line whose queue fills from t=1 to t=4 s (RTT 5 ms -> ~1.8 s) and stays full;
    the modem releases its queue in bursts every 50-250 ms.  With `die_at`, no reply
    arrives from then on, and the counter stops `drain` seconds later."""
    bursts, b = [], 1.0
    while b < duration + 5:
        bursts.append(_r(b))
        b += rng.uniform(0.05, 0.25)
    wander = [rng.uniform(-0.04, 0.04) for _ in range(int(duration * 10) + 60)]

    def queue(t: float) -> float:
        ramp = min(1.0, max(0.0, (t - 1.0) / 3.0))
        return ramp * (1.795 + wander[int(t * 10)])

    last = {"at": 0.0}

    def arrival(target: str, sent: float) -> float | None:
        base = 0.005 if target == GATEWAY else 0.018
        at = sent + base + queue(sent) + rng.uniform(0, 0.002)
        if at >= 1.0:
            at = bursts[bisect.bisect_left(bursts, at)]  # released with the next burst
        at = max(at, last["at"])  # one FIFO queue
        last["at"] = at
        return None if die_at is not None and at >= die_at else at

    # the counter moves with every burst, and every 50 ms anyway (a busy line)
    stop = None if die_at is None else die_at + drain
    counter, value = [], 1000
    moves = sorted({*[x for x in bursts if x < duration],
                    *[_r(i * 0.05) for i in range(1, int(duration * 20))]})
    for t in moves:
        if stop is not None and t >= stop:
            break
        value += rng.randint(40, 200) if t >= 1.0 else rng.randint(5, 30)
        counter.append((t, value))
    return arrival, counter, (counter[-1][0] if stop is not None else None)


def make_recordings() -> dict[str, dict[str, Any]]:
    """The synthetic recordings of tests/data/ (deterministic: seeded)."""
    out: dict[str, dict[str, Any]] = {}
    targets = [GATEWAY, BEYOND]

    arrival, counter, _ = _saturated(random.Random(1), 12.0, None, 0.0)
    out["saturation"] = _recording(
        "saturation",
        "A saturated line: both targets behind the modem's queue; RTT 5 ms, climbing from "
        "t=1 s to ~1.8 s at t=4 s and staying there; replies released in bursts every "
        "50-250 ms; the traffic counter moves every round.",
        targets, 12.0, arrival, counter, {"saturated_from": 4.0})

    arrival, counter, stop = _saturated(random.Random(2), 9.0, 5.0, 0.8)
    assert stop is not None
    out["saturation_death"] = _recording(
        "saturation_death",
        "As saturation until t=5 s; then no reply arrives, the queue drains for 0.8 s "
        "(the counter still moves), then nothing at all.",
        targets, 9.0, arrival, counter, {"replies_stop": 5.0, "counter_stops": stop})

    rng = random.Random(3)

    def upstream(target: str, sent: float) -> float | None:
        if target == GATEWAY:
            return sent + 0.001 + rng.uniform(0, 0.0003)
        return sent + 0.018 + rng.uniform(0, 0.004) if sent < 2.0 else None

    idle, value = [], 500
    for i in range(1, 40):  # light traffic from beyond the gateway until it dies at 2 s
        value += rng.randint(1, 20)
        idle.append((_r(i * 0.05 - 0.001), value))
    out["upstream_death"] = _recording(
        "upstream_death",
        "The gateway answers in ~1 ms every round; the target beyond it (~20 ms) stops "
        "answering requests sent from t=2 s; the traffic counter stops at 2 s.",
        targets, 5.0, upstream, [(t, v) for t, v in idle if t < 2.0],
        {"upstream_stops": 2.0, "counter_stops": max(t for t, _ in idle if t < 2.0)})

    rng = random.Random(4)

    def lossy(target: str, sent: float) -> float | None:
        lost_out, lost_back = rng.random() < 0.05, rng.random() < 0.05
        rtt = 0.001 + rng.uniform(0, 0.0005) if target == GATEWAY else 0.018 + rng.uniform(
            0, 0.006)
        return None if lost_out or lost_back else sent + rtt

    out["random_loss"] = _recording(
        "random_loss",
        "5 % random loss in each direction on every echo request (seed 4), 2 requests per "
        "target per round, idle line (the counter never moves).",
        targets, 60.0, lossy, [], {})
    return out


def dump(rec: dict[str, Any]) -> str:
    """A recording as JSON, one round per line."""
    head = json.dumps({k: v for k, v in rec.items() if k != "rounds"}, indent=1)
    rounds = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in rec["rounds"])
    return f'{head[:-2]},\n "rounds": [\n{rounds}\n ]\n}}\n'


def write_recordings() -> None:
    DATA.mkdir(exist_ok=True)
    for name, rec in make_recordings().items():
        (DATA / f"{name}.json").write_text(dump(rec))


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@dataclass
class Replay:
    """What a replay delivered: each round's result and the WAN's health after it."""

    rounds: list[tuple[RoundResult, Health]] = field(default_factory=list)
    judged: list[RoundResult] = field(default_factory=list)
    """Every round judged, stale ones (not delivered) included."""
    prober: Prober | None = None
    followups: int = 0
    """Requests of fast follow-up rounds (not on the grid, not in the recording)."""

    def first(self, state: Phase, after: float = 0.0) -> float | None:
        """When the WAN first entered `state` at or after `after`."""
        return next((r.at for r, h in self.rounds if h.state is state and r.at >= after), None)

    def states(self) -> set[Phase]:
        return {h.state for _, h in self.rounds}

    def verdicts(self, since: float = 0.0) -> list[Verdict]:
        return [r.verdict for r, _ in self.rounds if r.at >= since]


def replay(rec: dict[str, Any], traffic: bool = True) -> Replay:
    """Feed `rec` through the real Prober (fake socket: each reply at its recorded time)
    and the real health state machine; `traffic=False` hides the counter (unknown)."""
    p = rec["probe"]
    st = ProbeSettings(interval=p["interval"], timeout=p["timeout"],
                       max_timeout=p["max_timeout"], count=p["count"], down=p["down"],
                       up=p["up"], quorum=p["quorum"])
    requests = {a: [req for rnd in rec["rounds"] for req in rnd["echo"][a]]
                for a in rec["targets"]}
    points = [tuple(x) for rnd in rec["rounds"] for x in rnd["counter"]]
    times = [t for t, _ in points]
    mismatch: list[str] = []

    def reply(s: Sent) -> float | None:
        recorded = requests[s.address]
        # the recorded request sent at that moment; a fast follow-up round's request
        # (not on the grid) shares the fate of the last one recorded before it
        k = bisect.bisect_right([sent for sent, _ in recorded], s.at + 1e-6) - 1
        if k < 0:
            mismatch.append(f"request to {s.address} at {s.at} before the recording")
            return None
        sent, arrived = recorded[k]
        if abs(sent - s.at) > 1e-6 and on_grid(s.at):
            mismatch.append(f"request to {s.address} sent at {s.at}, recorded {sent}")
        return None if arrived is None else arrived - sent

    def on_grid(t: float) -> bool:
        """A grid round's request (its start, or `gap` after it), not a follow-up's."""
        gap = spacing(st)
        return any(abs(x - round(x / st.interval) * st.interval) < 1e-6
                   for x in (t - i * gap for i in range(st.count)))

    def counter() -> int | None:
        i = bisect.bisect_right(times, now())
        return points[i - 1][1] if i else 0

    out = Replay()
    health = [Health()]

    def on_round(r: RoundResult) -> None:
        health[0] = step(health[0], r.verdict, st.down, st.up, r.reason)
        out.rounds.append((r, health[0]))

    net = FakeNet(reply)
    out.prober = Prober("wan1", rec["targets"], st, on_round, source=SOURCE, device=DEVICE,
                        traffic=counter if traffic else None, quorum=st.quorum, sockets=net,
                        rest=False)     # every recorded request is replayed

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(out.prober.run())  # type: ignore[union-attr]
        await asyncio.sleep(rec["duration"] - st.interval / 2)  # no round beyond the recording
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def spy(*args: Any, **kw: Any) -> RoundResult:
        res = judge(*args, **kw)
        out.judged.append(res)
        return res

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ecmpd.prober, "judge", spy)
        vrun(main)
    assert not mismatch, mismatch[:3]
    grid = [x for x in net.sent if on_grid(x.at)]
    assert len(grid) == sum(len(v) for v in requests.values()), "not every request replayed"
    out.followups = len(net.sent) - len(grid)
    return out


@pytest.fixture(scope="module")
def recordings() -> dict[str, dict[str, Any]]:
    return {name: load(name) for name in RECORDINGS}


def test_recordings_are_what_the_generator_makes(recordings: dict[str, dict[str, Any]]) -> None:
    made = make_recordings()
    assert sorted(made) == sorted(RECORDINGS)
    for name in RECORDINGS:
        assert recordings[name] == json.loads(dump(made[name])), (
            f"tests/data/{name}.json differs from make_recordings(): regenerate it with "
            f"`.venv/bin/python tests/test_prober.py`")


def test_recorded_saturation_looks_like_one(recordings: dict[str, dict[str, Any]]) -> None:
    rec = recordings["saturation"]
    rtts = [(s, a - s) for rnd in rec["rounds"] for reqs in rnd["echo"].values()
            for s, a in reqs if a is not None]
    assert min(r for s, r in rtts if s < 1.0) >= 0.005 and max(r for s, r in rtts if s < 1.0) < 0.03
    plateau = [r for s, r in rtts if s > 4.0]
    assert 1.6 < min(plateau) and max(plateau) < 2.1
    arrivals = sorted(s + r for s, r in rtts if s > 4.0)
    assert len(set(arrivals)) < len(arrivals) / 2  # in bursts
    assert all(rnd["counter"] for rnd in rec["rounds"])  # the counter moves every round


def test_replay_saturation_never_leaves_the_route(recordings: dict[str, dict[str, Any]]) -> None:
    rec = recordings["saturation"]
    out = replay(rec)
    assert out.rounds, "no round delivered"
    assert out.states() <= {Phase.UP, Phase.FALLING}, out.states()
    assert all(takes_new_flows(h.state) for _, h in out.rounds)
    assert FAILED not in out.verdicts()
    assert SLOW in out.verdicts()  # the climb outran the estimator for a while
    # on the plateau the timeout caught up: probes are in time again, well below the ceiling
    plateau = [r for r, _ in out.rounds if r.at > 8.0]
    assert sum(r.verdict is GOOD for r in plateau) > len(plateau) / 2
    assert all(1.8 <= r.timeout <= 4.0 for r in plateau)
    srtt, _ = out.prober.rtt(BEYOND)  # type: ignore[union-attr]
    assert srtt is not None and 1.6 < srtt < 2.1


def test_replay_saturation_without_the_counter(recordings: dict[str, dict[str, Any]]) -> None:
    """Without the counter (unknown), only late replies prove life.  While the queue
    fills, replies fall silent for longer than `timeout` (the line goes DOWN for a few
    seconds: that is what the counter is for); once it is full, late replies flow and the
    estimator catches up: the WAN is UP again and stays UP."""
    out = replay(recordings["saturation"], traffic=False)
    assert [h.state for r, h in out.rounds if r.at > 9.0] == [Phase.UP] * len(
        [r for r, _ in out.rounds if r.at > 9.0])
    assert out.rounds[-1][1].state is Phase.UP


def test_replay_death_under_saturation(recordings: dict[str, dict[str, Any]]) -> None:
    rec = recordings["saturation_death"]
    out = replay(rec)
    stop = rec["marks"]["counter_stops"]
    before = [h.state for r, h in out.rounds if r.at < stop]
    assert before and set(before) <= {Phase.UP, Phase.FALLING}
    down = out.first(Phase.DOWN)
    assert down is not None, "never DOWN"
    measured = down - stop
    assert 0 < measured <= 1.0, f"DOWN {measured:.3f} s after the counter stopped"
    assert down - rec["marks"]["replies_stop"] > 0.8  # not while the queue still drained


def test_replay_upstream_death(recordings: dict[str, dict[str, Any]]) -> None:
    rec = recordings["upstream_death"]
    assert rec["probe"]["quorum"] is None  # the default: a majority, 2 of 2
    out = replay(rec)
    stop = rec["marks"]["upstream_stops"]
    assert {h.state for r, h in out.rounds if r.at < stop} == {Phase.UP}
    down = out.first(Phase.DOWN)
    assert down is not None, "never DOWN: the live gateway alone kept the WAN up"
    measured = down - stop
    assert 0 < measured <= 1.0, f"DOWN {measured:.3f} s after the upstream stopped"
    last = out.rounds[-1][0]
    assert last.reason == f"1/2 targets answered (silent: {BEYOND})"


def test_replay_random_loss(recordings: dict[str, dict[str, Any]]) -> None:
    rec = recordings["random_loss"]
    out = replay(rec)
    assert Phase.DOWN not in out.states()
    lost = sum(a is None for rnd in rec["rounds"] for reqs in rnd["echo"].values()
               for _, a in reqs)
    total = sum(len(reqs) for rnd in rec["rounds"] for reqs in rnd["echo"].values())
    assert 0.07 < lost / total < 0.13  # 1 - 0.95 ** 2: 9.75 % of round trips lost
    # a target losing both requests of a round keeps the round from being GOOD
    # (quorum 2 of 2); such rounds are mostly stale when judged (the next round
    # completed first), and never DOWN
    blank = sum(all(a is None for _, a in reqs) for rnd in rec["rounds"]
                for reqs in rnd["echo"].values())
    assert blank >= 5
    grid = [r for r in out.judged if not r.followup]
    short = [r for r in grid if any(s.received == 0 for s in r.samples)]
    assert len(short) == blank and not any(r.verdict is GOOD for r in short)
    assert len(grid) == len(rec["rounds"])
    # a failed round may be followed by a fast round (two requests per target): the line
    # answers it, so the WAN never falls further
    fast = [r for r in out.judged if r not in grid]
    assert len(fast) * len(rec["targets"]) * FOLLOWUP_COPIES == out.followups
    assert all(r.verdict is GOOD for r in fast), fast


if __name__ == "__main__":
    write_recordings()
    print(f"wrote {', '.join(RECORDINGS)} to {DATA}", file=sys.stderr)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_on_a_fast_idle_line_takes_it_down_no_faster_than_the_grid(seed) -> None:
    """5 % loss each way (~1 request in 10 lost) on a 1 ms idle line, 10 virtual minutes
    (3000 rounds): fast follow-ups are allowed there (their two requests go together),
    yet three failed rounds in a row stay as rare as on the grid alone (p ~ 1e-6 a
    round).  With a single request per follow-up, each seed here went DOWN."""
    rng = random.Random(seed)
    r = Run(("a",), net=FakeNet(lambda s: None if rng.random() < 0.0975 else 0.001),
            interval=0.2, count=2, down=3)
    results = r.go(600.0)
    assert len(results) >= 2500          # rounds a newer verdict superseded are not delivered
    assert any(x.followup for x in results)          # the follow-ups did run
    assert _downs(results) is None, [x for x in results if x.verdict is FAILED][:6]


# ---- The prober's `spare` mode (issue #16, item 7): a round's later requests go only to

def spare_run(*targets: str, **kw: Any) -> Run:
    r = Run(targets, **kw)
    r.prober = Prober("wan1", targets, r.settings, r.results.append, source=r.prober.source,
                      device=r.prober.device, traffic=r.traffic, sockets=r.net, spare=True)
    return r


def test_a_fast_line_gets_one_request_per_target_and_completes_with_its_answers() -> None:
    r = spare_run("a", "b", count=2)
    results = r.go(3.5)
    assert r.net.sends("a") == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert [x.verdict for x in results] == [Verdict.GOOD] * 4
    assert [x.at for x in results] == pytest.approx([k + 0.01 for k in range(4)])
    assert results[0].samples[0] == TS("a", 1, 1, pytest.approx(0.01), True)


def test_a_target_whose_first_request_is_lost_gets_the_second() -> None:
    # b's first request of every round is lost; a answers everything
    net = FakeNet(lambda s: None if s.address == "b" and len(net.sends("b")) % 2 == 1 else 0.01)
    r = spare_run("a", "b", net=net, count=2, quorum=2)
    results = r.go(2.5)
    gap = spacing(r.settings)
    assert r.net.sends("a") == pytest.approx([0.0, 1.0, 2.0])
    assert r.net.sends("b") == pytest.approx([k + d for k in range(3) for d in (0, gap)])
    assert all(x.verdict is Verdict.GOOD for x in results)
    assert results[0].samples == (TS("a", 1, 1, pytest.approx(0.01), True),
                                  TS("b", 2, 1, pytest.approx(0.01), True))


@pytest.mark.parametrize("line", [
    _line(0.01, 3.5),        # a fast line that dies
    _line(0.2, 3.5),         # a slow one (RTT above the spacing) that dies
    lambda s: None,          # never answers
])
def test_failing_lines_are_judged_as_without_sparing(line) -> None:
    plain = Run(("a", "b"), net=FakeNet(line), count=2)
    spare = spare_run("a", "b", net=FakeNet(line), count=2)
    plain.go(6.5)
    spare.go(6.5)
    verdicts = [(r.verdict, r.reason) for r in plain.results]
    assert [(r.verdict, r.reason) for r in spare.results] == verdicts
    failed = [round(r.at, 6) for r in plain.results if r.verdict is Verdict.FAILED]
    assert [round(r.at, 6) for r in spare.results if r.verdict is Verdict.FAILED] == failed


def test_on_a_busy_line_without_a_queue_lost_replies_fail_without_the_burst_allowance():
    # the other version's traffic keeps the line busy but nothing queues (5 ms): a full
    # queue's loss burst cannot happen, so overtaken replies are lost after interval +
    # timeout, as fast as on an idle line
    delay = lambda s: 0.005  # noqa: E731
    net = FakeNet(lambda s: delay(s.at) if s.at < 4.0 else None)
    r = Run(("a",), net=net, interval=0.2, count=2, line=Line(delay))
    results = r.go(7.0)
    failed = [x.at for x in results if x.verdict is FAILED]
    assert failed and 4.0 < failed[0] <= 4.0 + 0.2 + 0.25 + 0.3, r.summary()


# --- resting on the other IP version ---------------------------------------------------


def probing_slots(net: FakeNet, address: str) -> list[float]:
    return sorted({round(t, 6) for t in net.sends(address)})


def test_an_ipv6_prober_rests_on_prompt_ipv4_replies_and_probes_every_fifth_round():
    r = Run(("a",), lean=Lean(), interval=0.2, count=1, up=5)
    results = r.go(6.05)
    slots = probing_slots(r.net, "a")
    # 5 probing rounds (the `up` streak), then one in REST_ROUNDS + 1
    assert slots[:5] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    gaps = {round(b - a, 6) for a, b in zip(slots[5:], slots[6:])}
    assert gaps == {round(0.2 * (ecmpd.prober.REST_ROUNDS + 1), 6)}, slots
    assert len(results) == 31 and {x.verdict for x in results} == {GOOD}
    rested = [x for x in results if x.reason == ecmpd.prober.RESTED]
    assert len(rested) == r.prober.rested_total >= 19
    assert r.prober.last().reason == "1/1 targets answered"   # status: the newest probe


@pytest.mark.parametrize("lean", [
    None,                                   # IPv4-only WAN, or the IPv4 prober itself
    Lean(prompt=0.05),                      # the other version's replies are not prompt
    Lean(prompt=None),                      # ... or not known yet
    Lean(delay=0.3),                        # its newest answered request is too old
])
def test_no_rest_without_prompt_answers_of_the_other_version(lean):
    r = Run(("a",), lean=lean, interval=0.2, count=1)
    results = r.go(4.05)
    assert len(probing_slots(r.net, "a")) == 21 and r.prober.rested_total == 0
    assert all(x.reason != ecmpd.prober.RESTED for x in results)


def first_failed(results: list[RoundResult]) -> float:
    return next(x.at for x in results if x.verdict is FAILED)


@pytest.mark.parametrize("dead", [3.0, 3.01, 3.1, 3.2, 3.39])
def test_a_dead_line_fails_a_resting_prober_as_fast_as_a_probing_one(dead):
    # the whole line dies: the IPv4 replies stop with the IPv6 ones
    def net() -> FakeNet:
        return FakeNet(lambda s: None if s.at >= dead else 0.002)
    resting = Run(("a",), net=net(), lean=Lean(dead=dead), interval=0.2, count=1)
    probing = Run(("a",), net=net(), interval=0.2, count=1)
    t_rest, t_probe = first_failed(resting.go(5.0)), first_failed(probing.go(5.0))
    assert resting.prober.rested_total > 0
    # at most half a fast window later (the rested slot's check, then its probes)
    assert t_probe <= t_rest <= t_probe + fast_window(resting.settings) / 2 + 1e-9


def test_an_ipv6_only_outage_fails_within_the_rested_rounds():
    dead = 3.05
    r = Run(("a",), net=FakeNet(lambda s: None if s.at >= dead else 0.002), lean=Lean(),
            interval=0.2, count=1, down=3)
    results = r.go(6.0)
    fails = [x for x in results if x.verdict is FAILED]
    bound = 0.2 * (ecmpd.prober.REST_ROUNDS + 1) + 0.25 + 2 * fast_window(r.settings) + 0.01
    assert len(fails) >= 3 and fails[2].at - dead <= bound, r.summary()
    # no rest while failing: from the first failure on, every slot probes
    assert all(x.reason != ecmpd.prober.RESTED for x in results if x.at > fails[0].at)


def test_after_a_failure_it_rests_only_after_up_good_probing_rounds():
    down_from, back = 2.05, 3.05
    net = FakeNet(lambda s: None if down_from <= s.at < back else 0.002)
    r = Run(("a",), net=net, lean=Lean(), interval=0.2, count=1, up=5)
    results = r.go(6.0)
    last_fail = max(i for i, x in enumerate(results) if x.verdict is FAILED)
    assert results[last_fail].at < back + 0.3, r.summary()
    after = results[last_fail + 1:]
    first_rest = next(i for i, x in enumerate(after) if x.reason == ecmpd.prober.RESTED)
    assert first_rest >= 5 and all(x.verdict is GOOD for x in after[:first_rest]), r.summary()


def test_a_busy_line_rests_on_its_own_traffic_and_a_silent_one_probes_at_once():
    # user traffic (300 packets a second from beyond the gateway) proves the line: four
    # rounds in five rest; when it stops (at 4.01) the next rested slot probes at once
    traffic = Traffic(lambda t: int(min(t, 4.01) * 300))
    r = Run(("a",), traffic=traffic, interval=0.2, count=1, up=5,
            net=FakeNet(lambda s: None if s.at >= 4.01 else 0.002))
    results = r.go(6.0)
    rested = [x for x in results if x.reason == ecmpd.prober.RESTED_TRAFFIC]
    assert len(rested) >= 10 and all(x.traffic for x in rested)
    before = [t for t in probing_slots(r.net, "a") if 1.0 < t < 4.0]
    assert {round(b - a, 6) for a, b in zip(before, before[1:])} == {1.0}, before
    # the line died at 4.01: the slot at 4.2 (rested or not) fails like a probing one
    failed = first_failed(results)
    probing = Run(("a",), traffic=Traffic(lambda t: int(min(t, 4.01) * 300)), interval=0.2,
                  count=1, up=5, net=FakeNet(lambda s: None if s.at >= 4.01 else 0.002),
                  rest=False)
    assert failed <= first_failed(probing.go(6.0)) + fast_window(r.settings) / 2 + 1e-9


def test_an_idle_single_version_line_never_rests():
    r = Run(("a",), traffic=Traffic(lambda t: int(t * 5)), interval=0.2, count=1)
    r.go(4.05)
    assert len(probing_slots(r.net, "a")) == 21 and r.prober.rested_total == 0
