"""A router that also carries a full routing table: ecmpd reads and watches only its own.

The router namespace holds 200 000 foreign routes (half in table main, where a BGP
table lives, half in table 100) before ecmpd starts, and 20 000 more come and go while
it runs (bench/bigfib.py measures a full table, a million).  ecmpd used to dump and parse the whole FIB on every reconcile and every status
(status never answered at 200 000 routes) and to read every route event (ENOBUFS, a
resync, a full core).  Now its reads are kernel-filtered (`routing.read_actual`) and its
event socket drops route events that cannot concern it (`rtfilter`), so the budgets are
those of an empty FIB: start <= 2 s, a status request <= 100 ms, carrier failover
<= 0.3 s, dead-ISP failover <= 1 s, peak RSS <= 40 MB, no lost events.

Needs the daemon wired to the filters (the reads are routing's own; the event filter is
attached by the watcher).  ``ECMPD_TEST_FIB`` sets the number of foreign routes (the
churn is a tenth of it).
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from ecmpd.ecmpctl_command import request

from lab.runner import Ecmpd, config_for
from lab.wait import within

pytestmark = pytest.mark.lab

ROUTES = int(os.environ.get("ECMPD_TEST_FIB", "200000"))
CHURN = ROUTES // 10


def batch(lab, count: int, verb: str, octets: tuple[int, int]) -> None:
    """`count` foreign /24s, half in table 100, half in main (from `octets` on)."""
    half = count // 2
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
        for i in range(half):
            f.write(f"route {verb} {octets[0] + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24 "
                    f"via 10.111.0.1 table 100 proto bgp\n")
        for i in range(count - half):
            f.write(f"route {verb} {octets[1] + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24 "
                    f"via 10.112.0.1 proto bgp\n")
        f.flush()
        lab.run(lab.ns_router, "ip", "-batch", f.name, timeout=600)


def status_request(path: str) -> tuple[float, dict]:
    """One status request on the control socket (a unix socket: reachable from here)."""
    t = time.monotonic()
    answer = request(path, {"cmd": "status"}, 30)
    return time.monotonic() - t, answer


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def route_without(lab, gateway: str, timeout: float, since: float) -> float:
    """Seconds from `since` until ecmpd's multipath route (table 1000, `tables.base`) no
    longer has `gateway` (inf: not within `timeout`)."""
    def gone() -> bool:
        out = lab.run(lab.ns_router, "ip", "route", "show", "table", "1000", "proto", "236").stdout
        return "default" in out and gateway not in out

    if within(gone, timeout - (time.monotonic() - since), interval=0.005):
        return time.monotonic() - since
    return float("inf")


def test_a_full_foreign_table_costs_ecmpd_nothing(make_lab, tmp_path):
    lab = make_lab()
    lab.start_servers()
    batch(lab, ROUTES, "add", (11, 100))
    d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path / "e"))
    t = time.monotonic()
    d.start(timeout=30)
    d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=30)
    start = time.monotonic() - t
    took = sorted(status_request(d.socket)[0] for _ in range(5))
    status = took[2]
    assert d.proc is not None
    # route churn while it runs: nothing of it reaches ecmpd
    events0 = status_request(d.socket)[1]["stats"]["events"]
    batch(lab, CHURN, "add", (60, 150))
    batch(lab, CHURN, "del", (60, 150))
    time.sleep(1.0)
    events = status_request(d.socket)[1]["stats"]["events"] - events0
    # failover, carrier (netlink) and dead ISP (probes)
    t0 = time.monotonic()
    lab.fault("wlan1", "carrier")
    carrier = route_without(lab, "10.111.0.1", 5, t0)
    lab.heal("wlan1")
    d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=10)
    t0 = time.monotonic()
    lab.fault("wlan1", "dead")
    dead = route_without(lab, "10.111.0.1", 10, t0)
    lab.heal("wlan1")
    d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=10)
    # wlan1 learns its gateway now (a DHCP client's default route in main, metric 0):
    # other programs' default routes of every table pass the event filter, and the
    # tables they live in are read at their first leaf only
    lab.run(lab.ns_router, "ip", "route", "add", "default", "via", "10.111.0.1", "dev",
            "wlan1", "proto", "dhcp")
    auto = config_for(lab)
    auto["wans"]["wlan1"]["gateway"] = "auto"
    del auto["wans"]["wlan1"]["address"]
    d.write_config(auto)
    t = time.monotonic()
    d.ctl("reload")
    reload = time.monotonic() - t
    st = d.wait_states({"wlan1": "up", "wlan2": "up"}, timeout=10)
    assert st["wans"]["wlan1"]["gateway"] == "10.111.0.1"
    learning = sorted(status_request(d.socket)[0] for _ in range(5))[2]
    events0 = status_request(d.socket)[1]["stats"]["events"]
    batch(lab, CHURN, "add", (60, 150))
    batch(lab, CHURN, "del", (60, 150))
    time.sleep(1.0)
    learning_events = status_request(d.socket)[1]["stats"]["events"] - events0
    rss = peak_rss_mb(d.proc.pid)
    log = d.log()
    d.stop()
    print(f"\n{ROUTES} foreign routes: start {start:.2f}s, status request median "
          f"{status * 1000:.1f} ms, {events} route events read during {2 * CHURN} changes, "
          f"carrier {carrier:.3f}s, dead ISP {dead:.2f}s, peak RSS {rss:.1f} MB; learning a "
          f"gateway: reload {reload:.2f}s, status {learning * 1000:.1f} ms, "
          f"{learning_events} route events read")
    assert start <= 2.0
    assert status <= 0.1, took
    assert events <= 20, events
    assert "lost events" not in log
    assert carrier <= 0.3
    assert dead <= 1.5
    assert rss <= 40.0
    assert learning <= 0.1 and learning_events <= 20 and reload <= 2.0
