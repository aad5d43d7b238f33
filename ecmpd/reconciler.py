"""Reconcile passes: make the kernel match the daemon's current state.

A pass reads ecmpd's routes and rules from the kernel, takes the state snapshot right
after that read (nothing runs in between: one loop), derives the desired kernel state and
its flags from that one snapshot (`ecmpd.decision.decide`) and applies the difference.
Re-applying the same desired state changes nothing.

Requests coalesce: `kick()` asks for a pass; everything asked before a pass starts is
covered by it (its snapshot is newer), so a burst of events costs one or two passes.
Conntrack flushes of WANs that went DOWN run after the pass that took them out.
Nexthops the kernel refused in a pass are reported as an event (`NexthopsRefused`) to
the state's owner, never written into the state here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generator

from . import conntrack, routing
from .events import Event, Flush, NexthopsRefused
from .firewall import Firewall
from .kernel import Kernel
from .refused import Refused
from .configmodel import FAMILIES
from .decision import Decision, decide, main_route
from .state import Refusal, State, full_hop, plane, probe_gateways
from .sysctl import Sysctls

log = logging.getLogger("ecmpd")

RETRY_REFUSED = 5.0
"""Seconds between passes while the kernel refuses a nexthop."""

Spawn = Callable[[Coroutine[Any, Any, Any]], None]

class Reconciler:
    """Serialised, coalesced reconcile passes over `current()`, the daemon's state."""

    def __init__(self, current: Callable[[], State], kernel: Kernel, firewall: Firewall,
                 sysctls: Sysctls, spawn: Spawn,
                 report: Callable[[Event], None] = lambda ev: None,
                 on_pass: Callable[[Decision], None] | None = None,
                 stamp: Callable[[], object] = lambda: None,
                 on_reaction: Callable[[float], None] = lambda seconds: None) -> None:
        self.current = current
        self.kernel = kernel
        """The rtnetlink socket and its lock (`ecmpd.kernel`)."""
        self.report = report
        """Feeds an event to the state's owner (the pass's refused nexthops)."""
        self.on_pass = on_pass
        """Called with every pass's decision once it is applied."""
        self.firewall = firewall
        self.sysctls = sysctls
        self.spawn = spawn
        self.passes = self.changes = self.flushes = 0
        self.reactions: deque[float] = deque(maxlen=200)
        """Seconds from a health decision to the kernel's route reflecting it."""
        self.on_reaction = on_reaction
        """Told each of those (the metrics' histogram)."""
        self.closed = False
        """No pass starts any more (shutting down)."""
        self._task: asyncio.Task[None] | None = None
        self._again = False
        # what the next pass covers, taken when it starts
        self._decided: list[float] = []
        self._flushes: list[Flush] = []
        self._waiters: list[asyncio.Future[Decision]] = []
        self._kept = (False, False)
        """The last pass kept the route with no WAN usable (for its log line only)."""
        self.stamp = stamp
        """A token that changes with every kernel event read (the daemon's watcher)."""
        self._retry: asyncio.TimerHandle | None = None
        """The pass that retries refused nexthops (`_retry_refused`)."""
        self._quiet: tuple[object, Any, routing.Actual] | None = None
        """(stamp, config, kernel read) of the last pass when it changed nothing."""

    def kick(self, decided: float | None = None, flush: Flush | None = None) -> None:
        """Ask for a pass soon.  `decided`: the loop time of the health decision it
        applies (its reaction time is recorded); `flush`: to run after it."""
        if self.closed:
            return
        if decided is not None:
            self._decided.append(decided)
        if flush is not None:
            self._flushes.append(flush)
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def settled(self) -> Decision:
        """Wait for a pass that saw the state as it is now; returns its decision."""
        waiter: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.kick()
        return await waiter

    async def close(self, timeout: float = 5.0) -> None:
        """Start no further pass; wait (bounded) for the current one."""
        self.closed, self._again = True, False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, timeout)
            except (asyncio.TimeoutError, Exception):
                pass

    async def _run(self) -> None:
        retried = False
        while self._again:
            self._again = False
            decided, self._decided = self._decided, []
            flushes, self._flushes = self._flushes, []
            waiters, self._waiters = self._waiters, []
            try:
                decision = await self.reconcile()
            except Exception as exc:
                log.exception("reconcile failed%s", ": retrying" if decided else "")
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                if decided and not retried:      # a state change must not be lost
                    self._decided[:0] = decided
                    self._again = retried = True
            else:
                retried = False
                now = asyncio.get_running_loop().time()
                for t in decided:
                    self.reactions.append(now - t)
                    self.on_reaction(now - t)
                if self.on_pass is not None:
                    self.on_pass(decision)
                for w in waiters:
                    if not w.done():
                        w.set_result(decision)
            finally:
                # a DOWN WAN's connections go even if the route change needs a retry
                for f in flushes:
                    self.spawn(self._flush(f))

    def unchanged(self) -> dict[int, routing.Actual] | None:
        """The last pass's kernel read, when it is still the kernel's state: that pass
        changed nothing, no pass is due and no kernel event was read since (every change
        of ecmpd's routes and rules, and of the links and addresses they depend on, is
        one): IP version -> what was read.  Call it holding the kernel's lock; None: read
        the kernel."""
        if self._quiet is None or self._again or (self._task and not self._task.done()):
            return None
        stamp, cfg, actual = self._quiet
        return actual if stamp == self.stamp() and cfg is self.current().cfg else None

    async def reconcile(self) -> Decision:
        """One pass, now; returns its decision."""
        async with self.kernel.lock:
            ipr = self.kernel.ipr
            assert ipr is not None
            self._quiet = None
            stamp = self.stamp()
            cfg = self.current().cfg
            actual = {f: await routing.read_actual(ipr, cfg, family=f) for f in FAMILIES}
            # the snapshot goes with the kernel read (a reload that changes the numbers
            # recognising ecmpd's objects swaps the config under this lock)
            snap = self.current()
            decision = decide(snap, *(main_route(actual[f].routes, snap.cfg, f)
                                      for f in FAMILIES))
            kept = (decision.kept, decision.kept6)
            if kept != self._kept:
                for f, was, now in zip(FAMILIES, self._kept, kept):
                    if now and not was:
                        log.warning("all %sWANs are down: keeping the last route",
                                    "" if f == 4 and not snap.cfg.families() == (4, 6)
                                    else f"IPv{f} ")
                self._kept = kept
            changes = self.sysctls.apply(decision.desired.sysctls + decision.desired6.sysctls)
            any_refused = False
            for f in FAMILIES:
                refused: Refused = {}
                changes += await routing.apply(ipr, snap.cfg, decision.of(f)[0], actual[f],
                                               refused)
                self.report(refusals(snap, refused, f))
                any_refused = any_refused or bool(refused)
            if any_refused:
                self._retry_refused()
            try:
                self.firewall.reconfigure(snap.cfg, probe_gateways(snap),
                                          probe_gateways(plane(snap, 6)))
                await asyncio.sleep(0)         # a new config's table was rendered
                changes += int(await _stepped(self.firewall.steps(apart=True)))
            except Exception as exc:
                log.error("cannot apply nft table %s: %s", snap.cfg.nft_table, exc)
            self.passes += 1
            self.changes += changes
            if not changes:
                self._quiet = (stamp, snap.cfg, actual)
            return decision

    def _retry_refused(self) -> None:
        """A refused nexthop may be taken later (a route to its gateway added, a link
        that comes up) by a change no event announces to ecmpd: while the kernel refuses
        one, a pass comes at least every `RETRY_REFUSED` seconds."""
        if self._retry is None and not self.closed:
            self._retry = asyncio.get_running_loop().call_later(RETRY_REFUSED, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.kick()

    async def _flush(self, f: Flush) -> None:
        if f.name is not None:
            cfg = self.current().cfg
            wan = cfg.find(f.name)
            if wan is None or cfg.mark_of(wan) != f.mark:
                return              # removed or renumbered meanwhile: not its mark now
            self.flushes += 1
        if await conntrack.flush_mark(f.mark, f.mask, f.family) and f.name is not None:
            what = "" if f.family is None else f"IPv{f.family} "
            log.info("%s: its %sconnections were removed from conntrack", f.name, what)


async def _stepped(steps: Generator[Any, Any, bool]) -> bool:
    """Run `steps` with the event loop's turn between them (the firewall's libnftables
    calls block: one at a time, not all of a rewrite at once; a step that is a
    coroutine is awaited and its result sent back); their result."""
    answer = None
    try:
        while True:
            step = steps.send(answer)
            answer = await step if step is not None else await asyncio.sleep(0)
    except StopIteration as done:
        return bool(done.value)


def refusals(snap: State, refused: Refused, family: int = 4) -> NexthopsRefused:
    """The event reporting the nexthops of IP version `family` the kernel refused in a
    pass over `snap`."""
    out = {}
    p = plane(snap, family)
    for wan in p.cfg.wans:
        hop = full_hop(p, wan)
        if hop is not None and (err := refused.get(hop[:2])) is not None:
            out[wan.name] = Refusal(hop, err)
    return NexthopsRefused(out, family)
