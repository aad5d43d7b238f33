"""ICMP prober: one per WAN, rounds of echo requests on a fixed cadence.

A round pings every target `count` times, ~20 ms apart, from the WAN's address through
one persistent `EchoSocket` bound to the WAN's address and device (the dataplane's
`ip rule from <address>` and the socket's device binding keep probes on that WAN).  The
socket reports every answer however late; this module decides what is in time and
hands each round's observations to `ecmpd.judge.judge()`:

* a round completes as soon as every request is answered (an idle healthy line: a few
  milliseconds);
* else it is judged at its deadline: the last request + the adaptive timeout (RFC 6298
  srtt + 4·rttvar per target, clamped to [timeout, max_timeout]);
* but `timeout` after the last request, a round with no sign of life at all (no reply
  from `quorum` targets, late ones included, and no traffic from beyond the gateway on
  the WAN's counter) is judged FAILED at once: a line that stopped delivering leaves as
  fast as an idle one, however deep its queue was.

Both IP versions of a WAN cross one line and its queue, so each prober sees the other
version (`line_traffic`, `line_sent`).  A line busy with the other version's traffic (an
IPv4 download next to an idle IPv6) delays this version's probes with no traffic of
its own to prove the line alive.  While the other version's arrivals flow, this
version's late round is SLOW, not FAILED, as long as its replies are not overtaken: the
queue is first in, first out, so once the other version's replies to requests sent more
than an interval + `timeout` + a loss burst after this version's newest answered one are
back, this version's replies are lost, not queued, and its rounds fail again.  (A full
queue drops what arrives: a download's slow start loses a burst of every version's
packets; its own traffic keeps the busy version in, the burst allowance the idle one:
the line's delay as the other version's newest reply measured it, at most `LOSS_BURST`
-- a queue that delays nothing is not full and drops no burst.)  A line busy with
either version's traffic that goes wholly silent fails as fast as a busy line does.

Probing is polite while passive evidence shows the line alive: after `up` good rounds
in a row, up to `REST_ROUNDS` grid rounds in a row rest (send nothing) and are good as
soon as, within half a fast window, either
* packets from beyond the gateway arrive on the WAN (its counter moves) on a line that
  carried `BUSY_PACKETS` or more in the last interval: user traffic proves the line;
* or, for a dual-stack WAN's IPv6 prober (`lean`), the IPv4 probes of the same slot are
  answered, when those come promptly (one line, one queue: they prove it alive).  The
  IPv4 prober never rests on IPv6, so the line always has probes in flight.
Every `REST_ROUNDS + 1`-th round probes, and a rested slot without that evidence
probes at once: a dead line leaves at most half a fast window later than before; a
failure the evidence hides (an IPv6-only outage, a dead upstream while ISP-local
traffic flows) at most `REST_ROUNDS` intervals later.  The targets get a request a
second instead of five while the line is busy (and, for IPv6, while IPv4 answers).

A target that is one of the router's own addresses (`follow`) is never sent a request
and counts as a failed target: the kernel would answer it whatever the ISP does.  A
round whose other targets cannot make its quorum fails at once.

Verdicts reach `on_round` newest-first-wins: a round judged after a newer one was
delivered is stale and only updates the statistics.  The health state machine lives in
`ecmpd.health`; this module only measures.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Protocol

from .health import Verdict
from .icmpecho import Answer, EchoSocket
from .judge import RoundResult, RttEstimator, TargetSample, Window, judge, ms
from .configmodel import ProbeSettings, majority

log = logging.getLogger(__name__)

MAX_SPACING = 0.02
"""Seconds between a target's echo requests within a round (less for short intervals)."""


class Echo(Protocol):
    """What the prober needs of a socket (`ecmpd.icmpecho.EchoSocket`; tests fake it)."""

    def send(self, address: str) -> int | None: ...

    def close(self) -> None: ...


SocketFactory = Callable[[str, Callable[[Answer], None], str | None], Echo]
"""`factory(source, on_answer, device)`: open a socket; raises OSError when it cannot."""
TrafficFn = Callable[[], "int | None"]
"""The WAN's counter of packets from beyond its gateway now (None: unknown)."""
SentFn = Callable[[], "tuple[float, float] | None"]
"""(when (loop time) it was sent, its RTT) of the other version's newest answered
request (None: none)."""


def _nothing() -> None:
    """No reading: the WAN carries one IP version."""
    return None


