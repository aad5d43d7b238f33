"""bench/policyshares.py: figure 14's rows from counted connections (pure)."""

from __future__ import annotations

from bench import policyshares as ps


def shares(w1: int, w2: int, failed: int = 0) -> dict[str, int]:
    return {"wlan1": w1, "wlan2": w2, **({"failed": failed} if failed else {})}


def test_rows_pass_within_three_points_and_fail_outside_or_on_failures() -> None:
    m = ps.Shares(rest={("with policies", 4): shares(1540, 1460),
                        ("without policies", 4): shares(1500, 1500),
                        ("with policies", 6): shares(1600, 1400),
                        ("without policies", 6): shares(1490, 1510)},
                  matching={4: {"wlan2": 100}, 6: {"wlan2": 100}})
    four, six = ps.rows(m)
    assert four.result == "pass" and six.result == "**FAIL**"          # +1.3 pp, +3.3 pp
    assert four.ecmpd == ("wlan1 51.3 % / wlan2 48.7 % of 3000 new connections (wlan1 +1.3 pp); "
                          "matching connections via wlan2: 100/100")
    assert four.baseline == "without policies: wlan1 50.0 % / wlan2 50.0 % of 3000 new connections"
    m.rest[("with policies", 6)] = shares(1500, 1499, failed=1)
    assert ps.rows(m)[1].result == "**FAIL**"
    m.rest[("with policies", 6)] = shares(1500, 1500)
    m.matching[6] = {"wlan2": 99, "wlan1": 1}
    assert ps.rows(m)[1].result == "**FAIL**"


def test_a_variant_that_failed_is_an_error_row() -> None:
    m = ps.Shares(errors={"with policies": "RuntimeError: boom"})
    assert [r.result for r in ps.rows(m)] == ["**ERROR**", "**ERROR**"]
    assert "boom" in ps.rows(m)[0].ecmpd
