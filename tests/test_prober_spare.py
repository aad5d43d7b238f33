"""The prober's `spare` mode (issue #16, item 7): a round's later requests go only to
targets that have not answered it yet.  Verdicts and their times on failing lines are
those of the plain mode; a healthy fast line costs one request per target per round."""

from __future__ import annotations

from typing import Any

import pytest

from ecmpd.health import Verdict
from ecmpd.judge import TargetSample as TS
from ecmpd.prober import Prober, spacing

from tests.test_prober import FakeNet, Run, _line


def spare_run(*targets: str, **kw: Any) -> Run:
    r = Run(targets, **kw)
    r.prober = Prober("wan1", targets, r.settings, r.results.append, source=r.prober.source,
                      device=r.prober.device, traffic=r.traffic, sockets=r.net, spare=True)
    return r


def test_a_fast_line_gets_one_request_per_target_and_completes_with_its_answers() -> None:
    r = spare_run("a", "b", count=2)
    results = r.go(3.5)
    assert r.net.sends("a") == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert [x.verdict for x in results] == [Verdict.GOOD] * 4
    assert [x.at for x in results] == pytest.approx([k + 0.01 for k in range(4)])
    assert results[0].samples[0] == TS("a", 1, 1, pytest.approx(0.01), True)


def test_a_target_whose_first_request_is_lost_gets_the_second() -> None:
    # b's first request of every round is lost; a answers everything
    net = FakeNet(lambda s: None if s.address == "b" and len(net.sends("b")) % 2 == 1 else 0.01)
    r = spare_run("a", "b", net=net, count=2, quorum=2)
    results = r.go(2.5)
    gap = spacing(r.settings)
    assert r.net.sends("a") == pytest.approx([0.0, 1.0, 2.0])
    assert r.net.sends("b") == pytest.approx([k + d for k in range(3) for d in (0, gap)])
    assert all(x.verdict is Verdict.GOOD for x in results)
    assert results[0].samples == (TS("a", 1, 1, pytest.approx(0.01), True),
                                  TS("b", 2, 1, pytest.approx(0.01), True))


@pytest.mark.parametrize("line", [
    _line(0.01, 3.5),        # a fast line that dies
    _line(0.2, 3.5),         # a slow one (RTT above the spacing) that dies
    lambda s: None,          # never answers
])
def test_failing_lines_are_judged_as_without_sparing(line) -> None:
    plain = Run(("a", "b"), net=FakeNet(line), count=2)
    spare = spare_run("a", "b", net=FakeNet(line), count=2)
    plain.go(6.5)
    spare.go(6.5)
    verdicts = [(r.verdict, r.reason) for r in plain.results]
    assert [(r.verdict, r.reason) for r in spare.results] == verdicts
    failed = [round(r.at, 6) for r in plain.results if r.verdict is Verdict.FAILED]
    assert [round(r.at, 6) for r in spare.results if r.verdict is Verdict.FAILED] == failed
