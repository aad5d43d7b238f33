"""Tests for ecmpd.ecmpctl_command: main() against a fake daemon (a ControlServer in a subprocess)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ecmpd.ecmpctl_command import human_duration, main, render_status

NOW = 1764000100.0

SAMPLE = {
    "pid": 123, "config": "/etc/ecmpd/ecmpd.yaml", "uptime": 192.4, "hash": "l4",
    "wans": {
        "wlan1": {"state": "up", "since": NOW - 12, "reason": "2/2 targets answered",
                  "interface": "wlan1", "gateway": "10.111.0.1", "address": "10.111.0.2",
                  "weight": 1, "active": True, "disabled": False, "carrier": True,
                  "mark": "0x10000", "table": 1001, "connections": 17,
                  "last_round": "probes late, traffic flowing", "verdict": "slow",
                  "timeout_ms": 1850.5,
                  "targets": {"10.111.0.1": {"loss_pct": 0.0, "rtt_ms": 0.21, "srtt_ms": 640.0},
                              "192.0.2.9": {"loss_pct": 33.3333, "rtt_ms": 12.5}}},
        "wlan2": {"state": "down", "since": NOW - 185, "reason": "0/1 targets answered",
                  "interface": "wlan2", "gateway": "10.112.0.1", "weight": 2,
                  "last_round": "0/1 answered",
                  "active": False, "disabled": True, "carrier": False, "connections": 0,
                  "targets": {"10.112.0.1": {"loss_pct": 100.0, "rtt_ms": None}}},
    },
    "route": {"present": True, "kept_last": True,
              "nexthops": [{"gateway": "10.111.0.1", "interface": "wlan1", "weight": 1}]},
    "warnings": ["all WANs are down: keeping the last route"],
    "stats": {"reconciles": 7, "changes": 2},
}

FAKE_DAEMON = r"""
import asyncio, json, sys
from ecmpd.control_server import ControlError, ControlServer

path, answers = sys.argv[1], json.loads(sys.argv[2])

async def handler(req):
    ans = answers.get(req["cmd"])
    if ans is None:
        raise ControlError(f"fake: no answer for {req['cmd']}")
    if "wan" in req:
        ans = {k: (v.replace("{wan}", req["wan"]).replace("{force}", str(req.get("force")))
                   if isinstance(v, str) else v)
               for k, v in ans.items()}
    return ans

async def feed(srv, events, close, repeat):
    # monitor events: published once a monitor is connected; then the server closes
    # (close), or they repeat every 50 ms while one is connected (repeat)
    while len(srv.monitors) == 0:
        await asyncio.sleep(0.01)
    while True:
        for e in events:
            srv.publish(e["wan"], e)
        if close:
            await srv.close()
            return
        if not repeat:
            return
        await asyncio.sleep(0.05)
        if len(srv.monitors) == 0:
            return

async def main():
    srv = ControlServer(path, handler)
    await srv.start()
    events = answers.pop("events", None)
    if events:
        asyncio.get_running_loop().create_task(
            feed(srv, events, answers.pop("close", False), answers.pop("repeat", False)))
    print("ready", flush=True)
    gone = asyncio.Event()  # the test closed our stdin (or died): stop

    class Watch(asyncio.Protocol):
        def connection_lost(self, exc):
            gone.set()

    await asyncio.get_running_loop().connect_read_pipe(Watch, sys.stdin)
    await gone.wait()
    await srv.close()

