"""The metrics end to end: the real ecmpd with `metrics.listen` set in the lab's router
namespace, scraped from inside that namespace and parsed back with prometheus_client's
text parser; after an ISP fault the numbers are the ones `ecmpctl status --json` shows;
a reload moves the endpoint and is counted; 50 slow scrapers hanging on the endpoint
during an ISP failure do not delay the failover (new-flow outage still <= 1.0 s)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import fault_offset, outage
from lab.runner import config_for
from lab.wait import until

pytestmark = pytest.mark.lab

PORT = 9474
SCRAPE = ("import sys, urllib.request\n"
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n")

SLOW_SCRAPERS = """
import signal, socket, sys, time
n, port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
end = time.monotonic() + seconds
socks = [None] * n
connects = 0


def alive(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def hang(i):
    global connects
    s = socks[i] = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metr")          # half a request, then nothing
    except OSError:
        pass
    connects += 1


try:
    while time.monotonic() < end:
        for i, s in enumerate(socks):
            if s is None or not alive(s):
                if s is not None:
                    s.close()
                hang(i)
        if connects == n:
            print("hanging", n, flush=True)
        time.sleep(0.1)
finally:
    print("connects", connects, flush=True)
"""
"""`n` connections that each send half a request and hang; one the server closes is
opened again (at most every 0.1 s), for `seconds`."""


def scrape(lab, port: int = PORT) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics from inside the router namespace, parsed: (name, labels) -> value."""
    text = lab.run(lab.ns_router, sys.executable, "-c", SCRAPE,
                   f"http://127.0.0.1:{port}/metrics", timeout=15).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def per_wan(samples, name: str) -> dict[tuple[str, str], float]:
    """(wan, family) -> value of metric `name`."""
    return {(dict(k)["wan"], dict(k)["family"]): v for (n, k), v in samples.items() if n == name}


def status_view(st) -> dict:
    """What the metrics must show, from `ecmpctl status --json`."""
    return {
        "up": {(n, "ipv4"): float(w["health"] == "up") for n, w in st["wans"].items()},
        "active": {(n, "ipv4"): float(w["active"]) for n, w in st["wans"].items()},
        "targets": {(n, t): (round(v["loss_pct"] / 100, 2) if v["loss_pct"] is not None
                             else None) for n, w in st["wans"].items()
                    for t, v in w["targets"].items()},
    }


def metrics_view(m) -> dict:
    loss = {(dict(k)["wan"], dict(k)["target"]): round(v, 2)
            for (n, k), v in m.items() if n == "ecmpd_wan_loss_ratio"}
    return {"up": per_wan(m, "ecmpd_wan_up"), "active": per_wan(m, "ecmpd_wan_active"),
            "targets": {k: loss.get(k) for k in loss}}


def test_metrics_match_status_after_a_fault_and_follow_a_reload(lab, ecmpd_in) -> None:
    cfg = config_for(lab, targets="both", metrics={"listen": f"127.0.0.1:{PORT}"})
    d = ecmpd_in(lab, cfg)
    first = scrape(lab)
    changes = per_wan(first, "ecmpd_wan_state_changes_total")
    assert per_wan(first, "ecmpd_wan_up") == {("wlan1", "ipv4"): 1, ("wlan2", "ipv4"): 1}
    assert per_wan(first, "ecmpd_wan_active") == {("wlan1", "ipv4"): 1, ("wlan2", "ipv4"): 1}
    lab.fault("wlan1", "dead")
    d.wait_states({"wlan1": "down"}, timeout=15)
    # one loss figure moves between the scrape and the status: poll until they agree
    st, m = {}, {}

    def agree() -> bool:
        nonlocal st, m
        m, st = scrape(lab), d.status()
        return metrics_view(m) == status_view(st)
    until(agree, 15, lambda _: f"metrics {metrics_view(m)} != status {status_view(st)}")
    assert st["wans"]["wlan1"]["health"] == "down" and not st["wans"]["wlan1"]["active"]
    assert per_wan(m, "ecmpd_wan_up")[("wlan1", "ipv4")] == 0
    assert per_wan(m, "ecmpd_wan_active")[("wlan1", "ipv4")] == 0
    after = per_wan(m, "ecmpd_wan_state_changes_total")
    assert after[("wlan1", "ipv4")] > changes[("wlan1", "ipv4")]
    assert after[("wlan2", "ipv4")] == changes[("wlan2", "ipv4")]
    conns = {dict(k)["wan"]: v for (n, k), v in m.items() if n == "ecmpd_wan_connections"}
    assert conns == {n: w["connections"] for n, w in st["wans"].items()}
    rtts = {(dict(k)["wan"], dict(k)["target"]) for (n, k), v in m.items()
            if n == "ecmpd_wan_rtt_seconds"}
    assert {("wlan2", "10.112.0.1")} <= rtts
    assert m[("ecmpd_reaction_seconds_count", ())] >= 1
    # a reload is counted, and a new address moves the endpoint
    moved = dict(cfg, metrics={"listen": f"127.0.0.1:{PORT + 1}"})
    d.write_config(moved)
    assert d.ctl("reload").returncode == 0
    m = scrape(lab, PORT + 1)
    assert m[("ecmpd_reloads_total", (("result", "ok"),))] == 1
    assert m[("ecmpd_reloads_total", (("result", "failed"),))] == 0
    assert lab.run(lab.ns_router, sys.executable, "-c", SCRAPE,
                   f"http://127.0.0.1:{PORT}/metrics", check=False).returncode != 0


def test_fifty_slow_scrapers_do_not_delay_a_failover(lab, ecmpd_in) -> None:
    d = ecmpd_in(lab, config_for(lab, metrics={"listen": f"127.0.0.1:{PORT}"}))
    lab.start_servers()
    slow = lab.popen(lab.ns_router, sys.executable, "-c", SLOW_SCRAPERS, "50", str(PORT), "30",
                     stdout=subprocess.PIPE, text=True)
    assert slow.stdout is not None
    assert slow.stdout.readline().split() == ["hanging", "50"]
    run = lab.start_flows(250, interval=0.02, timeout=1.0)
    time.sleep(0.5)
    fault_at = time.time()
    lab.fault("wlan1", "dead")
    d.wait_states({"wlan1": "down"}, timeout=15)
    flows = run.result()
    assert slow.poll() is None, "the slow scrapers ended before the failover was measured"
    lost = outage(flows, fault_offset(flows, fault_at))
    assert lost <= 1.0, (lost, [f for f in flows if not f.ok][:5])
    assert [f for f in flows if f.t > fault_offset(flows, fault_at) + 1.5 and not f.ok] == []
    slow.terminate()
    out, _ = slow.communicate(timeout=10)
    # ecmpd dropped all but 8 at once (and the rest after 5 s): they reconnected
    assert int(out.split()[-1]) > 50, out
    # the endpoint serves again once they are gone (the held ones time out in 5 s)
    until(lambda: scrape_or_none(lab), 15, "a scrape after the slow scrapers")


def scrape_or_none(lab) -> dict | None:
    try:
        return scrape(lab)
    except subprocess.CalledProcessError:
        return None
