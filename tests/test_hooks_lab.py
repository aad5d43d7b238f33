"""Hooks end to end: the real ecmpd in the lab with a hook that hangs on every change and
one that records its environment.  An ISP failure is still a sub-second new-flow outage
(the hanging hook runs beside the loop), the recorder sees wlan1 go down and, after the
heal, come up, in order, with its interface and gateway; hooks outliving hook_timeout
are killed with their children, and the daemon's stop does not wait for a hanging one
longer than hook_timeout."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from bench import stats
from lab.traffic import fault_offset
from lab.wait import until

pytestmark = pytest.mark.lab

TIMEOUT = 3.0
"""hook_timeout: a loop that waited for the hanging hook would lose 3 s per change."""
GAP, PRE, AFTER, SETTLE = 0.02, 1.0, 5.0, 1.0
"""New flows every 20 ms from 1 s before the fault to 5 s after (as bench/flows.py)."""


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def group_alive(pgid: int) -> bool:
    """Whether any live process is in process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def records(path: Path, wan: str) -> list[list[str]]:
    """The recorder's lines of `wan`: [state, previous, interface, gateway, family, active]."""
    text = path.read_text() if path.exists() else ""
    return [line.split()[1:] for line in text.splitlines() if line.split()[0] == wan]


def test_a_hanging_hook_does_not_slow_a_failover_and_the_hooks_see_down_then_up(
        make_lab, ecmpd_in, tmp_path: Path) -> None:
    lab = make_lab()
    pids, rec = tmp_path / "hang.pids", tmp_path / "records.txt"
    hang = script(tmp_path / "hang", f"echo $$ >> {pids}\nsleep 3600\n")
    record = script(tmp_path / "record",
                    f'echo "$ECMPD_WAN $ECMPD_STATE $ECMPD_PREVIOUS $ECMPD_INTERFACE '
                    f'$ECMPD_GATEWAY $ECMPD_FAMILY $ECMPD_ACTIVE" >> {rec}\n')
    d = ecmpd_in(lab, hooks=[hang, record], hook_timeout=f"{TIMEOUT:g}s")
    gateway = lab.spec.wan("wlan1").gateway
    # the start's init -> up went through both hooks: the hanging one was stopped
    until(lambda: records(rec, "wlan1") and records(rec, "wlan2"), 4 * TIMEOUT,
          "the start's changes recorded")
    assert records(rec, "wlan1") == [["up", "init", "wlan1", gateway, "ipv4", "1"]]
    lab.start_servers()

    # new flows across the fault, measured as bench/flows.py measures figure 1
    run = lab.start_flows(math.ceil((PRE + AFTER) / GAP), interval=GAP, timeout=1.0,
                          sources=lab.clients)
    first = run.wait_started()
    time.sleep(max(0.0, first + PRE - time.time()))   # the fault's moment is measured below
    t_fault = time.time()
    lab.fault("wlan1", "dead")
    results = run.result()
    offset = fault_offset(results, t_fault)
    assert any(r.ok and r.wan == "wlan1" for r in results if r.t < offset), \
        "no new flow went through wlan1 before the fault: the run proves nothing"
    outage = stats.settled_outage(results, offset, SETTLE)
    failed = sum(1 for r in results if not r.ok)
    print(f"new-flow outage with a hanging hook: {outage:.3f} s "
          f"({failed}/{len(results)} new flows failed)")
    assert outage <= 1.0, f"new-flow outage {outage:.3f} s with a hanging hook"
    assert d.status()["wans"]["wlan1"]["state"] == "down"

    lab.heal("wlan1")
    d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=15)
    # each change waits for the hanging hook's timeout before the recorder runs
    want = [["up", "init"], ["falling", "up"], ["down", "falling"], ["rising", "down"],
            ["up", "rising"]]
    until(lambda: len(records(rec, "wlan1")) == len(want), 8 * TIMEOUT,
          lambda _: f"wlan1's changes recorded: {records(rec, 'wlan1')}")
    got = records(rec, "wlan1")
    assert [r[:2] for r in got] == want
    assert {tuple(r[2:5]) for r in got} == {("wlan1", gateway, "ipv4")}
    assert [r[5] for r in got] == ["1", "1", "0", "0", "1"]
    log = d.log()
    assert f"hook {hang} for wlan1 up -> falling still ran after 3s: stopped by SIGTERM" in log

    # a hook hangs at the daemon's stop: it gets hook_timeout, then the stop goes on
    started = len(pids.read_text().split())
    d.ctl("disable", "wlan2")
    until(lambda: len(pids.read_text().split()) > started, 10,
          lambda _: f"the hook of the disable to start:\n{d.log()[-3000:]}")
    began = time.monotonic()
    assert d.stop(timeout=4 * TIMEOUT) == 0
    print(f"stop with a hanging hook: {time.monotonic() - began:.2f} s")
    for pid in map(int, pids.read_text().split()):
        until(lambda: not group_alive(pid), 5, f"hook session {pid} to be gone")
