"""The daemon's runtime, part 3: disable/enable, status against the lab's truth, a hostile
control socket, ecmpctl exit codes.  (Reloads: test_daemon_reload_lab.py; kill -9,
restart and foreign deletions: test_daemon_restart_lab.py.)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from ecmpd.control_protocol import EVICTED, MAX_REQUEST
from ecmpd.control_server import MAX_CLIENTS
from lab.runner import Ecmpd, config_for, kernel_hops
from lab.wait import until

WEIGHTS = {"wan1": 1, "wan2": 2, "wan3": 3}


@pytest.fixture
def daemon(lab3, tmp_path):
    """ecmpd on a 3-WAN lab (weights 1:2:3), every WAN up, servers started."""
    d = Ecmpd(lab3, config_for(lab3, weights=WEIGHTS), workdir=str(tmp_path))
    d.start()
    try:
        d.wait_states({w: "up" for w in WEIGHTS})
        lab3.start_servers()
        yield d
    finally:
        d.stop()


def status_hops(st: dict) -> set[tuple[str, str, int]]:
    return {(h["gateway"], h["interface"], h["weight"]) for h in st["route"]["nexthops"]}


def ct_counts(lab, marks: dict[str, int]) -> dict[str, int]:
    """conntrack entries per WAN (by mark under 0xff0000), from `conntrack -L`."""
    out = lab.run(lab.ns_router, "conntrack", "-L").stdout
    seen = Counter(int(m) & 0xFF0000 for m in re.findall(r"\bmark=(\d+)", out))
    return {name: seen.get(mark, 0) for name, mark in marks.items()}


@pytest.mark.lab
def test_disable_drains_survives_reload_and_enable_restores(lab3, daemon):
    held = lab3.hold_flows(90, byte_interval=0.1)
    assert held.wait_established() == 90
    res = daemon.ctl("disable", "wan2")
    assert res.stdout.strip() == "wan2: disabled"
    st = daemon.status()                       # the route is changed when ecmpctl returns
    assert st["wans"]["wan2"]["disabled"] and not st["wans"]["wan2"]["active"]
    assert st["wans"]["wan2"]["state"] == "disabled"
    assert st["wans"]["wan2"]["health"] == "up"         # the probes still run
    assert {h[1] for h in kernel_hops(lab3)} == {"wan1", "wan3"} == {h[1] for h in status_hops(st)}
    assert "DISABLED" in daemon.ctl("status").stdout
    new = lab3.new_flows(90, timeout=3.0)
    assert all(r.ok for r in new) and {r.wan for r in new} == {"wan1", "wan3"}
    # kept across a reload
    assert daemon.ctl("reload").returncode == 0
    st = daemon.status()
    assert st["wans"]["wan2"]["disabled"] and {h[1] for h in kernel_hops(lab3)} == {"wan1", "wan3"}
    # unknown WAN: exit 1, the daemon says which WANs it has
    bad = daemon.ctl("disable", "nope", check=False)
    assert bad.returncode == 1 and "no WAN named 'nope'" in bad.stderr and "wan2" in bad.stderr
    assert daemon.ctl("enable", "nope", check=False).returncode == 1
    # enable: back with its weight
    assert daemon.ctl("enable", "wan2").stdout.strip() == "wan2: enabled"
    st = daemon.status()
    assert not st["wans"]["wan2"]["disabled"] and st["wans"]["wan2"]["active"]
    assert kernel_hops(lab3) == {("10.101.0.1", "wan1", 1), ("10.102.0.1", "wan2", 2),
                                 ("10.103.0.1", "wan3", 3)}
    assert "wan2" in {r.wan for r in lab3.new_flows(90, timeout=3.0)}
    # the drained WAN's existing flows were never cut
    results = held.stop()
    assert Counter(r.wan for r in results)["wan2"] > 0
    broken = [r for r in results if r.broken]
    assert not broken, f"{len(broken)} held flows broke: {broken[:3]}"


@pytest.mark.lab
def test_status_json_matches_the_lab(lab3, daemon):
    held = lab3.hold_flows(60, byte_interval=0.2)
    assert held.wait_established() == 60
    marks = {name: i << 16 for i, name in enumerate(WEIGHTS, 1)}
    ct_before = ct_counts(lab3, marks)
    st = daemon.status()
    ct_after = ct_counts(lab3, marks)
    assert st["pid"] == daemon.proc.pid         # `ip netns exec` execs the daemon itself
    assert st["route"]["present"] and not st["route"]["kept_last"] and not st["warnings"]
    assert status_hops(st) == kernel_hops(lab3)
    assert set(st["wans"]) == set(WEIGHTS)
    for i, (name, weight) in enumerate(WEIGHTS.items(), 1):
        w = st["wans"][name]
        assert (w["interface"], w["gateway"], w["address"], w["weight"]) == \
            (name, f"10.{100 + i}.0.1", f"10.{100 + i}.0.2", weight)
        assert (w["mark"], w["table"]) == (hex(marks[name]), 1000 + i)
        assert w["state"] == "up" and w["active"] and w["carrier"] and not w["disabled"]
        assert list(w["targets"]) == [f"10.{100 + i}.0.1"]
        lo, hi = sorted((ct_before[name], ct_after[name]))
        assert lo - 2 <= w["connections"] <= hi + 2, (name, w["connections"], lo, hi)
    results = held.stop()
    per_wan = Counter(r.wan for r in results)
    for name in WEIGHTS:
        # every held TCP connection is one conntrack entry with its WAN's mark
        assert st["wans"][name]["connections"] >= per_wan[name] > 0, (name, per_wan)
    text = daemon.ctl("status", "-v").stdout
    for name in WEIGHTS:
        assert f"wan: {name}\n  state: UP" in text
    assert text.count("\n  via ") == 3
    glance = daemon.ctl("status").stdout.splitlines()      # one line per WAN
    for name in WEIGHTS:
        assert [line.split()[1] for line in glance if line.startswith(f"{name} ")] == ["UP"]


def exchange(path: str, data: bytes, answers: int | None, shut: bool = False) -> list[bytes]:
    """Send `data` on a new connection; read `answers` lines (None: until the server closes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    buf = b""
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while answers is None or buf.count(b"\n") < answers:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return buf.splitlines()


MALFORMED = [
    (b'{"cmd": "status"', "malformed JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"status"', "must be a JSON object"),
    (b'{"command": "status"}', 'needs a "cmd" string'),
    (b'{"cmd": "reboot"}', "unknown command 'reboot'"),
    (b'{"cmd": "disable"}', "missing argument 'wan'"),
    (b'{"cmd": "disable", "wan": 5}', "must be a str"),
    (b'{"cmd": "enable", "wan": ""}', "must not be empty"),
    (b'{"cmd": "enable", "wan": "wan1", "now": true}', "unexpected argument"),
    (b"\xff\xfe\x00garbage", "malformed JSON"),
    (b"[" * (MAX_REQUEST - 100), "malformed JSON"),        # too deep for the parser
]


@pytest.mark.lab
def test_malformed_control_requests_are_answered_and_harmless(lab3, daemon):
    path = daemon.socket
    # one connection, many bad lines (and a blank one): one error each, in order
    lines = b"\n".join(req for req, _ in MALFORMED) + b"\n\n" + b'{"cmd": "ping"}\n'
    answers = [json.loads(a) for a in exchange(path, lines, len(MALFORMED) + 1)]
    assert len(answers) == len(MALFORMED) + 1
    for (req, why), ans in zip(MALFORMED, answers):
        assert ans["ok"] is False and why in ans["error"], (req[:40], ans)
    assert answers[-1] == {"ok": True}
    # an oversized line: an error, then the server hangs up
    over = exchange(path, b'{"cmd": "' + b"x" * (MAX_REQUEST + 100) + b'"}\n', None)
    assert len(over) == 1 and "longer than" in json.loads(over[0])["error"]
    # half-open clients: a partial request then EOF gets a close; a whole one its answer
    assert exchange(path, b'{"cmd": "sta', None, shut=True) == []
    assert [json.loads(a) for a in exchange(path, b'{"cmd":"ping"}\n', None, shut=True)] \
        == [{"ok": True}]
    # a client that connects and leaves at once
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(path)
    # silent clients do not block others; beyond MAX_CLIENTS the one idle longest makes
    # room (and is told why)
    silent: list[socket.socket] = []
    try:
        for _ in range(MAX_CLIENTS):
            silent.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            silent[-1].connect(path)
            if len(silent) == 5:
                assert daemon.ctl("status", "--json").returncode == 0
        time.sleep(0.2)                        # all of them served (idle) by now
        answered = exchange(path, b'{"cmd": "ping"}\n', 1)
        assert [json.loads(a) for a in answered] == [{"ok": True}]
        silent[0].settimeout(5)
        assert json.loads(silent[0].recv(65536).splitlines()[0]) == \
            {"ok": False, "error": EVICTED}
    finally:
        for s in silent:
            s.close()
    assert "to make room" in daemon.log()
    until(lambda: exchange(path, b'{"cmd": "ping"}\n', 1) == [b'{"ok":true}'], 5,
          "the daemon to serve again")   # once the server has seen them go
    # afterwards: the daemon serves on, WANs up, nothing crashed
    st = daemon.status()
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values())
    assert status_hops(st) == kernel_hops(lab3)
    assert "Traceback" not in daemon.log()
    assert all(r.ok for r in lab3.new_flows(30, timeout=3.0))


@pytest.mark.lab
def test_status_while_reconciling_never_fails(lab3, daemon):
    """Pipelined status requests on one connection, disable/enable on another: the
    status's kernel read and the reconciles share one netlink socket (it used to fail
    with EBUSY, "internal error in status", when two dumps overlapped)."""
    statuses, toggles = 200, 60
    a, b = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
    try:
        for s in (a, b):
            s.settimeout(30)
            s.connect(daemon.socket)
        a.sendall(b'{"cmd": "status"}\n' * statuses)
        b.sendall(b"".join(b'{"cmd": "%s", "wan": "wan2"}\n' % (b"enable" if i % 2 else b"disable")
                           for i in range(toggles)))
        answers = []
        for s, n in ((a, statuses), (b, toggles)):
            buf = b""
            while buf.count(b"\n") < n:
                chunk = s.recv(1 << 20)
                assert chunk, "the daemon hung up"
                buf += chunk
            answers += [json.loads(x) for x in buf.splitlines()]
    finally:
        a.close()
        b.close()
    errors = [x["error"] for x in answers if not x["ok"]]
    assert not errors, f"{len(errors)} failed, e.g. {errors[:2]}"
    st = daemon.status()                 # the last toggle was an enable
    assert not st["wans"]["wan2"]["disabled"]
    assert {h[1] for h in kernel_hops(lab3)} == {"wan1", "wan2", "wan3"}


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecmpd.ecmpctl_command", *args], capture_output=True,
                          text=True, timeout=30)


