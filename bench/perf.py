"""Figures 4–7: forwarding throughput, ecmpd's CPU and memory, reaction latency and the
wall time of ``ecmpctl status``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ecmpd.ecmpctl_command import request
from lab import Lab

from bench import stats
from bench.routers import (EpochEcmpd, open_plain_path, program_natgw, program_plain,
                           start_ecmpd, stop_ecmpd, unprogram, wait_routed, wait_until)

IPERF_PORT = 5201

# ------------------------------------------------------------------ figure 4


def _iperf_listening(lab: Lab) -> bool:
    out = lab.run(lab.ns_inet, "ss", "-Hltn", f"sport = :{IPERF_PORT}", check=False).stdout
    return bool(out.strip())


def iperf(lab: Lab, seconds: float, attempts: int = 3) -> float:
    """One iperf3 TCP run LAN -> internet server; received bits per second."""
    server = lab.spec.server_addresses[0]
    last = ""
    for _ in range(attempts):
        proc = lab.run(lab.ns_lan, "iperf3", "-c", server, "-p", str(IPERF_PORT), "-t",
                       f"{seconds:g}", "-J", check=False, timeout=seconds + 30)
        try:
            data = json.loads(proc.stdout)
            if "error" not in data:
                return float(data["end"]["sum_received"]["bits_per_second"])
            last = data["error"]
        except (ValueError, KeyError) as exc:
            last = f"{exc}: {proc.stderr.strip()[-300:]}"
        wait_until(lambda: _iperf_listening(lab), 10, "iperf3 server listening")
    raise RuntimeError(f"iperf3 failed {attempts} times: {last}")


@dataclass
class Throughput:
    """Bits per second per router config, measured in interleaved rounds."""

    a: list[float] = field(default_factory=list)
    """ecmpd running (its ruleset and route)."""
    b: list[float] = field(default_factory=list)
    """A NAT gateway: one default route, one masquerade rule."""
    c: list[float] = field(default_factory=list)
    """Plain routing, no nft."""


def throughput(lab: Lab, rounds: int, seconds: float) -> Throughput:
    """`rounds` rounds of A, B, C (order reversed every other round, against drift)."""
    res = Throughput()
    server = lab.popen(lab.ns_inet, "iperf3", "-s", "-p", str(IPERF_PORT),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _iperf_listening(lab), 10, "iperf3 server listening")
        open_plain_path(lab, True)
        for i in range(rounds):
            for which in ("abc" if i % 2 == 0 else "cba"):
                if which == "a":
                    d = start_ecmpd(lab)
                    try:
                        res.a.append(iperf(lab, seconds))
                    finally:
                        stop_ecmpd(lab, d)
                    continue
                (program_natgw if which == "b" else program_plain)(lab)
                try:
                    getattr(res, which).append(iperf(lab, seconds))
                finally:
                    unprogram(lab)
    finally:
        open_plain_path(lab, False)
        server.kill()
        server.wait()
    return res


# ------------------------------------------------------------------ figure 5


@dataclass
class Usage:
    """ecmpd's CPU (% of one core) per window and its peak RSS (MB) at each window's end."""

    wans: int
    cpu: list[float]
    hwm_mb: list[float]
    rss_mb: float


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def usage(lab: Lab, seconds: float, windows: int = 3,
          config: dict[str, Any] | None = None) -> Usage:
    """Run ecmpd at defaults (or on `config`; every WAN up, no traffic) for `seconds`, in
    `windows` consecutive windows; CPU from /proc/<pid>/stat, peak RSS from VmHWM."""
    d = start_ecmpd(lab, config=config)
    try:
        assert d.proc is not None
        pid = d.proc.pid
        cmdline = _read(f"/proc/{pid}/cmdline")
        if "ecmpd.ecmpd_command" not in cmdline:
            raise RuntimeError(f"pid {pid} is not ecmpd: {cmdline!r}")
        clk = os.sysconf("SC_CLK_TCK")
        cpu, hwm = [], []
        t0, ticks0 = time.monotonic(), stats.proc_cpu_ticks(_read(f"/proc/{pid}/stat"))
        for _ in range(windows):
            time.sleep(seconds / windows)  # the measurement window itself
            t1, ticks1 = time.monotonic(), stats.proc_cpu_ticks(_read(f"/proc/{pid}/stat"))
            cpu.append(stats.cpu_percent(ticks0, ticks1, t1 - t0, clk))
            hwm.append(stats.proc_status_kb(_read(f"/proc/{pid}/status"), "VmHWM") / 1024)
            t0, ticks0 = t1, ticks1
        rss = stats.proc_status_kb(_read(f"/proc/{pid}/status"), "VmRSS") / 1024
        if any(w["state"] != "up" for w in d.status()["wans"].values()):
            raise RuntimeError("a WAN left UP during the CPU measurement")
    finally:
        stop_ecmpd(lab, d)
    return Usage(len(lab.spec.wans), cpu, hwm, rss)


# ------------------------------------------------------------------ figure 6


@dataclass
class Reaction:
    """Milliseconds from a DOWN decision to the kernel route without that nexthop."""

    inside: list[float]
    """ecmpd's own stats.reaction_ms (decision -> netlink ACK)."""
    outside: list[float]
    """Daemon log line of the decision (epoch µs) -> ``ip -ts monitor`` route event."""


