"""systemd/ecmpd.service under a real systemd (PID 1 of a systemd-nspawn container).

The container boots the host's own /usr (see systemd_harness/machine.py) in a network
namespace of its own, where a fake ISP namespace and the WAN links are built.  The unit
file is installed unchanged; a drop-in only points ExecStart=/ExecReload= at this
checkout (the interpreter, the venv's site-packages and the source, bound read-only
under /opt, since ProtectHome= hides /root and /home).  The manager logs at debug level
so that the journal shows every sd_notify message it accepted.

Order matters: the tests share one container and one ecmpd; the first starts it, the
last stops it.  Each test that needs the daemon running starts it if it is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Callable, Iterator

import pytest

from systemd_harness import Machine, skip_reason, wait_until

SKIP = skip_reason()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

SRC = Path(__file__).resolve().parent.parent
UNIT = SRC / "systemd" / "ecmpd.service"
OPT = "/opt/ecmpd-test"
SERVICE = "ecmpd.service"

CONFIG = """\
lan:
  interfaces: [Local]
wans:
  wlan1: {{interface: wlan1, gateway: 10.111.0.1, weight: {w1}}}
  wlan2: {{interface: wlan2, gateway: 10.112.0.1, weight: 5}}
probe: {{targets: [gateway], interval: 200ms}}
hash: l4
"""

TOPOLOGY = """\
ip link set lo up
ip netns add isp
ip -n isp link set lo up
ip link add wlan1 type veth peer name gw1 netns isp
ip link add wlan2 type veth peer name gw2 netns isp
ip link add Local type veth peer name lanpeer
ip addr add 10.111.0.2/24 dev wlan1
ip addr add 10.112.0.2/24 dev wlan2
ip addr add 192.168.0.1/24 dev Local
ip -n isp addr add 10.111.0.1/24 dev gw1
ip -n isp addr add 10.112.0.1/24 dev gw2
for i in wlan1 wlan2 Local lanpeer; do ip link set "$i" up; done
ip -n isp link set gw1 up
ip -n isp link set gw2 up
"""


def python_runtime() -> tuple[list[tuple[str, str, bool]], str, dict[str, str]]:
    """Binds, interpreter path (inside) and environment that run this checkout's ecmpd."""
    binds = [(str(SRC), f"{OPT}/src", False)]
    path = [f"{OPT}/src"]
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    paths = sysconfig.get_paths()
    for i, lib in enumerate(dict.fromkeys(os.path.realpath(paths[k])
                                          for k in ("purelib", "platlib"))):
        binds.append((lib, f"{OPT}/site{i}", False))
        path.append(f"{OPT}/site{i}")
    exe = f"bin/python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    if base.parts[1:2] == ("usr",):  # /usr is the container's own
        python = str(base / exe)
    else:
        binds.append((str(base), f"{OPT}/python", False))
        python = f"{OPT}/python/{exe}"
        env["LD_LIBRARY_PATH"] = f"{OPT}/python/lib"
    env["PYTHONPATH"] = ":".join(path)
    return binds, python, env


def drop_in(unit: str, python: str, env: dict[str, str]) -> str:
    """A drop-in pointing the unit's ecmpd/ecmpctl commands at `python -m ...`."""
    lines = ["[Service]"]
    for key in ("ExecStart", "ExecReload"):
        values = re.findall(rf"^{key}=(.*)$", unit, flags=re.M)
        assert len(values) == 1, f"expected one {key}= in the unit, found {values}"
        new = re.sub(r"^\S*/ecmpd(?=\s|$)", f"{python} -m ecmpd.ecmpd_command", values[0])
        new = re.sub(r"^\S*/ecmpctl(?=\s|$)", f"{python} -m ecmpd.ecmpctl_command", new)
        if new != values[0]:
            lines += [f"{key}=", f"{key}={new}"]
    lines.append("Environment=" + " ".join(f'"{k}={v}"' for k, v in env.items()))
    return "\n".join(lines) + "\n"


def is_notify(line: str, pid: int, field: str) -> bool:
    """Whether `line` is the manager's debug message for an sd_notify from `pid` that
    carries `field` (e.g. ``READY=1``)."""
    m = re.search(rf"Got notification message from PID {pid} \((.*)\)$", line)
    return bool(m) and field in m.group(1).split(", ")


