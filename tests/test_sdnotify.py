"""Tests for ecmpd.sdnotify against real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from ecmpd.sdnotify import START_STEP, Notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request):
    """A bound datagram socket standing in for systemd; yields (socket, NOTIFY_SOCKET)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.settimeout(10)
    d = tempfile.mkdtemp(prefix="ecmpd-sdn-", dir="/tmp")
    try:
        if request.param == "path":
            addr = os.path.join(d, "notify")
            s.bind(addr)
            yield s, addr
        else:
            name = f"ecmpd-test-{os.getpid()}-{time.monotonic_ns()}"
            s.bind(b"\0" + name.encode())
            yield s, "@" + name
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


def recv(s: socket.socket) -> dict[str, str]:
    data = s.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_messages(listener):
    s, addr = listener
    n = Notifier({"NOTIFY_SOCKET": addr})
    assert n.enabled
    assert n.ready()
    assert recv(s) == {"READY": "1"}
    assert n.ready("2 WANs up")
    assert recv(s) == {"READY": "1", "STATUS": "2 WANs up"}
    assert n.status("wan1 up\nwan2 down")
    assert recv(s) == {"STATUS": "wan1 up wan2 down"}
    assert n.stopping()
    assert recv(s) == {"STOPPING": "1"}
    assert n.watchdog()
    assert recv(s) == {"WATCHDOG": "1"}
    assert n.notify(errno=5, extend_timeout_usec=1000)
    assert recv(s) == {"ERRNO": "5", "EXTEND_TIMEOUT_USEC": "1000"}
    n.close()
    assert n.ready()  # reopens after close
    assert recv(s) == {"READY": "1"}
    n.close()


def test_starting_extends_the_start_timeout(listener):
    s, addr = listener
    n = Notifier({"NOTIFY_SOCKET": addr})
    assert n.starting("reading the kernel")
    assert recv(s) == {"STATUS": "starting: reading the kernel",
                       "EXTEND_TIMEOUT_USEC": str(int(START_STEP * 1e6))}
    assert n.starting("a\nb", allow=1.5)
    assert recv(s) == {"STATUS": "starting: a b", "EXTEND_TIMEOUT_USEC": "1500000"}
    n.close()
    assert Notifier({}).starting("x") is False


def test_reloading_carries_monotonic_usec(listener):
    s, addr = listener
    n = Notifier({"NOTIFY_SOCKET": addr})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    msg = recv(s)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    n.close()


def test_no_socket_is_noop():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.reloading() is False and n.watchdog() is False
    assert n.watchdog_interval() is None
    n.close()


def test_reads_os_environ(listener, monkeypatch):
    s, addr = listener
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    n = Notifier()
    assert n.ready()
    assert recv(s) == {"READY": "1"}
    n.close()


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_unsupported_addresses_are_noop(value):
    n = Notifier({"NOTIFY_SOCKET": value})
    assert not n.enabled and n.ready() is False


def test_send_errors_never_raise():
    d = tempfile.mkdtemp(prefix="ecmpd-sdn-", dir="/tmp")
    try:
        n = Notifier({"NOTIFY_SOCKET": os.path.join(d, "missing")})
        assert n.enabled
        assert n.ready() is False  # ENOENT swallowed
        n.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_full_receiver_does_not_block():
    """A receiver that never reads: sends fail with EAGAIN instead of blocking."""
    d = tempfile.mkdtemp(prefix="ecmpd-sdn-", dir="/tmp")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        addr = os.path.join(d, "notify")
        s.bind(addr)
        n = Notifier({"NOTIFY_SOCKET": addr})
        results = [n.status("x" * 1000) for _ in range(5000)]
        assert results[0] is True
        assert False in results  # the queue filled up, and we got here anyway
        n.close()
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "10000000"}, 10.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "abc"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "ten"}, None),
    ({"WATCHDOG_USEC": "1"}, 0.02),                  # never a busy loop
    ({}, None),
])
def test_watchdog_interval(env, expected):
    assert Notifier({"NOTIFY_SOCKET": "@x", **env}).watchdog_interval() == expected


# ---- the daemon's start, as systemd sees it ------------------------------------------

START_PHASES = ["starting: loading the config", "starting: loading ecmpd",
                "starting: reading the kernel", "starting: first apply (routes, rules, nft table)",
                "starting: waiting for the first probe verdicts"]


@pytest.mark.lab
def test_daemon_start_reports_each_phase_then_ready_with_the_route(lab, tmp_path):
    """Every start-up phase extends systemd's start timeout (a slow box that makes
    progress is not killed); the control socket listens from the first apply on; READY=1
    still means the first verdicts are in the kernel's route."""
    from lab.runner import Ecmpd, config_for, route_text

    d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    with open(d.log_path, "ab") as log:
        d.proc = lab.popen(lab.ns_router, *d.argv(), env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        seen: list[dict[str, str]] = []
        listening_at_apply = None
        while not seen or seen[-1].get("READY") != "1":
            try:
                seen.append(recv(notify))
            except socket.timeout:
                pytest.fail(f"no READY=1; got {seen}\n{d.log()}")
            if seen[-1].get("STATUS", "").startswith("starting: first apply"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    listening_at_apply = c.connect_ex(d.socket) == 0
        route = route_text(lab)         # read at READY: the first verdicts are in it
        starting = [m for m in seen if m.get("STATUS", "").startswith("starting: ")]
        assert [m["STATUS"] for m in starting] == START_PHASES, seen
        assert all(m["EXTEND_TIMEOUT_USEC"] == str(int(START_STEP * 1e6)) for m in starting)
        assert seen[-1] == {"READY": "1", "STATUS": "2/2 WANs active"}, seen
        assert listening_at_apply is True
        for w in lab.spec.wans:
            assert f"via {w.gateway} dev {w.name}" in route, route
        assert d.stop() == 0
        notify.settimeout(0)
        rest: list[dict[str, str]] = []
        try:
            while True:
                rest.append(recv(notify))
        except BlockingIOError:
            pass
        assert {"STOPPING": "1"} in rest, rest
    finally:
        d.stop()
        notify.close()