def _open_echo(source: str, on_answer: Callable[[Answer], None], device: str | None) -> Echo:
    return EchoSocket(source, on_answer, device=device)


def spacing(settings: ProbeSettings) -> float:
    """Seconds between a target's requests in one round: ~20 ms, less for short intervals."""
    return min(MAX_SPACING, settings.interval / (2 * max(1, settings.count)))


def silence_window(settings: ProbeSettings, busy: bool = False) -> float:
    """How long a round may see no sign of life before it fails: `timeout`, but at least
    1.25 intervals, since a live line whose RTT exceeds the timeout shows life once per
    interval (the late reply of an earlier round).  Half of that on a busy line: one
    that carried `BUSY_PACKETS` or more in the last interval and then nothing at all for
    that long has stopped delivering."""
    window = max(settings.timeout, 1.25 * settings.interval)
    return window / 2 if busy else window


BUSY_PACKETS = 20
"""Packets from beyond the gateway in the interval before a round that make the line
busy: then a silent window is strong evidence on its own (20 packets missing)."""


def fast_window(settings: ProbeSettings) -> float:
    """The wait of a fast follow-up round: a quarter interval (at least 20 ms)."""
    return max(0.02, settings.interval / 4)


LOSS_BURST = 1.0
"""Seconds of the idle version's replies a congested queue may drop outright (a modem's
tail-drop queue holds up to a second or two, and a download's slow start overfills it)
before replies overtaken by the other version's count as lost: measured in the lab (bench
figure 11, IPv4 load ramps), bursts of 0.5-1.5 s took an idle IPv6 down once in 19 ramps
without it."""


REST_ROUNDS = 4
"""Grid rounds in a row an IPv6 prober may rest on its WAN's IPv4 replies (see the
module): its targets get a request every `REST_ROUNDS + 1` intervals (1 s at defaults)."""
IDLE_READ = 1.0
"""Seconds between the counter reads of a prober whose line was idle at the last one:
a line that gets busy lets rounds rest a second later at most."""
RESTED = ("rested: the IPv4 probes of this slot were answered (IPv6 probes every "
          f"{REST_ROUNDS + 1} rounds while they are)")
RESTED_TRAFFIC = ("rested: traffic from beyond the gateway is flowing (probes every "
                  f"{REST_ROUNDS + 1} rounds while it does)")


FOLLOWUP_COPIES = 2
"""Requests per target in a fast follow-up round, sent together.  A lossy line (5 %
each way) loses one request in ten: with one request a failed round plus two failed
follow-ups would take a healthy WAN down every ~20 minutes; with two, a follow-up
fails as rarely as a grid round."""


def _busy(last: tuple[float, int] | None, now: float, value: int | None,
          settings: ProbeSettings) -> tuple[bool, tuple[float, int] | None]:
    """Whether a counter now at `value` moved by `BUSY_PACKETS` or more per interval since
    its `last` (loop time, value) reading, and the reading to keep for the next round."""
    if value is None:
        return False, last
    if last is None or now <= last[0]:
        return False, (now, value)
    per_interval = settings.interval / max(now - last[0], settings.interval)
    return (value - last[1]) * per_interval >= BUSY_PACKETS, (now, value)


def _check(settings: ProbeSettings) -> None:
    if settings.interval <= 0 or settings.timeout <= 0 or settings.count < 1:
        raise ValueError(f"bad probe settings: {settings}")