asyncio.run(main())
"""


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="ecmpctl-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_daemon(sockdir):
    """Start a fake daemon answering from a {cmd: payload} table; yields its socket path."""
    procs: list[subprocess.Popen] = []

    def start(answers: dict) -> str:
        path = os.path.join(sockdir, "ecmpd.sock")
        p = subprocess.Popen([sys.executable, "-c", FAKE_DAEMON, path, json.dumps(answers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready and p.stdout.readline() == "ready\n", "fake daemon did not start"
        return path

    yield start
    for p in procs:
        p.stdin.close()
        p.stdout.close()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_status_text(fake_daemon, capsys):
    path = fake_daemon({"status": SAMPLE})
    assert main(["--socket", path, "status"]) == 0
    out = capsys.readouterr().out
    # at a glance: one line per WAN, the route, the warnings; no internals
    assert out.startswith("ecmpd: pid 123, config /etc/ecmpd/ecmpd.yaml, up 3m12s\n")
    assert "\nWAN    STATE     SINCE" in out and "stats" not in out and "srtt" not in out
    assert "via 10.111.0.1 dev wlan1 weight 1" in out
    assert "warning: all WANs are down: keeping the last route" in out
    assert main(["--socket", path, "status", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ecmpd: pid 123, config /etc/ecmpd/ecmpd.yaml, up 3m12s, hash l4\n")
    assert "wan: wlan1" in out and "state: UP, since" in out
    assert "10.111.0.1  rtt 0.21ms  srtt 640.00ms  loss 0%" in out
    assert "  last round (slow): probes late, traffic flowing" in out
    assert "  reply timeout: 1850.50ms" in out
    assert "state: DISABLED" in out
    assert "via 10.111.0.1 dev wlan1 weight 1" in out
    assert "warning: all WANs are down: keeping the last route" in out


def test_status_json(fake_daemon, capsys):
    path = fake_daemon({"status": SAMPLE})
    assert main(["--socket", path, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == SAMPLE  # "ok" stripped


def test_commands_send_arguments(fake_daemon, capsys):
    path = fake_daemon({"reload": {"message": "reloaded"},
                        "disable": {"message": "{wan} disabled"},
                        "enable": {}})
    assert main(["--socket", path, "reload"]) == 0
    assert main(["--socket", path, "disable", "wlan2"]) == 0
    assert main(["--socket", path, "enable", "wlan2"]) == 0
    assert capsys.readouterr().out == "reloaded\nwlan2 disabled\n"


def test_disable_force_is_sent_only_when_given(fake_daemon, capsys):
    path = fake_daemon({"disable": {"message": "{wan} force={force}"}})
    assert main(["--socket", path, "disable", "wlan2"]) == 0
    assert main(["--socket", path, "disable", "--force", "wlan2"]) == 0
    assert capsys.readouterr().out == "wlan2 force=None\nwlan2 force=True\n"


def test_enable_disable_without_message(fake_daemon, capsys):
    """The daemon answers {"wan": ..., "disabled": ...}: shown as one line."""
    path = fake_daemon({"disable": {"wan": "{wan}", "disabled": True},
                        "enable": {"wan": "{wan}", "disabled": False}})
    assert main(["--socket", path, "disable", "wlan2"]) == 0
    assert main(["--socket", path, "enable", "wlan2"]) == 0
    assert capsys.readouterr().out == "wlan2: disabled\nwlan2: enabled\n"


def test_daemon_error_exit_1(fake_daemon, capsys):
    path = fake_daemon({"status": SAMPLE})
    assert main(["--socket", path, "disable", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == "ecmpctl: fake: no answer for disable\n"


def test_not_running_exit_3(sockdir, capsys):
    path = os.path.join(sockdir, "ecmpd.sock")
    assert main(["--socket", path, "status"]) == 3
    assert capsys.readouterr().err == f"ecmpctl: ecmpd is not running (no socket at {path})\n"


def test_stale_socket_exit_3(sockdir, capsys):
    path = os.path.join(sockdir, "ecmpd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound but not listening: connection refused
    s.close()
    assert main(["--socket", path, "reload"]) == 3
    assert path in capsys.readouterr().err


def test_no_answer_exit_1(sockdir, capsys):
    path = os.path.join(sockdir, "ecmpd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)  # accepts in the kernel, never answers
    try:
        assert main(["--socket", path, "--timeout", "0.2", "status"]) == 1
    finally:
        s.close()
    assert "no answer from ecmpd" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["disable"], ["enable", "a", "b"], ["frobnicate"],
                                  ["status", "--yaml"], ["--timeout", "x", "status"]])
def test_usage_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "1e300", "86401"])
def test_a_timeout_not_in_0_to_a_day_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--socket", "/nonexistent/ecmpd.sock", "--timeout", value, "status"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--timeout: must be a number of seconds above 0 and at most 86400" in err
    assert "Traceback" not in err


def test_render_says_a_missing_interface_is_gone_not_without_carrier():
    """A PPP session's interface is deleted when the session ends: "carrier no" would
    send the admin looking for a cable."""
    sample = {**SAMPLE, "wans": {**SAMPLE["wans"], "wlan2": {
        **SAMPLE["wans"]["wlan2"], "interface": "ppp0", "link": "missing",
        "reason": "interface missing"}}}
    lines = render_status(sample, NOW, verbose=True).splitlines()
    w2 = lines.index("wan: wlan2")
    line = next(x for x in lines[w2:] if x.startswith("  interface:"))
    assert line == "  interface: ppp0 (no such interface)"
    plain = render_status(SAMPLE, NOW, verbose=True).splitlines()
    assert next(x for x in plain[w2:] if x.startswith("  interface:")) == \
        "  interface: wlan2, carrier no"


def test_render_sample():
    text = render_status(SAMPLE, NOW, verbose=True)
    lines = text.splitlines()
    assert lines[0] == "ecmpd: pid 123, config /etc/ecmpd/ecmpd.yaml, up 3m12s, hash l4"
    w1 = lines.index("wan: wlan1")
    assert lines[w1 + 1] == "  state: UP, since 12s ago (2/2 targets answered)"
    assert lines[w1 + 2] == "  last round (slow): probes late, traffic flowing"
    assert lines[w1 + 3] == "  reply timeout: 1850.50ms"
    assert lines[w1 + 4] == "  interface: wlan1, carrier yes"
    assert lines[w1 + 5] == "  gateway: 10.111.0.1, address 10.111.0.2"
    assert lines[w1 + 6] == "  weight: 1, active: yes, connections: 17"
    assert lines[w1 + 7] == "  mark: 0x10000, table: 1001"
    assert "    10.111.0.1  rtt 0.21ms  srtt 640.00ms  loss 0%" in lines
    assert "    192.0.2.9  rtt 12.50ms  srtt -  loss 33.3%" in lines
    w2 = lines.index("wan: wlan2")
    assert lines[w2 + 1] == \
        "  state: DISABLED (probes say DOWN), since 3m ago (0/1 targets answered)"
    assert lines[w2 + 3] == "  interface: wlan2, carrier no"
    assert lines[w2 + 5] == "  weight: 2, active: no, connections: 0"
    assert "    10.112.0.1  rtt -  srtt -  loss 100%" in lines
    assert "route: default proto ecmpd (kept: the last route while all WANs are down)" in lines
    assert "  via 10.111.0.1 dev wlan1 weight 1" in lines
    assert "stats: reconciles 7, changes 2" in lines
    assert lines[w2 + 2] == "  last round: 0/1 answered"
    assert lines[-1] == "warning: all WANs are down: keeping the last route"


def test_render_missing_and_odd_fields():
    assert render_status({}, NOW, True).splitlines()[0] == "ecmpd: pid ?, config ?, up ?, hash ?"
    odd = {"uptime": "soon", "wans": {"a": None, "b": {"since": "yesterday", "targets":
           {"x": None, "y": {"rtt_ms": "fast"}}}, "c": {"state": "up"}},
           "route": {"nexthops": [None, {"gateway": "10.0.0.1"}]}, "warnings": "not a list"}
    render_status(odd, NOW)                     # at a glance too: no exception
    text = render_status(odd, NOW, True)
    assert "wan: a\n  state: UNKNOWN, since ?" in text
    assert "    x  rtt -  srtt -  loss -" in text and "    y  rtt -  srtt -  loss -" in text
    assert "  via 10.0.0.1 dev ?\n" in text  # no weight known: none shown
    assert "warning" not in text
    assert "route: none" in render_status({"route": {"present": False}}, NOW)
    assert "route: unknown" in render_status({"wans": "x", "route": 5}, NOW)


def test_render_since_in_future_and_durations():
    text = render_status({"wans": {"a": {"state": "up", "since": NOW + 30}}}, NOW, True)
    assert "state: UP, since 0s ago" in text
    assert [human_duration(x) for x in (0, 59.9, 60, 3599, 3600, 86399, 90000)] == \
        ["0s", "59s", "1m00s", "59m59s", "1h00m", "23h59m", "1d01h"]
    assert human_duration(7440, coarse=True) == "2h"


def test_status_now_is_wall_clock(fake_daemon, capsys):
    payload = {"wans": {"a": {"state": "up", "since": time.time() - 7200}}}
    path = fake_daemon({"status": payload})
    assert main(["--socket", path, "status", "-v"]) == 0
    assert "since 2h ago" in capsys.readouterr().out
    assert main(["--socket", path, "status"]) == 0
    assert "(2h00m)" in capsys.readouterr().out


class ScriptedServer:
    """A Unix socket server in a thread: the n-th connection gets `answers[n]` (bytes,
    sent after the request line arrives; the last one repeats), or `drip` bytes one by
    one, one every `drip_interval` seconds, never a newline."""

    def __init__(self, path: str, answers: list[bytes] | None = None, drip: bool = False,
                 drip_interval: float = 0.05) -> None:
        import threading
        self.answers = answers or []
        self.drip, self.drip_interval = drip, drip_interval
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                n, self.connections = self.connections, self.connections + 1
                conn.settimeout(5)
                try:
                    buf = b""
                    while b"\n" not in buf:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    if self.drip:
                        while not self.stop.is_set():
                            conn.sendall(b" ")
                            time.sleep(self.drip_interval)
                    else:
                        conn.sendall(self.answers[min(n, len(self.answers) - 1)])
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def __enter__(self) -> "ScriptedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_retries_while_the_control_socket_is_full(sockdir, capsys):
    from ecmpd.control_protocol import EVICTED, TOO_MANY
    from ecmpd.ecmpctl_command import RETRY_ERRORS

    assert set(RETRY_ERRORS) == {TOO_MANY, EVICTED}  # ctl keeps its own copy (no asyncio)
    path = os.path.join(sockdir, "ecmpd.sock")
    full = json.dumps({"ok": False, "error": TOO_MANY}).encode() + b"\n"
    evicted = json.dumps({"ok": False, "error": EVICTED}).encode() + b"\n"
    answers = [full, evicted, full, b'{"ok": true, "message": "reloaded"}\n']
    with ScriptedServer(path, answers) as srv:
        assert main(["--socket", path, "reload"]) == 0
    assert srv.connections == 4
    assert capsys.readouterr().out == "reloaded\n"


def test_full_until_the_timeout_is_an_error(sockdir, capsys):
    path = os.path.join(sockdir, "ecmpd.sock")
    with ScriptedServer(path, [b'{"ok": false, "error": "too many clients"}\n']) as srv:
        t0 = time.monotonic()
        assert main(["--socket", path, "--timeout", "0.5", "status"]) == 1
    assert time.monotonic() - t0 < 1.5
    assert srv.connections >= 3
    assert capsys.readouterr().err == "ecmpctl: too many clients\n"


def test_timeout_bounds_the_whole_exchange(sockdir, capsys):
    """A daemon dripping bytes without ever finishing its line cannot hold ecmpctl
    beyond --timeout (the timeout is a deadline, not a per-recv limit)."""
    path = os.path.join(sockdir, "ecmpd.sock")
    with ScriptedServer(path, drip=True, drip_interval=0.05):
        t0 = time.monotonic()
        assert main(["--socket", path, "--timeout", "0.5", "status"]) == 1
    assert time.monotonic() - t0 < 1.5
    assert "no answer from ecmpd within 0.5s" in capsys.readouterr().err


def _fill_backlog(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket nobody accepts on, its backlog full: a connect now must wait."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fillers = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return srv, fillers
        fillers.append(s)


def test_connect_waits_its_turn_while_the_backlog_is_full(sockdir, capsys):
    """A connection flood fills the daemon's listen backlog: ecmpctl waits in the
    kernel's queue (not EAGAIN at once) and is served when the daemon catches up."""
    import threading

    path = os.path.join(sockdir, "ecmpd.sock")
    srv, fillers = _fill_backlog(path)

    def catch_up() -> None:
        time.sleep(0.3)
        srv.settimeout(5)
        for _ in range(len(fillers) + 1):
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(0.2)
                try:
                    if b"\n" in conn.recv(4096):
                        conn.sendall(b'{"ok": true, "message": "reloaded"}\n')
                except OSError:
                    pass

    t = threading.Thread(target=catch_up)
    t.start()
    try:
        assert main(["--socket", path, "--timeout", "5", "reload"]) == 0
    finally:
        t.join(10)
        for s in fillers + [srv]:
            s.close()
    assert capsys.readouterr().out == "reloaded\n"


