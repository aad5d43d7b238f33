"""Issue 3: attacks on the control socket of the real ecmpd (in a lab router namespace).

Each attack runs against a daemon with two WANs UP; during it `ecmpctl status` must keep
answering within a deadline, the daemon must write only a bounded number of WARNING lines,
and afterwards its descriptor count must be back where it was and its RSS about flat.
The attacker is this test process, connecting to the daemon's socket file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from ecmpd.control_protocol import MAX_REQUEST, TOO_MANY
from ecmpd.control_server import IDLE_TIMEOUT, MAX_CLIENTS
from lab.runner import Ecmpd
from lab.wait import during, within

pytestmark = pytest.mark.lab

STATUS_DEADLINE = 5.0
"""Seconds `ecmpctl status` may take during an attack (its own --timeout too)."""
RSS_SLACK_KB = 4096
"""RSS growth tolerated over a whole attack (allocator noise, lazily filled caches)."""


def proc_stats(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open descriptors) of process `pid`."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def warning_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if re.search(r" (WARNING|ERROR|CRITICAL) ", l)]


def status_ok(d: Ecmpd) -> float:
    """Run `ecmpctl status --json`; assert it answered and both WANs are UP and in the
    route; return its wall time."""
    t0 = time.monotonic()
    r = d.ctl("--timeout", str(STATUS_DEADLINE), "status", "--json", check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, (r.returncode, r.stderr)
    st = json.loads(r.stdout)
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values()), st["wans"]
    assert took < STATUS_DEADLINE + 1, took
    return took


@dataclass
class Watch:
    """What the daemon did during an attack."""

    d: Ecmpd
    rss0: int = 0
    fds0: int = 0
    mark: int = 0
    status_times: list[float] = field(default_factory=list)
    peak_fds: int = 0
    warnings: list[str] = field(default_factory=list)
    rss1: int = 0
    fds1: int = 0

    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    rss_slack: int = RSS_SLACK_KB

    def sample(self) -> None:
        rss, fds = proc_stats(self.d.proc.pid)
        self.peak_fds = max(self.peak_fds, fds)
        self.rss_samples.append((time.monotonic(), rss))

    def status(self) -> None:
        self.sample()
        self.status_times.append(status_ok(self.d))

    def report(self, name: str) -> str:
        worst = max(self.status_times, default=0.0)
        return (f"{name}: {len(self.status_times)} status ok (slowest {worst:.2f}s), "
                f"{len(self.warnings)} WARNING lines, fds {self.fds0}->{self.peak_fds} "
                f"(peak)->{self.fds1}, RSS {self.rss0}->{self.rss1} kB")


@contextlib.contextmanager
def watched(d: Ecmpd, name: str, max_warnings: int) -> Iterator[Watch]:
    """Baseline before, checks after: fds back to the baseline, RSS flat, WARNINGs
    bounded, status fine."""
    status_ok(d)                            # warm: the first status fills caches
    w = Watch(d)
    w.rss0, w.fds0 = proc_stats(d.proc.pid)
    w.mark = len(d.log())
    yield w
    def noticed() -> bool:                  # closed attack connections are noticed
        w.rss1, w.fds1 = proc_stats(d.proc.pid)
        return w.fds1 <= w.fds0

    within(noticed, IDLE_TIMEOUT + 5, interval=0.1)
    w.status_times.append(status_ok(d))
    w.warnings = warning_lines(d.log()[w.mark:])
    print("\n" + w.report(name))
    for line in w.warnings:
        print("   ", line)
    assert w.fds1 == w.fds0, w.report(name)
    assert w.rss1 - w.rss0 <= w.rss_slack, w.report(name)
    assert len(w.warnings) <= max_warnings, w.warnings
    assert d.proc.poll() is None


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def read_line(s: socket.socket, timeout: float = 5.0) -> bytes:
    """What came up to the end of a line (maybe more), or b"" when the daemon closed the
    connection first."""
    s.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


@pytest.mark.parametrize("n", [MAX_CLIENTS, 200])
def test_idle_connections_do_not_lock_out_status(make_lab, ecmpd_in, n):
    lab = make_lab()
    d = ecmpd_in(lab)
    with watched(d, f"{n} idle connections", max_warnings=2) as w:
        idle = [connect(d.socket) for _ in range(n)]
        time.sleep(0.5)
        for _ in range(5):
            w.status()
        w.sample()
        # the daemon holds at most MAX_CLIENTS of them (+ a few transient descriptors)
        assert w.peak_fds - w.fds0 <= MAX_CLIENTS + 2, w.report("idle")
        for s in idle:
            s.close()


class Reconnector(threading.Thread):
    """Keeps `n` idle connections open: each one the daemon closes is replaced at once."""

    def __init__(self, path: str, n: int) -> None:
        super().__init__(daemon=True)
        self.path, self.n = path, n
        self.stop = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for _ in range(self.n):
            sel.register(connect(self.path), selectors.EVENT_READ)
        while not self.stop.is_set():
            for key, _ in sel.select(0.1):
                s = key.fileobj
                sel.unregister(s)
                s.close()                   # answered (evicted) or closed: come back
                sel.register(connect(self.path), selectors.EVENT_READ)
                self.reconnects += 1
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def test_reconnecting_idle_flood_does_not_lock_out_status(make_lab, ecmpd_in):
    """200 idle connections kept open for longer than the idle timeout: every one the
    daemon closes (evicted, or idle too long) comes straight back."""
    lab = make_lab()
    d = ecmpd_in(lab)
    duration = IDLE_TIMEOUT + 3
    # evictions and refusals: one line per 10 s each, and their summaries
    with watched(d, "reconnecting flood of 200 idle connections", max_warnings=6) as w:
        # thousands of connections a second leave a high-water mark in the allocator
        # (measured: +3.5 MB, reached within seconds); what matters is that it is one
        w.rss_slack = 8192
        flood = Reconnector(d.socket, 200)
        flood.start()
        t0 = time.monotonic()
        try:
            during(duration, w.status, interval=0.3)
        finally:
            flood.stop.set()
            flood.join(10)
        print(f"\n{flood.reconnects} reconnects in {duration:.0f}s")
        assert len(w.status_times) >= 10
        # no leak: in the second half of the flood the RSS does not grow any more
        half = [rss for t, rss in w.rss_samples if t > t0 + duration / 2]
        mid = [rss for t, rss in w.rss_samples if t0 + 2 < t <= t0 + duration / 2]
        assert half and mid and max(half) - max(mid) <= 1024, w.rss_samples


def test_slowloris(make_lab, ecmpd_in):
    """30 clients dripping a request a byte a second: each is closed once it has not
    finished its line within the idle timeout, and status is served all along.  (More
    than MAX_CLIENTS of them are evicted sooner: see the idle tests.)"""
    lab = make_lab()
    d = ecmpd_in(lab)
    request = b'{"cmd": "status", "x": "' + b"a" * 64
    n = MAX_CLIENTS - 2
    with watched(d, f"slowloris x{n}", max_warnings=0) as w:
        conns = {connect(d.socket): time.monotonic() for _ in range(n)}
        closed_after: list[float] = []
        i = 0

        def drip() -> bool:
            """A byte more on every connection; whether all are closed."""
            nonlocal i
            for s, t0 in list(conns.items()):
                try:
                    s.send(request[i % len(request):][:1])
                    s.setblocking(False)
                    gone = s.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    closed_after.append(time.monotonic() - t0)
                    del conns[s]
                    s.close()
            i += 1
            if i % 3 == 0:
                w.status()
            return not conns

        if conns:
            within(drip, IDLE_TIMEOUT + 5, interval=1.0)
        for s in conns:
            s.close()
        assert not conns, f"{len(conns)} slowloris connections still open"
        assert all(IDLE_TIMEOUT - 1 <= t <= IDLE_TIMEOUT + 3 for t in closed_after), \
            closed_after


def test_oversized_lines(make_lab, ecmpd_in):
    """100 requests of 1 MiB, one after another: each gets an error and is closed; the
    WARNING about them is written once (and summarised)."""
    lab = make_lab()
    d = ecmpd_in(lab)
    huge = b'{"cmd": "status", "pad": "' + b"x" * (1 << 20) + b'"}\n'
    with watched(d, "100 oversized requests", max_warnings=2) as w:
        answers = []
        for k in range(100):
            s = connect(d.socket)
            s.settimeout(5)
            try:
                s.sendall(huge)
            except OSError:
                pass                        # closed while we were still sending
            answers.append(read_line(s))
            s.close()
            if k % 25 == 0:
                w.status()
        errors = [json.loads(a) for a in answers if a]
        assert len(errors) >= 90, len(errors)   # the rest: reset before the line was read
        assert all(e == {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
                   for e in errors), errors[:3]


def test_garbage_json(make_lab, ecmpd_in):
    """2000 lines of garbage on one connection, then a real request: every line gets an
    error answer, the connection survives, nothing is logged above DEBUG."""
    lab = make_lab()
    d = ecmpd_in(lab)
    rnd = __import__("random").Random(7)
    junk = [b"{", b"[" * 5000, b'{"cmd": "status", "cmd": 5}', b'"status"', b"\xff\xfe\x00",
            b'{"cmd": "disable", "wan": {"a": [1, 2, {"b": null}]}}', b"1e99999",
            b'{"cmd": "' + b"\\u0000" * 100 + b'"}', b"9" * 5000, b'{"cmd": "shutdown"}']
    lines = [rnd.choice(junk) if rnd.random() < 0.5 else
             bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))).replace(b"\n", b"")
             for _ in range(2000)]
    lines = [l for l in lines if l.strip()]
    with watched(d, f"{len(lines)} garbage lines", max_warnings=0) as w:
        s = connect(d.socket)
        out = threading.Thread(target=lambda: s.sendall(b"\n".join(lines) + b"\n"
                                                        + b'{"cmd": "ping"}\n'))
        out.start()
        f = s.makefile("rb")
        s.settimeout(30)
        answers = [json.loads(f.readline()) for _ in range(len(lines) + 1)]
        out.join(10)
        w.status()
        f.close()
        s.close()
    assert all(a["ok"] is False and isinstance(a["error"], str) for a in answers[:-1])
    assert answers[-1] == {"ok": True}


def test_busy_daemon_refuses_only_beyond_the_limit_and_ctl_retries(make_lab, ecmpd_in):
    """Many clients asking for status at once (all slots busy): ecmpctl still gets its
    answer (it retries on "too many clients"), and nothing piles up."""
    lab = make_lab()
    d = ecmpd_in(lab)
    with watched(d, "64 concurrent status askers", max_warnings=4) as w:
        stop = threading.Event()
        refused = [0]

        def asker() -> None:
            while not stop.is_set():
                try:
                    s = connect(d.socket)
                    s.sendall(b'{"cmd": "status"}\n')
                    line = read_line(s)
                    s.close()
                    first = line.partition(b"\n")[0]
                    if first and json.loads(first).get("error") == TOO_MANY:
                        refused[0] += 1
                except OSError:
                    pass

        threads = [threading.Thread(target=asker, daemon=True) for _ in range(64)]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                w.status()
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        print(f"\n{refused[0]} refusals seen by the askers")
