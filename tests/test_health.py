"""Tests for ecmpd.health: exhaustive checks against independent references."""

from __future__ import annotations

import itertools

import pytest

from ecmpd.health import (
    Health,
    State,
    carrier_back,
    carrier_lost,
    describe,
    step,
    takes_new_flows,
    transitioned,
)

I, R, U, F, D = State.INIT, State.RISING, State.UP, State.FALLING, State.DOWN
PARAMS = [(d, u) for d in range(1, 5) for u in range(1, 5)]
MAX_LEN = 8


def reachable(down: int, up: int) -> list[tuple[State, int]]:
    """Every (state, count) the machine can be in for these parameters."""
    return (
        [(I, c) for c in range(down)]
        + [(U, 0), (D, 0)]
        + [(F, c) for c in range(1, down)]
        + [(R, c) for c in range(up)]  # RISING 0 only via carrier_back
    )


def table(state: State, count: int, ok: bool, down: int, up: int) -> tuple[State, int]:
    """The transition table of the brief, written out case by case."""
    if (state, ok) == (I, True):
        return (U, 0)
    if (state, ok) == (I, False):
        return (D, 0) if count + 1 == down else (I, count + 1)
    if (state, ok) == (U, True):
        return (U, 0)
    if (state, ok) == (U, False):
        return (D, 0) if down == 1 else (F, 1)
    if (state, ok) == (F, True):
        return (U, 0)
    if (state, ok) == (F, False):
        return (D, 0) if count + 1 == down else (F, count + 1)
    if (state, ok) == (D, True):
        return (U, 0) if up == 1 else (R, 1)
    if (state, ok) == (D, False):
        return (D, 0)
    if (state, ok) == (R, True):
        return (U, 0) if count + 1 == up else (R, count + 1)
    assert (state, ok) == (R, False)
    return (D, 0)


def by_runs(history: tuple[bool, ...], down: int, up: int) -> tuple[State, int]:
    """A second reference, from runs of equal rounds instead of counters.

    Split the history into maximal runs.  Starting 'unknown', a good run makes the WAN
    'up'; a failed run of length >= down makes it 'down'; while 'down', a good run of
    length >= up makes it 'up'.  The last, possibly incomplete, run gives the count.
    """
    runs = [(k, len(list(g))) for k, g in itertools.groupby(history)]
    mode = "unknown"
    for i, (good, n) in enumerate(runs):
        last = i == len(runs) - 1
        if mode in ("unknown", "up") and not good:
            if n >= down:
                mode = "down"
            elif last:
                return (I if mode == "unknown" else F, n)
        elif mode in ("unknown", "up") and good:
            mode = "up"
        elif mode == "down" and good:
            if n >= up:
                mode = "up"
            elif last:
                return (R, n)
    return {"unknown": (I, 0), "up": (U, 0), "down": (D, 0)}[mode]


def run(history: tuple[bool, ...], down: int, up: int, start: Health | None = None) -> list[Health]:
    hs = [start or Health()]
    for ok in history:
        hs.append(step(hs[-1], ok, down, up, reason="good" if ok else "bad"))
    return hs


def histories(max_len: int = MAX_LEN):
    for n in range(max_len + 1):
        yield from itertools.product((True, False), repeat=n)


@pytest.mark.parametrize("down,up", PARAMS)
def test_every_state_and_round_matches_the_table(down: int, up: int) -> None:
    for (state, count), ok in itertools.product(reachable(down, up), (True, False)):
        h = step(Health(state, count, "old"), ok, down, up, "why")
        assert (h.state, h.count) == table(state, count, ok, down, up), (state, count, ok)


@pytest.mark.parametrize("down,up", PARAMS)
def test_all_histories_match_the_run_reference(down: int, up: int) -> None:
    for hist in histories():
        assert (run(hist, down, up)[-1].state, run(hist, down, up)[-1].count) == by_runs(
            hist, down, up
        ), hist


@pytest.mark.parametrize("down,up", PARAMS)
def test_every_reachable_state_is_reached(down: int, up: int) -> None:
    seen = {(h.state, h.count) for hist in histories() for h in run(hist, down, up)}
    seen.add((R, 0))  # only carrier_back reaches RISING with count 0
    assert seen == set(reachable(down, up))


def _first_state_index(hs: list[Health], state: State, start: int) -> int | None:
    for i in range(start, len(hs)):
        if hs[i].state is state:
            return i
    return None


