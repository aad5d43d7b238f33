"""This router's role in an HA pair (`ha:`), what it changes, and what the pair must agree on.

Two routers run ecmpd with the same config; keepalived (VRRP) decides which one is
master and moves the floating addresses (the LAN `ha.vips`, each HA WAN's `nat: {snat:
ADDRESS}`) to it, and its notify script tells ecmpd with `ecmpctl role master|backup|
fault`.  Without `ha:` the role is `standalone` (everything as before); with it ecmpd
starts as `backup` until told otherwise, or with the role it had before a restart
(`RoleStore`: keepalived notifies only on a change, so a restarted ecmpd would not
learn it again).

What the role changes, and what it does not:

* Both routers install the same routes, rules and nft table and keep probing every
  WAN: the kernel state a takeover needs is in place before it happens, so a takeover
  needs nothing from ecmpd.
* Only the master deletes connections from conntrack (a WAN's flush when it goes DOWN,
  ``failback: flush``, a reload's stale marks, the connections NATed to an address that
  went): conntrackd syncs the master's deletions to the backup, and a backup deleting
  entries would fight the master's table.  A backup skips them (`hastep.gate`); the
  router that becomes master flushes the WANs it finds DOWN (what it skipped).
  Each router still deletes its own probes' entries (their source is its own address).
* Only the master checks for a split brain (`ecmpd.splitbrain`).
* Hooks get ``ECMPD_ROLE``; a role change is a transition of the subject ``ha`` in
  history, journal, monitor and hooks; metrics show ``ecmpd_ha_role{role}``.

ecmpd's numbers mean the same WAN on both routers when both have the same config: a
WAN's id (explicit, or its position in `wans`) gives its ct/packet mark and routing
table, a policy WAN set's route number its mark and table, `rules.priority` the rules.
`marks_digest` hashes exactly these, so two routers whose status shows the same digest
pin a synced connection to the same WAN.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from . import statefile
from .configmodel import Config
from .control_protocol import ROLES

log = logging.getLogger("ecmpd")

STANDALONE, MASTER, BACKUP, FAULT = "standalone", *ROLES
SPLIT_BRAIN = "split-brain"
"""The `ha` subject's state while this master sees another host holding a floating
address."""
SUBJECT = "ha"
"""The name HA transitions carry in place of a WAN's (their family is 0)."""


@dataclass(frozen=True, order=True)
class Sighting:
    """Another host answered for floating address `address` on `interface`, from `mac`."""

    interface: str
    address: str
    mac: str


@dataclass(frozen=True)
class Conflict:
    """A floating address another host holds (a split brain), since when, and the
    checks in a row that found no answer for it (it clears after `CLEAR_AFTER`)."""

    sighting: Sighting
    since: float
    misses: int = 0


CLEAR_AFTER = 3
"""Checks in a row without another host's answer before a conflict is over: one lost
probe or answer does not end (and then restart) a split brain."""


@dataclass(frozen=True)
class HaState:
    """The role and what the split-brain checks found (part of `state.State`)."""

    role: str = STANDALONE
    since: float = 0.0
    """Epoch seconds of the last role change (or of the start)."""
    conflicts: tuple[Conflict, ...] = ()
    """The floating addresses another host holds now (only while master)."""
    reason: str = ""
    """Why the role is what it is (``ecmpctl role``, ``kept from before the restart``)."""

    @property
    def split_brain(self) -> bool:
        return bool(self.conflicts)

    @property
    def shown(self) -> str:
        """The `ha` subject's state: the role, or `SPLIT_BRAIN`."""
        return SPLIT_BRAIN if self.conflicts else self.role

    @property
    def deletes_connections(self) -> bool:
        """Whether this router deletes conntrack entries (standalone or master)."""
        return self.role in (STANDALONE, MASTER)


def start_role(cfg: Config) -> str:
    """The role a config starts in: `backup` in a pair, else `standalone`."""
    return BACKUP if cfg.ha is not None else STANDALONE


# ---- what the two routers must agree on ---------------------------------------------------

def marks(cfg: Config) -> list[dict[str, Any]]:
    """Each WAN's and each policy WAN set's numbers: mark, table (what a synced
    connection's ct mark and the rules make of it)."""
    out: list[dict[str, Any]] = [
        {"wan": w.name, "id": w.id, "mark": f"0x{cfg.mark_of(w):08x}",
         "table": cfg.table_of(w), "families": [f"ipv{f}" for f in w.families]}
        for w in cfg.wans]
    for route, p in sorted(cfg.policy_routes().items()):
        out.append({"set": "+".join(p.use), "route": route,
                    "mark": f"0x{cfg.route_mark(route):08x}",
                    "table": cfg.table_base + route})
    return out


def marks_digest(cfg: Config) -> str:
    """A short hash of `marks`, the mark mask and the rules' and routes' numbers: equal on
    two routers whose ecmpd numbers mean the same WANs."""
    doc = {"marks": marks(cfg), "mask": cfg.mark_mask, "rule_priority": cfg.rule_priority,
           "table_base": cfg.table_base, "route_proto": cfg.route_proto,
           "nft_table": cfg.nft_table}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- kept across a restart -----------------------------------------------------------------

class RoleStore:
    """The role last set, next to the control socket (`<socket>.role.json`: in
    /run/ecmpd, kept across a restart of ecmpd, gone at a reboot, when keepalived
    starts afresh and notifies again).  Read as untrusted input (`statefile`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> tuple[str, float] | None:
        """(role, since) remembered; None: none, or the file is refused (logged)."""
        doc = statefile.read_json(self.path)
        if doc is None:
            return None
        role, since = (doc.get("role"), doc.get("since")) if isinstance(doc, dict) else (None,
                                                                                         None)
        if role not in ROLES or not isinstance(since, (int, float)) or isinstance(since,
                                                                                 bool):
            log.warning("ignoring %s: not a role and the time it was set", self.path)
            return None
        return role, float(since)

    def save(self, role: str, since: float) -> bool:
        """Write the role atomically; False when it could not be (logged, never raised)."""
        try:
            statefile.write(self.path, json.dumps({"role": role, "since": round(since, 3)}))
            return True
        except OSError as exc:
            log.warning("cannot remember the HA role in %s: %s", self.path, exc)
            return False
