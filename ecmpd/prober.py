"""ICMP prober: one per WAN, rounds of echo requests on a fixed cadence.

A round pings every target `count` times, concurrently and ~20 ms apart, from the WAN's
address (the dataplane's `ip rule from <address>` sends the probes out through that WAN).
`judge()` turns the round's samples into a good or failed `RoundResult` (quorum of
answering targets, then loss and RTT over a sliding `Window`), which the `Prober` hands to
its `on_round` callback in round order.  The health state machine lives in
`ecmpd.health`; this module only measures.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket, TimeoutExceeded
from icmplib.exceptions import ICMPLibError
from icmplib.sockets import AsyncSocket
from icmplib.utils import unique_identifier

from .model import ProbeSettings

log = logging.getLogger(__name__)

PingFn = Callable[[str, str, float], Awaitable[float | None]]
"""`ping(address, source, timeout)`: send one echo request to `address` from `source`;
the RTT in seconds of its reply, or None when no reply came within `timeout`."""

MAX_SPACING = 0.02
"""Seconds between a target's echo requests within a round (less for short intervals)."""
GRACE = 0.05
"""Extra seconds a ping function gets past `timeout` before it is cancelled."""

_ECHO_REPLY = {4: 0, 6: 129}
_ECHO_REQUEST = {4: 8, 6: 128}


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


async def icmp_ping(address: str, source: str, timeout: float) -> float | None:
    """The default PingFn: one privileged raw-socket echo request with icmplib.

    Every failure (socket creation, bind to a vanished `source`, ENETUNREACH on send, an
    ICMP error reply, no reply in time) returns None; nothing is raised.
    """
    family = 6 if ":" in address else 4
    loop = asyncio.get_running_loop()
    try:
        sock = AsyncSocket((ICMPv6Socket if family == 6 else ICMPv4Socket)(source, True))
    except ICMPLibError as e:
        log.debug("ping %s from %s: cannot open socket: %s", address, source, e)
        return None
    with sock:
        request = ICMPRequest(destination=address, id=unique_identifier(), sequence=0)
        try:
            sock.send(request)
        except ICMPLibError as e:
            log.debug("ping %s from %s: send failed: %s", address, source, e)
            return None
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                reply = await sock.receive(request, remaining)
            except TimeoutExceeded:
                return None
            except ICMPLibError as e:
                log.debug("ping %s from %s: receive failed: %s", address, source, e)
                return None
            if reply.type == _ECHO_REPLY[family]:
                return max(0.0, reply.time - request.time)
            # icmplib's id/sequence filter already drops our own request looped back
            # (it reads id/sequence of non-replies from the quoted header); be safe anyway
            if reply.type != _ECHO_REQUEST[family]:
                log.debug("ping %s from %s: ICMP type %d code %d", address, source,
                          reply.type, reply.code)
                return None
        return None


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
        self._ping: PingFn = ping or icmp_ping
        self._window = Window(settings.window)
        self._last: RoundResult | None = None
        self._tasks: set[asyncio.Task[None]] = set()

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

        Rounds start on a fixed grid (next = previous slot + interval).  After a stall
        (the loop was blocked past whole slots) the missed slots are skipped: one round
        starts at once for the latest slot and the grid continues from there, so there
        is never more than one round per slot.  Rounds may overlap when timeout >
        interval; their results are delivered in order.
        """
        loop = asyncio.get_running_loop()
        prev: asyncio.Task[None] | None = None
        next_start = loop.time()
        try:
            while True:
                delay = next_start - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                interval = self._settings.interval
                missed = math.floor((loop.time() - next_start) / interval)
                if missed > 0:
                    log.debug("%s: prober stalled, skipping %d round(s)", self.name, missed)
                    next_start += missed * interval
                prev = loop.create_task(
                    self._round(prev, self._targets, self._settings, self.source),
                    name=f"probe-{self.name}",
                )
                self._tasks.add(prev)
                prev.add_done_callback(self._tasks.discard)
                next_start += interval
        finally:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _round(
        self,
        prev: asyncio.Task[None] | None,
        targets: tuple[str, ...],
        settings: ProbeSettings,
        source: str | None,
    ) -> None:
        """Probe, then wait for the previous round's delivery, then deliver.

        Without a source address no request is sent and the window is left alone.
        """
        loop = asyncio.get_running_loop()
        samples: tuple[TargetSample, ...] = ()
        if source is not None:
            samples = tuple(
                await asyncio.gather(*(self._target(t, settings, source) for t in targets))
            )
        at = loop.time()
        if prev is not None:
            await asyncio.wait([prev])  # rounds are delivered in order; never raises
            prev = None  # let finished rounds be collected
        try:
            if source is None:
                result = RoundResult(False, (), f"no address on {self.name}", at)
            else:
                result = judge(samples, settings, self._window, at=at)
            self._last = result
            self._on_round(result)
        except Exception:
            log.exception("%s: delivering a probe round failed", self.name)

    async def _target(self, address: str, settings: ProbeSettings, source: str) -> TargetSample:
        """`count` requests to one target, `spacing` apart; replies later than timeout lost."""
        gap = spacing(settings)

        async def one(i: int) -> float | None:
            if i:
                await asyncio.sleep(i * gap)
            try:
                rtt = await asyncio.wait_for(
                    self._ping(address, source, settings.timeout), settings.timeout + GRACE
                )
            except asyncio.TimeoutError:
                return None
            except Exception as e:  # a failed send is a lost request, never fatal
                log.debug("%s: ping %s failed: %r", self.name, address, e)
                return None
            return rtt if rtt is not None and rtt <= settings.timeout else None

        rtts = [r for r in await asyncio.gather(*(one(i) for i in range(settings.count)))
                if r is not None]
        mean = sum(rtts) / len(rtts) if rtts else None
        return TargetSample(address, settings.count, len(rtts), mean)
