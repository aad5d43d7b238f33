"""Validate `ha:` into `ecmpd.configmodel.Ha` (part of `ecmpd.config`).

`ha:` (absent or empty: standalone) makes this router one of an active/standby pair: keepalived moves the floating
addresses to the master, conntrackd syncs the connections, and both routers run ecmpd
with the same config (`ecmpd.role`).  `vips` (required) lists the LAN gateway addresses
that float; `detect_interval` how often the master checks that no other host holds a
floating address (`ecmpd.splitbrain`; null: never).

A floating address is the pair's, never one router's: it must not be one of the
addresses this file gives the router itself (`lan.addresses`, a WAN's `address`), nor a
probe target (on the master the router answers it itself).  At run time the master
holds the VIPs as local addresses: nothing in ecmpd that looks at the router's own
addresses may take them for a WAN's (`state.address` skips floating addresses).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Interface, IPv6Interface, ip_address
from typing import Any, Protocol

from . import schema
from .configmodel import GATEWAY_TARGET, Config, Ha, Wan
from .configvalues import Bad
from .role import SUBJECT
from .yamlpos import YList, YMap

HA_KEYS = schema.keys("ha")
_INVALID = object()


class Validator(Protocol):
    """What this module needs of `ecmpd.config`'s validator."""

    own: list[tuple[str, IPv4Interface | IPv6Interface]]
    targets: list[tuple[str, tuple[str, ...], list[int]]]

    def add(self, line: int, path: str, message: str) -> None: ...

    def mapping(self, v: Any, path: str, line: int, keys: Sequence[str] | None,
                null_ok: bool = False) -> YMap | None: ...

    def items(self, m: YMap, key: schema.Key, path: str) -> tuple[Any, ...] | None: ...


def parse_ha(val: Validator, doc: YMap) -> Any:
    """`doc`'s `ha:` as an `Ha` (None: absent: standalone); `_INVALID` after reporting."""
    if doc.get("ha") is None:
        return None             # `ha:` empty: standalone, as without it
    line = doc.value_lines["ha"]
    sec = val.mapping(doc["ha"], "ha", line, HA_KEYS)
    if sec is None:
        return _INVALID
    ok = True
    vips: tuple[str, ...] = ()
    if "vips" not in sec:
        val.add(doc.key_lines["ha"], "ha.vips", "required key is missing")
        ok = False
    else:
        got = val.items(sec, schema.key("ha.vips"), "ha")
        ok = got is not None
        vips = got or ()
        if got:
            ok = _not_own(val, got, sec["vips"]) and ok
    wans = doc.get("wans")
    if isinstance(wans, YMap) and SUBJECT in wans:
        val.add(wans.key_lines[SUBJECT], f"wans.{SUBJECT}", f"'{SUBJECT}' names the HA pair's "
                f"own changes (history, monitor, hooks) in a config with ha:; rename the WAN")
        ok = False
    interval = schema.key("ha.detect_interval").default
    if "detect_interval" in sec:
        parse = schema.key("ha.detect_interval").parse
        assert parse is not None
        try:
            interval = parse(sec["detect_interval"])
        except Bad as e:
            val.add(sec.value_lines["detect_interval"], "ha.detect_interval", str(e))
            ok = False
    return Ha(vips=vips, detect_interval=interval) if ok else _INVALID


def _not_own(val: Validator, vips: tuple[str, ...], lines: YList) -> bool:
    """Report the VIPs that are this router's own configured addresses or probe
    targets; True when there is none."""
    mine = {str(a.ip): where for where, a in val.own}
    probed = {ip_address(t): f"{path}[{i}]" for path, values, _ in val.targets
              for i, t in enumerate(values) if t != GATEWAY_TARGET}
    ok = True
    for i, v in enumerate(vips):
        line = lines.item_lines[i]
        if v in mine:
            val.add(line, f"ha.vips[{i}]", f"{v} is this router's own address ({mine[v]}): "
                    f"a VIP is the pair's, added by keepalived on the master; give each "
                    f"router its own address besides it")
            ok = False
        elif (where := probed.get(ip_address(v))) is not None:
            val.add(line, f"ha.vips[{i}]", f"{v} is also a probe target ({where}): the "
                    f"master answers it itself, so the WAN would never fail over")
            ok = False
    return ok


def invalid(v: Any) -> bool:
    """Whether `parse_ha` reported `v` invalid."""
    return v is _INVALID


def snat_address(wan: Wan, family: int) -> str | None:
    """WAN `wan`'s floating address of IP version `family` (`nat: {snat: ADDRESS}`),
    normalized; None: that version is not SNATed to a fixed address.  Reads the model's
    accessor where it has one, else the (version, "snat", address) entries of `nat`."""
    accessor = getattr(wan, "snat_address", None)
    if accessor is not None:
        a = accessor(family)
    else:
        a = next((e[2] for e in wan.nat if e[0] == family and len(e) == 3), None)
    return None if a is None else str(ip_address(str(a)))


def floating(cfg: Config) -> dict[str, tuple[str, ...]]:
    """Interface -> the floating addresses that live on it: the VIPs on every LAN
    interface, each WAN's SNAT addresses on its interface ({} without `ha:`)."""
    if cfg.ha is None:
        return {}
    out: dict[str, tuple[str, ...]] = {i: cfg.ha.vips for i in cfg.lan_interfaces}
    for w in cfg.wans:
        mine = tuple(a for f in w.families if (a := snat_address(w, f)) is not None)
        if mine:
            out[w.interface] = tuple(dict.fromkeys(out.get(w.interface, ()) + mine))
    return out


_FLOATING: dict[int, tuple[Config, frozenset[str]]] = {}
"""id(config) -> (config, its floating addresses): computed once per config."""


def floating_set(cfg: Config) -> frozenset[str]:
    """Every floating address of the config, normalized."""
    hit = _FLOATING.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    out = frozenset(a for addrs in floating(cfg).values() for a in addrs)
    if len(_FLOATING) > 64:
        _FLOATING.clear()
    _FLOATING[id(cfg)] = (cfg, out)
    return out
