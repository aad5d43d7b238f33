"""History end to end: the real ecmpd in the seed lab, ``ecmpctl monitor --json``
started before an ISP dies sees wlan1 go down and, after the heal, rising then up;
afterwards ``ecmpctl history`` lists those changes with their reasons and how long each
state lasted, and ``ecmpctl status`` shows one down in the last 24 h."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.lab


class Monitor:
    """``ecmpctl monitor --json`` in the router namespace; its lines read with deadlines."""

    def __init__(self, lab, socket: str) -> None:
        self.proc = lab.popen(lab.ns_router, sys.executable, "-m", "ecmpd.ecmpctl_command",
                              "--socket", socket, "monitor", "--json",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: list[dict] = []
        self.delays: list[float] = []
        """Seconds from each change (its `at`) to its line reaching this process."""
        self._buf = b""

    def wait(self, wan: str, state: str, timeout: float = 15.0) -> dict:
        """The first event (seen or to come) of `wan` entering `state`."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if (e["wan"], e["state"]) == (wan, state):
                    return e
            left = deadline - time.monotonic()
            assert left > 0, f"no {wan} -> {state} within {timeout}s; saw {self.events}"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, f"ecmpctl monitor ended: {self.proc.stderr.read()!r}"
                self._buf += chunk
                *lines, self._buf = self._buf.split(b"\n")
                got = [json.loads(line) for line in lines if line]
                self.events += got
                self.delays += [time.time() - e["at"] for e in got]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)


def test_monitor_sees_a_fault_and_its_heal_and_history_and_status_list_them(lab, ecmpd_in):
    d = ecmpd_in(lab, targets="beyond")
    mon = Monitor(lab, d.socket)
    # the monitor listens once the daemon counts it
    d.wait_for(lambda st: st["stats"]["monitors"] == 1, 10, "ecmpctl monitor connected")
    lab.fault("wlan1", "dead")
    down = mon.wait("wlan1", "down")
    assert down["previous"] == "falling" and not down["active"]
    assert "answered" in down["reason"] and down["lasted"] is not None
    assert down["at_iso"].endswith("+00:00") and down["family"] == "ipv4"
    lab.heal("wlan1")
    up = mon.wait("wlan1", "up")
    rising = mon.wait("wlan1", "rising")
    mine = [(e["previous"], e["state"]) for e in mon.events if e["wan"] == "wlan1"]
    # (on a loaded host a RISING WAN may lose a probe and go DOWN once more first)
    assert mine[:3] == [("up", "falling"), ("falling", "down"), ("down", "rising")], mine
    assert mine[-1] == ("rising", "up"), mine
    assert all(a[1] == b[0] for a, b in zip(mine, mine[1:])), mine      # a chain
    downs = sum(state == "down" for _, state in mine)
    assert rising["at"] <= up["at"] and up["active"] and up["previous"] == "rising"
    assert all(e["wan"] == "wlan1" for e in mon.events)     # wlan2 never moved
    print("monitor delays (ms):", [round(x * 1000, 1) for x in mon.delays])
    assert mon.stop() == 0                                   # Ctrl-C: a clean exit
    assert b"Traceback" not in mon.proc.stderr.read()

    # history: the same four changes, after the start's init -> up, with reasons
    hist = json.loads(d.ctl("history", "wlan1", "--json").stdout)["transitions"]
    assert [(e["previous"], e["state"]) for e in hist] == [("init", "up")] + mine
    assert [e["reason"] for e in hist[1:]] == [e["reason"] for e in mon.events]
    text = d.ctl("history").stdout
    assert "wlan1  falling -> down" in text and down["reason"] in text
    assert "wlan1  down -> rising" in text and "wlan1  rising -> up" in text
    assert "wlan2  init -> up" in text

    # status: one down in the last 24 h, the last one's time and reason
    st = d.status()
    w1 = st["wans"]["wlan1"]
    assert w1["downs_24h"] == downs and st["wans"]["wlan2"]["downs_24h"] == 0
    assert downs == 1 or ("rising", "down") in mine
    last = [e for e in mon.events if e["state"] == "down"][-1]
    assert w1["last_down"]["reason"] == last["reason"]
    assert abs(w1["last_down"]["at"] - last["at"]) < 0.01
    assert w1["since_iso"] and w1["state"] == "up"
    glance = d.ctl("status").stdout.splitlines()
    row = next(line for line in glance if line.startswith("wlan1 ")).split()
    assert row[1] == "UP" and row[-3] == str(downs), glance  # DOWNS/24H, then LAST DOWN
    assert f"  wlan1 last down: {last['reason']}" in glance
