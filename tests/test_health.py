"""Tests for ecmpd.health: exhaustive checks against independent references.

Rounds have three verdicts: GOOD, SLOW (probes late, but the line is alive) and FAILED.
Every history of up to MAX_LEN rounds over the three verdicts is checked against two
references written independently of `step()`: a transition table (`table`) and a model
working on runs of rounds (`by_runs`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ecmpd.health import (
    Health,
    Phase,
    Verdict,
    carrier_back,
    carrier_lost,
    describe,
    step,
    takes_new_flows,
    transitioned,
)

I, R, U, F, D = Phase.INIT, Phase.RISING, Phase.UP, Phase.FALLING, Phase.DOWN
G, S, X = Verdict.GOOD, Verdict.SLOW, Verdict.FAILED
VERDICTS = (G, S, X)
PARAMS = [(d, u) for d in range(1, 5) for u in range(1, 5)]
MAX_LEN = 8
REASON = {G: "good", S: "slow", X: "bad"}


def reachable(down: int, up: int) -> list[tuple[Phase, int]]:
    """Every (state, count) the machine can be in for these parameters."""
    return (
        [(I, c) for c in range(down)]
        + [(U, 0), (D, 0)]
        + [(F, c) for c in range(1, down)]
        + [(R, c) for c in range(up)]  # RISING 0 only via carrier_back
    )


def table(state: Phase, count: int, v: Verdict, down: int, up: int) -> tuple[Phase, int]:
    """The transition table of the design, written out case by case."""
    if (state, v) in ((I, G), (I, S)):
        return (U, 0)
    if (state, v) == (I, X):
        return (D, 0) if count + 1 == down else (I, count + 1)
    if (state, v) in ((U, G), (U, S)):
        return (U, 0)
    if (state, v) == (U, X):
        return (D, 0) if down == 1 else (F, 1)
    if (state, v) in ((F, G), (F, S)):
        return (U, 0)
    if (state, v) == (F, X):
        return (D, 0) if count + 1 == down else (F, count + 1)
    if (state, v) == (D, G):
        return (U, 0) if up == 1 else (R, 1)
    if (state, v) in ((D, X), (D, S)):
        return (D, 0)
    if (state, v) == (R, G):
        return (U, 0) if count + 1 == up else (R, count + 1)
    if (state, v) == (R, S):
        return (R, count)
    assert (state, v) == (R, X)
    return (D, 0)


def by_runs(history: tuple[Verdict, ...], down: int, up: int) -> tuple[Phase, int]:
    """A second reference, from runs of rounds instead of counters.

    While 'unknown' or 'up', a SLOW round is as good as a GOOD one (the line is alive):
    a run of live rounds makes the WAN 'up'; a run of failed rounds of length >= down
    makes it 'down' (after exactly `down` of them).  While 'down', SLOW rounds do not
    exist (they neither help nor hurt): a run of `up` GOOD rounds, SLOW ones between them
    ignored, makes it 'up'; a FAILED round restarts the count.  An incomplete last run
    gives the count.
    """
    mode, rest = "unknown", list(history)
    while rest:
        if mode in ("unknown", "up"):
            live = rest[0] is not X
            n = len(list(itertools.takewhile(lambda v: (v is not X) == live, rest)))
            if live:
                mode, rest = "up", rest[n:]
            elif n >= down:
                mode, rest = "down", rest[down:]
            elif n == len(rest):
                return (I if mode == "unknown" else F, n)
            else:
                rest = rest[n:]  # a live run follows
        else:
            goods = 0
            for i, v in enumerate(rest):
                if v is X:
                    goods = 0
                elif v is G:
                    goods += 1
                    if goods == up:
                        mode, rest = "up", rest[i + 1:]
                        break
            else:
                return (R, goods) if goods else (D, 0)
    return {"unknown": (I, 0), "up": (U, 0), "down": (D, 0)}[mode]


def run(history: tuple[Verdict, ...], down: int, up: int,
        start: Health | None = None) -> list[Health]:
    hs = [start or Health()]
    for v in history:
        hs.append(step(hs[-1], v, down, up, reason=REASON[v]))
    return hs


def walks(down: int, up: int, start: Health | None = None, max_len: int = MAX_LEN,
          verdicts: tuple[Verdict, ...] = VERDICTS,
          ) -> Iterator[tuple[tuple[Verdict, ...], list[Health]]]:
    """Every history of up to `max_len` rounds with its Health after each round
    (depth-first: one step() per history, sharing prefixes)."""
    stack: list[tuple[tuple[Verdict, ...], list[Health]]] = [((), [start or Health()])]
    while stack:
        hist, hs = stack.pop()
        yield hist, hs
        if len(hist) < max_len:
            for v in verdicts:
                stack.append((hist + (v,), hs + [step(hs[-1], v, down, up, REASON[v])]))


def test_walks_enumerate_every_history() -> None:
    got = sorted(h for h, _ in walks(2, 2, max_len=4))
    want = sorted(h for n in range(5) for h in itertools.product(VERDICTS, repeat=n))
    assert got == want and len(got) == (3 ** 5 - 1) // 2


@pytest.mark.parametrize("down,up", PARAMS)
def test_every_state_and_round_matches_the_table(down: int, up: int) -> None:
    for (state, count), v in itertools.product(reachable(down, up), VERDICTS):
        h = step(Health(state, count, "old"), v, down, up, "why")
        assert (h.state, h.count) == table(state, count, v, down, up), (state, count, v)


@pytest.mark.parametrize("down,up", PARAMS)
def test_all_histories_match_the_references(down: int, up: int) -> None:
    for hist, hs in walks(down, up):
        got = (hs[-1].state, hs[-1].count)
        assert got == by_runs(hist, down, up), hist
        prev = hs[-2] if len(hs) > 1 else None
        if prev is not None:
            assert got == table(prev.state, prev.count, hist[-1], down, up), hist


@pytest.mark.parametrize("down,up", PARAMS)
def test_two_valued_histories_keep_the_old_behaviour(down: int, up: int) -> None:
    """Without SLOW rounds the machine is the bool machine it was before SLOW existed."""
    for hist, hs in walks(down, up, verdicts=(G, X)):
        assert (hs[-1].state, hs[-1].count) == by_runs(hist, down, up)


@pytest.mark.parametrize("down,up", PARAMS)
def test_every_reachable_state_is_reached(down: int, up: int) -> None:
    seen = {(h.state, h.count) for _, hs in walks(down, up) for h in hs}
    seen.add((R, 0))  # only carrier_back reaches RISING with count 0
    assert seen == set(reachable(down, up))


def _first_state_index(hs: list[Health], state: Phase, start: int) -> int | None:
    for i in range(start, len(hs)):
        if hs[i].state is state:
            return i
    return None


def _not_slow_before(hist: tuple[Verdict, ...], i: int, n: int) -> list[Verdict]:
    """The last `n` non-SLOW verdicts of hist[:i] (fewer when there are not that many)."""
    return [v for v in hist[:i] if v is not S][-n:]


@pytest.mark.parametrize("down,up", PARAMS)
def test_hysteresis(down: int, up: int) -> None:
    for hist, hs in walks(down, up):
        for i in range(1, len(hs)):
            old, new, v = hs[i - 1], hs[i], hist[i - 1]
            if new.state is D and old.state is not D:
                # the last `down` rounds all failed (or one failed round from RISING)
                need = 1 if old.state is R else down
                assert i >= need and all(x is X for x in hist[i - need: i]), hist
            if new.state is U and old.state in (R, D):
                # a GOOD round did it, after `up` GOOD rounds (SLOW ones do not count)
                assert v is G, hist
                assert _not_slow_before(hist, i, up) == [G] * up, hist
            if old.state is F and v is not X:
                assert new.state is U
            if old.state is R and v is X:
                assert new.state is D
            if v is S:
                # SLOW is life, not health: never down, never up from DOWN/RISING
                assert new.state is not D or old.state is D
                assert new.state is (U if old.state in (I, U, F) else old.state)
                if old.state is R:
                    assert new.count == old.count
            if old.state in (U, D) and new.state is old.state:
                assert new.count == 0


@pytest.mark.parametrize("down,up", PARAMS)
def test_up_never_reaches_down_in_fewer_than_down_rounds(down: int, up: int) -> None:
    for hist, hs in walks(down, up, start=Health(U)):
        i = _first_state_index(hs, D, 0)
        if i is not None:
            assert i >= down
            assert all(v is X for v in hist[i - down: i])


@pytest.mark.parametrize("down,up", PARAMS)
def test_down_never_reaches_up_in_fewer_than_up_rounds(down: int, up: int) -> None:
    for hist, hs in walks(down, up, start=Health(D)):
        i = _first_state_index(hs, U, 0)
        if i is not None:
            assert i >= up
            assert _not_slow_before(hist, i, up) == [G] * up and hist[i - 1] is G


@pytest.mark.parametrize("down,up", PARAMS)
def test_a_busy_wan_is_never_taken_out(down: int, up: int) -> None:
    """Without FAILED rounds a WAN in the route stays in it; with SLOW ones only, a DOWN
    WAN stays out (SLOW is no proof of health)."""
    for start in (Health(), Health(U), Health(F, down - 1 if down > 1 else 0)):
        if start.state is F and down == 1:
            continue
        for _, hs in walks(down, up, start=start, verdicts=(G, S)):
            assert all(takes_new_flows(h.state) for h in hs)
            assert all(h.state is U for h in hs[1:])
    for _, hs in walks(down, up, start=Health(D), verdicts=(S, X)):
        assert all(h.state is D for h in hs)


def test_step_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        step(Health(), G, 0, 1)
    with pytest.raises(ValueError):
        step(Health(), G, 1, 0)


@pytest.mark.parametrize("bad", [True, False, None, "good", 1])
def test_step_rejects_anything_but_a_verdict(bad: object) -> None:
    with pytest.raises(TypeError):
        step(Health(), bad, 3, 5)  # type: ignore[arg-type]


def test_verdict_values() -> None:
    assert [v.value for v in Verdict] == ["good", "slow", "failed"]
    assert Verdict("slow") is S


def test_reason_only_changes_on_transitions() -> None:
    h = Health(U, 0, "after 1 good round: ok")
    h1 = step(h, X, 3, 2, "0/2 targets answered")
    assert (h1.state, h1.count) == (F, 1)
    assert h1.reason == "after 1 failed round: 0/2 targets answered"
    h2 = step(h1, X, 3, 2, "loss 50% > 20% over 2 rounds")
    assert (h2.state, h2.count, h2.reason) == (F, 2, h1.reason)
    h3 = step(h2, X, 3, 2, "0/2 targets answered (silent: a, b)")
    assert h3 == Health(D, 0, "after 3 failed rounds: 0/2 targets answered (silent: a, b)")
    assert step(h3, X, 3, 2, "other").reason == h3.reason
    assert step(h3, S, 3, 2, "probes late, traffic flowing") == h3
    h4 = step(h3, G, 3, 2, "2/2 targets answered")
    assert h4 == Health(R, 1, "after 1 good round: 2/2 targets answered")
    assert step(h4, S, 3, 2, "probes late, replies late") == h4
    h5 = step(h4, G, 3, 2, "2/2 targets answered")
    assert h5 == Health(U, 0, "after 2 good rounds: 2/2 targets answered")
    assert step(Health(), G, 3, 2).reason == "after 1 good round"


def test_slow_reasons() -> None:
    f = Health(F, 2, "after 2 failed rounds: 0/2 targets answered")
    u = step(f, S, 3, 5, "probes late, traffic flowing")
    assert u == Health(U, 0, "after 1 slow round: probes late, traffic flowing")
    assert describe(f, u) == "FALLING -> UP after 1 slow round: probes late, traffic flowing"
    assert step(u, S, 3, 5, "probes late, replies late") == u  # UP stays, reason kept
    assert step(Health(), S, 3, 5) == Health(U, 0, "after 1 slow round")
    assert step(Health(I, 2, "x"), S, 3, 5, "r") == Health(U, 0, "after 1 slow round: r")


def test_describe_and_transitioned() -> None:
    f2 = Health(F, 2, "after 1 failed round: x")
    d = step(f2, X, 3, 5, "0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)")
    assert transitioned(f2, d)
    assert describe(f2, d) == (
        "FALLING -> DOWN after 3 failed rounds: 0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)"
    )
    u = Health(U)
    d1 = step(u, X, 1, 1, "2/2 targets silent")
    assert describe(u, d1) == "UP -> DOWN after 1 failed round: 2/2 targets silent"
    f1 = step(u, X, 2, 1, "r")
    assert not transitioned(f1, step(f1, X, 3, 1, "r"))
    assert describe(f1, step(f1, X, 3, 1, "r")) == "FALLING (2)"
    assert describe(u, step(u, G, 3, 1)) == "UP"
    assert describe(u, step(u, S, 3, 1, "slow")) == "UP"
    r2 = Health(R, 2, "after 1 good round: ok")
    assert describe(r2, step(r2, S, 3, 5)) == "RISING (2)"
    lost = carrier_lost(u, "carrier lost on eth1")
    assert describe(u, lost) == "UP -> DOWN: carrier lost on eth1"
    assert describe(Health(D), Health(R, 0, "")) == "DOWN -> RISING"


@pytest.mark.parametrize("state", list(Phase))
def test_carrier_lost_goes_down_at_once(state: Phase) -> None:
    for count in range(4):
        h = Health(state, count, "before")
        lost = carrier_lost(h, "carrier lost")
        assert lost.state is D and lost.count == 0
        if state is D:
            assert lost.reason == "before" and not transitioned(h, lost)
        else:
            assert lost.reason == "carrier lost"
            assert transitioned(h, lost)


@pytest.mark.parametrize("state", list(Phase))
def test_carrier_back_only_acts_on_down(state: Phase) -> None:
    h = Health(state, 1 if state in (F, R, I) else 0, "before")
    back = carrier_back(h)
    if state is D:
        assert back == Health(R, 0, "carrier up")
    else:
        assert back == h


@pytest.mark.parametrize("down,up", PARAMS)
def test_carrier_back_then_needs_up_good_rounds(down: int, up: int) -> None:
    h = carrier_back(carrier_lost(Health(U), "lost"), "back")
    assert takes_new_flows(h.state) is False
    h = step(h, S, down, up, "slow")  # a busy line after carrier back is not yet healthy
    assert (h.state, h.count) == (R, 0)
    for i in range(1, up):
        h = step(h, G, down, up, "ok")
        assert (h.state, h.count) == (R, i)
        h = step(h, S, down, up, "slow")
        assert (h.state, h.count) == (R, i)
    h = step(h, G, down, up, "ok")
    assert h.state is U
    # and a failed round while RISING after carrier back goes DOWN again
    h = step(carrier_back(Health(D)), X, down, up, "bad")
    assert h.state is D


def test_takes_new_flows() -> None:
    assert {s for s in Phase if takes_new_flows(s)} == {I, U, F}


def test_state_values_are_strings() -> None:
    assert [s.value for s in Phase] == ["init", "rising", "up", "falling", "down"]
    assert Phase("down") is D and D == "down"
