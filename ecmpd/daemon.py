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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import conntrack, lan, learned, nftrules, ownaddr, policyrules, routing
from .config import ConfigError
from .configparse import Reloads
from .configmodel import FAMILIES, Config, Wan
from .control_server import ControlServer
from .disabled import DisabledStore
from .events import (Adopted, DefaultsRead, Effect, Event, Flush, ForgetAddress, Log,
                     ProbeRound, Reconcile, Reloaded, ResetProber, SetDisabled, Transition,
                     step)
from .firewall import Firewall
from .hadaemon import HaRuntime
from .history import History, as_json
from .hooks import Hooks
from .journal import Journal, lines_of, under_systemd
from .judge import RoundResult
from .kernel import Kernel
from .learned import LearnedStore
from .ledger import Ledger
from .logsetup import RateLimitedLog
from .metrics import Metrics
from .prober import Prober
from .reconciler import Reconciler
from .sdnotify import Notifier
from .decision import Decision, main_route, set_routes, stranded
from .state import (State, active, address, awaiting_verdict, initial, no_target, own_by_wan,
                    own_targets, plane, probe_gateway, probe_targets, project, usable)
from .sysctl import PROC_SYS, Sysctls
from .watcher import Watcher

if TYPE_CHECKING:
    from . import status  # imported where a snapshot is taken: nothing at start needs it

log = logging.getLogger("ecmpd")