class _Round:
    """One round in flight."""

    __slots__ = ("index", "start", "targets", "settings", "quorum", "timeout", "sent_by",
                 "deadline", "traffic0", "got", "unresolved", "alive", "timers", "judged",
                 "followups", "busy", "sends_left", "copies", "own", "spared", "line0",
                 "resting")

    def __init__(self, index: int, start: float, targets: tuple[str, ...],
                 settings: ProbeSettings, quorum: int, timeout: float, followups: int = 0,
                 busy: bool = False, copies: int = 1, own: frozenset[str] = frozenset()) -> None:
        self.index = index
        self.start = start
        self.targets = targets
        self.settings = settings
        self.quorum = quorum
        self.timeout = timeout
        self.sent_by = start + (settings.count - 1) * spacing(settings)
        """When the last batch of requests goes out."""
        self.deadline = self.sent_by + timeout
        self.traffic0: int | None = None
        """The traffic counter when the round began to be watched (see `Prober._observe`)."""
        self.got: list[list[float]] = [[] for _ in targets]
        """RTTs of this round's replies that came in time, per target."""
        self.copies = copies
        """Requests per target in each batch (sent together)."""
        self.unresolved = len(targets) * settings.count * copies
        """Requests neither answered nor lost yet."""
        self.alive: set[str] = set()
        """Targets from which any reply (to any request) came during the round."""
        self.timers: list[asyncio.TimerHandle] = []
        self.judged = False
        self.sends_left = settings.count
        """Batches (one request per target) still to send."""
        self.followups = followups
        """Fast rounds that may follow this one if it fails (see `Prober._follow_up`)."""
        self.busy = busy
        """The line carried traffic from beyond its gateway just before the round (of
        either IP version)."""
        self.line0: tuple[float, int] | None = None
        """(loop time, value) of the other version's counter when the round began to be
        watched (None: unknown)."""
        self.own = own
        """Targets that are the router's own addresses: not probed, counted as failed."""
        self.spared = [0] * len(targets)
        """Requests per target not sent: it had answered this round already."""
        self.resting: str | None = None
        """A rested round's evidence ("line": the other version's probes of its slot
        answered; "traffic": the WAN's counter moves from `traffic0`); None: it probes.
        See `Prober._rest_check`."""

    def hopeless(self) -> bool:
        """Too few targets that are not the router's own to make the quorum."""
        return len(self.targets) - len(self.own) < self.quorum

    def lively(self) -> int:
        """How many targets showed life in this round so far."""
        return sum(1 for a, g in zip(self.targets, self.got)
                   if (g or a in self.alive) and a not in self.own)


