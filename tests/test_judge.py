"""Tests for ecmpd.judge (pure): the RFC 6298 RTT estimator, the sliding Window and the
verdict of one round (GOOD / SLOW / FAILED).

The estimator's expected values are computed by hand from RFC 6298 section 2
(ALPHA = 1/8, BETA = 1/4, K = 4; RTTVAR is updated with the *old* SRTT), not with the
code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ecmpd.health import Verdict
from ecmpd.judge import (
    SLOW_LINE,
    SLOW_REPLIES,
    SLOW_TRAFFIC,
    RoundResult,
    RttEstimator,
    TargetSample,
    Window,
    judge,
    ms,
)
from ecmpd.configmodel import ProbeSettings

GOOD, SLOW, FAILED = Verdict.GOOD, Verdict.SLOW, Verdict.FAILED
GW, BEYOND, THIRD = "10.111.0.1", "192.0.2.10", "198.51.100.53"


def S(addr: str, sent: int, received: int, rtt: float | None = None,
      alive: bool = False) -> TargetSample:
    return TargetSample(addr, sent, received, rtt, alive)


# --- RttEstimator (RFC 6298) ----------------------------------------------------------


def test_estimator_before_any_sample_gives_the_floor() -> None:
    e = RttEstimator()
    assert (e.srtt, e.rttvar) == (None, None)
    assert e.timeout(0.25, 4.0) == 0.25
    assert e.timeout(1.5, 4.0) == 1.5


def test_estimator_first_sample() -> None:
    # RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + K*RTTVAR = 3R
    e = RttEstimator()
    e.sample(0.1)
    assert e.srtt == pytest.approx(0.1) and e.rttvar == pytest.approx(0.05)
    assert e.timeout(0.01, 4.0) == pytest.approx(0.3)


def test_estimator_updates_by_hand() -> None:
    # RFC 6298 2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'| (old SRTT), SRTT <- 7/8 SRTT + 1/8 R'
    e = RttEstimator()
    e.sample(0.1)
    e.sample(0.3)
    # RTTVAR = 0.75*0.05 + 0.25*|0.1-0.3| = 0.0375 + 0.05 = 0.0875
    # SRTT   = 0.875*0.1 + 0.125*0.3     = 0.0875 + 0.0375 = 0.125
    assert e.rttvar == pytest.approx(0.0875)
    assert e.srtt == pytest.approx(0.125)
    assert e.timeout(0.01, 4.0) == pytest.approx(0.125 + 4 * 0.0875)  # 0.475
    e.sample(0.1)
    # RTTVAR = 0.75*0.0875 + 0.25*|0.125-0.1| = 0.065625 + 0.00625 = 0.071875
    # SRTT   = 0.875*0.125 + 0.125*0.1      = 0.109375 + 0.0125  = 0.121875
    assert e.rttvar == pytest.approx(0.071875)
    assert e.srtt == pytest.approx(0.121875)
    assert e.timeout(0.01, 4.0) == pytest.approx(0.121875 + 4 * 0.071875)  # 0.409375


def test_estimator_saturating_queue_by_hand() -> None:
    # a queue filling up: 0.5 s, then 1.0 s, then 2.0 s
    e = RttEstimator()
    e.sample(0.5)   # srtt 0.5, rttvar 0.25, rto 1.5
    assert e.timeout(0.25, 4.0) == pytest.approx(1.5)
    e.sample(1.0)   # rttvar 0.1875 + 0.125 = 0.3125; srtt 0.4375 + 0.125 = 0.5625
    assert (e.srtt, e.rttvar) == (pytest.approx(0.5625), pytest.approx(0.3125))
    assert e.timeout(0.25, 4.0) == pytest.approx(1.8125)
    e.sample(2.0)   # rttvar 0.234375 + 0.359375 = 0.59375; srtt 0.4921875 + 0.25 = 0.7421875
    assert (e.srtt, e.rttvar) == (pytest.approx(0.7421875), pytest.approx(0.59375))
    assert e.timeout(0.25, 4.0) == pytest.approx(0.7421875 + 2.375)  # 3.1171875
    assert e.timeout(0.25, 3.0) == 3.0  # clamped to the ceiling


def test_estimator_clamps_to_floor_and_ceiling() -> None:
    small = RttEstimator()
    small.sample(0.001)  # 3 ms raw
    assert small.timeout(0.25, 4.0) == 0.25
    big = RttEstimator()
    big.sample(2.0)  # 6 s raw
    assert big.timeout(0.25, 4.0) == 4.0
    zero = RttEstimator()
    zero.sample(0.0)
    assert (zero.srtt, zero.rttvar, zero.timeout(0.25, 4.0)) == (0.0, 0.0, 0.25)


def test_estimator_converges_on_a_steady_rtt() -> None:
    e = RttEstimator()
    for _ in range(200):
        e.sample(1.8)
    assert e.srtt == pytest.approx(1.8)
    assert e.rttvar == pytest.approx(0.0, abs=1e-9)
    assert e.timeout(0.25, 4.0) == pytest.approx(1.8)  # the queue's delay, not 3x it


def test_estimator_reference_over_a_long_series() -> None:
    """A straight transcription of RFC 6298 2.2/2.3 against the estimator."""
    rtts = [0.005, 0.006, 0.2, 0.9, 1.7, 1.8, 1.75, 1.9, 0.004, 0.003, 2.5, 0.0]
    e = RttEstimator()
    srtt = rttvar = None
    for r in rtts:
        e.sample(r)
        if srtt is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        assert (e.srtt, e.rttvar) == (pytest.approx(srtt), pytest.approx(rttvar))
        assert e.timeout(0.25, 4.0) == pytest.approx(min(4.0, max(0.25, srtt + 4 * rttvar)))


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


@dataclass
class Case:
    samples: list[TargetSample]
    quorum: int
    verdict: Verdict
    reason: str
    settings: dict[str, Any] | None = None
    traffic: bool = False
    silent_for: float | None = None
    line: bool = False
    history: tuple[list[TargetSample], ...] = ()


BOTH = [S(GW, 2, 2, 0.01, True), S(BEYOND, 2, 1, 0.02, True)]
GW_ONLY = [S(GW, 2, 2, 0.001, True), S(BEYOND, 2, 0)]
NOTHING = [S(GW, 2, 0), S(BEYOND, 2, 0)]
LATE_BOTH = [S(GW, 2, 0, None, True), S(BEYOND, 2, 0, None, True)]
LATE_ONE = [S(GW, 2, 0, None, True), S(BEYOND, 2, 0)]

CASES = {
    # GOOD: quorum answered in time
    "all answered": Case(BOTH, 2, GOOD, "2/2 targets answered"),
    "one silent, quorum 1": Case(GW_ONLY, 1, GOOD, f"1/2 targets answered (silent: {BEYOND})"),
    "one dark target of three, quorum 2": Case(
        [S(GW, 2, 2, 0.001, True), S(BEYOND, 2, 0), S(THIRD, 2, 1, 0.03, True)], 2, GOOD,
        f"2/3 targets answered (silent: {BEYOND})"),
    "good even with traffic": Case(BOTH, 2, GOOD, "2/2 targets answered", traffic=True),
    # SLOW: probes late but the line is alive
    "late, traffic flowing": Case(NOTHING, 2, SLOW, SLOW_TRAFFIC, traffic=True),
    "late, one in time, traffic flowing": Case(GW_ONLY, 2, SLOW, SLOW_TRAFFIC, traffic=True),
    "late replies from every target": Case(LATE_BOTH, 2, SLOW, SLOW_REPLIES),
    "late replies from the quorum": Case(
        [S(GW, 2, 0, None, True), S(BEYOND, 2, 0), S(THIRD, 2, 0, None, True)], 2, SLOW,
        SLOW_REPLIES),
    "one in time and one late reach the quorum": Case(
        [S(GW, 2, 1, 0.01, True), S(BEYOND, 2, 0, None, True)], 2, SLOW, SLOW_REPLIES),
    "traffic wins the reason over late replies": Case(LATE_BOTH, 2, SLOW, SLOW_TRAFFIC,
                                                       traffic=True),
    "late, the other version busy on the line": Case(NOTHING, 2, SLOW, SLOW_LINE, line=True),
    "late replies win the reason over the line": Case(LATE_BOTH, 2, SLOW, SLOW_REPLIES,
                                                       line=True),
    "own traffic wins the reason over the line": Case(NOTHING, 2, SLOW, SLOW_TRAFFIC,
                                                       traffic=True, line=True),
    # FAILED: nothing proves the line alive
    "all silent": Case(NOTHING, 1, FAILED, f"0/2 targets answered (silent: {GW}, {BEYOND})"),
    "dead upstream behind a live gateway": Case(
        GW_ONLY, 2, FAILED, f"1/2 targets answered (silent: {BEYOND})"),
    "late replies from fewer than the quorum": Case(
        LATE_ONE, 2, FAILED, f"0/2 targets answered (silent: {BEYOND})"),
    "one answered of three, quorum 2": Case(
        [S(GW, 2, 2, 0.001, True), S(BEYOND, 2, 0), S(THIRD, 2, 0)], 2, FAILED,
        f"1/3 targets answered (silent: {BEYOND}, {THIRD})"),
    "no targets": Case([], 1, FAILED, "0/0 targets answered"),
    "silence check": Case(
        NOTHING, 2, FAILED,
        f"0/2 targets answered within 250ms, no traffic (silent: {GW}, {BEYOND})",
        silent_for=0.25),
    "silence check, gateway alive": Case(
        GW_ONLY, 2, FAILED, f"1/2 targets answered within 250ms, no traffic (silent: {BEYOND})",
        silent_for=0.25),
    "silence check, short": Case(
        [S(GW, 1, 0)], 1, FAILED, f"0/1 targets answered within 2.5ms, no traffic (silent: {GW})",
        silent_for=0.0025),
    # max_loss / max_rtt still apply once the quorum answered
    "quorum beats loss": Case(
        NOTHING, 1, FAILED, f"0/2 targets answered (silent: {GW}, {BEYOND})",
        settings={"max_loss": 1.0, "max_rtt": 0.001}),
    "slow beats loss": Case(
        NOTHING, 1, SLOW, SLOW_TRAFFIC, settings={"max_loss": 1.0, "max_rtt": 0.001},
        traffic=True),
    "loss over window": Case(
        [S("a", 1, 1, 0.01)], 1, FAILED, "loss 30% > 20% over 10 rounds",
        settings={"max_loss": 20.0},
        history=tuple([[S("a", 1, 0)]] * 3 + [[S("a", 1, 1, 0.01)]] * 6)),
    "loss at the limit passes": Case(
        [S("a", 1, 1, 0.01)], 1, GOOD, "1/1 targets answered", settings={"max_loss": 30.0},
        history=tuple([[S("a", 1, 0)]] * 3 + [[S("a", 1, 1, 0.01)]] * 6)),
    "loss fraction": Case(
        [S("a", 3, 2, 0.01)], 1, FAILED, "loss 33.3% > 20% over 1 round",
        settings={"max_loss": 20.0}),
    "old loss slid out": Case(
        [S("a", 1, 1, 0.01)], 1, GOOD, "1/1 targets answered",
        settings={"max_loss": 20.0, "window": 3},
        history=([S("a", 1, 0)], [S("a", 1, 1, 0.01)], [S("a", 1, 1, 0.01)])),
    "rtt over window": Case(
        [S("a", 1, 1, 0.700)], 1, FAILED, "rtt 612ms > 500ms", settings={"max_rtt": 0.5},
        history=([S("a", 1, 1, 0.524)],)),
    "rtt under the limit": Case(
        [S("a", 1, 1, 0.400)], 1, GOOD, "1/1 targets answered", settings={"max_rtt": 0.5},
        history=([S("a", 1, 1, 0.590)],)),
    "small rtt formatting": Case(
        [S("a", 1, 1, 0.0045)], 1, FAILED, "rtt 4.5ms > 2ms", settings={"max_rtt": 0.002}),
    "loss beats rtt": Case(
        [S("a", 2, 1, 0.9)], 1, FAILED, "loss 50% > 10% over 1 round",
        settings={"max_loss": 10.0, "max_rtt": 0.5}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_judge(name: str) -> None:
    c = CASES[name]
    settings = ProbeSettings(**(c.settings or {}))
    w = Window(settings.window)
    for past in c.history:
        w.add(past)
    r = judge(c.samples, settings, w, c.quorum, traffic=c.traffic, at=7.5, timeout=1.25,
              silent_for=c.silent_for, line=c.line)
    assert (r.verdict, r.reason) == (c.verdict, c.reason)
    assert r.ok is (c.verdict is GOOD)
    assert (r.samples, r.at, r.timeout, r.traffic) == (tuple(c.samples), 7.5, 1.25, c.traffic)
    assert len(w) == min(len(c.history) + 1, settings.window)  # the round went in


def test_judge_defaults_and_result_fields() -> None:
    w = Window(10)
    r = judge(iter(BOTH), ProbeSettings(), w, 2)  # any iterable of samples
    assert r == RoundResult(GOOD, tuple(BOTH), "2/2 targets answered", 0.0, 0.0, False)
    assert TargetSample("a", 1, 0, None).alive is False


def test_slow_rounds_count_as_loss_in_the_window() -> None:
    """A late probe is a request without a reply in time: it shows in the window's loss."""
    w = Window(10)
    judge(NOTHING, ProbeSettings(), w, 2, traffic=True)
    judge(LATE_BOTH, ProbeSettings(), w, 2)
    assert w.loss_pct() == 100.0 and w.mean_rtt() is None


@pytest.mark.parametrize("n,answering,verdict", [
    (1, 1, GOOD), (1, 0, FAILED),
    (2, 2, GOOD), (2, 1, FAILED),
    (3, 2, GOOD), (3, 1, FAILED),
    (4, 3, GOOD), (4, 2, FAILED),
    (5, 3, GOOD), (5, 2, FAILED),
])
def test_majority_quorum(n: int, answering: int, verdict: Verdict) -> None:
    samples = [S(f"t{i}", 2, 2 if i < answering else 0, 0.01 if i < answering else None)
               for i in range(n)]
    r = judge(samples, ProbeSettings(), Window(10), n // 2 + 1)
    assert r.verdict is verdict


def test_ms_formatting() -> None:
    assert [ms(x) for x in (0.25, 0.0025, 0.0105, 1.5, 0.00999)] == [
        "250ms", "2.5ms", "10ms", "1500ms", "10ms"]