def reaction(lab: Lab, events: int) -> Reaction:
    """`events` dead/heal cycles, rotating over the WANs, with ecmpd at defaults."""
    if events * 2 > 190:
        raise ValueError("ecmpd keeps the last 200 reactions: at most 95 events")
    names = [w.name for w in lab.spec.wans]
    mon_out = tempfile.TemporaryFile()
    mon = lab.popen(lab.ns_router, "ip", "-ts", "monitor", "route", stdout=mon_out,
                    stderr=subprocess.DEVNULL)
    inside: list[float] = []
    d = start_ecmpd(lab, cls=EpochEcmpd)
    try:
        reactions = lambda: d.status()["stats"]["reaction_ms"]  # noqa: E731
        seen = len(reactions())
        for k in range(events):
            wan = names[k % len(names)]
            lab.fault(wan, "dead")
            wait_routed(lab, set(names) - {wan}, 10)   # the kernel, not the daemon, is polled
            wait_until(lambda: len(reactions()) > seen, 5, "a new reaction", step=0.1)
            inside.append(reactions()[seen])
            lab.heal(wan)
            wait_routed(lab, set(names), 15)
            wait_until(lambda: len(reactions()) >= seen + 2, 5, "the UP reaction", step=0.1)
            seen = len(reactions())
        log = d.log()
    finally:
        stop_ecmpd(lab, d)
        mon.terminate()
        mon.wait()
    mon_out.seek(0)
    events_ = stats.parse_monitor(mon_out.read().decode(errors="replace"))
    mon_out.close()
    gateways = {w.name: w.gateway for w in lab.spec.wans}
    outside = []
    for at, wan in stats.down_decisions(log):
        done = stats.first_after(stats.main_route_without(events_, gateways[wan]), at)
        if done is not None:
            outside.append((done - at) * 1000)
    return Reaction(inside, outside)


# ------------------------------------------------------------------ figure 7


def _ecmpctl() -> list[str]:
    exe = shutil.which("ecmpctl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "ecmpd.ecmpctl_command"]


@dataclass
class StatusTimes:
    """Milliseconds of `ecmpctl status` and of the bare status request."""

    cli: list[float]
    """The installed command, a new process each time (from the host; the socket is a path)."""
    request: list[float]
    """One request on the control socket, empty conntrack table."""
    loaded: list[float]
    """One request with `entries` conntrack entries in the router."""
    entries: int
    hwm_mb: tuple[float, float]
    """ecmpd's VmHWM before and after the loaded requests."""


def _request_ms(sock: str) -> float:
    t = time.monotonic()
    if not request(sock, {"cmd": "status"}).get("ok"):
        raise RuntimeError("status request failed")
    return (time.monotonic() - t) * 1000


def status_times(lab: Lab, cli_runs: int, requests: int, flows: int = 3000) -> StatusTimes:
    """Time `ecmpctl status`, then the request alone, idle and after `flows` new flows."""
    d = start_ecmpd(lab)
    try:
        assert d.proc is not None
        hwm = lambda: stats.proc_status_kb(_read(f"/proc/{d.proc.pid}/status"),  # noqa: E731
                                           "VmHWM") / 1024
        argv = _ecmpctl() + ["--socket", d.socket, "status"]
        cli = []
        for _ in range(cli_runs):
            t = time.monotonic()
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
            cli.append((time.monotonic() - t) * 1000)
        idle = [_request_ms(d.socket) for _ in range(requests)]
        lab.new_flows(flows, timeout=3.0)
        out = lab.run(lab.ns_router, "conntrack", "-C").stdout.strip()
        before = hwm()
        loaded = [_request_ms(d.socket) for _ in range(5)]
        return StatusTimes(cli, idle, loaded, int(out or 0), (before, hwm()))
    finally:
        stop_ecmpd(lab, d)
