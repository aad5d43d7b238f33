"""Judging probe rounds — pure: the RTT estimator, the adaptive timeout and the verdict.

A saturated line is slow, not dead: its queue holds up to a second or two of data, so
probes come back late.  Three things keep such a line in the route while a dead one
still leaves fast:

* the reply timeout follows the measured RTT (`RttEstimator`, RFC 6298: srtt + 4·rttvar,
  clamped to [timeout, max_timeout]), so a slowly filling queue does not time probes out;
* late replies prove life: a reply to any earlier request arriving during a round marks
  its target alive in that round;
* passive evidence: the WAN's nft counter of packets arriving from beyond its gateway.

`judge()` turns one round's observations into a `RoundResult` with a `Verdict`: GOOD when
`quorum` targets answered in time (and the optional loss/RTT limits hold), SLOW when they
did not but `quorum` targets showed life or traffic flowed, FAILED otherwise.  A round in
which nothing at all arrived within `timeout` is judged FAILED at once (the prober's
"silence" check) instead of waiting for the adaptive timeout: once a line stops
delivering, it leaves as fast as an idle one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import ownaddr
from .health import Verdict
from .configmodel import ProbeSettings

ALPHA = 1 / 8
BETA = 1 / 4
K = 4
"""RFC 6298's gains and variance multiplier."""


class RttEstimator:
    """Smoothed RTT and RTT variation of one target (RFC 6298, section 2)."""

    __slots__ = ("srtt", "rttvar")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar: float | None = None

    def sample(self, rtt: float) -> None:
        """Fold in one measured RTT (seconds); every reply counts, late ones too."""
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
        self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt

    def timeout(self, floor: float, ceiling: float) -> float:
        """srtt + 4·rttvar clamped to [floor, ceiling]; `floor` before any sample."""
        if self.srtt is None or self.rttvar is None:
            return floor
        return min(ceiling, max(floor, self.srtt + K * self.rttvar))


@dataclass(frozen=True)
class TargetSample:
    """One target's part of a round."""

    address: str
    sent: int
    received: int
    """Replies to this round's requests that came in time."""
    rtt: float | None
    """Mean RTT in seconds of those replies (None without them)."""
    alive: bool = False
    """A reply from this target (to any request, late ones included) came during the round."""
    own: bool = False
    """The target is one of the router's own addresses: not probed, a failed target."""


@dataclass(frozen=True)
class RoundResult:
    """The verdict on one probe round."""

    verdict: Verdict
    samples: tuple[TargetSample, ...]
    reason: str
    at: float
    """loop.time() when the round was judged."""
    timeout: float = 0.0
    """The reply timeout the round used (seconds)."""
    traffic: bool = False
    """Packets from beyond the gateway arrived during the round."""
    followup: bool = False
    """A fast follow-up of a failed round (off the grid)."""

    @property
    def ok(self) -> bool:
        """The round was GOOD."""
        return self.verdict is Verdict.GOOD


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
        """Percent of echo requests in the window without reply in time (0 when none sent)."""
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


def ms(seconds: float) -> str:
    """`seconds` as a short millisecond string: 250ms, 1.5ms."""
    v = seconds * 1000
    return f"{v:.0f}ms" if v >= 10 else f"{_num(v)}ms"


SLOW_TRAFFIC = "probes late, traffic flowing"
SLOW_REPLIES = "probes late, replies late"
SLOW_LINE = "probes late, the line busy with the other IP version's traffic"


def judge(samples: Sequence[TargetSample], settings: ProbeSettings, window: Window,
          quorum: int, traffic: bool = False, at: float = 0.0, timeout: float = 0.0,
          silent_for: float | None = None, followup: bool = False,
          line: bool = False) -> RoundResult:
    """Add a round's samples to `window` and judge the round (see the module).

    `traffic`: the WAN's counter of packets from beyond its gateway moved during the
    round.  `line`: the WAN's other IP version kept the line busy and its replies have
    not overtaken this version's (`ecmpd.prober`): a round without quorum is SLOW.
    `silent_for`: set when the round is judged early by the silence check (the
    seconds of silence), which only changes the reason.  `followup`: a fast follow-up
    round (recorded in the result only).
    """
    samples = tuple(samples)
    window.add(samples)
    answered = [s for s in samples if s.received > 0]
    silent = [s.address for s in samples if s.received == 0 and not s.alive and not s.own]
    tally = f"{len(answered)}/{len(samples)} targets answered"
    if silent_for is not None:
        tally += f" within {ms(silent_for)}, no traffic"
    if silent:
        tally += f" (silent: {', '.join(silent)})"
    tally += "".join(f"; {ownaddr.reason(s.address)}" for s in samples if s.own)

    def result(verdict: Verdict, reason: str) -> RoundResult:
        return RoundResult(verdict, samples, reason, at, timeout, traffic, followup)

    if len(answered) < quorum:
        alive = [s for s in samples if s.received > 0 or s.alive]
        if traffic:
            return result(Verdict.SLOW, SLOW_TRAFFIC)
        if len(alive) >= quorum:
            return result(Verdict.SLOW, SLOW_REPLIES)
        if line:
            return result(Verdict.SLOW, SLOW_LINE)
        return result(Verdict.FAILED, tally)
    if settings.max_loss is not None:
        loss = window.loss_pct()
        if loss > settings.max_loss:
            n = len(window)
            why = f"loss {_num(loss)}% > {_num(settings.max_loss)}% over {n} round{'s' * (n != 1)}"
            return result(Verdict.FAILED, why)
    if settings.max_rtt is not None:
        rtt = window.mean_rtt()
        if rtt is not None and rtt > settings.max_rtt:
            return result(Verdict.FAILED, f"rtt {ms(rtt)} > {ms(settings.max_rtt)}")
    return result(Verdict.GOOD, tally)
