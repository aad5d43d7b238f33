"""Status renders one snapshot: it never shows "all WANs are down: keeping the last
route" next to a WAN that takes new flows.

The flaky `test_all_wans_down_keeps_the_last_route` saw every WAN UP while `kept_last`
was still true: health was set at once, `kept_last` only by the next reconcile, and
status read the daemon's fields at different moments, with an await (the conntrack
count) in between.  Here that window is made wide — tens of thousands of conntrack
entries make the count slow — and status is asked without pause through several
all-down / all-up cycles; every answer must be consistent.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from ecmpd.ecmpctl_command import request

from lab.runner import Ecmpd, config_for
from lab.wait import until

pytestmark = pytest.mark.lab

ENTRIES = 40_000
"""Conntrack entries in the router namespace (unreplied UDP: they live 30 s)."""
CYCLES = 3
POLLERS = 3
USABLE = ("up", "falling")
"""States of a WAN that takes new flows (all WANs here were UP before)."""

FILL = """
import socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(b"x", ("127.0.0.%d" % (2 + i // 60000), 1 + i % 60000))
"""


def ask_status(path: str) -> dict:
    """One status request on the control socket (no process: as fast as it answers)."""
    return request(path, {"cmd": "status"}, 10)


def inconsistent(st: dict) -> str | None:
    """Why this status contradicts itself, or None."""
    if not st.get("ok"):
        return f"error: {st.get('error')}"
    usable = [n for n, w in st["wans"].items() if w["state"] in USABLE]
    if st["route"]["kept_last"] and usable:
        return f"kept_last with usable WANs {usable}"
    if any("keeping the last route" in w for w in st["warnings"]) != st["route"]["kept_last"]:
        return "the warning and kept_last disagree"
    return None


def test_status_never_shows_a_usable_wan_next_to_the_kept_route(make_lab, tmp_path):
    lab = make_lab()
    names = [w.name for w in lab.spec.wans]
    d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path / "d"))
    d.start()
    stop = threading.Event()
    seen: list[dict] = []
    bad: list[tuple[str, dict]] = []

    def poll() -> None:
        while not stop.is_set():
            st = ask_status(d.socket)
            seen.append(st)
            why = inconsistent(st)
            if why:
                bad.append((why, st))

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(POLLERS)]
    try:
        d.wait_states({n: "up" for n in names})
        lab.run(lab.ns_router, sys.executable, "-c", FILL, str(ENTRIES), timeout=60)
        start = time.monotonic()
        ask_status(d.socket)
        slow = time.monotonic() - start
        for t in pollers:
            t.start()
        for _ in range(CYCLES):
            for n in names:
                lab.fault(n, "dead")
            d.wait_for(lambda s: s["route"]["kept_last"], timeout=10, what="kept_last")
            for n in names:
                lab.heal(n)
            d.wait_for(lambda s: all(w["state"] == "up" for w in s["wans"].values())
                       and not s["route"]["kept_last"], timeout=10, what="all up")
        # enough answers to prove something, however fast the cycles went
        until(lambda: len(seen) > 20, 60, lambda _: f"only {len(seen)} status answers")
    finally:
        stop.set()
        for t in pollers:
            if t.is_alive():
                t.join(15)
        d.stop()
    kept = sum(1 for st in seen if st.get("ok") and st["route"]["kept_last"])
    print(f"\nstatus takes {slow * 1000:.0f} ms with {ENTRIES} conntrack entries; "
          f"{len(seen)} answers ({kept} with kept_last), {len(bad)} inconsistent")
    assert kept > 0 and len(seen) > 20, "the polling proved nothing"
    assert not bad, f"{len(bad)} inconsistent answers, e.g. {bad[0][0]}: " \
                    f"{json.dumps(bad[0][1]['route'])} " \
                    f"{ {n: w['state'] for n, w in bad[0][1]['wans'].items()} }"
