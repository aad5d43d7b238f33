"""bench/hapair.py's table (figure 16) from takeovers: pure, no lab."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.hapair import Takeover, rows  # noqa: E402
from bench.run import FIGURES, parse_only  # noqa: E402


def test_rows_judge_outage_breaks_and_pinning() -> None:
    good = [Takeover(0.34, 0.30, 100, 0, 100), Takeover(0.36, 0.41, 100, 0, 100)]
    base = [Takeover(0.35, 0.30, 100, 100, 0)]
    out = rows(good, base)
    assert [r.figure for r in out] == [
        "16 HA takeover: floating addresses moved", "16 HA takeover: new-flow outage",
        "16 HA takeover: held flows broken", "16 HA takeover: WAN and ct mark kept"]
    assert [r.result for r in out] == ["info", "pass", "pass", "pass"]
    assert out[2].ecmpd == "0 of 200 (n=2)" and out[2].baseline == "100 of 100 (n=1)"
    assert out[3].ecmpd == "200 of 200 (n=2)" and out[3].baseline == "0 of 100 (n=1)"
    bad = [Takeover(0.34, 1.2, 100, 1, 99)]
    assert [r.result for r in rows(bad, [])[1:]] == ["**FAIL**"] * 3
    assert rows([], [])[1].result == "**FAIL**"        # nothing measured passes nothing


def test_figure_16_is_registered() -> None:
    assert 16 in FIGURES and parse_only("16") == [16]
