"""A netlink overflow is followed by one resync that supersedes the lost backlog.

The real ecmpd in a lab's router namespace is stopped (SIGSTOP) while a WAN link is
toggled thousands of times: the kernel overruns its event socket (ENOBUFS).  After
SIGCONT the daemon must resynchronise from one dump and discard the events the dump
supersedes, instead of replaying thousands of stale link changes (each a DOWN, a
reconcile and a conntrack flush): it converges in about a second, with a handful of
reconciles and no flush (the link ends up, as it was).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from lab.wait import within

pytestmark = pytest.mark.lab

TOGGLES = 20_000
"""Link state changes while the daemon is stopped (down, up, down, ... ending up)."""
CONVERGE_S = 2.0
"""Bound on SIGCONT -> the toggled WAN UP, in the route and its table route back."""
MAX_RECONCILES = 30
MAX_FLUSHES = 1
FLUSHED = "its connections were removed from conntrack"
"""The log line of a conntrack flush of a WAN that went DOWN."""


def converged(lab, d, wan: str, table: int) -> bool:
    """The WAN is UP and in ecmpd's route (status) and its table route is back (kernel)."""
    st = d.status()
    w = st["wans"][wan]
    hops = {h["interface"] for h in st["route"]["nexthops"]}
    if not (w["state"] == "up" and w["active"] and hops == set(st["wans"])):
        return False
    out = lab.run(lab.ns_router, "ip", "route", "show", "table", str(table)).stdout
    return f"default via {w['gateway']} dev {w['interface']}" in out


def test_a_link_storm_while_stopped_converges_from_one_resync(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab)
    wan = "wlan1"
    table = d.status()["wans"][wan]["table"]
    before = d.status()["stats"]["reconciles"]
    flushes = d.log().count(FLUSHED)
    batch = "".join(f"link set dev {wan} {'down' if i % 2 == 0 else 'up'}\n"
                    for i in range(TOGGLES))
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        lab.run(lab.ns_router, "ip", "-batch", "-", input=batch, timeout=120)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    start = time.monotonic()
    took = None
    if within(lambda: converged(lab, d, wan, table), 30, interval=0.02):
        took = time.monotonic() - start
    time.sleep(1.0)                      # and it stays so: no stale backlog replayed late
    stable = converged(lab, d, wan, table)
    reconciles = d.status()["stats"]["reconciles"] - before
    flushed = d.log().count(FLUSHED) - flushes
    took_s = "never" if took is None else f"{took:.2f}"
    print(f"\noverflow: {TOGGLES} toggles; converged after {took_s} s, "
          f"{reconciles} reconciles, {flushed} conntrack flushes")
    assert "lost events" in d.log(), "the storm did not overrun the event socket"
    assert took is not None and took <= CONVERGE_S, (took, d.log()[-3000:])
    assert stable
    assert reconciles <= MAX_RECONCILES, reconciles
    assert flushed <= MAX_FLUSHES, flushed