@pytest.mark.parametrize("down,up", PARAMS)
def test_hysteresis(down: int, up: int) -> None:
    for hist in histories():
        hs = run(hist, down, up)
        for i in range(1, len(hs)):
            old, new = hs[i - 1], hs[i]
            if new.state is D and old.state is not D:
                # the last `down` rounds all failed (or one failed round from RISING)
                need = 1 if old.state is R else down
                assert i >= need and not any(hist[i - need : i]), hist
            if new.state is U and old.state in (R, D):
                assert i >= up and all(hist[i - up : i]), hist
            if old.state is F and hist[i - 1]:
                assert new.state is U
            if old.state is R and not hist[i - 1]:
                assert new.state is D
            if old.state in (U, D) and new.state is old.state:
                assert new.count == 0


@pytest.mark.parametrize("down,up", PARAMS)
def test_up_never_reaches_down_in_fewer_than_down_rounds(down: int, up: int) -> None:
    for hist in histories():
        hs = run(hist, down, up, start=Health(U))
        i = _first_state_index(hs, D, 0)
        if i is not None:
            assert i >= down
            assert not any(hist[i - down : i])


@pytest.mark.parametrize("down,up", PARAMS)
def test_down_never_reaches_up_in_fewer_than_up_rounds(down: int, up: int) -> None:
    for hist in histories():
        hs = run(hist, down, up, start=Health(D))
        i = _first_state_index(hs, U, 0)
        if i is not None:
            assert i >= up
            assert all(hist[i - up : i])


def test_step_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        step(Health(), True, 0, 1)
    with pytest.raises(ValueError):
        step(Health(), True, 1, 0)


def test_reason_only_changes_on_transitions() -> None:
    h = Health(U, 0, "after 1 good round: ok")
    h1 = step(h, False, 3, 2, "0/2 targets answered")
    assert (h1.state, h1.count) == (F, 1)
    assert h1.reason == "after 1 failed round: 0/2 targets answered"
    h2 = step(h1, False, 3, 2, "loss 50% > 20% over 2 rounds")
    assert (h2.state, h2.count, h2.reason) == (F, 2, h1.reason)
    h3 = step(h2, False, 3, 2, "0/2 targets answered (silent: a, b)")
    assert h3 == Health(D, 0, "after 3 failed rounds: 0/2 targets answered (silent: a, b)")
    assert step(h3, False, 3, 2, "other").reason == h3.reason
    h4 = step(h3, True, 3, 2, "2/2 targets answered")
    assert h4 == Health(R, 1, "after 1 good round: 2/2 targets answered")
    h5 = step(h4, True, 3, 2, "2/2 targets answered")
    assert h5 == Health(U, 0, "after 2 good rounds: 2/2 targets answered")
    assert step(Health(), True, 3, 2).reason == "after 1 good round"


def test_describe_and_transitioned() -> None:
    f2 = Health(F, 2, "after 1 failed round: x")
    d = step(f2, False, 3, 5, "0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)")
    assert transitioned(f2, d)
    assert describe(f2, d) == (
        "FALLING -> DOWN after 3 failed rounds: 0/2 targets answered (silent: 10.0.0.1, 203.0.113.10)"
    )
    u = Health(U)
    d1 = step(u, False, 1, 1, "2/2 targets silent")
    assert describe(u, d1) == "UP -> DOWN after 1 failed round: 2/2 targets silent"
    f1 = step(u, False, 2, 1, "r")
    assert not transitioned(f1, step(f1, False, 3, 1, "r"))
    assert describe(f1, step(f1, False, 3, 1, "r")) == "FALLING (2)"
    assert describe(u, step(u, True, 3, 1)) == "UP"
    lost = carrier_lost(u, "carrier lost on eth1")
    assert describe(u, lost) == "UP -> DOWN: carrier lost on eth1"
    assert describe(Health(D), Health(R, 0, "")) == "DOWN -> RISING"


@pytest.mark.parametrize("state", list(State))
def test_carrier_lost_goes_down_at_once(state: State) -> None:
    for count in range(4):
        h = Health(state, count, "before")
        lost = carrier_lost(h, "carrier lost")
        assert lost.state is D and lost.count == 0
        if state is D:
            assert lost.reason == "before" and not transitioned(h, lost)
        else:
            assert lost.reason == "carrier lost"
            assert transitioned(h, lost)


@pytest.mark.parametrize("state", list(State))
def test_carrier_back_only_acts_on_down(state: State) -> None:
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
    for i in range(1, up):
        h = step(h, True, down, up, "ok")
        assert (h.state, h.count) == (R, i)
    h = step(h, True, down, up, "ok")
    assert h.state is U
    # and a failed round while RISING after carrier back goes DOWN again
    h = step(carrier_back(Health(D)), False, down, up, "bad")
    assert h.state is D


def test_takes_new_flows() -> None:
    assert {s for s in State if takes_new_flows(s)} == {I, U, F}


def test_state_values_are_strings() -> None:
    assert [s.value for s in State] == ["init", "rising", "up", "falling", "down"]
    assert State("down") is D and D == "down"
