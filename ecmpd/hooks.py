"""Hooks: the administrator's programs, run on every WAN state change (`hooks:`).

A hook never delays a failover: the daemon's listener (`Hooks.__call__`) only queues
the change and returns; nothing on the loop waits for a hook.  One worker task per WAN
hands that WAN's changes to the hooks in order: a change's hooks run one after the
other in config order, and the next change of that WAN waits for them; other WANs do
not wait.  Each hook runs with `asyncio.create_subprocess_exec` (no shell) in a session
of its own, so that at `hook_timeout` SIGTERM, and SIGKILL `grace` seconds later, reach
every process it started.  A WAN's queue holds at most `limit` changes: when a flapping
WAN outruns a slow hook the oldest are dropped (and counted in the log), so memory
stays bounded.  What a change's hooks get is fixed when the change happens: the hooks
and timeout configured then, and the environment (`environment`) from the daemon's
state right after it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .configchecks import hook_problem
from .configmodel import Config
from .events import Transition
from .state import State, plane, probe_gateway

log = logging.getLogger("ecmpd")

GRACE = 2.0
"""Seconds between a timed-out hook's SIGTERM and its SIGKILL."""
QUEUE = 100
"""Changes of one WAN waiting for the hooks at most (the oldest are dropped)."""
STDERR_TAIL = 4096
"""Bytes of a hook's stderr kept for the log (its last ones)."""


def environment(t: Transition, st: State, base: Mapping[str, str]) -> dict[str, str]:
    """What a hook is told of change `t`: `base` (the daemon's environment) and the
    ``ECMPD_*`` variables, read from `st`, the state right after the change."""
    p = plane(st, t.family) if t.family else st
    wan = p.cfg.find(t.name) if t.family else None     # family 0: the HA pair's change
    return {**base,
            "ECMPD_WAN": t.name,
            "ECMPD_STATE": t.state,
            "ECMPD_PREVIOUS": t.previous,
            "ECMPD_REASON": t.reason,
            "ECMPD_INTERFACE": wan.interface if wan else "",
            # the learned one for `gateway: auto`; the peer of a point-to-point link
            "ECMPD_GATEWAY": (probe_gateway(p, wan) or "") if wan else "",
            "ECMPD_FAMILY": f"ipv{t.family}" if t.family else "",
            # the HA role after the change (`standalone` without `ha:`)
            "ECMPD_ROLE": st.ha.role,
            "ECMPD_ACTIVE": "1" if t.active else "0",
            "ECMPD_SINCE": f"{t.at:.3f}",
            "ECMPD_LASTED": "" if t.lasted is None else f"{t.lasted:.3f}"}


@dataclass(frozen=True)
class Job:
    """One change as its hooks see it."""

    wan: str
    label: str
    """The change in log lines: ``wlan1 up -> down``."""
    hooks: tuple[str, ...]
    timeout: float
    env: Mapping[str, str]


@dataclass(frozen=True)
class Outcome:
    """How one hook run ended."""

    returncode: int | None
    """Its exit status (negative: the signal that ended it); None: it did not start, or
    it outlived even SIGKILL (stuck in the kernel) and was left behind."""
    stderr: str = ""
    """The last `STDERR_TAIL` bytes it wrote to stderr."""
    stopped: str = ""
    """The last signal sent when it outlived its timeout (SIGTERM, SIGKILL); "": none."""
    error: str = ""
    """Why it did not start."""


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """`sig` to every process of `proc`'s session's process group (pgid == its pid; a
    session leader cannot leave it, only processes it starts can)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


class _Tail:
    """The last `STDERR_TAIL` bytes read from a non-blocking pipe."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data, self.cut, self.eof = fd, bytearray(), False, False

    def read(self, chunks: int = 1) -> None:
        """Read at most `chunks` times: one per readiness callback, so that a hook
        that floods stderr takes turns with everything else on the loop."""
        for _ in range(chunks):
            if self.eof:
                return
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            self.eof = not chunk
            self.data += chunk
            if len(self.data) > STDERR_TAIL:
                del self.data[:-STDERR_TAIL]
                self.cut = True

    def text(self) -> str:
        text = bytes(self.data).decode(errors="replace").strip()
        return ("..." if self.cut else "") + " | ".join(text.splitlines())


