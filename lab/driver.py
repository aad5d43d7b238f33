"""Run the traffic tool (`lab.traffic`) inside a namespace and read its results.

Synchronous (subprocess) on purpose: tests and benchmarks call these between
configuration steps.  Works with any named namespace, so it is usable without a `Lab`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from lab import netns
from lab.traffic import FlowResult, HeldResult, parse_flows, parse_held

_ROOT = str(Path(__file__).resolve().parents[1])
"""The project root, holding `lab` and `ecmpd` (put on PYTHONPATH for the tool)."""

Popen = Callable[..., subprocess.Popen]
WanOf = Callable[[str | None], str | None]
R = TypeVar("R", FlowResult, HeldResult)
T = TypeVar("T")


class TrafficError(RuntimeError):
    """The traffic tool failed or did not answer in time."""


def tool_env() -> dict[str, str]:
    """Environment for the tool: unbuffered, with this `ecmpd` first on PYTHONPATH."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tool_argv(ns: str, *args: str) -> list[str]:
    """The argv running ``python -m lab.traffic args`` inside namespace `ns`."""
    return netns.exec_argv(ns, sys.executable, "-m", "lab.traffic", *args)


def plain_popen(argv: list[str], **kw: Any) -> subprocess.Popen:
    """Default spawner: `subprocess.Popen` (the Lab passes its tracking one)."""
    return subprocess.Popen(argv, **kw)


def spawn(popen: Popen, ns: str, *args: str) -> subprocess.Popen:
    """Start the tool in `ns`: stdout a binary pipe, stderr a temporary file."""
    err = tempfile.TemporaryFile()
    proc = popen(tool_argv(ns, *args), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                 env=tool_env())
    proc._lab_stderr = err  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    """What the tool wrote to stderr so far (for error messages)."""
    err = getattr(proc, "_lab_stderr", None)
    if err is None:
        return ""
    err.seek(0)
    return err.read().decode(errors="replace")[-2000:]


