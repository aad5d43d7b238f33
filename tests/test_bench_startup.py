"""Tests of bench/startup.py's pure parts: `-X importtime` parsing and the table rows.
(The measurement itself runs in `bench/startup.py` and figure 14 of bench/run.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.startup import Imports, Start, _phase_key, ratios, rows, self_times  # noqa: E402

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:      2000 |       2500 |     pyroute2.netlink
import time:       500 |       3000 |   pyroute2
import time:      1500 |       4600 | ecmpd.daemon
"""


def test_self_times_sum_per_top_level_package() -> None:
    assert self_times(IMPORTTIME) == {"_io": 0.1, "pyroute2": 2.5, "ecmpd": 1.5}
    assert self_times("noise\n") == {}


def test_phase_key_drops_numbers() -> None:
    assert _phase_key("2/3 WANs active") == "N/N WANs active"
    assert _phase_key("starting: reading the kernel") == "starting: reading the kernel"


def test_rows_name_each_milestone_against_the_baseline() -> None:
    imp = Imports([0.02, 0.03, 0.04], [0.3, 0.4, 0.5], [1.0, 1.1, 1.2], {"ecmpd": 50.0},
                  [0.01, 0.01, 0.01], [0.2, 0.2, 0.3])
    starts = [Start(0.5, 0.9, [(0.1, "starting: loading the config"), (0.9, "2/2 WANs active")]),
              Start(0.6, 31.0, [(0.2, "starting: loading the config"), (31.0, "1/2 WANs active")])]
    out = rows(imp, starts)
    setups = [r.figure for r in out]
    assert setups[:4] == ["15 start-up: import ecmpd.daemon", "15 start-up: import ecmpd.daemon, CPU time",
                          "15 start-up: import ecmpd.daemon", "15 start-up: import self time by package"]
    assert out[1].ecmpd == "200 / 200 / 300 ms (n=3)" and out[1].baseline == "10 / 10 / 10 ms (n=3)"
    assert out[0].ecmpd == "300 / 400 / 500 ms (n=3)" and out[0].baseline == "20 / 30 / 40 ms (n=3)"
    assert "ecmpd 50" in out[3].ecmpd
    assert "15 start-up: exec → STATUS “starting: loading the config”" in setups
    assert "15 start-up: exec → STATUS “N/N WANs active”" in setups
    ready = out[-1]
    assert ready.figure.startswith("15 start-up: exec → READY=1")
    assert ready.result == "**fail**"            # one start took longer than 30 s
    assert rows(imp, starts[:1])[-1].result == "pass"
    assert len(rows(imp, [])) == 4               # --imports-only


def test_ratios_put_this_tree_against_the_other_per_milestone() -> None:
    new = (Imports([0.04], [0.3], [1.0], {}, [0.04], [0.30]),
           [Start(0.2, 0.4, [], "", [(0.09, 0.06)])])
    old = (Imports([0.04], [0.3], [1.0], {}, [0.04], [0.40]),
           [Start(0.4, 0.5, [], "", [(0.10, 0.08)])])
    out = {r.figure: r for r in ratios(new, old, "abc123")}
    cpu = out["15 start-up: import ecmpd.daemon, CPU"]
    assert (cpu.ecmpd, cpu.baseline, cpu.result) == ("300 ms", "400 ms", "× 0.75")
    assert out["15 start-up: exec → READY=1"].result == "× 0.80"
    assert out["15 start-up: `ecmpctl status`, CPU"].result == "× 0.75"
    assert all("abc123" in r.setup for r in out.values())
    # an --imports-only run has no starts: those rows are left out, not shown as nan
    assert "15 start-up: exec → READY=1" not in {
        r.figure for r in ratios((new[0], []), (old[0], []), "abc123")}


def test_imports_of_two_runs_merge_with_the_package_medians() -> None:
    a = Imports([0.04], [0.3], [1.0], {}, [0.04], [0.3], {"ecmpd": [50.0]})
    a.extend(Imports([0.05], [0.4], [1.1], {}, [0.05], [0.4], {"ecmpd": [70.0], "yaml": [9.0]}))
    assert a.cached == [0.3, 0.4] and a.cached_cpu == [0.3, 0.4]
    assert a.by_package == {"ecmpd": 60.0, "yaml": 9.0}