async def run_hook(path: str, env: Mapping[str, str], timeout: float,
                   grace: float = GRACE) -> Outcome:
    """Run `path` until it exits, at most `timeout` seconds, then SIGTERM its process
    group, then SIGKILL it `grace` seconds later; one that still runs `grace` seconds
    after that (stuck in the kernel) is left behind, so that its WAN's next changes are
    not held up for ever.  Cancelled (a stopping daemon), it kills the group at once.
    Its stderr is read from a pipe of our own, so that a process it leaves behind
    holding stderr does not keep it running: it is done when it exits."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w,
                env=dict(env), start_new_session=True)
        finally:
            os.close(w)
    except OSError as exc:
        os.close(r)
        return Outcome(None, error=exc.strerror or str(exc))
    os.set_blocking(r, False)
    tail = _Tail(r)
    loop.add_reader(r, tail.read)
    exited = loop.create_task(proc.wait())
    stopped = ""
    try:
        for sig, wait in ((None, timeout), (signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            if sig is not None:
                _signal(proc, sig)
                stopped = sig.name
            if (await asyncio.wait({exited}, timeout=wait))[0]:
                break
    except asyncio.CancelledError:
        _signal(proc, signal.SIGKILL)
        await asyncio.wait({exited}, timeout=grace)     # reaped before the loop ends
        raise
    finally:
        loop.remove_reader(r)
        tail.read(chunks=64)        # what it wrote just before it exited
        os.close(r)
    return Outcome(exited.result() if exited.done() else None, tail.text(), stopped)


class Hooks:
    """The runner: a `Daemon.listeners` entry; `close` at the daemon's stop."""

    def __init__(self, state: Callable[[], State], grace: float = GRACE,
                 limit: int = QUEUE) -> None:
        self._state = state
        """The daemon's current state (read when a change happens)."""
        self.grace = grace
        self.limit = limit
        self._queues: dict[str, deque[Job]] = {}
        self._dropped: dict[str, int] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._checked: tuple[str, ...] = ()
        self.configure(state().cfg)

    def configure(self, cfg: Config) -> None:
        """Take `cfg` (at start and reload): warn of hooks that cannot run.  They are
        not refused (`ecmpd --check` does that): a missing script must not keep the
        daemon from starting, nor a reload from taking effect."""
        if cfg.hooks == self._checked:
            return
        self._checked = cfg.hooks
        for path in cfg.hooks:
            if (why := hook_problem(path)) is not None:
                log.warning("hook %s %s: it will fail at every WAN state change", path, why)

    def __call__(self, t: Transition) -> None:
        """Queue change `t` for its WAN's hooks; never waits."""
        st = self._state()
        cfg = st.cfg
        if not cfg.hooks or self._closing:
            return
        wan = cfg.find(t.name)
        label = f"{wan.label(t.family) if wan else t.name} {t.previous} -> {t.state}"
        job = Job(t.name, label, cfg.hooks, cfg.hook_timeout,
                  environment(t, st, os.environ))
        queue = self._queues.setdefault(t.name, deque())
        if len(queue) >= self.limit:
            queue.popleft()
            self._dropped[t.name] = self._dropped.get(t.name, 0) + 1
        queue.append(job)
        if t.name not in self._workers:
            self._workers[t.name] = asyncio.get_running_loop().create_task(
                self._work(t.name, queue))

    def pending(self) -> int:
        """Changes queued and not yet taken by a worker."""
        return sum(len(q) for q in self._queues.values())

    async def _work(self, name: str, queue: deque[Job]) -> None:
        """Hand WAN `name`'s changes to the hooks, oldest first, until none is left."""
        try:
            while queue:
                if dropped := self._dropped.pop(name, 0):
                    log.warning("%s: %d state changes dropped before the hooks saw them "
                                "(more than %d waiting: the hooks are slower than the WAN "
                                "changes)", name, dropped, self.limit)
                job = queue.popleft()
                for path in job.hooks:
                    self._report(path, job, await run_hook(path, job.env, job.timeout,
                                                           self.grace))
        finally:
            # no await since `queue` was found empty: no change can be in between
            del self._workers[name]
            if not queue:
                self._queues.pop(name, None)

    def _report(self, path: str, job: Job, out: Outcome) -> None:
        said = f": {out.stderr}" if out.stderr else ""
        if out.stopped:
            log.warning("hook %s for %s still ran after %gs: stopped by %s%s%s", path,
                        job.label, job.timeout, out.stopped,
                        "" if out.returncode is not None else " (it still runs)", said)
        elif out.returncode is None:
            log.warning("hook %s for %s could not start: %s", path, job.label, out.error)
        elif out.returncode < 0:
            log.warning("hook %s for %s was killed by %s%s", path, job.label,
                        _signal_name(-out.returncode), said)
        elif out.returncode:
            log.warning("hook %s for %s exited with status %d%s", path, job.label,
                        out.returncode, said)
        elif said:
            log.info("hook %s for %s%s", path, job.label, said)
        else:
            log.debug("hook %s for %s done", path, job.label)

    async def close(self) -> None:
        """Take no more changes; give the hooks running and queued until
        `hook_timeout`, then kill what is left (at most `grace` seconds more)."""
        self._closing = True
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=self._state().cfg.hook_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if left := self.pending():
            log.warning("%d WAN state changes not handed to the hooks: ecmpd is stopping",
                        left)
