"""Tests for ecmpd.nslock: the per-network-namespace lock.

Everything that binds the lock runs in child processes inside network namespaces of
this test run (`lab_prefix`), never in the host's: the lock is the namespace's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

import pytest

from lab import netns
from ecmpd.nslock import EXIT_LOCKED, LOCK_NAME, AlreadyRunning, Holder

HOLDER = r"""
import os, sys
from ecmpd.nslock import hold_namespace
# argv: --config C --socket S [child], as an ecmpd's command line names them
hold_namespace(sys.argv[4])
child = ""
if len(sys.argv) > 5:       # leave a child behind: it must not inherit the lock
    import subprocess
    child = f" {subprocess.Popen(['sleep', '60']).pid}"
print(f"held {os.getpid()}{child}", flush=True)
sys.stdin.read()
"""

TRY = r"""
import json, sys, time
from ecmpd.nslock import NamespaceLock, AlreadyRunning
t0 = time.monotonic()
try:
    NamespaceLock().acquire(sys.argv[1])
except AlreadyRunning as e:
    print(json.dumps({"refused": str(e), "pid": e.holder.pid, "info": e.holder.info,
                      "secs": time.monotonic() - t0}))
else:
    print(json.dumps({"acquired": True, "secs": time.monotonic() - t0}))
