"""ICMP prober: one per WAN, rounds of echo requests on a fixed cadence.

A round pings every target `count` times, ~20 ms apart, from the WAN's address (the
dataplane's `ip rule from <address>` sends the probes out through that WAN).  `judge()`
turns the round's samples into a good or failed `RoundResult` (quorum of answering
targets, then loss and RTT over a sliding `Window`), which the `Prober` hands to its
`on_round` callback in round order.  The health state machine lives in `ecmpd.health`;
this module only measures.

By default a Prober pings through one persistent raw ICMP socket for its WAN
(`ecmpd.icmpecho.IcmpPinger`); tests inject a `PingFn` instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from .icmpecho import IcmpPinger
from .model import ProbeSettings

log = logging.getLogger(__name__)

PingFn = Callable[[str, str, float], Awaitable[float | None]]
"""`ping(address, source, timeout)`: send one echo request to `address` from `source`;
the RTT in seconds of its reply, or None when no reply came within `timeout`.  It may
return a Future (no task is made for it) or a coroutine."""

MAX_SPACING = 0.02
"""Seconds between a target's echo requests within a round (less for short intervals)."""
GRACE = 0.05
"""Extra seconds a ping function gets past `timeout` before it is cancelled."""

@dataclass(frozen=True)
class TargetSample:
    """One target's part of a round."""

    address: str
    sent: int
    received: int
    rtt: float | None
    """Mean RTT in seconds of the replies (None without replies)."""


@dataclass(frozen=True)
class RoundResult:
    """The verdict on one probe round."""

    ok: bool
    samples: tuple[TargetSample, ...]
    reason: str
    at: float
    """loop.time() when the round ended."""


class Window:
    """The samples of the last `size` rounds (pure: no clock, no I/O)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1 (got {size})")
        self._rounds: deque[tuple[TargetSample, ...]] = deque(maxlen=size)

    @property
    def size(self) -> int:
        """How many rounds the window holds at most."""
        return self._rounds.maxlen or 0

    def __len__(self) -> int:
        return len(self._rounds)

    def add(self, samples: Iterable[TargetSample]) -> None:
        """Append one round's samples, dropping the oldest round when full."""
        self._rounds.append(tuple(samples))

    def resized(self, size: int) -> Window:
        """A window of `size` rounds holding the newest of this one's rounds."""
        w = Window(size)
        for r in self._rounds:
            w.add(r)
        return w

    def _all(self) -> list[TargetSample]:
        return [s for r in self._rounds for s in r]

    def loss_pct(self) -> float:
        """Percent of echo requests in the window without reply (0 when none sent)."""
        return _loss(self._all())

    def mean_rtt(self) -> float | None:
        """Mean RTT in seconds over every reply in the window (None without replies)."""
        return _rtt(self._all())

    def per_target(self) -> dict[str, tuple[float, float | None]]:
        """address -> (loss percent, mean RTT) over the window, in first-seen order."""
        by: dict[str, list[TargetSample]] = {}
        for s in self._all():
            by.setdefault(s.address, []).append(s)
        return {a: (_loss(ss), _rtt(ss)) for a, ss in by.items()}


def _loss(samples: Sequence[TargetSample]) -> float:
    sent = sum(s.sent for s in samples)
    received = sum(s.received for s in samples)
    return 100.0 * (sent - received) / sent if sent else 0.0


def _rtt(samples: Sequence[TargetSample]) -> float | None:
    """Reply-weighted mean RTT."""
    n = sum(s.received for s in samples if s.rtt is not None)
    if not n:
        return None
    return sum(s.rtt * s.received for s in samples if s.rtt is not None) / n


def _num(x: float) -> str:
    """A compact number for reasons: 30, 33.3, 0.4."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f}ms" if ms >= 10 else f"{_num(ms)}ms"


def judge(
    samples: Sequence[TargetSample], settings: ProbeSettings, window: Window, at: float = 0.0
) -> RoundResult:
    """Add a round's samples to `window` and judge the round.

    It fails when fewer than `quorum` targets answered, else when `max_loss` is set and
    the window's loss exceeds it, else when `max_rtt` is set and the window's mean RTT
    exceeds it.  `at` is stored in the result.
    """
    samples = tuple(samples)
    window.add(samples)
    answered = [s for s in samples if s.received > 0]
    silent = [s.address for s in samples if s.received == 0]
    tally = f"{len(answered)}/{len(samples)} targets answered"
    if silent:
        tally += f" (silent: {', '.join(silent)})"
    if len(answered) < settings.quorum:
        return RoundResult(False, samples, tally, at)
    if settings.max_loss is not None:
        loss = window.loss_pct()
        if loss > settings.max_loss:
            n = len(window)
            why = f"loss {_num(loss)}% > {_num(settings.max_loss)}% over {n} round{'s' * (n != 1)}"
            return RoundResult(False, samples, why, at)
    if settings.max_rtt is not None:
        rtt = window.mean_rtt()
        if rtt is not None and rtt > settings.max_rtt:
            return RoundResult(False, samples, f"rtt {_ms(rtt)} > {_ms(settings.max_rtt)}", at)
    return RoundResult(True, samples, tally, at)


def spacing(settings: ProbeSettings) -> float:
    """Seconds between a target's requests in one round: ~20 ms, less for short intervals."""
    return min(MAX_SPACING, settings.interval / (2 * max(1, settings.count)))


