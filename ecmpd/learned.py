"""Learned gateways (`gateway: auto`, `gateway6: auto`), remembered across restarts.

A WAN that learns its gateway keeps using the last one while no default route names one
(`state.remember_gateways`).  A restart would forget it and wait, DOWN "waiting for a
gateway", for the next lease or router advertisement; so the learned gateways are
written next to the control socket (``<socket>.learned.json``, with the disabled WANs)
whenever they change, and given back to the state at start (`seed`).

The file is input like any other that is not the config: read through `statefile`
(a regular file of ecmpd's, not writable by others, 64 KiB at most) and every record is
checked before use.  A record counts only while it still describes the WAN as it is: the
same interface, which still has the recorded address of that IP version (a new lease
or a new prefix means a new gateway), and a gateway that is a unicast address of that
version and not one of the router's own.  Anything else is left out, with one warning.

Shape: ``{"<wan>": {"4": {"interface": "wlan1", "address": "10.111.0.2", "gateway":
"10.111.0.1", "onlink": false}, "6": {...}}}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import configvalues, statefile
from .configmodel import FAMILIES, family_of
from .ownaddr import normal
from .state import State, WanState, address, merge, observed, plane, remember_gateways

log = logging.getLogger("ecmpd")

Record = tuple[str, str, str, bool]
"""(interface, the WAN's address of that IP version, gateway, onlink)."""
Records = Mapping[tuple[str, int], Record]
"""(WAN name, IP version) -> what it learned."""

_PARSE = {4: configvalues.gateway, 6: configvalues.gateway6}


def records(st: State) -> dict[tuple[str, int], Record]:
    """What the WANs of `st` learned and still use, as the file keeps it."""
    out: dict[tuple[str, int], Record] = {}
    for family in FAMILIES:
        p = plane(st, family)
        for w in p.cfg.wans:
            ws = p.wans.get(w.name)
            addr = address(p, w)
            if (w.gateway is None and ws is not None and ws.learned and addr is not None):
                out[(w.name, family)] = (w.interface, addr, ws.learned, ws.learned_onlink)
    return out


def to_json(recs: Records) -> str:
    doc: dict[str, dict[str, Any]] = {}
    for (name, family), (iface, addr, gw, onlink) in sorted(recs.items()):
        doc.setdefault(name, {})[str(family)] = {"interface": iface, "address": addr,
                                                  "gateway": gw, "onlink": onlink}
    return json.dumps(doc, sort_keys=True)


def _problem(st: State, name: str, family: int, entry: Any) -> str | Record:
    """The record of WAN `name`'s IP version `family` from `entry`, or why it is unusable."""
    p = plane(st, family)
    wan = p.cfg.find(name)
    if wan is None or wan.gateway is not None:
        return "the WAN does not learn a gateway of that version now"
    if not isinstance(entry, dict) or set(entry) != {"interface", "address", "gateway",
                                                     "onlink"}:
        return "not a record"
    iface, addr, gw, onlink = (entry["interface"], entry["address"], entry["gateway"],
                               entry["onlink"])
    if iface != wan.interface:
        return f"it was learned on {iface!r}, the WAN is on {wan.interface!r} now"
    if not isinstance(addr, str) or addr != address(p, wan):
        return "the WAN's address changed since"
    if not isinstance(gw, str) or not isinstance(onlink, bool) or family_of(gw) != family:
        return "not a gateway of that version"
    try:
        _PARSE[family](gw)
    except configvalues.Bad as exc:
        return f"gateway {exc}"
    if normal(gw) in st.local:
        return f"gateway {gw} is one of this router's own addresses"
    return (iface, addr, gw, onlink)


class LearnedStore:
    """Load and save the learned gateways at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, st: State) -> dict[tuple[str, int], Record]:
        """The records of the file that still fit `st` (the state at start)."""
        doc = statefile.read_json(self.path)
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            log.warning("ignoring %s: not a mapping of WAN names", self.path)
            return {}
        out: dict[tuple[str, int], Record] = {}
        for name, per in doc.items():
            for key, entry in (per.items() if isinstance(per, dict) else [(None, per)]):
                family = {"4": 4, "6": 6}.get(key) if isinstance(key, str) else None
                got = (_problem(st, name, family, entry) if family is not None
                       else "not an IP version")
                if isinstance(got, str):
                    log.warning("%s: not using the gateway remembered for %r (IP version "
                                "%s): %s", self.path, name, key, got)
                else:
                    out[(name, family)] = got  # type: ignore[index]
        return out

    def save(self, recs: Records) -> bool:
        """Write `recs` atomically; False when it could not be (logged, never raised)."""
        try:
            statefile.write(self.path, to_json(recs))
            return True
        except OSError as exc:
            log.warning("cannot remember learned gateways in %s: %s", self.path, exc)
            return False


def seed(st: State, recs: Records) -> State:
    """`st` (the state at start) with each WAN that has no default route naming a gateway
    now using the one it remembered (`recs`, as `LearnedStore.load` checked them)."""
    for family in FAMILIES:
        p = plane(st, family)
        wans: dict[str, WanState] = dict(p.wans)
        for (name, f), (_iface, _addr, gw, onlink) in recs.items():
            ws = wans.get(name)
            if f == family and ws is not None and ws.learned is None:
                wans[name] = replace(ws, learned=gw, learned_onlink=onlink)
        if wans != dict(p.wans):
            p = remember_gateways(replace(p, wans=wans))
            p = replace(p, wans={w.name: observed(p, w, replace(
                p.wan(w.name), health=WanState().health)) for w in p.cfg.wans})
            st = merge(st, p)
    return st