def test_a_backlog_that_stays_full_is_a_timeout(sockdir, capsys):
    path = os.path.join(sockdir, "ecmpd.sock")
    srv, fillers = _fill_backlog(path)
    t0 = time.monotonic()
    try:
        assert main(["--socket", path, "--timeout", "0.4", "status"]) == 1
    finally:
        for s in fillers + [srv]:
            s.close()
    assert 0.3 < time.monotonic() - t0 < 1.5
    assert "did not accept the connection" in capsys.readouterr().err


HISTORY = {"limit": 1000, "transitions": [
    {"wan": "wlan1", "family": "ipv4", "state": "down", "previous": "falling",
     "reason": "0/2 targets answered", "at": NOW - 98, "at_iso": "x", "lasted": 2.0,
     "active": False},
    {"wan": "wlan1", "family": "ipv4", "state": "rising", "previous": "down",
     "reason": "carrier back", "at": NOW - 40, "at_iso": "y", "lasted": 58.0,
     "active": False}]}


def test_history_text_and_json(fake_daemon, capsys):
    path = fake_daemon({"history": HISTORY})
    assert main(["--socket", path, "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "WAN", "CHANGE", "LASTED", "REASON"]
    assert "  wlan1  falling -> down  2s      0/2 targets answered" in lines[1]
    assert "  wlan1  down -> rising   58s     carrier back" in lines[2]
    assert main(["--socket", path, "history", "wlan1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == HISTORY


def test_monitor_json_prints_one_object_per_line_until_ecmpd_closes(fake_daemon, capsys):
    path = fake_daemon({"events": HISTORY["transitions"], "close": True})
    assert main(["--socket", path, "monitor", "--json"]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == HISTORY["transitions"]
    assert "ecmpd closed the monitor connection" in err


def test_monitor_human_lines(fake_daemon, capsys):
    path = fake_daemon({"events": HISTORY["transitions"], "close": True})
    assert main(["--socket", path, "monitor"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" wlan1 falling -> down: 0/2 targets answered (falling 2s), "
                             "out of the route")


def ecmpctl(*args: str, **kw) -> subprocess.Popen:
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "ecmpd.ecmpctl_command", *args],
                            stderr=subprocess.PIPE, **kw)


def test_monitor_ends_quietly_on_a_closed_pipe(fake_daemon):
    path = fake_daemon({"events": HISTORY["transitions"], "repeat": True})
    head = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    p = ecmpctl("--socket", path, "monitor", "--json", stdout=head.stdin)
    head.stdin.close()
    out = head.stdout.read()
    head.wait(30)
    assert json.loads(out) == HISTORY["transitions"][0]
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0 and err == b"", err


def test_monitor_ends_quietly_on_ctrl_c(fake_daemon):
    path = fake_daemon({"events": HISTORY["transitions"], "repeat": True})
    p = ecmpctl("--socket", path, "monitor")
    try:
        assert b"falling -> down" in p.stdout.readline()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0 and b"Traceback" not in err, err


@pytest.mark.parametrize("argv", [["role"], ["role", "king"], ["role", "master", "backup"]])
def test_role_takes_one_of_keepaliveds_states(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_role_prints_the_change_and_a_refusal_exits_1(fake_daemon, capsys):
    path = fake_daemon({"role": {"role": "master", "message": "role backup -> master"}})
    assert main(["--socket", path, "role", "master"]) == 0
    assert capsys.readouterr().out == "role backup -> master\n"