class Setup:
    """The booted container plus what the tests need to drive ecmpd in it."""

    def __init__(self, machine: Machine, config: Path, python: str, env: dict[str, str]):
        self.m = machine
        self.config = config
        self.python = python
        self.env = env

    def write_config(self, w1: int | str) -> None:
        """Write the test config with wlan1's weight `w1` (a reload applies it)."""
        self.config.write_text(CONFIG.format(w1=w1))

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.m.run(self.python, "-m", "ecmpd.ecmpctl_command", *args, env=self.env, check=check)

    def status(self) -> dict:
        """`ecmpctl status --json`, run inside the container."""
        return json.loads(self.ctl("status", "--json").stdout)

    def route(self) -> str:
        """ecmpd's multipath default route in the container (table `tables.base`)."""
        return self.m.run("ip", "route", "show", "default", "table", "1000").stdout

    def ensure_running(self) -> int:
        """Start ecmpd if it is not running; its MainPID."""
        self.m.run("systemctl", "reset-failed", SERVICE, check=False)
        self.m.run("systemctl", "start", SERVICE)
        return int(self.m.show(SERVICE, "MainPID")["MainPID"])

    def mark(self) -> int:
        """The length of the unit's journal now, for `since()`."""
        return len(self.m.journal(SERVICE))

    def since(self, mark: int) -> list[str]:
        """The unit's journal lines that came after `mark`."""
        return self.m.journal(SERVICE)[mark:]

    def notified(self, mark: int, field: str, pid: int) -> list[str]:
        """The sd_notify messages with `field` the manager got from `pid` since `mark`."""
        return [ln for ln in self.since(mark) if is_notify(ln, pid, field)]


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("systemd-real")
    units, etc = work / "system", work / "etc-ecmpd"
    (units / f"{SERVICE}.d").mkdir(parents=True)
    etc.mkdir()
    binds, python, env = python_runtime()
    unit = UNIT.read_text()
    shutil.copyfile(UNIT, units / SERVICE)
    (units / f"{SERVICE}.d" / "50-test-paths.conf").write_text(drop_in(unit, python, env))
    binds.append((str(etc), "/etc/ecmpd", False))
    with Machine(work, units, binds) as machine:
        setup = Setup(machine, etc / "ecmpd.yaml", python, env)
        setup.write_config(1)
        machine.sh(TOPOLOGY)
        machine.run("systemd-analyze", "log-level", "debug")
        yield setup
        try:  # shown by pytest when a test failed (-rA / on error)
            journal = machine.journal(SERVICE)
            print(f"--- journal of {SERVICE} (last 60 of {len(journal)} lines)")
            print("\n".join(journal[-60:]))
        except Exception as exc:
            print(f"no journal: {exc}")


def test_start_waits_for_ready(sd: Setup):
    m = sd.m
    assert m.show(SERVICE, "ActiveState")["ActiveState"] == "inactive"
    mark = sd.mark()
    m.run("systemctl", "start", SERVICE)  # Type=notify: returns after READY=1
    p = m.show(SERVICE, "ActiveState", "SubState", "MainPID", "StatusText", "Type")
    assert (p["ActiveState"], p["SubState"], p["Type"]) == ("active", "running", "notify")
    assert re.fullmatch(r"\d/2 WANs active", p["StatusText"]), p
    # READY=1 comes after the first apply: the route is there when `start` returns.
    route = sd.route()
    assert "nexthop via 10.111.0.1 dev wlan1 weight 1" in route, route
    assert "nexthop via 10.112.0.1 dev wlan2 weight 5" in route, route
    pid = int(p["MainPID"])
    wait_until(lambda: sd.notified(mark, "READY=1", pid), 10, "READY=1 in the journal")


