"""Issue 2: one ecmpd per network namespace, with the real daemon in lab namespaces.

A second ecmpd in the same namespace is refused before it touches anything, whatever
--socket/--config it got, and names the first; daemons in different namespaces do not
conflict; after kill -9 of the holder a new daemon starts at once.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from lab.runner import Ecmpd, config_for, kernel_dump
from ecmpd.nslock import EXIT_LOCKED

pytestmark = pytest.mark.lab

QUERY = ("import json; from ecmpd.nslock import query; h = query(); "
         "print(json.dumps(h and {'pid': h.pid, 'info': h.info}))")


def holder(lab) -> dict | None:
    """Who holds the lock in the lab's router namespace (asked from inside it)."""
    return json.loads(lab.run(lab.ns_router, sys.executable, "-c", QUERY).stdout)


def problems(log: str) -> list[str]:
    return [l for l in log.splitlines() if re.search(r" (WARNING|ERROR|CRITICAL) ", l)]


@pytest.mark.parametrize("same_socket", [False, True], ids=["own-socket", "same-socket"])
def test_second_ecmpd_in_one_namespace_is_refused_and_the_first_unaffected(
        make_lab, ecmpd_in, tmp_path, same_socket):
    lab = make_lab()
    d = ecmpd_in(lab)
    first = d.status()
    kernel = kernel_dump(lab)
    mark = len(d.log())
    # a different config (the livelock needs one) and its own socket, or the same
    second = Ecmpd(lab, config_for(lab, weights={"wlan1": 7, "wlan2": 3}),
                   workdir=str(tmp_path / "second"))
    if same_socket:
        second.socket = d.socket
    t0 = time.monotonic()
    res = lab.run(lab.ns_router, *second.argv(), check=False, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == EXIT_LOCKED, res
    err = res.stderr
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if same_socket:
        assert f"another ecmpd is already listening on {d.socket} (pid {d.proc.pid}, " \
               f"config {d.config_path}, running since " in err, err
    else:
        assert f"another ecmpd is already running (pid {d.proc.pid}, config " \
               f"{d.config_path}, control socket {d.socket}, running since " in err, err
        assert not os.path.exists(second.socket)    # it created nothing
    assert "in this network namespace: not starting a second one" in err
    assert took < 10
    time.sleep(2)                           # long enough for a livelock to show
    assert kernel_dump(lab) == kernel       # the refused one touched nothing
    st = d.status()                         # and the first serves on, undisturbed
    assert st["pid"] == d.proc.pid and d.proc.poll() is None
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values())
    assert st["stats"]["changes"] == first["stats"]["changes"]
    assert holder(lab)["pid"] == d.proc.pid
    assert problems(d.log()[mark:]) == []  # nothing to complain about since
    print(f"\nrefused in {took:.2f}s: {err.strip()}")


def test_daemons_in_different_namespaces_both_run(make_lab, ecmpd_in):
    lab1, lab2 = make_lab(), make_lab()
    d1 = ecmpd_in(lab1)
    d2 = ecmpd_in(lab2, weights={"wlan1": 7, "wlan2": 3})
    for lab, d in ((lab1, d1), (lab2, d2)):
        st = d.status()
        assert st["pid"] == d.proc.pid
        assert all(w["state"] == "up" and w["active"] for w in st["wans"].values())
        assert holder(lab)["pid"] == d.proc.pid
        assert holder(lab)["info"]["socket"] == d.socket
        assert "not starting" not in d.log()


def test_after_kill_9_a_new_ecmpd_starts_at_once(make_lab, ecmpd_in):
    lab = make_lab()
    d = ecmpd_in(lab)
    old = d.proc.pid
    d.kill9()
    t0 = time.monotonic()
    assert holder(lab) is None              # the kernel released it with the process
    d.start()                               # same config, same socket: adopts the state
    took = time.monotonic() - t0
    d.wait_states({"wlan1": "up", "wlan2": "up"})
    assert d.proc.pid != old and holder(lab)["pid"] == d.proc.pid
    assert "not starting" not in d.log()
    assert took < 10
    print(f"\nkill -9, then a new ecmpd answering in {took:.2f}s")
