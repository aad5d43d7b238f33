"""The README's first command: the demo runs end to end on the seed and tells the truth."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_reports_a_failover(lab_prefix):
    p = subprocess.run([sys.executable, "-m", "lab.demo"], capture_output=True, text=True,
                       timeout=180, cwd=ROOT)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    for step in range(1, 9):
        assert f"[{step}]" in out
    # saturated lines: no WAN left the route, no transfer broke, the RTT really climbed
    assert "WANs that left the route: 0; transfers broken: 0 of" in out, out
    rtts = [int(x) for x in re.findall(r"probe RTT up to (\d+) ms", out)]
    assert len(rtts) == 2 and max(rtts) >= 200, out
    for v in (4, 6):
        assert f"wlan1 IPv{v}: FALLING -> DOWN" in out or f"wlan1 IPv{v}: UP -> DOWN" in out
        m = re.search(rf"IPv{v} outage seen by new connections: ([0-9.]+) s", out)
        assert m and float(m.group(1)) < 5.0, out
    assert "Healthy WANs' connections: none broken." in out
    # `ecmpctl status` at a glance: a line per WAN, its state second
    states = set(re.findall(r"^\s*wlan[12]\s+(UP|DOWN)\s", out, re.M))
    assert states == {"UP", "DOWN"}, out
    # its namespaces are gone
    names = re.search(r"Lab namespaces: (.*)", out).group(1).split(", ")
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names and not set(names) & {l.split()[0] for l in left.splitlines() if l.strip()}