def test_runs_inside_the_sandbox(sd: Setup):
    m = sd.m
    pid = sd.ensure_running()
    status = dict(ln.split(":\t", 1) for ln in
                  m.run("cat", f"/proc/{pid}/status").stdout.splitlines() if ":\t" in ln)
    net_admin_raw = 1 << 12 | 1 << 13
    assert int(status["CapBnd"], 16) == net_admin_raw
    assert int(status["CapAmb"], 16) == net_admin_raw
    assert (status["NoNewPrivs"].strip(), status["Seccomp"].strip()) == ("1", "2")
    mounts = {f[4]: f[5].split(",") for f in
              (ln.split() for ln in m.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines())}
    assert "ro" in mounts["/proc/sys"] and "rw" in mounts["/proc/sys/net"]
    assert "ro" in mounts["/usr"]
    # ...and the net.* tunables it needs were written from inside it.
    sysctl = m.run("sysctl", "-n", "net.ipv4.fib_multipath_hash_policy",
                   "net.ipv4.conf.wlan1.forwarding", "net.ipv4.conf.Local.forwarding")
    assert sysctl.stdout.split() == ["1", "1", "1"]
    assert "table inet ecmpd" in m.run("nft", "list", "tables").stdout
    assert any(ln.startswith(f"ecmpd {pid} running") for ln in m.output(pid))
    assert m.output(pid, priority="warning") == []


def test_ecmpctl_reaches_the_daemon(sd: Setup):
    pid = sd.ensure_running()

    def all_up() -> dict | None:
        s = sd.status()
        return s if all(w["state"] == "up" for w in s["wans"].values()) else None

    st = wait_until(all_up, 20, "both WANs UP")
    assert st["pid"] == pid and st["config"] == "/etc/ecmpd/ecmpd.yaml"
    assert st["route"]["present"] and st["warnings"] == []


def test_reload_is_synchronous(sd: Setup):
    m = sd.m
    pid = sd.ensure_running()
    sd.write_config(3)
    mark = sd.mark()
    m.run("systemctl", "reload", SERVICE)
    # `systemctl reload` returned: the new weight must already be in the kernel.
    assert "nexthop via 10.111.0.1 dev wlan1 weight 3" in sd.route()
    p = m.show(SERVICE, "ActiveState", "SubState", "MainPID", "ReloadResult")
    assert p == {"ActiveState": "active", "SubState": "running", "MainPID": str(pid),
                 "ReloadResult": "success"}

    def reloaded() -> list[str] | None:
        lines = sd.since(mark)
        return lines if any(ln.startswith("Reloaded ") for ln in lines) else None

    lines = wait_until(reloaded, 10, "'Reloaded' in the journal")

    def at(match: Callable[[str], bool]) -> int:
        return next(i for i, ln in enumerate(lines) if match(ln))

    reloading = at(lambda ln: is_notify(ln, pid, "RELOADING=1"))
    ready = at(lambda ln: is_notify(ln, pid, "READY=1"))
    done = at(lambda ln: ln.startswith("Reloaded "))
    assert reloading < ready < done, "\n".join(lines)


def test_refused_reload_fails_and_keeps_running(sd: Setup):
    m = sd.m
    pid = sd.ensure_running()
    before = sd.route()
    sd.write_config("0")  # weight 0 is out of range
    try:
        mark = len(m.output(pid))
        r = m.run("systemctl", "reload", SERVICE, check=False)
        assert r.returncode != 0, r.stdout + r.stderr
        p = m.show(SERVICE, "ActiveState", "MainPID", "ReloadResult")
        assert p == {"ActiveState": "active", "MainPID": str(pid), "ReloadResult": "exit-code"}
        assert sd.route() == before
        wait_until(lambda: any("reload refused" in ln for ln in m.output(pid)[mark:]),
                   10, "'reload refused' in the journal")
    finally:
        sd.write_config(1)
    m.run("systemctl", "reload", SERVICE)
    assert "nexthop via 10.111.0.1 dev wlan1 weight 1" in sd.route()


def test_watchdog_kills_and_restarts_a_hung_daemon(sd: Setup):
    m = sd.m
    pid = sd.ensure_running()
    p = m.show(SERVICE, "WatchdogUSec", "WatchdogTimestampMonotonic", "NRestarts")
    assert p["WatchdogUSec"] == "10s"
    first = p["WatchdogTimestampMonotonic"]
    wait_until(lambda: m.show(SERVICE, "WatchdogTimestampMonotonic")
               ["WatchdogTimestampMonotonic"] != first, 20, "a WATCHDOG=1 keep-alive")
    restarts = int(p["NRestarts"])
    mark = sd.mark()
    m.run("kill", "-STOP", str(pid))  # the loop stops: no more WATCHDOG=1

    def restarted() -> dict[str, str] | None:
        q = m.show(SERVICE, "NRestarts", "ActiveState", "MainPID")
        ok = (int(q["NRestarts"]) == restarts + 1 and q["ActiveState"] == "active"
              and q["MainPID"] not in ("0", str(pid)))
        return q if ok else None

    new = wait_until(restarted, 60, "systemd to kill and restart the stopped daemon")
    journal = sd.since(mark)
    assert any("Watchdog timeout" in ln for ln in journal), "\n".join(journal)
    assert any("Failed with result 'watchdog'" in ln for ln in journal), "\n".join(journal)
    # The new daemon adopts what the killed one left and serves the control socket.
    assert sd.status()["pid"] == int(new["MainPID"])
    assert "nexthop via 10.112.0.1 dev wlan2 weight 5" in sd.route()


