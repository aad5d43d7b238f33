"""The daemon's side of an HA pair: the role kept across a restart, `ecmpctl role`, and
the split-brain checks running exactly while master (`ecmpd.role` says what a role
changes; `ecmpd.hastep` computes it).

The daemon stays the one owner of the state: this module reads it (`state()`), feeds
events (`submit`) and hands back a state to start from (`restored`), never writes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import configha, hastep
from .role import MASTER, ROLES, RoleStore, Sighting
from .splitbrain import Detector
from .state import State

log = logging.getLogger("ecmpd")


class HaRuntime:
    """The role file and the split-brain checks of the daemon whose state is `state()`."""

    def __init__(self, state: Callable[[], State], submit: Callable[[Any], None],
                 socket_path: str) -> None:
        self._state = state
        self._submit = submit
        self.store = RoleStore(socket_path + ".role.json")
        """The HA role, kept across a restart (keepalived notifies only on a change)."""
        self._detector: tuple[Detector, asyncio.Task[None]] | None = None
        self._running = False

    def restored(self, st: State) -> State:
        """`st` (the state at start) with the role kept from before a restart, in a
        pair; a master that holds none of the VIPs is suspect (keepalived adds them)."""
        ha = st.cfg.ha
        got = self.store.load() if ha is not None else None
        if ha is None:
            return st
        if got is None:
            log.info("HA role backup until keepalived's notify script says otherwise "
                     "(ecmpctl role)")
            return st
        log.info("HA role %s, kept from before the restart", got[0])
        if got[0] == MASTER and not set(ha.vips) & st.local:
            log.warning("HA role master kept from before the restart, but this router holds "
                        "none of the VIPs (%s): is keepalived running? `ecmpctl role` "
                        "sets the role", ", ".join(ha.vips))
        return hastep.restored(st, *got)

    def start(self) -> None:
        """The daemon runs: checks may start (while master)."""
        self._running = True
        self.follow()

    def follow(self, before: State | None = None) -> None:
        """The role changed (or the config's `ha:`): remember it, and check for a split
        brain exactly while master with `ha.detect_interval` set."""
        st = self._state()
        if before is not None and st.cfg.ha is not None and (
                st.ha.role, st.ha.since) != (before.ha.role, before.ha.since):
            self.store.save(st.ha.role, st.ha.since)
        ha = st.cfg.ha
        interval = ha.detect_interval if ha is not None and st.ha.role == MASTER else None
        if self._detector is not None and self._detector[0].interval != interval:
            self._detector[1].cancel()
            self._detector = None
        if interval is not None and self._detector is None and self._running:
            det = Detector(lambda: configha.floating(self._state().cfg), self._sighted,
                           interval)
            self._detector = (det, asyncio.get_running_loop().create_task(self._check(det)))

    async def _check(self, det: Detector) -> None:
        try:
            await det.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:        # no AF_PACKET (a sandbox): said once
            log.error("cannot check for a split brain: %s", exc)

    def _sighted(self, seen: tuple[Sighting, ...]) -> None:
        self._submit(hastep.SplitBrainChecked(seen))

    def set_role(self, role: str) -> dict[str, Any]:
        """`ecmpctl role`'s answer (keepalived's notify script does not wait for the
        flushes a new master starts)."""
        st = self._state()
        if st.cfg.ha is None:
            return {"ok": False, "error": "no ha: section in the config (this router is "
                                          "standalone)"}
        if role not in ROLES:
            return {"ok": False, "error": f"no role {role!r} (have: {', '.join(ROLES)})"}
        before = st.ha.role
        self._submit(hastep.SetRole(role))
        said = f"role {before} -> {role}" if before != role else f"role {role} (unchanged)"
        return {"ok": True, "role": role, "previous": before, "message": said}

    def close(self) -> None:
        """The daemon stops: no more checks."""
        self._running = False
        if self._detector is not None:
            self._detector[1].cancel()
            self._detector = None