def test_ecmpctl_exit_codes_without_a_daemon(tmp_path):
    missing = str(tmp_path / "nobody.sock")
    res = ctl("--socket", missing, "status")
    assert res.returncode == 3 and missing in res.stderr and "not running" in res.stderr
    stale = str(tmp_path / "stale.sock")            # a socket file nobody listens on
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    res = ctl("--socket", stale, "reload")
    assert res.returncode == 3 and stale in res.stderr
    assert ctl("--socket", missing, "disable").returncode == 2          # usage
    assert ctl("--socket", missing, "frobnicate").returncode == 2


@pytest.mark.lab
def test_ecmpctl_exit_code_3_after_the_daemon_stopped(lab3, daemon):
    assert daemon.ctl("status").returncode == 0
    assert daemon.stop() == 0
    res = daemon.ctl("status", check=False)
    assert res.returncode == 3 and daemon.socket in res.stderr, res


@pytest.mark.lab
def test_disabling_the_last_usable_wan_is_refused_unless_forced(make_lab, ecmpd_in):
    """Refused: exit 1, nothing changes and nothing is recorded.  `--force`: it takes
    effect, the route goes (no default route through ecmpd) and it is recorded."""
    lab = make_lab()
    d = ecmpd_in(lab)
    record = d.socket + ".disabled.json"
    lab.fault("wlan1", "dead")
    d.wait_states({"wlan1": "down"})
    res = d.ctl("disable", "wlan2", check=False)
    assert res.returncode == 1, res
    assert res.stderr == ("ecmpctl: wlan2 is the last usable WAN: disabling it would leave "
                          "no route; use --force\n")
    st = d.status()
    w2 = st["wans"]["wlan2"]
    assert not w2["disabled"] and w2["state"] == "up" and w2["active"]
    assert {h["interface"] for h in st["route"]["nexthops"]} == {"wlan2"}
    assert not os.path.exists(record) or json.loads(open(record).read()) == []
    res = d.ctl("disable", "--force", "wlan2")
    assert res.stdout == "wlan2: disabled (forced): ecmpd's route is gone\n"
    st = d.status()
    assert st["wans"]["wlan2"]["disabled"] and not st["wans"]["wlan2"]["active"]
    assert not st["route"]["present"] and not st["route"]["kept_last"]
    assert "no ecmpd route in the kernel" in st["warnings"]
    assert json.loads(open(record).read()) == ["wlan2"]
    assert "wlan2: disabled by the administrator, and no other WAN is usable" in d.log()
    assert d.ctl("enable", "wlan2").stdout.strip() == "wlan2: enabled"
    assert {h["interface"] for h in d.status()["route"]["nexthops"]} == {"wlan2"}
    lab.heal("wlan1")
    d.wait_states({"wlan1": "up"})
    # with another usable WAN, disabling is plain
    assert d.ctl("disable", "wlan2").stdout.strip() == "wlan2: disabled"
    assert {h["interface"] for h in d.status()["route"]["nexthops"]} == {"wlan1"}