"""

QUERY = r"""
import json
from ecmpd.nslock import query
h = query()
print(json.dumps(None if h is None else {"pid": h.pid, "uid": h.uid, "info": h.info}))
"""


@pytest.fixture
def namespaces(make_netns: Callable[[str], str]) -> list[str]:
    """Two fresh, empty network namespaces of this run (deleted at the end)."""
    return [make_netns("la"), make_netns("lb")]


def as_ecmpd(script: str) -> list[str]:
    """Run `script` as a file named ``ecmpd`` (a console script's command line)."""
    d = tempfile.mkdtemp(prefix="nslock-")
    path = os.path.join(d, "ecmpd")
    with open(path, "w") as f:
        f.write(script)
    return [sys.executable, path]


def py(ns: str, script: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(netns.exec_argv(ns, sys.executable, "-c", script, *args),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_py(ns: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(netns.exec_argv(ns, sys.executable, "-c", script, *args),
                          capture_output=True, text=True, timeout=30)


def readline(p: subprocess.Popen, timeout: float = 20) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, "no output from the child"
    return p.stdout.readline()


def hold(ns: str, config: str = "/etc/a.yaml", sock: str = "/run/a.sock",
         leave_child: bool = False) -> tuple[subprocess.Popen, int | None]:
    p = subprocess.Popen(netns.exec_argv(ns, *as_ecmpd(HOLDER), "--config", config,
                                         "--socket", sock, *(["child"] if leave_child else [])),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = readline(p)
    assert line.startswith(f"held {p.pid}"), \
        (line, p.stderr.read() if p.poll() is not None else "")
    words = line.split()
    return p, (int(words[2]) if leave_child else None)


def end(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.stdin.close()
        p.wait(10)


def load(out: str):
    return json.loads(out)


@pytest.mark.lab
def test_second_in_the_same_namespace_is_refused_and_named(namespaces):
    ns = namespaces[0]
    a, _ = hold(ns, "/etc/ecmpd/a.yaml", "/run/a/ecmpd.sock")
    try:
        other = load(run_py(ns, TRY, "/run/b/ecmpd.sock").stdout)
        same = load(run_py(ns, TRY, "/run/a/ecmpd.sock").stdout)
        who = load(run_py(ns, QUERY).stdout)
    finally:
        end(a)
    assert other["pid"] == a.pid and other["info"]["config"] == "/etc/ecmpd/a.yaml"
    assert other["refused"].startswith(
        f"another ecmpd is already running (pid {a.pid}, config /etc/ecmpd/a.yaml, "
        f"control socket /run/a/ecmpd.sock, running since ")
    assert "in this network namespace: not starting" in other["refused"]
    # the same socket: the words of the control socket's own refusal
    assert same["refused"].startswith(
        f"another ecmpd is already listening on /run/a/ecmpd.sock (pid {a.pid}, ")
    assert other["secs"] < 1.0
    assert who["pid"] == a.pid and who["uid"] == 0 and who["info"]["socket"] == "/run/a/ecmpd.sock"


@pytest.mark.lab
def test_hold_namespace_logs_and_exits(namespaces):
    ns = namespaces[0]
    a, _ = hold(ns)
    try:
        r = run_py(ns, "import sys; from ecmpd.nslock import hold_namespace; "
                   "hold_namespace('/run/b.sock'); print('not refused')")
    finally:
        end(a)
    assert r.returncode == EXIT_LOCKED == 1
    assert "not refused" not in r.stdout
    assert f"another ecmpd is already running (pid {a.pid}, config /etc/a.yaml" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.lab
def test_different_namespaces_do_not_conflict(namespaces):
    a, _ = hold(namespaces[0])
    b, _ = hold(namespaces[1], "/etc/b.yaml", "/run/b.sock")
    try:
        qa = load(run_py(namespaces[0], QUERY).stdout)
        qb = load(run_py(namespaces[1], QUERY).stdout)
    finally:
        end(a)
        end(b)
    assert (qa["pid"], qb["pid"]) == (a.pid, b.pid)


@pytest.mark.lab
def test_kill_9_frees_the_lock_at_once_even_with_children_left(namespaces):
    ns = namespaces[0]
    a, child = hold(ns, leave_child=True)
    try:
        os.kill(a.pid, signal.SIGKILL)
        a.wait(5)
        assert netns.pid_alive(child)          # its child lives on, without the lock
        t0 = time.monotonic()
        got = load(run_py(ns, TRY, "/run/b.sock").stdout)
        assert load(run_py(ns, QUERY).stdout) is None
    finally:
        os.kill(child, signal.SIGKILL)
    assert got["acquired"] and got["secs"] < 0.1, got
    assert time.monotonic() - t0 < 5


@pytest.mark.lab
def test_released_lock_can_be_taken_again(namespaces):
    r = run_py(namespaces[0], r"""
from ecmpd.nslock import NamespaceLock, query
import threading
a = NamespaceLock().acquire()
assert query().pid is not None
a.release()
assert query() is None and threading.active_count() == 1
b = NamespaceLock().acquire(); b.release()
print("ok")
""")
    assert r.stdout == "ok\n", r.stderr


@pytest.mark.lab
def test_queries_and_connects_do_not_touch_the_holder(namespaces):
    """The holder only binds the name: queries read /proc, connects are refused, and
    the holder gets no descriptor, thread or CPU from either."""
    ns = namespaces[0]
    a, _ = hold(ns)
    try:
        before = len(os.listdir(f"/proc/{a.pid}/fd"))
        cpu0 = cpu_seconds(a.pid)
        r = run_py(ns, r"""
import socket
from ecmpd.nslock import query, LOCK_NAME
for _ in range(100):
    assert query().pid
refused = 0
for _ in range(3000):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("\0" + LOCK_NAME)
    except ConnectionRefusedError:
        refused += 1
    s.close()
print(refused)
""")
        after = len(os.listdir(f"/proc/{a.pid}/fd"))
        threads = len(os.listdir(f"/proc/{a.pid}/task"))
        cpu = cpu_seconds(a.pid) - cpu0
    finally:
        end(a)
    assert r.stdout == "3000\n", r.stderr
    assert after == before and threads == 1 and cpu < 0.05, (before, after, threads, cpu)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.lab
def test_a_squatter_is_named(namespaces):
    ns = namespaces[0]
    squat = py(ns, "import socket, sys; s = socket.socket(socket.AF_UNIX); "
               f"s.bind('\\0{LOCK_NAME}'); print('bound', flush=True); sys.stdin.read()")
    try:
        assert readline(squat) == "bound\n"
        got = load(run_py(ns, TRY, "/run/b.sock").stdout)
    finally:
        end(squat)
    assert got["pid"] == squat.pid
    assert "is held by another process (pid" in got["refused"]
    assert "sys.stdin.read()" in got["refused"]     # its command line


def test_messages_without_a_namespace():
    h = Holder(pid=7, uid=0, info={"ecmpd": 1, "config": "/c.yaml", "socket": "/s.sock",
                                   "started": 0})
    assert str(AlreadyRunning(h, "/s.sock")).startswith(
        "another ecmpd is already listening on /s.sock (pid 7, config /c.yaml, running since")
    assert str(AlreadyRunning(h, "/t.sock")).startswith(
        "another ecmpd is already running (pid 7, config /c.yaml, control socket /s.sock,")
    assert str(AlreadyRunning(Holder(), "/t.sock")).startswith(
        "another ecmpd is already running (pid unknown) in this network namespace")
    odd = Holder(pid=9, uid=1000, info={"ecmpd": 1, "config": 5, "started": "x"})
    assert odd.describe() == "pid 9"
    squatter = Holder(pid=9, uid=1000, info={"config": "/fake"}, command="nc -lU")
    assert squatter.describe() == "pid 9, uid 1000, command 'nc -lU'"