def test_journalctl_wan_is_a_wans_history(sd: Setup):
    """Each state change is a journal entry with WAN=, STATE=, PREVIOUS=, REASON=,
    FAMILY=: a lost carrier and its return, read back with ``journalctl WAN=wlan1``."""
    m = sd.m
    sd.ensure_running()

    def entries() -> list[dict]:
        out = m.run("journalctl", "--no-pager", "--output=json", "WAN=wlan1").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    wait_until(lambda: any(e["STATE"] == "up" for e in entries()), 20, "wlan1 up")
    before = len(entries())
    m.run("ip", "-n", "isp", "link", "set", "gw1", "down")     # wlan1's carrier goes
    wait_until(lambda: any(e["STATE"] == "down" for e in entries()[before:]), 10, "down")
    m.run("ip", "-n", "isp", "link", "set", "gw1", "up")
    wait_until(lambda: any(e["STATE"] == "up" for e in entries()[before:]), 20, "up again")
    new = entries()[before:]
    changes = [(e["PREVIOUS"], e["STATE"]) for e in new]
    # (a RISING WAN whose probe is lost on a loaded host goes DOWN again first)
    assert changes[0] == ("up", "down") and changes[-1] == ("rising", "up"), changes
    assert all(a[1] == b[0] for a, b in zip(changes, changes[1:])), changes   # a chain
    down = new[0]
    assert (down["FAMILY"], down["INTERFACE"], down["PRIORITY"], down["ACTIVE"]) == \
        ("ipv4", "wlan1", "4", "0")
    assert "carrier" in down["REASON"] and down["SYSLOG_IDENTIFIER"] == "ecmpd"
    # sent by the unit's main process.  journald names the unit of a datagram from the
    # sender's cgroup: this container, without cgroup delegation, sometimes has the
    # service's processes in init.scope, so the unit's own journal (-u) may lack it
    main_pid = m.run("systemctl", "show", "-p", "MainPID", "--value", SERVICE).stdout.strip()
    assert down["_PID"] == main_pid and down.get("_SYSTEMD_UNIT") in (SERVICE, "init.scope")
    assert down["MESSAGE"].startswith("wlan1: UP -> DOWN")  # the usual line, once:
    said = m.run("journalctl", "--no-pager", "-o", "cat", f"_PID={main_pid}").stdout
    assert sum(line.startswith("wlan1: UP -> DOWN") for line in said.splitlines()) == 1
    assert all(e["WAN"] == "wlan1" for e in entries())


def test_security_exposure_under_the_manager(sd: Setup):
    sd.ensure_running()
    out = sd.m.run("systemd-analyze", "security", "--no-pager", SERVICE).stdout
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert score, out[-1000:]
    print(f"systemd-analyze security (live manager): {score.group(1)}")
    assert float(score.group(1)) <= 3.0


def test_stop_removes_everything(sd: Setup):
    m = sd.m
    pid = sd.ensure_running()
    mark = sd.mark()
    m.run("systemctl", "stop", SERVICE)
    p = m.show(SERVICE, "ActiveState", "Result")
    assert p == {"ActiveState": "inactive", "Result": "success"}
    assert m.run("ip", "route", "show", "proto", "236").stdout.strip() == ""
    assert m.run("ip", "route", "show", "table", "all", "proto", "236").stdout.strip() == ""
    assert "lookup 1001" not in m.run("ip", "rule").stdout
    assert "ecmpd" not in m.run("nft", "list", "tables").stdout
    # (No sysctl check: this daemon started after the watchdog killed the first one, so
    # the values it found, and restored, were already ecmpd's.)
    wait_until(lambda: sd.notified(mark, "STOPPING=1", pid), 10, "STOPPING=1 in the journal")
