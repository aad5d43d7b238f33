"""The daemon: one asyncio loop holding the probers, the netlink watcher, the reconciler
and the control server.

Data flows one way: config → validated model → (with health and links) desired state →
diff with the kernel → apply.  Every change of health or links, and every foreign
change to ecmpd's own objects, ends in `reconcile()`, which is serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from dataclasses import replace

from .netlinkimport import AsyncIPRoute

from . import conntrack, health, routing
from .config import ConfigError, load_config
from .control import ControlServer
from .desired import MAIN_TABLE, Desired, build_desired
from .drain import DrainStore
from .firewall import Firewall
from .health import Health, State
from .logsetup import NOTICE
from .model import Config, Wan
from .prober import Prober, RoundResult
from .reconfig import plan_reload
from .sdnotify import Notifier
from .sysctl import Sysctls
from .watcher import Watcher
from . import status as status_mod

log = logging.getLogger("ecmpd")


class WanRuntime:
    """What the daemon knows about one WAN besides its config."""

    def __init__(self, wan: Wan) -> None:
        self.wan = wan
        self.health = Health()
        self.since = time.time()
        self.prober: Prober | None = None
        self.task: asyncio.Task[None] | None = None
        self.link_ok = True
        """Carrier up and an address present, as last seen."""


class Daemon:
    """ecmpd's running state; `run()` is the whole life of the process."""

    def __init__(self, cfg: Config, config_path: str, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self.wans: dict[str, WanRuntime] = {w.name: WanRuntime(w) for w in cfg.wans}
        self.disabled: set[str] = set()
        self.drained = DrainStore(cfg.control_socket + ".disabled.json")
        self.links: dict[str, dict] = {}
        self.addresses: dict[int, list[tuple[str, int]]] = {}
        self.firewall = Firewall(cfg)
        self.sysctls = Sysctls()
        self.ipr: AsyncIPRoute | None = None
        self.kept_last = False
        self.reconciles = 0
        self.changes = 0
        self.reactions: deque[float] = deque(maxlen=200)
        """Seconds from a health decision to the kernel's route reflecting it."""
        self._counters: tuple[float, dict[int, int]] = (-1.0, {})
        """(loop time read, WAN id -> packets from beyond its gateway): see `traffic`."""
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._pending: asyncio.Task[None] | None = None
        self._again = False
        self._tasks: set[asyncio.Task] = set()
        self.watcher = Watcher(self)
        self.control: ControlServer | None = None

    @property
    def netlink_lock(self) -> asyncio.Lock:
        """Hold it while using `ipr`: the kernel runs one dump at a time per netlink
        socket (a concurrent second dump fails with EBUSY), so reconcile, status and the
        watcher's re-reads take turns.  (Fix: status and the watcher used `ipr` unlocked.)"""
        return self._lock

    # ---- derived state -------------------------------------------------------------
    def wan_address(self, wan: Wan) -> str | None:
        """The router's primary IPv4 address on the WAN's interface."""
        return routing.primary_address(self.links, self.addresses, wan.interface)

    def carrier(self, wan: Wan) -> bool:
        link = self.links.get(wan.interface)
        return bool(link and link["carrier"])

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
        rt = self.wans.get(name)
        return self.traffic(rt.wan) if rt is not None else None

    def active(self) -> set[str]:
        """WANs whose nexthop belongs in the multipath route now."""
        return {name for name, rt in self.wans.items()
                if name not in self.disabled and self.carrier(rt.wan)
                and health.takes_new_flows(rt.health.state)}

    # ---- reconcile -----------------------------------------------------------------
    async def reconcile(self) -> int:
        """Make the kernel match the desired state; returns the number of changes."""
        async with self._lock:
            assert self.ipr is not None
            cfg = self.cfg
            actual = await routing.read_actual(self.ipr, cfg)
            addrs = {w.name: a for w in cfg.wans if (a := self.wan_address(w))}
            # the kernel refuses routes via an interface that is administratively down
            links = {name: link["index"] for name, link in self.links.items() if link["up"]}
            active = self.active()
            keep = actual.routes.get((MAIN_TABLE, cfg.route_metric))
            desired = build_desired(cfg, links, addrs, active, keep_main=keep)
            kept = not active and desired.main is not None
            if kept != self.kept_last:
                if kept:
                    log.warning("all WANs are down: keeping the last route")
                self.kept_last = kept
            changes = self.sysctls.apply(desired.sysctls)
            changes += await routing.apply(self.ipr, cfg, desired, actual)
            try:
                changes += int(self.firewall.ensure())
            except Exception as exc:
                log.error("cannot apply nft table %s: %s", cfg.nft_table, exc)
            self.reconciles += 1
            self.changes += changes
            return changes

    def kick(self) -> None:
        """Schedule a reconcile soon (coalescing bursts of events)."""
        # Fix: a kick while the pending reconcile is already running (past its read of
        # the kernel) used to be dropped, losing e.g. a foreign deletion; now it asks
        # for one more pass.
        self._again = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._kicked())

    async def _kicked(self) -> None:
        while self._again:
            self._again = False
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed")

    # ---- health --------------------------------------------------------------------
    def set_health(self, rt: WanRuntime, new: Health) -> None:
        """Record a health change; on a change of route membership, reconcile at once."""
        old = rt.health
        rt.health = new
        if not health.transitioned(old, new):
            return
        rt.since = time.time()
        was, now = health.takes_new_flows(old.state), health.takes_new_flows(new.state)
        level = logging.INFO if was == now else logging.WARNING if was else NOTICE
        what = "" if was == now else " (leaves the route)" if was else " (back in the route)"
        log.log(level, "%s: %s%s", rt.wan.name, health.describe(old, new), what)
        if was != now or new.state == State.DOWN:
            self._spawn(self._transition(rt, new, asyncio.get_running_loop().time()))

    async def _transition(self, rt: WanRuntime, new: Health, decided: float) -> None:
        try:
            await self.reconcile()
            self.reactions.append(asyncio.get_running_loop().time() - decided)
        except Exception:
            log.exception("applying %s's state change failed: retrying", rt.wan.name)
            self.kick()     # the change must not be lost: reconcile again
        finally:
            # a DOWN WAN's connections go even if the route change needs a retry
            if new.state == State.DOWN and self.wans.get(rt.wan.name) is rt:
                if await conntrack.flush_mark(self.cfg.mark_of(rt.wan), self.cfg.mark_mask):
                    log.info("%s: its connections were removed from conntrack", rt.wan.name)

    def on_round(self, name: str, result: RoundResult) -> None:
        rt = self.wans.get(name)
        if rt is None or not rt.link_ok:
            return
        p = rt.wan.probe
        self.set_health(rt, health.step(rt.health, result.verdict, p.down, p.up, result.reason))

    def link_ok(self, wan: Wan) -> bool:
        """Carrier up and an IPv4 address on the WAN's interface."""
        return self.carrier(wan) and self.wan_address(wan) is not None

    def on_link(self, wan: Wan, reason: str) -> None:
        """Links or addresses changed (from the watcher): a WAN that lost its carrier or
        address is DOWN at once; one that got them back starts RISING."""
        rt = self.wans.get(wan.name)
        if rt is None:
            return
        source = self.wan_address(wan)
        if rt.prober is not None:
            rt.prober.source = source
        ok = self.link_ok(wan)
        if ok == rt.link_ok:
            return
        rt.link_ok = ok
        if not ok:
            self.set_health(rt, health.carrier_lost(rt.health, reason))
            return
        self.set_health(rt, health.carrier_back(rt.health, reason))
        # probes sent while the link was down may have left by another WAN and live on
        # in conntrack under its NAT and mark: start afresh (new identifier, no entries)
        if rt.prober is not None:
            rt.prober.reset()
        if source is not None:
            self._spawn(conntrack.flush_probes(source))

    def _start_prober(self, rt: WanRuntime) -> None:
        wan = rt.wan
        rt.prober = Prober(wan.name, wan.probe.resolved_targets(wan.gateway), wan.probe,
                           lambda r, n=wan.name: self.on_round(n, r),
                           source=self.wan_address(wan), device=wan.interface,
                           traffic=lambda n=wan.name: self._traffic_of(n),
                           quorum=wan.probe.resolved_quorum(wan.gateway))
        rt.task = asyncio.get_running_loop().create_task(rt.prober.run())

    @staticmethod
    def _stop_prober(rt: WanRuntime) -> None:
        if rt.task is not None:
            rt.task.cancel()
        rt.task = rt.prober = None

    # ---- start-up, adoption, reload --------------------------------------------------
    async def adopt(self) -> None:
        """Initial health from what can be observed: a WAN without carrier is DOWN; when
        ecmpd's route is already there (restart), WANs missing from it start DOWN."""
        assert self.ipr is not None
        actual = await routing.read_actual(self.ipr, self.cfg)
        main = actual.routes.get((MAIN_TABLE, self.cfg.route_metric))
        in_route = main.hops() if main else None
        for rt in self.wans.values():
            link = self.links.get(rt.wan.interface)
            self._observe(rt)
            if not rt.link_ok:
                continue
            if in_route is not None and (str(rt.wan.gateway), link["index"]) not in in_route:
                rt.health = Health(State.DOWN, 0, "not in the route found at start")
        if main is not None:
            log.info("found ecmpd's route in the kernel: adopting it")

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
            if plan_reload(self.cfg, cfg).reinstall and self.ipr is not None:
                # ecmpd's objects are recognised by these values: remove the old ones
                # first, or they would be orphaned under the old numbers
                log.info("route proto/metric, tables or rule priorities changed: "
                         "reinstalling routes and rules")
                async with self._lock:
                    await routing.remove_all(self.ipr, self.cfg)
            self.apply_config(cfg)
            await self.reconcile()
            log.info("reloaded %s", self.config_path)
            return True, "reloaded"
        finally:
            self.notifier.ready()

    def apply_config(self, cfg: Config) -> None:
        """Switch to `cfg` as `reconfig.plan_reload` says: unchanged WANs keep their
        health, prober and flows; new and re-addressed ones start from what netlink
        shows; connections under marks that changed meaning are deleted."""
        plan = plan_reload(self.cfg, cfg)
        old_mask = self.cfg.mark_mask
        for name, before, after in plan.renumbered:
            log.warning("%s: id %d -> %d (ids default to the position in `wans`): its "
                        "connections are reset; give WANs explicit ids to avoid this",
                        name, before, after)
        old, self.wans = self.wans, {}
        for wan in cfg.wans:
            rt = old.pop(wan.name, None) or WanRuntime(wan)
            rt.wan = wan
            self.wans[wan.name] = rt
            if wan.name in plan.rejudged:
                rt.health, rt.since = Health(), time.time()
            if wan.name in plan.added or wan.name in plan.rejudged:
                self._observe(rt)
            if rt.prober is None:
                self._start_prober(rt)
            else:
                rt.prober.update(wan.probe.resolved_targets(wan.gateway), wan.probe,
                                 wan.probe.resolved_quorum(wan.gateway))
                rt.prober.source = self.wan_address(wan)
                rt.prober.device = wan.interface
        for rt in old.values():
            self._stop_prober(rt)
        self.disabled &= set(self.wans)
        self.firewall.reconfigure(cfg)
        self.cfg = cfg
        for mark in plan.stale_marks:
            self._spawn(conntrack.flush_mark(mark, old_mask))

    def _observe(self, rt: WanRuntime) -> None:
        """Link state and, without a usable link, DOWN health from what netlink shows."""
        link = self.links.get(rt.wan.interface)
        rt.link_ok = self.link_ok(rt.wan)
        if not rt.link_ok:
            why = ("no such interface" if link is None else
                   "no carrier" if not self.carrier(rt.wan) else "no IPv4 address")
            rt.health = Health(State.DOWN, 0, why)

    def _spawn(self, coro) -> None:
        """Run `coro` as a task the daemon keeps a reference to until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- control -------------------------------------------------------------------
    async def handle(self, req: dict) -> dict:
        """Answer one control request (already validated by the control server)."""
        cmd = req["cmd"]
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, **await status_mod.build(self)}
        if cmd == "reload":
            ok, message = await self.reload()
            return {"ok": ok, "message": message} if ok else {"ok": False, "error": message}
        name = req["wan"]
        if name not in self.wans:
            return {"ok": False, "error": f"no WAN named {name!r} (have: {', '.join(self.wans)})"}
        if cmd == "disable":
            self.disabled.add(name)
            self.drained.save(self.disabled)
            log.info("%s: disabled by the administrator (its nexthop leaves the route)", name)
        else:
            self.disabled.discard(name)
            self.drained.save(self.disabled)
            log.info("%s: enabled by the administrator", name)
        await self.reconcile()
        return {"ok": True, "wan": name, "disabled": name in self.disabled}

    # ---- life ----------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, clean up.  Returns the exit code."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._hup()))
        self.ipr = AsyncIPRoute()
        self.links = await routing.read_links(self.ipr)
        self.addresses = await routing.read_addresses(self.ipr)
        self.drained = DrainStore(self.cfg.control_socket + ".disabled.json")
        self.disabled = self.drained.load(set(self.wans))
        await self.adopt()
        self.control = ControlServer(self.cfg.control_socket, self.handle, self.cfg.control_group)
        await self.control.start()
        await self.watcher.start()
        await self.reconcile()
        for rt in self.wans.values():
            self._start_prober(rt)
        self.notifier.ready(f"{len(self.active())}/{len(self.wans)} WANs active")
        log.info("ecmpd %d running: %s", os.getpid(), ", ".join(
            f"{n} {rt.health.state.name}" for n, rt in self.wans.items()))
        dog = loop.create_task(self._watchdog())
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            dog.cancel()
            await self.shutdown()
        return 0

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if not interval:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval / 2)

    async def shutdown(self) -> None:
        """Stop probing and, unless keep_on_exit, remove everything ecmpd installed."""
        for rt in self.wans.values():
            self._stop_prober(rt)
        await self.watcher.stop()
        if self.control is not None:
            await self.control.close()
        if self.cfg.keep_on_exit:
            log.info("keep_on_exit: leaving routes, rules and nft table in place")
        elif self.ipr is not None:
            async with self._lock:
                removed = await routing.apply(self.ipr, self.cfg, Desired(main=None))
                try:
                    self.firewall.remove()
                except Exception as exc:
                    log.error("cannot remove nft table %s: %s", self.cfg.nft_table, exc)
                self.sysctls.restore()
            log.info("removed ecmpd's routes and rules (%d) and nft table", removed)
        if self.ipr is not None:
            self.ipr.close()