def _check(settings: ProbeSettings) -> None:
    if settings.interval <= 0 or settings.timeout <= 0 or settings.count < 1:
        raise ValueError(f"bad probe settings: {settings}")


class Prober:
    """Probes one WAN's targets every `settings.interval` seconds until cancelled."""

    def __init__(
        self,
        name: str,
        targets: Sequence[str],
        settings: ProbeSettings,
        on_round: Callable[[RoundResult], None],
        source: str | None = None,
        ping: PingFn | None = None,
    ) -> None:
        _check(settings)
        self.name = name
        self.source: str | None = source
        """The WAN's address; probes are sent from it (None: rounds fail "no address")."""
        self._targets = tuple(targets)
        self._settings = settings
        self._on_round = on_round
        self._pinger = IcmpPinger() if ping is None else None
        self._ping: PingFn = ping or self._pinger  # type: ignore[assignment]
        self._window = Window(settings.window)
        self._last: RoundResult | None = None
        self._rounds: deque[_Round] = deque()
        """Rounds started and not yet delivered, oldest first."""
        self._timer: asyncio.TimerHandle | None = None

    def update(self, targets: Sequence[str], settings: ProbeSettings) -> None:
        """Reload targets and settings; they take effect from the next round.

        The window keeps its newest rounds when its size changes.
        """
        _check(settings)
        self._targets = tuple(targets)
        self._settings = settings
        if settings.window != self._window.size:
            self._window = self._window.resized(settings.window)

    def last(self) -> RoundResult | None:
        """The latest delivered round's result."""
        return self._last

    def window(self) -> Window:
        """The sliding window of recent rounds."""
        return self._window

    async def run(self) -> None:
        """Start a round every `interval` until cancelled.

        Rounds start on a fixed grid (next = previous slot + interval); the first slot is
        the next multiple of `interval` on the loop's clock, so the probers of all WANs
        wake up together (one loop iteration serves them all).  After a stall (the loop
        was blocked past whole slots) the missed slots are skipped: one round starts at
        once for the latest slot and the grid continues from there, so there is never
        more than one round per slot.  Rounds may overlap when timeout > interval; their
        results are delivered in order.

        Rounds run on timer and future callbacks, not tasks: a round costs the loop a
        few wake-ups, shared by every prober whose timers fall due together.
        """
        loop = asyncio.get_running_loop()
        interval = self._settings.interval
        slot = math.ceil(loop.time() / interval) * interval
        self._timer = loop.call_at(slot, self._tick, slot)
        try:
            await loop.create_future()  # until cancelled
        finally:
            if self._timer is not None:
                self._timer.cancel()
            rounds, self._rounds = list(self._rounds), deque()
            futures = [f for r in rounds for f in r.stop()]
            await asyncio.gather(*futures, return_exceptions=True)
            if self._pinger is not None:
                self._pinger.close()

    def _tick(self, slot: float) -> None:
        """The timer of `slot`: schedule the next slot, start a round."""
        loop = asyncio.get_running_loop()
        interval = self._settings.interval
        missed = math.floor((loop.time() - slot) / interval)
        if missed > 0:
            log.debug("%s: prober stalled, skipping %d round(s)", self.name, missed)
            slot += missed * interval
        self._timer = loop.call_at(slot + interval, self._tick, slot + interval)
        try:
            self._start(loop)
        except Exception:
            log.exception("%s: starting a probe round failed", self.name)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send a round's first requests and schedule the rest (`count`, `spacing` apart).

        Requests still running `timeout + GRACE` after the round's last one are
        cancelled.  Without a source address nothing is sent.
        """
        rnd = _Round(loop, self._targets, self._settings, self.source, self._finished)
        self._rounds.append(rnd)
        st = rnd.settings
        if rnd.source is None or not rnd.left:
            self._complete(rnd, loop)
            return
        now, gap = loop.time(), spacing(st)
        rnd.timers = [loop.call_at(now + i * gap, self._send_all, rnd) for i in range(1, st.count)]
        rnd.timers.append(loop.call_at(now + (st.count - 1) * gap + st.timeout + GRACE,
                                       rnd.give_up))
        self._send_all(rnd)

    def _send_all(self, rnd: _Round) -> None:
        """One request to each of the round's targets."""
        assert rnd.source is not None
        for futs, address in zip(rnd.sent, rnd.targets):
            fut = self._send(address, rnd.source, rnd.settings.timeout)
            futs.append(fut)
            fut.add_done_callback(rnd.on_done)

    def _finished(self, rnd: _Round) -> None:
        rnd.left -= 1
        if rnd.left == 0 and rnd.at is None and not rnd.stopped:
            self._complete(rnd, rnd.loop)

    def _complete(self, rnd: _Round, loop: asyncio.AbstractEventLoop) -> None:
        """Mark `rnd` complete and deliver every complete round at the head, in order."""
        rnd.at = loop.time()
        for t in rnd.timers:
            t.cancel()
        while self._rounds and self._rounds[0].at is not None:
            self._deliver(self._rounds.popleft())

    def _deliver(self, rnd: _Round) -> None:
        assert rnd.at is not None
        try:
            if rnd.source is None:
                result = RoundResult(False, (), f"no address on {self.name}", rnd.at)
            else:
                samples = [self._sample(a, futs, rnd.settings)
                           for a, futs in zip(rnd.targets, rnd.sent)]
                result = judge(samples, rnd.settings, self._window, at=rnd.at)
            self._last = result
            self._on_round(result)
        except Exception:
            log.exception("%s: delivering a probe round failed", self.name)

    def _sample(self, address: str, futs: list[asyncio.Future[float | None]],
                settings: ProbeSettings) -> TargetSample:
        rtts = [r for r in (self._rtt(address, f, settings.timeout) for f in futs)
                if r is not None]
        return TargetSample(address, settings.count, len(rtts),
                            sum(rtts) / len(rtts) if rtts else None)

    def _send(self, address: str, source: str, timeout: float) -> asyncio.Future[float | None]:
        """Start one ping: its Future as is, a coroutine as a task; a raise is a loss."""
        try:
            return asyncio.ensure_future(self._ping(address, source, timeout))
        except Exception as e:
            log.debug("%s: ping %s failed: %r", self.name, address, e)
            fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    def _rtt(self, address: str, fut: asyncio.Future[float | None], timeout: float
             ) -> float | None:
        if fut.cancelled():
            return None
        if (e := fut.exception()) is not None:  # a failed send is a lost request
            log.debug("%s: ping %s failed: %r", self.name, address, e)
            return None
        rtt = fut.result()
        return rtt if rtt is not None and rtt <= timeout else None