class LineReader:
    """Reads a process's stdout line by line with deadlines (select + os.read)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        """Every complete line read so far."""
        self._partial = b""

    def wait(self, pred: Callable[[list[str]], T | None], what: str, timeout: float) -> T:
        """Read until `pred(lines)` is not None and return it; TrafficError on EOF/timeout."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        end = time.monotonic() + timeout
        while True:
            found = pred(self.lines)
            if found is not None:
                return found
            left = end - time.monotonic()
            if left <= 0:
                raise TrafficError(f"no {what} within {timeout}s: {stderr_of(self.proc)}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TrafficError(f"tool exited (rc={self.proc.wait()}) before {what}: "
                                       f"{stderr_of(self.proc)}")
                *done, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [d.decode(errors="replace") for d in done]

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix`."""
        return self.wait(lambda ls: next((x for x in ls if x.startswith(prefix)), None),
                         repr(prefix), timeout)

    def rest(self, timeout: float) -> str:
        """Wait for the process to exit; everything it printed."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise TrafficError(f"tool did not exit within {timeout}s: {stderr_of(self.proc)}")
        done = "".join(x + "\n" for x in self.lines)
        return done + (self._partial + (out or b"")).decode(errors="replace")


def _with_wan(results: list[R], wan_of: WanOf | None) -> list[R]:
    if wan_of is None:
        return results
    return [replace(r, wan=wan_of(r.source)) for r in results]


def start_server(ns: str, port: int = 5000, popen: Popen = plain_popen,
                 timeout: float = 10.0) -> subprocess.Popen:
    """Start ``serve`` in `ns` listening on 0.0.0.0:`port`; return once it listens."""
    proc = spawn(popen, ns, "serve", "--port", str(port))
    try:
        LineReader(proc).wait_line("listening", timeout)
    except TrafficError:
        proc.kill()
        proc.wait()
        raise
    return proc


def _client_args(kind: str, server: str, port: int, count: int,
                 sources: Sequence[str] | None) -> list[str]:
    args = [kind, "--server", server, "--port", str(port), "--count", str(count)]
    if sources:
        args += ["--bind", ",".join(sources)]
    return args


class FlowRun:
    """A ``flows`` run in the background; `result()` waits for it."""

    def __init__(self, proc: subprocess.Popen, deadline: float, wan_of: WanOf | None) -> None:
        self.proc = proc
        self.deadline = deadline
        self.wan_of = wan_of
        self._reader = LineReader(proc)

    def wait_started(self, timeout: float = 15.0) -> float:
        """Wait until the tool's schedule started (the process takes a while to come up
        on a busy machine); the epoch of its first flow."""
        return float(self._reader.wait_line("started ", timeout).split()[1])

    def result(self) -> list[FlowResult]:
        """Wait for the run to finish; its per-flow results (ordered by start)."""
        out = self._reader.rest(max(1.0, self.deadline - time.monotonic()))
        if self.proc.returncode != 0:
            raise TrafficError(f"flows exited {self.proc.returncode}: {stderr_of(self.proc)}")
        return _with_wan(parse_flows(out), self.wan_of)


def start_flows(ns: str, server: str, count: int, interval: float = 0.0, timeout: float = 1.0,
                port: int = 5000, proto: str = "tcp", sources: Sequence[str] | None = None,
                popen: Popen = plain_popen, wan_of: WanOf | None = None) -> FlowRun:
    """Start ``flows`` in `ns` in the background (see `run_flows`)."""
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto must be tcp or udp, not {proto!r}")
    args = _client_args("flows", server, port, count, sources)
    args += ["--interval", str(interval), "--timeout", str(timeout)]
    if proto == "udp":
        args.append("--udp")
    proc = spawn(popen, ns, *args)
    return FlowRun(proc, time.monotonic() + count * interval + timeout + 15.0, wan_of)


def run_flows(ns: str, server: str, count: int, interval: float = 0.0, timeout: float = 1.0,
              port: int = 5000, proto: str = "tcp", sources: Sequence[str] | None = None,
              popen: Popen = plain_popen, wan_of: WanOf | None = None) -> list[FlowResult]:
    """Open `count` new flows from `ns` to `server`:`port`, one every `interval` s."""
    return start_flows(ns, server, count, interval, timeout, port, proto, sources,
                       popen, wan_of).result()


class HeldFlows:
    """Long-lived flows running in the background (a ``hold`` process)."""

    def __init__(self, proc: subprocess.Popen, count: int, wan_of: WanOf | None) -> None:
        self.proc = proc
        self.count = count
        self.wan_of = wan_of
        self.established: int | None = None
        self._reader = LineReader(proc)

    def wait_established(self, timeout: float = 10.0) -> int:
        """Wait until every connection attempt finished; how many flows are up."""
        if self.established is None:
            line = self._reader.wait_line("established", timeout)
            self.established = int(line.split()[1])
        return self.established

    def broken(self) -> int:
        """How many flows reported a break so far (without waiting)."""
        return sum(1 for x in self._reader.lines if x.startswith("broken "))

    def wait_broken(self, count: int | None = None, timeout: float = 10.0) -> int:
        """Wait until at least `count` (default: all) flows broke; how many did."""
        want = self.count if count is None else count
        return self._reader.wait(
            lambda ls: n if (n := sum(1 for x in ls if x.startswith("broken "))) >= want else None,
            f"{want} broken flows", timeout)

    def stop(self, timeout: float = 10.0) -> list[HeldResult]:
        """SIGTERM the run and return its per-flow results."""
        if self.established is None and self.proc.poll() is None:
            try:  # SIGTERM before the tool installed its handler would lose the results
                self.wait_established(timeout)
            except TrafficError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out = self._reader.rest(timeout)
        return _with_wan(parse_held(out), self.wan_of)


def start_hold(ns: str, server: str, count: int, byte_interval: float = 0.1, port: int = 5000,
               sources: Sequence[str] | None = None, echo_timeout: float = 2.0,
               popen: Popen = plain_popen, wan_of: WanOf | None = None) -> HeldFlows:
    """Start `count` long-lived flows from `ns` (one byte every `byte_interval` s)."""
    args = _client_args("hold", server, port, count, sources)
    args += ["--byte-interval", str(byte_interval), "--echo-timeout", str(echo_timeout)]
    return HeldFlows(spawn(popen, ns, *args), count, wan_of)