class Daemon:
    """ecmpd's running process; `run()` is its whole life."""

    def __init__(self, cfg: Config, config_path: str, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self._reloads = Reloads()
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self.state: State = initial(cfg, {}, {}, (), self.started)
        """The one current state; replaced whole by `submit`, never mutated."""
        self.disabled_store = DisabledStore(cfg.control_socket + ".disabled.json")
        self.firewall = Firewall(cfg)
        self.kernel = Kernel(lambda: self.state)
        """The rtnetlink socket for dumps and changes, its lock and its reads."""
        self.watcher = Watcher(self, reads=self.kernel)
        self.metrics = Metrics(self.snapshot)
        """The Prometheus counters, and the endpoint when `metrics.listen` is set."""
        self.reconciler = Reconciler(
            lambda: self.state, self.kernel, self.firewall, Sysctls(), self._spawn,
            report=self.submit, on_pass=self._after_pass,
            stamp=lambda: (self.watcher.events, self.watcher.resyncs),
            on_reaction=self.metrics.reaction)
        self._recorded_disabled: frozenset[str] | None = None
        """The disabled WANs last written to `disabled_store` (None: not yet)."""
        self.learned_store = LearnedStore(cfg.control_socket + ".learned.json")
        self._recorded_learned: dict[tuple[str, int], learned.Record] | None = None
        """The learned gateways last written to `learned_store` (None: not yet)."""
        self.ledger = Ledger(cfg.control_socket)
        """The ownership numbers installed (`<socket>.owned.json`): nothing is orphaned."""
        self.control: ControlServer | None = None
        self._probers: dict[tuple[str, int], Prober] = {}
        """(WAN name, IP version) -> its prober: each version is probed on its own."""
        self._probing: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._counters: tuple[float, dict[nftrules.CounterKey, int]] = (-1.0, {})
        """(loop time read, (IP version, WAN id) -> packets from beyond its gateway):
        see `traffic`."""
        self._limited = RateLimitedLog(log)
        """Keyed log lines (a gateway that moves): one per key every 10 s, then a count."""
        self.history = History()
        """The last transitions: `ecmpctl history` and the downs in status."""
        self.journal = Journal(interface=self._interface) if under_systemd() else None
        """Structured journal entries of the transitions (only under systemd)."""
        self._told: Log | None = None
        """The log line of the transition being handed to the listeners (journal only)."""
        self.hooks = Hooks(lambda: self.state)
        """Runs the configured hooks on every WAN state change, beside the loop."""
        self.listeners: list[Callable[[Transition], None]] = [
            self.history.record, self._publish, self.metrics.transition, self.hooks]
        """Told every WAN state change, in order, on the loop; none may block it."""
        self.ha = HaRuntime(lambda: self.state, self.submit, cfg.control_socket)
        """The role file and the split-brain checks (`ecmpd.hadaemon`)."""
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
        after = self.state
        if (after.links is not before.links or after.addresses is not before.addresses
                or after.defaults is not before.defaults or after.local is not before.local
                or after.addresses6 is not before.addresses6
                or after.defaults6 is not before.defaults6):
            self._follow_probers()
        if after.ha is not before.ha or after.cfg.ha != before.cfg.ha:
            self.ha.follow(before)
        self._carry_out(effects)


    def _follow_probers(self, reconfigured: bool = False) -> None:
        """Probers follow their WAN's address, interface, gateway (learned ones move) and
        which targets are the router's own addresses; `reconfigured`: the probe settings
        may have changed too."""
        for family in FAMILIES:
            p = plane(self.state, family)
            for wan in p.cfg.wans:
                if (prober := self._probers.get((wan.name, family))) is None:
                    continue
                targets, quorum = probe_targets(p, wan)
                if reconfigured or targets != prober.targets:
                    prober.update(targets, wan.probe, quorum)
                self._follow(prober, p, wan)

    @staticmethod
    def _follow(prober: Prober, p: State, wan: Wan) -> None:
        """`prober` follows `wan` as plane `p` has it."""
        prober.follow(address(p, wan), wan.interface, own_targets(p, wan), no_target(p, wan),
                      probe_gateway(p, wan))

    def _carry_out(self, effects: Iterable[Effect]) -> None:
        effects = tuple(effects)
        said = lines_of(effects, self._label) if self.journal is not None else {}
        written = {id(line) for line in said.values()}
        for e in effects:
            if isinstance(e, Log):
                if id(e) in written:
                    continue            # the journal gets it with its transition's fields
                if e.key is None:
                    log.log(e.level, e.message)
                else:
                    self._limited.log(e.key, e.level, "%s", e.message)
            elif isinstance(e, Transition):
                self._told = said.get(id(e))
                for listener in self.listeners:
                    try:
                        listener(e)
                    except Exception:       # a listener's bug must not stop the state
                        log.exception("a listener of WAN state changes failed")
            elif isinstance(e, Reconcile):
                self.reconciler.kick(asyncio.get_running_loop().time() if e.urgent else None)
            elif isinstance(e, Flush):
                self.reconciler.kick(flush=e)      # after the pass that changes the route
            elif isinstance(e, ResetProber):
                # probes sent while the link was down may have left by another WAN and
                # live on in conntrack under its NAT and mark: start afresh
                if (prober := self._probers.get((e.name, e.family))) is not None:
                    prober.reset()
                if e.source is not None:
                    self._spawn(conntrack.flush_probes(e.source))
            elif isinstance(e, ForgetAddress):
                self._spawn(self._forget(e))

    async def _forget(self, e: ForgetAddress) -> None:
        if gone := await conntrack.flush_address(e.address):
            log.info("%s: %d connections NATed to its old address %s removed from conntrack",
                     e.name, gone, e.address)

    def _publish(self, t: Transition) -> None:
        """A transition to the journal and to the `ecmpctl monitor` clients (neither
        blocks: both drop what their reader cannot take)."""
        if self.journal is not None:
            said, self._told = self._told, None
            if said is not None and said.level < log.getEffectiveLevel():
                said = None             # below the configured level: the short form
            self.journal.send(t, said)
        if self.control is not None:
            self.control.publish(t.name, as_json(t))

    def _label(self, name: str, family: int) -> str | None:
        wan = self.cfg.find(name)
        return wan.label(family) if wan is not None else None

    def _interface(self, name: str) -> str | None:
        wan = self.cfg.find(name)
        return wan.interface if wan is not None else None

    # ---- probers -------------------------------------------------------------------
    def traffic(self, wan: Wan, family: int = 4) -> int | None:
        """Packets of IP version `family` that arrived on `wan` from beyond its gateway
        (ecmpd's nft counter).

        One read serves every prober for 10 ms: their rounds start on one grid, so a
        round of all WANs costs one read of the WANs' counters (not the policies').
        None when it cannot be read.
        """
        now = asyncio.get_running_loop().time()
        at, counts = self._counters
        if now - at > 0.01:
            try:
                counts = self.firewall.read_counters(policies=False)
            except Exception as exc:   # the probes judge without it: say so, not per round
                self._limited.log("counters", logging.WARNING,
                                  "cannot read ecmpd's nft counters (rounds are judged "
                                  "without the line's traffic): %s", exc)
                counts = {}
            self._counters = (now, counts)
        return counts.get((family, wan.id))

    def policy_packets(self) -> dict[int, int]:
        """Policy position -> packets its nft counter saw ({} when they cannot be read)."""
        try:
            counts = self.firewall.read_counters()
        except Exception as exc:
            log.debug("cannot read nft counters: %s", exc)
            return {}
        return {position: n for (kind, position), n in counts.items()
                if kind == policyrules.COUNTER_KEY}

    def _traffic_of(self, name: str, family: int) -> int | None:
        wan = self.cfg.find(name)
        return self.traffic(wan, family) if wan is not None else None

    def _on_round(self, name: str, family: int, result: RoundResult) -> None:
        self.submit(ProbeRound(name, result.verdict, result.reason, family))

    def _start_prober(self, wan: Wan, family: int) -> None:
        """A prober for IP version `family` of `wan` (a WAN of that version's plane)."""
        p = plane(self.state, family)
        targets, quorum = probe_targets(p, wan)
        label = wan.name if family == 4 else f"{wan.name} IPv6"
        prober = Prober(label, targets, wan.probe,
                        lambda r, n=wan.name, f=family: self._on_round(n, f, r),
                        traffic=lambda n=wan.name, f=family: self._traffic_of(n, f),
                        quorum=quorum, spare=True,
                        line_traffic=lambda n=wan.name, g=10 - family: self._traffic_of(n, g),
                        line_sent=lambda n=wan.name, g=10 - family: self._newest(n, g),
                        lean=(lambda n=wan.name: self._prompt(n, 4))
                        if family == 6 and self.cfg.wan(wan.name).has(4) else None)
        self._follow(prober, p, wan)            # its address, device and own targets
        self._probers[(wan.name, family)] = prober
        self._probing[(wan.name, family)] = asyncio.get_running_loop().create_task(prober.run())

    def _prompt(self, name: str, family: int) -> float | None:
        """WAN `name`'s IP version `family` prober's `prompt()` (None: no prober)."""
        prober = self._probers.get((name, family))
        return None if prober is None else prober.prompt()

    def _newest(self, name: str, family: int) -> tuple[float, float] | None:
        """(when it was sent, its RTT) of WAN `name`'s IP version `family`'s newest
        answered probe (None: not probed): the other version's prober tells queued from
        lost by it (`ecmpd.prober`)."""
        prober = self._probers.get((name, family))
        return prober.newest() if prober is not None else None

    def _stop_prober(self, key: tuple[str, int]) -> None:
        if (task := self._probing.pop(key, None)) is not None:
            task.cancel()
        self._probers.pop(key, None)

    @staticmethod
    def _probed(cfg: Config) -> list[tuple[Wan, int]]:
        """(WAN of a version's plane, version) for every version each WAN carries."""
        return [(w, f) for f in FAMILIES for w in project(cfg, f).wans]

    def _reconfigure_probers(self, cfg: Config) -> None:
        """Probers for `cfg`: new WANs (and versions) get one, removed ones lose theirs,
        others update."""
        keys = {(w.name, f) for w, f in self._probed(cfg)}
        for key in [k for k in self._probers if k not in keys]:
            self._stop_prober(key)
        self._follow_probers(reconfigured=True)
        for wan, family in self._probed(cfg):
            if (wan.name, family) not in self._probers:
                self._start_prober(wan, family)

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
        done = False
        try:
            try:
                cfg = await self._reloads.load(self.config_path, sysctl_root=PROC_SYS)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused: %s", problem)
                return False, "config refused, nothing changed:\n" + str(exc)
            # the control socket stays where it is (it may come from --socket)
            cfg = replace(cfg, control_socket=self.cfg.control_socket,
                          control_group=self.cfg.control_group)
            from .reloadplan import plan_reload
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
                self.hooks.configure(cfg)
                self._reconfigure_probers(cfg)
                self.watcher.follow(cfg)
            for family in FAMILIES:     # the gateways to learn now
                if (defaults := await self.kernel.dump_defaults(family=family)) is not None:
                    self.submit(DefaultsRead(defaults, family))
            await self.reconciler.settled()
            self.ledger.settle(self.cfg)  # a later reload may have replaced cfg already
            await self.metrics.listen(self.cfg.metrics_listen)
            log.info("reloaded %s", self.config_path)
            done = True
            return True, "reloaded"
        finally:
            self.metrics.reloaded(done)
            self.notifier.ready()

    async def handle(self, req: dict) -> dict:
        """Answer one control request (already validated by the control server)."""
        cmd = req["cmd"]
        if cmd == "ping":
            return {"ok": True}
        if cmd == "role":
            return self.ha.set_role(req["role"])
        if cmd == "status":
            from . import status
            return {"ok": True, **status.render(await self.snapshot())}
        if cmd == "history":
            return self._history(req.get("wan"))
        if cmd == "reload":
            ok, message = await self.reload()
            return {"ok": ok, "message": message} if ok else {"ok": False, "error": message}
        name = req["wan"]
        if self.cfg.find(name) is None:
            return self._no_such_wan(name)
        disabled = cmd == "disable"
        lost: tuple[int, ...] = ()
        if disabled:
            # refused before anything changes: nothing is recorded, the route stays
            lost = stranded(await self.reconciler.settled(), name)
            if lost and not req.get("force"):
                return {"ok": False, "wan": name, "disabled": False,
                        "error": self._stranding(name, lost) + "; use --force"}
        self.submit(SetDisabled(name, disabled))
        await self.reconciler.settled()
        out = {"ok": True, "wan": name, "disabled": disabled}
        if lost:
            out["message"] = f"{name}: disabled (forced): ecmpd's " + " and ".join(
                f"{self.cfg.version_prefix(f)}route" for f in lost) + " is gone"
        return out

    def _no_such_wan(self, name: str) -> dict:
        names = ", ".join(w.name for w in self.cfg.wans)
        return {"ok": False, "error": f"no WAN named {name!r} (have: {names})"}

    def _stranding(self, name: str, lost: tuple[int, ...]) -> str:
        """Why disabling WAN `name` would leave IP versions `lost` without a route."""
        v = "" if len(lost) > 1 else self.cfg.version_prefix(lost[0])
        if all(usable(plane(self.state, f), name) for f in lost):
            return (f"{name} is the last usable {v}WAN: disabling it would leave no "
                    f"{v}route")
        return (f"{name} is the last {v}WAN in ecmpd's kept route (no {v}WAN is usable): "
                f"disabling it would leave no {v}route")

    def _history(self, name: str | None) -> dict:
        """The transitions kept, oldest first (of WAN `name`: one the config has, or had
        while they happened)."""
        entries = self.history.entries(name)
        if name is not None and not entries and self.cfg.find(name) is None:
            return self._no_such_wan(name)
        return {"ok": True, "limit": self.history.limit,
                "transitions": [as_json(t) for t in entries]}

    def _after_pass(self, decision: Decision) -> None:
        self._record_disabled(decision)
        recs = learned.records(decision.state)
        if recs != self._recorded_learned and self.learned_store.save(recs):
            self._recorded_learned = recs         # else the next pass writes it again

    def _record_disabled(self, decision: Decision) -> None:
        """Remember the disables that took effect: those whose nexthop left the routes
        (a disabled WAN's always leaves, even a kept route: `decision.without_disabled`;
        the last one is disabled only with --force, see `handle`)."""
        st = decision.state
        names = frozenset(n for f in FAMILIES for n, ws in plane(st, f).wans.items()
                          if ws.disabled and not any(decision.in_route(n, g) for g in FAMILIES))
        if names != self._recorded_disabled and self.disabled_store.save(set(names)):
            self._recorded_disabled = names     # else the next pass writes it again

    async def snapshot(self) -> status.Snapshot:
        """What status shows, taken at one moment (conntrack counted just before)."""
        from . import status
        assert self.kernel.ipr is not None
        cfg = self.cfg
        counts = await conntrack.count_marks({w.name: cfg.mark_of(w) for w in cfg.wans},
                                             cfg.mark_mask)
        async with self.kernel.lock:
            # unchanged since a pass that changed nothing: that read is the kernel's state
            actual = self.reconciler.unchanged() or {
                f: await routing.read_actual(self.kernel.ipr, cfg, family=f) for f in FAMILIES}
            st = self.state                 # with the kernel read: nothing in between
            probes = {key: status.reading(p, p.targets) for key, p in self._probers.items()}
            r = self.reconciler
            stats = status.Stats(r.passes, r.changes, self.firewall.applies,
                                 self.watcher.events, tuple(r.reactions), r.flushes,
                                 self.watcher.resyncs,
                                 len(self.control.monitors) if self.control else 0)
        policy_packets = self.policy_packets() if cfg.policies else {}
        downs = self.history.summary([w.name for w in st.cfg.wans], FAMILIES, time.time())
        return status.Snapshot(st, main_route(actual[4].routes, st.cfg), actual[4].foreign_main,
                               tuple(routing.stray_warnings(actual[4], st.cfg)), counts, probes,
                               stats, os.getpid(), self.config_path, time.time() - self.started,
                               main6=main_route(actual[6].routes, st.cfg, 6),
                               foreign_main6=actual[6].foreign_main,
                               policy_packets=policy_packets, history=downs)

    # ---- life ----------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, clean up.  Returns the exit code."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._hup()))
        self.notifier.starting("reading the kernel")
        self.kernel.open()
        k = self.kernel
        cfg = self.cfg
        self.disabled_store = DisabledStore(cfg.control_socket + ".disabled.json")
        links, addresses = await k.dump_links(), await k.dump_addresses()
        disabled = self.disabled_store.load({w.name for w in cfg.wans})
        self._recorded_disabled = frozenset(disabled)
        st = initial(cfg, links or {}, addresses or {}, disabled, time.time(),
                     await k.dump_defaults(), await k.dump_local() or frozenset(),
                     await k.dump_addresses(6), await k.dump_defaults(family=6))
        # a restart does not wait for the next lease: the gateways learned before, where
        # they still fit (same interface and address) and no route names one now
        self.learned_store = LearnedStore(cfg.control_socket + ".learned.json")
        self.state = learned.seed(st, self.learned_store.load(st))
        self.ha = HaRuntime(lambda: self.state, self.submit, cfg.control_socket)
        self.state = self.ha.restored(self.state)
        for level, message in ownaddr.changes({}, own_by_wan(self.state)) + \
                lan.changes(None, self.state):
            log.log(level, message)
        async with k.lock:
            # what an earlier run left under other numbers (kill -9, then a config with
            # other tables/priorities/metric/nft table) is handed over, not orphaned
            await self.ledger.take_over(k.ipr, cfg)
            actual = {f: await routing.read_actual(k.ipr, cfg, family=f) for f in FAMILIES}
        for line in routing.stray_warnings(actual[4], cfg):
            log.warning("%s", line)
        for f in FAMILIES:
            self.submit(Adopted(main_route(actual[f].routes, cfg, f), f,
                                set_routes(actual[f].routes, cfg, f)))
        self.control = ControlServer(cfg.control_socket, self.handle, cfg.control_group)
        await self.control.start()
        await self.metrics.listen(cfg.metrics_listen)
        self.notifier.starting("first apply (routes, rules, nft table)")
        self.watcher.follow(cfg)
        await self.watcher.start()
        await self.watcher.resync()       # what changed before the subscription
        await self.reconciler.settled()
        self.ledger.settle(cfg)
        self.ha.start()
        self.notifier.starting("waiting for the first probe verdicts")
        for wan, family in self._probed(cfg):
            self._start_prober(wan, family)
        await self._first_verdicts()
        st = self.state
        usable = {n for f in FAMILIES for n in active(plane(st, f))}
        self.notifier.ready(f"{len(usable)}/{len(cfg.wans)} WANs active")
        log.info("ecmpd %d running: %s", os.getpid(), ", ".join(
            f"{cfg.wan(n).label(f)} {ws.health.state.name}"
            for f in FAMILIES for n, ws in plane(st, f).wans.items()))
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
        while (any(awaiting_verdict(plane(self.state, f)) for f in FAMILIES)
               and loop.time() < end):
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
        self.ha.close()
        for key in list(self._probers):
            self._stop_prober(key)
        await self.watcher.stop()
        if self.control is not None:
            await self.control.close()
        await self.metrics.close()
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
        if self.journal is not None:
            self.journal.close()
        self.kernel.close()
        await self.hooks.close()        # bounded: hook_timeout, then they are killed

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task the daemon keeps a reference to until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