def _cancel(futures: Iterable[asyncio.Future[float | None]]) -> None:
    for f in futures:
        f.cancel()


class _Round:
    """One round in flight: its settings, requests (per target), timers and end time."""

    __slots__ = ("loop", "targets", "settings", "source", "sent", "left", "timers", "at",
                 "stopped", "on_done")

    def __init__(self, loop: asyncio.AbstractEventLoop, targets: tuple[str, ...],
                 settings: ProbeSettings, source: str | None,
                 finished: Callable[[_Round], None]) -> None:
        self.loop = loop
        self.targets = targets
        self.settings = settings
        self.source = source
        self.sent: list[list[asyncio.Future[float | None]]] = [[] for _ in targets]
        self.left = len(targets) * settings.count
        """Requests not finished yet (sent or still to send)."""
        self.timers: list[asyncio.TimerHandle] = []
        self.at: float | None = None
        """loop.time() when the round completed (None while running)."""
        self.stopped = False
        self.on_done: Callable[[object], None] = lambda _: finished(self)

    @property
    def futures(self) -> list[asyncio.Future[float | None]]:
        """Every request sent so far."""
        return [f for futs in self.sent for f in futs]

    def give_up(self) -> None:
        """Cancel the requests still running (they count as lost)."""
        _cancel(self.futures)

    def stop(self) -> list[asyncio.Future[float | None]]:
        """Cancel the timers and the requests; returns the requests."""
        self.stopped = True
        for t in self.timers:
            t.cancel()
        futures = self.futures
        _cancel(futures)
        return futures
