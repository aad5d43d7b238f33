"""The ledger: which ownership numbers ecmpd's objects in the kernel may carry, kept
next to the control socket (``<socket>.owned.json``, like the disabled-WANs file), so
that a change of them never orphans what an earlier run installed.

ecmpd recognises its routes, rules and nft table only by numbers from its config
(`desired.Owned`: route proto and metric, tables base, rule priority, nft table, mark
mask, and the WAN ids whose tables exist).  Change one of them and restart — after a
``kill -9``, or with ``keep_on_exit`` — and the old objects are nobody's: the old
metric-0 multipath route even outranks the new one and never fails over.  So:

* before anything is installed under new numbers, the record lists the old numberings
  *and* the new one (`statefile.write`: a fresh temporary file, fsync, rename);
* the old objects are then handed over (`routing.handover`: the new ones installed
  first, then the old ones that the new state does not have removed — routes with the
  old proto in the old tables or at the old metric in main, rules in the old priority
  range pointing at the old tables; nothing else is touched);
* once the new nft table is in place (`settle`, after the first reconcile), the old nft
  table is deleted — only when it carries ecmpd's digest comment — and the record
  lists only the current numbers.

A crash at any point leaves a record that covers everything that may be installed.

The file is input, not truth: it is read as an untrusted state file (`statefile`), and
only entries whose numbers a valid config could hold count (`entries`).  What it can
make ecmpd remove is therefore bounded by what ecmpd's own config could have created.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import statefile
from .desired import Owned
from .configmodel import Config

log = logging.getLogger("ecmpd")

SUFFIX = ".owned.json"
VERSION = 1


def path_for(control_socket: str) -> str:
    """The ledger file of the daemon with this control socket."""
    return control_socket + SUFFIX


# ---- the file ------------------------------------------------------------------------

def entries(doc: Any) -> tuple[tuple[Owned, ...], list[str]]:
    """The numberings of a ledger document, and why each entry left out is unusable.

    An entry counts only when a valid config could hold its numbers (`Owned.from_json`
    checks them with the config's own parsers, and refuses the kernel's tables and other
    programs' route protocols): a forged entry can never make ecmpd take a host's
    rule, route or table for its own.  ValueError when `doc` is no ledger at all."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION \
            or not isinstance(doc.get("owned"), list):
        raise ValueError(f"not an ecmpd ledger (version {VERSION})")
    out, bad = [], []
    for i, entry in enumerate(doc["owned"]):
        try:
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            out.append(Owned.from_json(entry))
        except (KeyError, TypeError, ValueError) as exc:
            bad.append(f"owned[{i}]: {exc if not isinstance(exc, KeyError) else f'no {exc}'}")
    return tuple(out), bad


def render(owned: Iterable[Owned]) -> str:
    return json.dumps({"version": VERSION, "owned": [o.to_json() for o in owned]},
                      indent=1) + "\n"


def load(path: str) -> tuple[Owned, ...]:
    """The usable recorded numberings, oldest first; none when there is no file or it
    is refused (`statefile.read_json`) or is no ledger.  Unusable entries are left out
    (one warning)."""
    doc = statefile.read_json(path)
    if doc is None:
        return ()
    try:
        out, bad = entries(doc)
    except ValueError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return ()
    if bad:
        log.warning("ignoring %d entr%s of %s that no ecmpd config could hold: %s%s",
                    len(bad), "y" if len(bad) == 1 else "ies", path, bad[0],
                    f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    return out


def save(path: str, owned: Sequence[Owned]) -> bool:
    """Write the record atomically and durably; False (logged) when it cannot be."""
    try:
        statefile.write(path, render(owned))
        return True
    except OSError as exc:
        log.warning("cannot record ecmpd's ownership numbers in %s: %s (objects left under "
                    "other numbers by this run would not be found by the next)", path, exc)
        return False


# ---- planning (pure) -----------------------------------------------------------------

def merge(*groups: Iterable[Owned]) -> tuple[Owned, ...]:
    """The numberings of `groups` in order, one per `numbers()`: a later entry with the
    same numbers replaces an earlier one (its ids are the newer), at the later place."""
    out: dict[tuple, Owned] = {}
    for group in groups:
        for o in group:
            out.pop(o.numbers(), None)
            out[o.numbers()] = o
    return tuple(out.values())


@dataclass(frozen=True)
class Plan:
    """What a start or a reload does about the numberings recorded."""

    retire: tuple[Owned, ...]
    """Numberings whose objects must be handed over to the current ones, oldest first."""
    before: tuple[Owned, ...]
    """The record to write before the kernel is touched."""
    after: tuple[Owned, ...]
    """The record once the retired objects are gone (`Ledger.settle`)."""

    def describe(self) -> list[str]:
        return [describe(o) for o in self.retire]


def plan(recorded: Sequence[Owned], current: Owned) -> Plan:
    """For a start with `current` when the ledger holds `recorded`."""
    retire = tuple(o for o in merge(recorded) if o.numbers() != current.numbers())
    return Plan(retire, merge(retire, [current]), (current,))


def plan_switch(pending: Sequence[Owned], old: Owned, new: Owned) -> Plan:
    """For a reload from `old` to `new` while `pending` numberings are not yet settled."""
    retire = tuple(o for o in merge(pending, [old]) if o.numbers() != new.numbers())
    return Plan(retire, merge(retire, [new]), (new,))


def describe(o: Owned) -> str:
    return (f"proto {o.route_proto}, metric {o.route_metric}, tables {o.table_base}+id, "
            f"rules {o.rule_priority}.., nft table {o.nft_table}, mark mask {o.mark_mask:#x}")


# ---- doing it ------------------------------------------------------------------------

def remove_nft_table(name: str, nft: Any = None) -> bool:
    """Delete ecmpd's table `name` (``table inet``, or ``table ip`` an older ecmpd made)
    if it is ecmpd's (carries its digest comment); True when deleted.  A missing table is
    no error; a foreign one is left alone (logged)."""
    from . import nftrules
    if nft is None:
        import nftables
        nft = nftables.Nftables()
        nft.set_json_output(True)
    found = False
    for family in (nftrules.FAMILY, nftrules.LEGACY_FAMILY):
        rc, out, _err = nft.json_cmd(nftrules.list_command(name, family))
        if rc != 0:
            continue                                  # not there
        listing = out if isinstance(out, dict) else json.loads(out or "{}")
        if nftrules.listing_digest(listing) is None:
            log.warning("nft table %s %s (recorded as ecmpd's) carries no ecmpd digest: "
                        "leaving it alone", family, name)
            return False
        found = True
    if not found:
        return False
    rc, _out, err = nft.json_cmd(nftrules.delete_commands(name))
    if rc != 0:
        log.error("cannot remove ecmpd's old nft table %s: %s", name, str(err).strip())
        return False
    log.info("removed ecmpd's old nft table %s", name)
    return True


class Ledger:
    """The daemon's ledger.  Call, holding the netlink lock:

    * `take_over(ipr, cfg)` at start, before the first read of ecmpd's objects;
    * `switch(ipr, old_cfg, new_cfg)` on every reload, before the new config is applied
      (it replaces removing the old objects first: make before break);
    * `settle(cfg)` after the first reconcile with `cfg` (start and reload).
    """

    def __init__(self, control_socket: str) -> None:
        self.path = path_for(control_socket)
        self.pending: tuple[Owned, ...] = ()
        """Numberings handed over whose nft table still has to go (`settle`)."""

    async def take_over(self, ipr: Any, cfg: Config) -> int:
        """Record `cfg`'s numbers and hand over what a previous run left under others;
        returns the netlink changes made."""
        from . import routing
        current = Owned.of(cfg)
        p = plan(load(self.path), current)
        save(self.path, p.before)
        changes = 0
        for o in p.retire:
            log.warning("ecmpd's objects of an earlier run under other numbers (%s): "
                        "handing them over to the current ones (%s)",
                        describe(o), describe(current))
            try:
                changes += await routing.handover(ipr, o, current)
            except Exception:
                log.exception("handing over ecmpd's objects under %s failed", describe(o))
        self.pending = p.retire
        return changes

    async def switch(self, ipr: Any, old: Config | Owned, new: Config | Owned) -> int:
        """Reload from `old` to `new`: record both, then hand the routes and rules over
        (new first, then the old ones go) when the numbers recognising them change."""
        from . import routing
        o, n = Owned.of(old), Owned.of(new)
        p = plan_switch(self.pending, o, n)
        save(self.path, p.before)
        self.pending = p.retire
        if o.routing_numbers() == n.routing_numbers() or ipr is None:
            return 0
        return await routing.handover(ipr, o, n)

    def settle(self, cfg: Config, nft: Any = None) -> None:
        """The current numbers are installed: delete the handed-over nft tables (ecmpd's
        only) and record `cfg` alone."""
        current = Owned.of(cfg)
        for o in self.pending:
            if o.nft_table != current.nft_table:
                try:
                    remove_nft_table(o.nft_table, nft)
                except Exception as exc:
                    log.error("cannot remove ecmpd's old nft table %s: %s", o.nft_table, exc)
        self.pending = ()
        save(self.path, (current,))
