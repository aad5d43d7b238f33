"""The `Transition` effects of `ecmpd.events.step`: what hooks, history, monitor and
metrics are told of each WAN state change (the rest of `step` is in test_state.py)."""

from __future__ import annotations

import dataclasses

from ecmpd import events as ev
from ecmpd.health import Verdict
from ecmpd.state import Link

from tests.test_state import LINKS, T0, dual_stack_up, start, step, up


def transitions(effects) -> list[tuple]:
    return [(e.name, e.family, e.previous, e.state, e.active)
            for e in effects if isinstance(e, ev.Transition)]


def test_a_health_change_is_one_transition_with_reason_time_and_how_long_it_lasted() -> None:
    st = start()
    st, effects = step(st, ev.ProbeRound("wlan1", Verdict.GOOD), now=T0 + 5)
    assert transitions(effects) == [("wlan1", 4, "init", "up", True)]
    (t,) = [e for e in effects if isinstance(e, ev.Transition)]
    assert t.at == T0 + 5 and t.lasted == 5.0 and t.reason == "after 1 good round"
    for i in range(3):                 # defaults: down after 3 failed rounds
        st, effects = step(st, ev.ProbeRound("wlan1", Verdict.FAILED, "0/2 answered"),
                           now=T0 + 10 + i)
        want = [] if i == 1 else [("wlan1", 4, "up" if i == 0 else "falling",
                                   "falling" if i == 0 else "down", i == 0)]
        assert transitions(effects) == want, i
    (t,) = [e for e in effects if isinstance(e, ev.Transition)]
    assert t.lasted == 2.0 and "0/2 answered" in t.reason


def test_a_steady_round_tells_nobody() -> None:
    st, _ = step(start(), ev.ProbeRound("wlan1", Verdict.GOOD))
    assert step(st, ev.ProbeRound("wlan1", Verdict.GOOD)) == (st, ())


def test_carrier_loss_is_a_transition_of_each_version_of_a_dual_stack_wan() -> None:
    st = dual_stack_up()
    _, effects = step(st, ev.LinkChanged("eth1", dataclasses.replace(LINKS["eth1"],
                                                                      carrier=False)))
    assert sorted(transitions(effects)) == [("wlan1", 4, "up", "down", False),
                                            ("wlan1", 6, "up", "down", False)]


def test_disable_and_enable_are_transitions_and_repeating_one_is_not() -> None:
    st = up(start())
    st, effects = step(st, ev.SetDisabled("wlan2", True))
    assert transitions(effects) == [("wlan2", 4, "up", "disabled", False)]
    st, effects = step(st, ev.SetDisabled("wlan2", True))
    assert transitions(effects) == []
    _, effects = step(st, ev.SetDisabled("wlan2", False))
    assert transitions(effects) == [("wlan2", 4, "disabled", "up", True)]


def test_a_link_the_config_does_not_name_tells_nobody() -> None:
    _, effects = step(start(), ev.LinkChanged("eth9", Link(40, True, True)))
    assert transitions(effects) == []
