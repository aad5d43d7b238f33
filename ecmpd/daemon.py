"""The daemon: one asyncio loop holding the state, the probers, the netlink watcher, the
reconciler and the control server.

Data flows one way: config → validated model → (with what was observed) desired state →
diff with the kernel → apply.  The daemon is the one owner of the `State`: every change
arrives as an event (`submit`), `ecmpd.events.step` computes the next state, which
replaces the old one whole, and the effects, which the daemon carries out.  A reconcile
derives the desired kernel state and its flags from one snapshot taken with its kernel
read; status renders a snapshot too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Coroutine, Iterable
from dataclasses import replace
from typing import Any

from . import conntrack, ownaddr, routing, status
from .config import ConfigError, load_config
from .configmodel import Config, Wan
from .control_server import ControlServer
from .disabled import DisabledStore
from .events import (Adopted, DefaultsRead, Effect, Event, Flush, ForgetAddress, Log,
                     ProbeRound, Reconcile, Reloaded, ResetProber, SetDisabled, step)
from .firewall import Firewall
from .judge import RoundResult
from .kernel import Kernel
from .ledger import Ledger
from .logsetup import RateLimitedLog
from .prober import Prober
from .reconciler import Reconciler
from .reloadplan import plan_reload
from .sdnotify import Notifier
from .state import (Decision, State, active, address, awaiting_verdict, initial, main_route,
                    no_target, own_targets, probe_targets)
from .sysctl import Sysctls
from .watcher import Watcher

log = logging.getLogger("ecmpd")


class Daemon:
    """ecmpd's running process; `run()` is its whole life."""

    def __init__(self, cfg: Config, config_path: str, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self.state: State = initial(cfg, {}, {}, (), self.started)
        """The one current state; replaced whole by `submit`, never mutated."""
        self.disabled_store = DisabledStore(cfg.control_socket + ".disabled.json")
        self.firewall = Firewall(cfg)
        self.kernel = Kernel(lambda: self.state)
        """The rtnetlink socket for dumps and changes, its lock and its reads."""
        self.watcher = Watcher(self, reads=self.kernel)
        self.reconciler = Reconciler(
            lambda: self.state, self.kernel, self.firewall, Sysctls(), self._spawn,
            report=self.submit, on_pass=self._record_disabled,
            stamp=lambda: (self.watcher.events, self.watcher.resyncs))
        self._recorded_disabled: frozenset[str] | None = None
        """The disabled WANs last written to `disabled_store` (None: not yet)."""
        self.ledger = Ledger(cfg.control_socket)
        """The ownership numbers installed (`<socket>.owned.json`): nothing is orphaned."""
        self.control: ControlServer | None = None
        self._probers: dict[str, Prober] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._counters: tuple[float, dict[int, int]] = (-1.0, {})
        """(loop time read, WAN id -> packets from beyond its gateway): see `traffic`."""
        self._limited = RateLimitedLog(log)
        """Keyed log lines (a gateway that moves): one per key every 10 s, then a count."""
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def cfg(self) -> Config:
        """The config in force (the current state's)."""
        return self.state.cfg

    # ---- events --------------------------------------------------------------------
    def submit(self, event: Event) -> None:
        """Feed one event: the state is replaced whole, then its effects carried out."""
        before = self.state
        self.state, effects = step(before, event, time.time())
        if (self.state.links is not before.links or self.state.addresses is not before.addresses
                or self.state.defaults is not before.defaults
                or self.state.local is not before.local):
            self._follow_probers()
        self._carry_out(effects)

    def _follow_probers(self, reconfigured: bool = False) -> None:
        """Probers follow their WAN's address, interface, gateway (learned ones move) and
        which targets are the router's own addresses; `reconfigured`: the probe settings
        may have changed too."""
        for wan in self.state.cfg.wans:
            if (prober := self._probers.get(wan.name)) is None:
                continue
            targets, quorum = probe_targets(self.state, wan)
            if reconfigured or targets != prober.targets:
                prober.update(targets, wan.probe, quorum)
            self._follow(prober, wan)

    def _follow(self, prober: Prober, wan: Wan) -> None:
        prober.follow(address(self.state, wan), wan.interface, own_targets(self.state, wan),
                      no_target(self.state, wan))

    def _carry_out(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            if isinstance(e, Log):
                if e.key is None:
                    log.log(e.level, e.message)
                else:
                    self._limited.log(e.key, e.level, "%s", e.message)
            elif isinstance(e, Reconcile):
                self.reconciler.kick(asyncio.get_running_loop().time() if e.urgent else None)
            elif isinstance(e, Flush):
                self.reconciler.kick(flush=e)      # after the pass that changes the route
            elif isinstance(e, ResetProber):
                # probes sent while the link was down may have left by another WAN and
                # live on in conntrack under its NAT and mark: start afresh
                if (prober := self._probers.get(e.name)) is not None:
                    prober.reset()
                if e.source is not None:
                    self._spawn(conntrack.flush_probes(e.source))
            elif isinstance(e, ForgetAddress):
                self._spawn(self._forget(e))

    async def _forget(self, e: ForgetAddress) -> None:
        if gone := await conntrack.flush_address(e.address):
            log.info("%s: %d connections NATed to its old address %s removed from conntrack",
                     e.name, gone, e.address)

    # ---- probers -------------------------------------------------------------------
    def traffic(self, wan: Wan) -> int | None:
        """Packets that arrived on `wan` from beyond its gateway (ecmpd's nft counter).

        One read serves every prober for 10 ms: their rounds start on one grid, so a
        round of all WANs costs one libnftables call.  None when it cannot be read.
        """
        now = asyncio.get_running_loop().time()
        at, counts = self._counters
        if now - at > 0.01:
            try:
                counts = self.firewall.read_counters()
            except Exception as exc:
                log.debug("cannot read nft counters: %s", exc)
                counts = {}
            self._counters = (now, counts)
        return counts.get(wan.id)

    def _traffic_of(self, name: str) -> int | None:
        wan = next((w for w in self.cfg.wans if w.name == name), None)
        return self.traffic(wan) if wan is not None else None

    def _on_round(self, name: str, result: RoundResult) -> None:
        self.submit(ProbeRound(name, result.verdict, result.reason))

    def _start_prober(self, wan: Wan) -> None:
        targets, quorum = probe_targets(self.state, wan)
        prober = Prober(wan.name, targets, wan.probe,
                        lambda r, n=wan.name: self._on_round(n, r),
                        traffic=lambda n=wan.name: self._traffic_of(n), quorum=quorum,
                        spare=True)
        self._follow(prober, wan)            # its address, device and own targets
        self._probers[wan.name] = prober
        self._probing[wan.name] = asyncio.get_running_loop().create_task(prober.run())

    def _stop_prober(self, name: str) -> None:
        if (task := self._probing.pop(name, None)) is not None:
            task.cancel()
        self._probers.pop(name, None)

    def _reconfigure_probers(self, cfg: Config) -> None:
        """Probers for `cfg`: new WANs get one, removed ones lose theirs, others update."""
        for name in [n for n in self._probers if n not in {w.name for w in cfg.wans}]:
            self._stop_prober(name)
        self._follow_probers(reconfigured=True)
        for wan in cfg.wans:
            if wan.name not in self._probers:
                self._start_prober(wan)

    # ---- start-up, reload, control ---------------------------------------------------
    async def _hup(self) -> None:
        """SIGHUP: reload; a failure is logged (a refused config already is)."""
        try:
            await self.reload()
        except Exception:
            log.exception("reload failed")

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config; an invalid one changes nothing."""
        self.notifier.reloading()
        try:
            try:
                cfg = load_config(self.config_path)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused: %s", problem)
                return False, "config refused, nothing changed:\n" + str(exc)
            # the control socket stays where it is (it may come from --socket)
            cfg = replace(cfg, control_socket=self.cfg.control_socket,
                          control_group=self.cfg.control_group)
            plan = plan_reload(self.cfg, cfg)
            async with self.kernel.lock:
                # ecmpd's objects are recognised by their numbers: when those change, the
                # ledger records both and hands the routes and rules over, new first
                # (make before break), so nothing is orphaned and no packet finds no route
                if plan.reinstall:
                    log.info("route proto/metric, tables or rule priorities changed: "
                             "handing routes and rules over to the new numbers")
                await self.ledger.switch(self.kernel.ipr, self.cfg, cfg)
                self.submit(Reloaded(cfg, plan))
                self._reconfigure_probers(cfg)
                self.watcher.follow(cfg)
            if (defaults := await self.kernel.dump_defaults()) is not None:
                self.submit(DefaultsRead(defaults))    # the gateways to learn now
            await self.reconciler.settled()
            self.ledger.settle(self.cfg)  # a later reload may have replaced cfg already
            log.info("reloaded %s", self.config_path)
            return True, "reloaded"
        finally:
            self.notifier.ready()

    async def handle(self, req: dict) -> dict:
        """Answer one control request (already validated by the control server)."""
        cmd = req["cmd"]
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, **status.render(await self.snapshot())}
        if cmd == "reload":
            ok, message = await self.reload()
            return {"ok": ok, "message": message} if ok else {"ok": False, "error": message}
        name = req["wan"]
        if name not in self.state.wans:
            names = ", ".join(self.state.wans)
            return {"ok": False, "error": f"no WAN named {name!r} (have: {names})"}
        disabled = cmd == "disable"
        self.submit(SetDisabled(name, disabled))
        decision = await self.reconciler.settled()
        if disabled and decision.in_route(name):
            return {"ok": False, "wan": name, "disabled": True,
                    "error": f"{name} is disabled, but its nexthop stays in the route: no "
                             f"other WAN is usable, so the last route is kept (the disable is "
                             f"remembered across a restart once it leaves the route)"}
        return {"ok": True, "wan": name, "disabled": disabled}

    def _record_disabled(self, decision: Decision) -> None:
        """Remember the disables that took effect: a disabled WAN still in the route
        (the last usable one) is not recorded until it leaves it, so a restart never
        starts with fewer usable WANs than the router had (none, at worst)."""
        names = frozenset(n for n, ws in decision.state.wans.items()
                          if ws.disabled and not decision.in_route(n))
        if names != self._recorded_disabled and self.disabled_store.save(set(names)):
            self._recorded_disabled = names     # else the next pass writes it again

    async def snapshot(self) -> status.Snapshot:
        """What status shows, taken at one moment (conntrack counted just before)."""
        assert self.kernel.ipr is not None
        cfg = self.cfg
        counts = await conntrack.count_marks({w.name: cfg.mark_of(w) for w in cfg.wans},
                                             cfg.mark_mask)
        async with self.kernel.lock:
            # unchanged since a pass that changed nothing: that read is the kernel's state
            actual = (self.reconciler.unchanged()
                      or await routing.read_actual(self.kernel.ipr, cfg))
            st = self.state                 # with the kernel read: nothing in between
            probes = {w.name: status.reading(p, p.targets)
                      for w in st.cfg.wans if (p := self._probers.get(w.name))}
            r = self.reconciler
            stats = status.Stats(r.passes, r.changes, self.firewall.applies,
                                 self.watcher.events, tuple(r.reactions), r.flushes,
                                 self.watcher.resyncs)
        return status.Snapshot(st, main_route(actual.routes, st.cfg), actual.foreign_main,
                               tuple(routing.stray_warnings(actual, st.cfg)), counts, probes,
                               stats, os.getpid(), self.config_path, time.time() - self.started)

    # ---- life ----------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, clean up.  Returns the exit code."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._hup()))
        self.kernel.open()
        k = self.kernel
        cfg = self.cfg
        self.disabled_store = DisabledStore(cfg.control_socket + ".disabled.json")
        links, addresses = await k.dump_links(), await k.dump_addresses()
        disabled = self.disabled_store.load({w.name for w in cfg.wans})
        self._recorded_disabled = frozenset(disabled)
        self.state = initial(cfg, links or {}, addresses or {}, disabled, time.time(),
                             await k.dump_defaults(), await k.dump_local() or frozenset())
        for level, message in ownaddr.changes({}, {w.name: own_targets(self.state, w)
                                                   for w in cfg.wans}):
            log.log(level, message)
        async with k.lock:
            # what an earlier run left under other numbers (kill -9, then a config with
            # other tables/priorities/metric/nft table) is handed over, not orphaned
            await self.ledger.take_over(k.ipr, cfg)
            actual = await routing.read_actual(k.ipr, cfg)
        for line in routing.stray_warnings(actual, cfg):
            log.warning("%s", line)
        self.submit(Adopted(main_route(actual.routes, cfg)))
        self.control = ControlServer(cfg.control_socket, self.handle, cfg.control_group)
        await self.control.start()
        self.watcher.follow(cfg)
        await self.watcher.start()
        await self.watcher.resync()       # what changed before the subscription
        await self.reconciler.settled()
        self.ledger.settle(cfg)
        for wan in cfg.wans:
            self._start_prober(wan)
        await self._first_verdicts()
        self.notifier.ready(f"{len(active(self.state))}/{len(self.state.wans)} WANs active")
        log.info("ecmpd %d running: %s", os.getpid(), ", ".join(
            f"{n} {ws.health.state.name}" for n, ws in self.state.wans.items()))
        dog = loop.create_task(self._watchdog())
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            dog.cancel()
            await self.shutdown()
        return 0

    async def _first_verdicts(self) -> None:
        """Wait (bounded) until every WAN with a link had its first probe verdict and the
        route shows them: READY then means the route is there."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.5 + max((w.probe.interval + 2 * w.probe.timeout
                                       for w in self.cfg.wans), default=0.0)
        while awaiting_verdict(self.state) and loop.time() < end:
            await asyncio.sleep(0.01)
        await self.reconciler.settled()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if not interval:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval / 2)

    async def shutdown(self) -> None:
        """Stop probing and, unless keep_on_exit, remove everything ecmpd installed."""
        for name in list(self._probers):
            self._stop_prober(name)
        await self.watcher.stop()
        if self.control is not None:
            await self.control.close()
        await self.reconciler.close()
        cfg = self.cfg
        if cfg.keep_on_exit:
            log.info("keep_on_exit: leaving routes, rules and nft table in place")
        elif self.kernel.ipr is not None:
            async with self.kernel.lock:
                removed = await routing.remove_all(self.kernel.ipr, cfg)
                try:
                    self.firewall.remove()
                except Exception as exc:
                    log.error("cannot remove nft table %s: %s", cfg.nft_table, exc)
                self.reconciler.sysctls.restore()
            log.info("removed ecmpd's routes and rules (%d) and nft table", removed)
        self.kernel.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task the daemon keeps a reference to until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