class Prober:
    """Probes one WAN's targets every `settings.interval` seconds until cancelled."""

    def __init__(
        self,
        name: str,
        targets: Sequence[str],
        settings: ProbeSettings,
        on_round: Callable[[RoundResult], None],
        source: str | None = None,
        device: str | None = None,
        traffic: TrafficFn | None = None,
        quorum: int | None = None,
        sockets: SocketFactory = _open_echo,
        spare: bool = False,
        line_traffic: TrafficFn | None = None,
        line_sent: SentFn | None = None,
        lean: Callable[[], float | None] | None = None,
        rest: bool = True,
    ) -> None:
        _check(settings)
        self.name = name
        self.source: str | None = source
        """The WAN's address; probes are sent from it (None: rounds fail "no address")."""
        self.device = device
        """The WAN's interface; the probe socket is bound to it."""
        self.no_target = "no target to probe"
        """Why there is no target, when there is none (the daemon says what is wrong)."""
        self._targets = tuple(targets)
        self._settings = settings
        self._quorum = quorum if quorum is not None else majority(len(self._targets))
        self._on_round = on_round
        self._traffic = traffic or (lambda: None)
        self._sockets = sockets
        self._sock: Echo | None = None
        self._sock_key: tuple[str, str | None] | None = None
        self._est: dict[str, RttEstimator] = {}
        self._window = Window(settings.window)
        self._last: RoundResult | None = None
        self._open: list[_Round] = []
        self._requests: dict[int, tuple[_Round, int]] = {}
        self._next = 0
        self._delivered = -1
        self._last_traffic: tuple[float, int] | None = None
        """(loop time, value) of the traffic counter's last reading for a grid round."""
        self._last_line: tuple[float, int] | None = None
        """The same for the other version's counter (`line_traffic`)."""
        self._newest_beyond: tuple[float, float] | None = None
        """(when it was sent (loop time), its RTT) of this prober's newest answered
        request to a target beyond the gateway."""
        self._newest_any: tuple[float, float] | None = None
        """The same for any target, the gateway included."""
        self._gateway: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._own: frozenset[str] = frozenset()
        self._spare = spare
        self._line_traffic = line_traffic or _nothing
        self._line_sent = line_sent or (lambda: None)
        self._lean = lean
        """The other IP version's `prompt()`: this prober may rest on its replies (None:
        never rests; the daemon gives it to a dual-stack WAN's IPv6 prober)."""
        self._rest = rest
        """Whether rounds may rest at all (see the module)."""
        self._good_streak = 0
        """Good verdicts of probing (not rested) rounds in a row."""
        self._rested = 0
        """Rested grid rounds since the last probing one."""
        self.rested_total = 0
        """Rounds rested since start (status)."""
        self._line_busy = False
        """The counter's last reading for a rest found the line busy."""
        """A round's later requests go only to the targets that have not answered it yet:
        the verdict is the same (a target answers if any reply comes, and one unanswered
        at the next send gets that request as before); an idle healthy line whose RTT
        is below the spacing costs one request per target per round instead of `count`."""

    # ---- configuration and readings --------------------------------------------------
    @property
    def targets(self) -> tuple[str, ...]:
        """The addresses probed."""
        return self._targets

    def update(self, targets: Sequence[str], settings: ProbeSettings,
               quorum: int | None = None) -> None:
        """Reload targets and settings; they take effect from the next round."""
        _check(settings)
        self._targets = tuple(targets)
        self._settings = settings
        self._quorum = quorum if quorum is not None else majority(len(self._targets))
        if settings.window != self._window.size:
            self._window = self._window.resized(settings.window)

    def follow(self, source: str | None, device: str | None,
               own: Collection[str] = (), no_target: str = "no target to probe",
               gateway: str | None = None) -> None:
        """The WAN as it is now: its address (`source`), its interface (`device`), the
        targets that are the router's own addresses (`own`: from the next round they get
        no request and count as failed targets), why there is no target when there is
        none (`no_target`) and the gateway (`gateway`: its replies may not cross the
        line's queue, so `newest_sent` leaves them out).  The socket follows a new source
        or device at the next round."""
        self.source, self.device = source, device
        self._own = frozenset(own)
        self.no_target = no_target
        self._gateway = gateway

    def reset(self) -> None:
        """Close the socket: the next round opens a new one with a new identifier (after a
        link flap, so no conntrack entry of the old probes is reused)."""
        if self._sock is not None:
            self._sock.close()
        self._sock = self._sock_key = None
        self._requests.clear()

    def last(self) -> RoundResult | None:
        """The latest delivered round's result."""
        return self._last

    def window(self) -> Window:
        """The sliding window of recent rounds."""
        return self._window

    def rtt(self, address: str) -> tuple[float | None, float | None]:
        """(srtt, rttvar) in seconds of `address` (None before its first reply)."""
        est = self._est.get(address)
        return (est.srtt, est.rttvar) if est else (None, None)

    def timeout(self) -> float:
        """The reply timeout the next round will use: its targets' adaptive timeouts."""
        st = self._settings
        return max((self._est[t].timeout(st.timeout, st.max_timeout)
                    for t in self._targets if t in self._est), default=st.timeout)

    def newest(self) -> tuple[float, float] | None:
        """(when (loop time) it was sent, its RTT) of the newest request that got an echo
        reply (None: no reply yet), of the targets beyond the gateway when any answered (a gateway before
        the line's queue answers at once): the other version's prober compares it with
        its own (see the module)."""
        return self._newest_beyond if self._newest_beyond is not None else self._newest_any

    def prompt(self) -> float | None:
        """Seconds within which every target answers when alive (the largest srtt +
        4·rttvar; None: a target has no reply yet)."""
        try:
            return max((self._est[t].timeout(0.0, math.inf) for t in self._targets),
                       default=None)
        except KeyError:
            return None

    # ---- the cadence ------------------------------------------------------------------
    async def run(self) -> None:
        """Start a round every `interval` until cancelled.

        Rounds start on a fixed grid (next = previous slot + interval); the first slot is
        the next multiple of `interval` on the loop's clock, so the probers of all WANs
        wake up together.  After a stall the missed slots are skipped: never more than
        one round per slot.  Rounds run on timer and socket callbacks, not tasks.
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
            for rnd in self._open:
                for t in rnd.timers:
                    t.cancel()
            self._open.clear()
            self.reset()

    def _tick(self, slot: float) -> None:
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

    def _socket(self) -> Echo | None:
        """The socket for the current source and device, (re)opened when they changed."""
        assert self.source is not None
        key = (self.source, self.device)
        if self._sock is not None and self._sock_key == key:
            return self._sock
        self.reset()
        try:
            self._sock = self._sockets(self.source, self._answer, self.device)
        except OSError as e:
            log.debug("%s: cannot open the probe socket on %s: %s", self.name, key, e)
            return None
        self._sock_key = key
        return self._sock

    def _start(self, loop: asyncio.AbstractEventLoop, after: _Round | None = None) -> None:
        """Start a round on the grid, or (`after`) a fast follow-up of a failed round."""
        now = loop.time()
        if after is None:
            st = self._settings
            rnd = _Round(self._next, now, self._targets, st, self._quorum, self.timeout(),
                         st.down - 1, own=self._own.intersection(self._targets))
        else:
            st = replace(after.settings, count=1)
            rnd = _Round(self._next, now, after.targets, st, after.quorum, fast_window(st),
                         after.followups - 1, after.busy, FOLLOWUP_COPIES,
                         self._own.intersection(after.targets))
            # the other version's arrivals since the failed round began: a follow-up's
            # window (a quarter interval) is far shorter than a queue the other version
            # fills, so its silence proves nothing while that version's replies do not
            # overtake this one's (`_line_carries`)
            rnd.line0 = after.line0
        self._next += 1
        if self.source is None or not rnd.targets:
            why = (f"no address on {self.device or self.name}" if self.source is None
                   else self.no_target)
            self._deliver(rnd, RoundResult(Verdict.FAILED, (), why, now, rnd.timeout))
            return
        if rnd.hopeless():          # judged now: nothing it could send would change that
            self._open.append(rnd)
            self._judge(rnd, None)
            return
        if self._socket() is None:
            self._deliver(rnd, RoundResult(Verdict.FAILED, (), "cannot open the probe socket",
                                           now, rnd.timeout))
            return
        rest = self._may_rest(now) if after is None else None
        self._open.append(rnd)
        if rest is not None:
            rnd.resting, rnd.traffic0 = rest
            self._rested += 1
            rnd.timers = [loop.call_at(now + fast_window(st) / 2, self._rest_check, rnd)]
            return
        self._rested = 0
        gap = spacing(st) if after is None else 0.0
        rnd.timers = [loop.call_at(now + i * gap, self._send_all, rnd) for i in range(1, st.count)]
        rnd.timers.append(loop.call_at(rnd.deadline, self._judge, rnd, None))
        if st.count == 1:
            self._observe(rnd, fresh=after is None)
        self._send_all(rnd)

    def _may_rest(self, now: float) -> tuple[str, int | None] | None:
        """The evidence this grid round may rest on (see the module), with the counter's
        value now for "traffic"; None: it probes.  Rest needs the last `up` rounds good,
        none still open (its verdict must not be superseded) and fewer than
        `REST_ROUNDS` rested since one probed."""
        st = self._settings
        if not self._rest or self._rested >= REST_ROUNDS or self._open \
                or self._good_streak < st.up:
            return None
        if self._lean is not None:
            prompt, line = self._lean(), self._line_sent()
            if prompt is not None and prompt <= fast_window(st) / 2 \
                    and line is not None and line[0] >= now - 1.5 * st.interval:
                return ("line", None)
        last = self._last_traffic
        if not self._line_busy and last is not None and now - last[0] < IDLE_READ:
            return None         # an idle line's counter is read once a second, not a round
        value = self._traffic()
        self._line_busy, self._last_traffic = _busy(last, now, value, st)
        return ("traffic", value) if self._line_busy else None

    def _rest_check(self, rnd: _Round) -> None:
        """Half a fast window into a rested round: good if the other version's requests
        of this slot were answered, else this round probes now, as a new round."""
        if rnd.judged:
            return
        rnd.judged = True
        self._open.remove(rnd)
        loop = asyncio.get_running_loop()
        if rnd.resting == "line":
            line = self._line_sent()
            proven = line is not None and line[0] >= rnd.start - rnd.settings.interval / 2
        else:
            proven = self._moved(rnd)
        if proven:
            self.rested_total += 1
            why = RESTED if rnd.resting == "line" else RESTED_TRAFFIC
            self._deliver(rnd, RoundResult(Verdict.GOOD, (), why, loop.time(), rnd.timeout,
                                           traffic=rnd.resting == "traffic"), rested=True)
            return
        self._rested = REST_ROUNDS          # so the round started now probes
        try:
            self._start(loop)
        except Exception:
            log.exception("%s: starting a probe round failed", self.name)

    def _observe(self, rnd: _Round, fresh: bool = True) -> None:
        """Read the traffic counter for `rnd` (its baseline), judge whether the line is
        busy (`fresh`: a grid round) and arm the silence check.

        A grid round with several requests per target does this only when its first
        requests are still unanswered at its second send: a healthy idle line costs no
        counter read at all (one libnftables call each)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        rnd.traffic0 = traffic = self._traffic()
        if fresh:
            busy, self._last_traffic = _busy(self._last_traffic, now, traffic, rnd.settings)
            self._line_busy = busy
            line = self._line_traffic()
            line_busy, self._last_line = _busy(self._last_line, now, line, rnd.settings)
            rnd.busy = busy or line_busy
            rnd.line0 = None if line is None else (now, line)
        quiet = rnd.sent_by + silence_window(rnd.settings, rnd.busy)
        if fresh and rnd.deadline > quiet + 1e-3:
            rnd.timers.append(loop.call_at(max(quiet, now), self._quiet, rnd))

    def _send_all(self, rnd: _Round) -> None:
        """One request to each of the round's targets; a failed send is a lost request."""
        n = len(rnd.targets) * rnd.copies
        unsent = n * rnd.sends_left
        if rnd.traffic0 is None and rnd.sends_left < rnd.settings.count \
                and rnd.unresolved > unsent:  # an earlier request is still unanswered
            self._observe(rnd)
        later = rnd.sends_left < rnd.settings.count
        rnd.sends_left -= 1
        sock = self._sock
        for i, address in enumerate(rnd.targets):
            if later and self._spare and rnd.got[i]:
                rnd.spared[i] += rnd.copies
                rnd.unresolved -= rnd.copies
                continue
            for _ in range(rnd.copies):
                own = address in rnd.own
                seq = sock.send(address) if sock is not None and not own else None
                if seq is None:
                    rnd.unresolved -= 1
                else:
                    self._requests[seq] = (rnd, i)
        self._complete_if_done(rnd)

    # ---- answers and verdicts ---------------------------------------------------------
    def _answer(self, a: Answer) -> None:
        """Every answer of the socket, in time or late (called by the socket)."""
        now = asyncio.get_running_loop().time()
        if a.error is None:
            self._est.setdefault(a.address, RttEstimator()).sample(a.rtt)
            # a late reply proves life in the rounds that started after its request was
            # sent; an older round whose own requests were lost stays unanswered
            sent = now - (a.rtt if a.age is None else a.age)
            got = (sent, a.rtt)
            self._newest_any = got if self._newest_any is None else max(self._newest_any, got)
            if a.address != self._gateway:
                self._newest_beyond = (got if self._newest_beyond is None
                                       else max(self._newest_beyond, got))
            for rnd in self._open:
                if rnd.start > sent:
                    rnd.alive.add(a.address)
        entry = self._requests.pop(a.seq, None)
        if entry is None:
            return
        rnd, i = entry
        if rnd.judged:
            return
        rnd.unresolved -= 1
        if a.error is None:
            rnd.alive.add(a.address)
            if now <= rnd.deadline:
                rnd.got[i].append(a.rtt)
        self._complete_if_done(rnd)

    def _complete_if_done(self, rnd: _Round) -> None:
        # `unresolved` counts requests not sent yet too: 0 means all sent and resolved
        if rnd.judged:
            return
        unsent = len(rnd.targets) * rnd.copies * rnd.sends_left
        if self._spare and unsent and rnd.unresolved == unsent and all(rnd.got):
            # every target answered and no request is out: the rest are spared
            rnd.spared = [n + rnd.copies * rnd.sends_left for n in rnd.spared]
            rnd.unresolved = rnd.sends_left = 0
        if rnd.unresolved <= 0:
            self._judge(rnd, None)

    def _moved(self, rnd: _Round) -> bool:
        now = self._traffic()
        # != rather than >: a rewritten table restarts its counters at 0
        return rnd.traffic0 is not None and now is not None and now != rnd.traffic0

    def _line_carries(self, rnd: _Round) -> bool:
        """The other version's arrivals keep the line busy during the round, and its
        replies have not overtaken this version's (see the module): this version's
        silence is the line's queue, not a loss."""
        return self._line_why_not(rnd) is None

    def _line_why_not(self, rnd: _Round) -> str | None:
        """Why the other version's traffic does not carry `rnd` (None: it does); "" when
        there is no other version to ask."""
        if self._line_traffic is _nothing:
            return ""
        own = self.newest()
        if own is None:
            return "no reply to this IP version yet"
        if rnd.line0 is None:
            return "the other IP version's counter unread when the round began"
        value, line = self._line_traffic(), self._line_sent()
        if value is None:
            return "the other IP version's counter unreadable"
        if line is None:
            return "no reply to the other IP version yet"
        sent, delay = line
        st = rnd.settings
        now = asyncio.get_running_loop().time()
        busy, _ = _busy(rnd.line0, now, value, st)
        if not busy:
            return f"the other IP version's arrivals under {BUSY_PACKETS} an interval"
        # a queue drops a burst only when it is full: no longer than it delays
        ahead = sent - own[0]
        if ahead > st.interval + st.timeout + min(LOSS_BURST, delay):
            return (f"the other IP version's replies overtook this one's by {ms(ahead)} "
                    f"(line delay {ms(delay)})")
        if now - sent > st.max_timeout:
            return f"the other IP version's newest reply is {ms(now - sent)} old"
        return None

    def _quiet(self, rnd: _Round) -> None:
        """The silence check: no sign of life within the silence window fails the round."""
        if rnd.judged or rnd.lively() >= rnd.quorum or self._moved(rnd) \
                or self._line_carries(rnd):
            return
        self._judge(rnd, silence_window(rnd.settings, rnd.busy))

    def _judge(self, rnd: _Round, silent_for: float | None) -> None:
        if rnd.judged:
            return
        rnd.judged = True
        for t in rnd.timers:
            t.cancel()
        self._open.remove(rnd)
        for seq in [s for s, (r, _) in self._requests.items() if r is rnd]:
            del self._requests[seq]
        loop = asyncio.get_running_loop()
        st = rnd.settings
        samples = [TargetSample(a, st.count * rnd.copies, 0, None, False, True) if a in rnd.own
                   else TargetSample(a, st.count * rnd.copies - spared, len(g),
                                     sum(g) / len(g) if g else None, a in rnd.alive)
                   for a, g, spared in zip(rnd.targets, rnd.got, rnd.spared)]
        answered = sum(1 for g in rnd.got if g)
        # the counter is read only when it can change the verdict (one libnftables call)
        moved = answered < rnd.quorum and self._moved(rnd)
        why_not = self._line_why_not(rnd) if answered < rnd.quorum and not moved else ""
        try:
            result = judge(samples, st, self._window, rnd.quorum, moved, line=why_not is None,
                           at=loop.time(), timeout=rnd.timeout, silent_for=silent_for,
                           followup=rnd.copies > 1)
        except Exception:
            log.exception("%s: judging a probe round failed", self.name)
            return
        if why_not and result.verdict is Verdict.FAILED:   # why the line did not save it
            result = replace(result, reason=f"{result.reason}; {why_not}")
        if self._deliver(rnd, result) and result.verdict is Verdict.FAILED \
                and answered < rnd.quorum and self._fast_ok(rnd):
            loop.call_soon(self._follow_up, rnd)

    def _fast_ok(self, rnd: _Round) -> bool:
        """Whether a fast follow-up round can judge this WAN in `fast_window`: the line
        was busy (its silence is evidence by itself), or every target answers well
        within the window (srtt + 4·rttvar) when alive."""
        if rnd.followups <= 0:
            return False
        if rnd.busy or rnd.hopeless():    # a hopeless round costs no packet
            return True
        window = fast_window(rnd.settings)
        return all(t in self._est and self._est[t].timeout(0.0, math.inf) <= window / 2
                   for t in rnd.targets)

    def _follow_up(self, failed: _Round) -> None:
        """A failed round is followed at once by fast rounds (one request per target,
        `fast_window` to answer) until one succeeds or `down` rounds failed in a row:
        a dead line leaves after about `timeout` + (down - 1) fast windows instead of
        (down - 1) whole intervals.  Each is a round like any other; the grid goes on."""
        try:
            self._start(asyncio.get_running_loop(), after=failed)
        except Exception:
            log.exception("%s: starting a follow-up round failed", self.name)

    def _deliver(self, rnd: _Round, result: RoundResult, rested: bool = False) -> bool:
        """Hand `result` on unless a newer round was delivered already; whether it was.
        `last()` stays the newest round that probed."""
        if rnd.index <= self._delivered:
            log.debug("%s: round %d judged after a newer one: %s", self.name, rnd.index,
                      result.reason)
            return False
        self._delivered = rnd.index
        if not rested:
            self._last = result
            self._good_streak = self._good_streak + 1 if result.ok else 0
        try:
            self._on_round(result)
        except Exception:
            log.exception("%s: delivering a probe round failed", self.name)
        return True
