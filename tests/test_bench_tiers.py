"""Figure 12's pure parts (bench/tiers.py, bench/tiersrows.py): when new flows leave or
join a WAN, when a WAN is in the route, and the rows with their verdicts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import stats, tiers, tiersrows  # noqa: E402
from lab.traffic import FlowResult  # noqa: E402

T0 = 1000.0
"""The epoch of the flows' schedule start (their `t` 0)."""


def flows(*wans: str | None) -> list[FlowResult]:
    """One flow every 0.1 s from T0 on, through each of `wans` (None: failed)."""
    return [FlowResult(t=i / 10, ok=w is not None, source=None, latency=None,
                       wall=T0 + i / 10, wan=w) for i, w in enumerate(wans)]


def test_left_after_is_the_first_flow_from_which_none_goes_through_the_wan() -> None:
    res = flows("lte", "lte", "lte", "wlan1", "lte", "wlan2", "wlan1", "wlan2")
    assert math.isclose(tiers.left_after(res, T0 + 0.15, "lte"), 0.35)
    assert tiers.left_after(res, T0 + 0.5, "lte") == 0.0           # none after the heal
    assert tiers.left_after(flows("wlan1", "lte"), T0, "lte") == math.inf
    assert tiers.left_after(flows("wlan1", None, "wlan2"), T0, "lte") == 0.0


def test_joined_after_is_the_first_flow_through_the_wan() -> None:
    res = flows("lte", "wlan2", None, "wlan1", "wlan2", "wlan1")
    assert math.isclose(tiers.joined_after(res, T0 + 0.05, "wlan1"), 0.25)
    assert tiers.joined_after(res, T0, "north") == math.inf


def test_first_in_a_route_timeline() -> None:
    tl = [(0.0, frozenset({"wlan1", "wlan2"})), (5.0, frozenset()),
          (5.3, frozenset({"lte"})), (9.0, frozenset({"wlan1", "wlan2"}))]
    assert stats.first_in(tl, "lte", 4.0) == 5.3
    assert stats.first_in(tl, "lte", 6.0) == 6.0                   # already in
    assert stats.first_in(tl, "lte", 9.5) is None
    assert stats.first_removal(tl, "lte", 6.0) == 9.0


def run(kind: str, takeover: float = 0.6, lte_share: int = 0, broken: int = 0,
        back_failed: int = 0) -> tiers.TierRun:
    per = {4: 0.0, 6: 0.0}
    return tiers.TierRun(
        kind, share={f: (lte_share, 1000, 1000) for f in per},
        takeover={f: takeover for f in per}, window=5.0,
        route_take={f: takeover - 0.1 for f in per},
        log_take={f: takeover - 0.12 if kind != "untiered" else None for f in per},
        back={f: 1.1 for f in per}, back_failed={f: back_failed for f in per},
        route_back={f: 1.05 for f in per},
        log_back={f: 1.04 if kind != "untiered" else None for f in per},
        held={f: 200 for f in per}, broken={f: broken for f in per},
        broken_after={f: [1.1, 1.2][:min(broken, 2)] for f in per})


def test_rows_pass_on_a_quick_takeover_no_share_and_the_failback_each_mode_wants() -> None:
    res = tiers.Fig12([run("untiered", 0.5, lte_share=330), run("keep", 0.7),
                       run("flush", 0.8, broken=200)])
    rows = tiersrows.rows(res, 200)
    assert [r.result for r in rows] == ["pass"] * 5
    take = rows[0]
    assert take.ecmpd.startswith("IPv4 0.70 / 0.75 / 0.80 s (n=2); IPv6 ")
    assert "median ratio to the baseline IPv4 1.50, IPv6 1.50" in take.ecmpd
    assert take.baseline.startswith("IPv4 0.50 / 0.50 / 0.50 s (n=1)")
    assert "0 of 2000 through lte (0.0 %)" in rows[1].ecmpd
    assert "330 of 1000 through lte (33.0 %)" in rows[1].baseline
    assert "200 / 200 / 200 of 200" in rows[4].ecmpd and "last flow broken" in rows[4].ecmpd


def test_rows_fail_a_slow_takeover_a_share_a_broken_keep_and_errors() -> None:
    res = tiers.Fig12([run("untiered"), run("keep", math.inf, lte_share=3, broken=1),
                       run("flush", 0.8, broken=150, back_failed=2)])
    rows = tiersrows.rows(res, 200)
    assert [r.result for r in rows] == ["**FAIL**"] * 5
    assert "never recovered in 1/2 runs" in rows[0].ecmpd
    res = tiers.Fig12([run("keep")], errors={"untiered": "TimeoutError: route"})
    rows = tiersrows.rows(res, 200)
    assert all(r.result == "**ERROR**" for r in rows)
    assert "TimeoutError: route" in rows[0].ecmpd
