"""Load and validate ecmpd's YAML config into an `ecmpd.configmodel.Config`.

Every mistake becomes one line `<source>:<line>: <key.path>: <message>` in
`ConfigError.problems`, all of them collected before raising; no other exception
leaves `load_config` / `parse_config`.  `<source>` is printed exactly as the caller
gave it (`load_config` passes the path as given, so messages name the file the admin
typed).  List items are addressed 0-based: `lan.interfaces[0]`.  The line is that of
the offending value; for an unknown or repeated key that of the key; for a missing
key that of the key owning the mapping it is missing from.  Problems are sorted by line;
at most `MAX_SHOWN` are listed, then one `<source>: N more problems not shown`.  A file
that cannot be used at all gets `<source>: <message>` (see `ecmpd.configfile`).

Beyond the schema in config/ecmpd.yaml: an optional section written as null means "all
defaults"; per-WAN `probe:` keys override the global ones key by key, and a per-WAN
`max_loss: null` / `max_rtt: null` switches a global limit off for that WAN.
`probe.timeout` may exceed `probe.interval` (rounds overlap) but at most 5 times,
`max_timeout` must be at least `timeout`, and `max_rtt` must not exceed `timeout` (a
slower reply is never measured).  `quorum` null or absent means a majority of the WAN's
targets; an explicit quorum must not exceed the number of targets.  `address` is
only checked (the gateway must lie in its subnet), and so is the optional
`lan.addresses`: probe targets and gateways must not be this router's own addresses,
inside a LAN, or a subnet's network/broadcast address (a probe answered by the router
itself never fails, so the WAN would never fail over); given the addresses the machine
has (`local`: `--check` on the router), targets must not be any of those either; given
its /proc/sys (`sysctl_root`: `--check`, start and reload), `hash: src` needs the custom
multipath hash sysctls of the IP versions the WANs carry; given its interfaces (`links`:
`--check` on the router), each LAN interface must exist and be up (`ecmpd.lan`).  Interface names must be names
a real LAN/WAN interface can have (not `all`, `default`, `lo`), and integers must be
written in plain decimal (see `ecmpd.configvalues`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

from ecmpd import schema
from ecmpd.configfile import Unreadable, read_text
from ecmpd.configpolicies import parse_policies
from ecmpd.configha import invalid as ha_invalid, parse_ha
from ecmpd.configchecks import (Origin, check_beyond, check_hash, check_hooks, check_local,
                                probe_limits)
from ecmpd.lan import Links, check_live
from ecmpd import configvalues as cv
from ecmpd.configvalues import Bad
from ecmpd.configmodel import (GATEWAY_TARGET, MASQUERADE, MAX_WANS, SNAT, Config, ProbeSettings,
                               Wan, family_of)
from ecmpd.yamlpos import YamlProblem, YList, YMap, describe, load_document

LAN_KEYS = schema.keys("lan")
TOP_KEYS = schema.keys("")
WAN_KEYS = schema.keys("wans.*")
PROBE_KEYS = schema.keys("probe")
RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}
_DEFAULT_PROBE = ProbeSettings()
_WAN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_SHOWN = 100
"""Problem lines listed at most (a hostile file can have thousands)."""
_Message = str | Callable[[], str]
"""A problem's message, or a function making it (rendered only if it is shown)."""


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one message line per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def load_config(path: str, local: frozenset[str] | None = None,
                sysctl_root: str | None = None, links: Links | None = None,
                check_hooks: bool = False) -> Config:
    """Read and validate the config file at `path`; raises only `ConfigError`.
    `local`: this machine's addresses (normalized), refused as probe targets;
    `sysctl_root`: this machine's /proc/sys, where `hash: src` needs its sysctls;
    `links`: this machine's interfaces, where the LAN's must be (each None: not
    checked); `check_hooks`: every hook must be an executable file now (`--check`; the
    daemon only warns: a missing script must not stop failover)."""
    return parse_config(read_config_text(path), path, local, sysctl_root, links, check_hooks)


def read_config_text(path: str) -> str:
    """The config file's text; `ConfigError` naming the file when it cannot be read."""
    try:
        return read_text(path)
    except Unreadable as e:
        where = path if e.line is None else f"{path}:{e.line}"
        raise ConfigError([f"{where}: {e.message}"]) from None


def parse_config(text: str, source: str, local: frozenset[str] | None = None,
                 sysctl_root: str | None = None, links: Links | None = None,
                 check_hooks: bool = False) -> Config:
    """Validate YAML `text`; `source` names it in messages and becomes `Config.source`;
    `local`, `sysctl_root`, `links`, `check_hooks`: as for `load_config`."""
    config, problems = _Validator(source, local, sysctl_root, links, check_hooks).run(text)
    if problems or config is None:
        raise ConfigError(problems or [f"{source}:1: invalid configuration"])
    return config


def problems_for(text: str, source: str) -> list[str]:
    """The problem lines of `text` (empty when it is a valid config)."""
    return _Validator(source).run(text)[1]


_INVALID: Any = object()


def _keystr(key: Any) -> str:
    if isinstance(key, str):
        text = key if key.isprintable() else repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return describe(key)


def _unknown_key(key: Any, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(_keystr(key), keys, n=1)
    return "unknown key (" + (f"did you mean '{close[0]}'?" if close else
                              f"expected one of: {', '.join(keys)}") + ")"


def _join(path: str, key: Any) -> str:
    return f"{path}.{_keystr(key)}" if path else _keystr(key)


_PROBE = schema.section("probe")
_WAN_VALUES = tuple(k for k in schema.section("wans.*") if not k.is_section and k.name != "nat")
"""The WAN keys parsed alike; `nat` is parsed once the WAN's IP versions are known."""
_SECTIONS = schema.config_sections()
"""Sections of plain `Config` fields (`marks`, `tables`, ...) -> their keys."""


class _Validator:
    """One validation run: collects (line, path, message) problems."""

    def __init__(self, source: str, local: frozenset[str] | None = None,
                 sysctl_root: str | None = None, links: Links | None = None,
                 check_hooks: bool = False) -> None:
        self.source = source
        self.links = links
        """This machine's interfaces (None: not known, not checked)."""
        self.check_hooks = check_hooks
        """Whether hooks must be executable files on this machine now."""
        self.local = local
        """This machine's addresses (None: not known, not checked)."""
        self.sysctl_root = sysctl_root
        """This machine's /proc/sys (None: not checked)."""
        self.found: list[tuple[int, str, _Message]] = []
        self.own: list[tuple[str, IPv4Interface]] = []
        """(key path, address) of this router's addresses: WANs' and LAN's."""
        self.targets: list[tuple[str, tuple[str, ...], list[int]]] = []
        """(key path, targets, their lines) of every valid `targets` list."""
        self.gateways: list[tuple[str, IPv4Address, int]] = []
        """(WAN key path, gateway, its line)."""

    def add(self, line: int, path: str, message: _Message) -> None:
        self.found.append((line, path, message))

    def problems(self) -> list[str]:
        rows = list(dict.fromkeys(sorted(self.found, key=lambda p: p[0])))
        out: list[str] = []
        for line, path, msg in rows[:MAX_SHOWN]:
            text = msg if isinstance(msg, str) else msg()
            out.append(f"{self.source}:{line}: {path}: {text}" if path else
                       f"{self.source}:{line}: {text}")
        if len(rows) > MAX_SHOWN:
            out.append(f"{self.source}: {len(rows) - MAX_SHOWN} more problems not shown")
        return out

    def mapping(self, v: Any, path: str, line: int, keys: Sequence[str] | None,
                null_ok: bool = False) -> YMap | None:
        """`v` as a mapping whose keys are reported if unknown/repeated; None if not one."""
        if v is None and null_ok:
            return _empty_map(line)
        if not isinstance(v, YMap):
            self.add(line, path, f"must be a mapping, got {describe(v)}")
            return None
        for kind, kline in v.bad_keys:
            self.add(kline, path, f"keys must be plain values, got {kind}")
        for key, kline, first in v.duplicates:
            self.add(kline, _join(path, key), f"duplicate key (first at line {first})")
        for key in v if keys is not None else ():
            if key not in keys or not isinstance(key, str):
                self.add(v.key_lines[key], _join(path, key), partial(_unknown_key, key, keys))
        return v

    def field(self, m: YMap, key: str, path: str, parse: Callable[[Any], Any],
              default: Any = _INVALID, owner_line: int = 1) -> Any:
        """Parsed `m[key]`; `default` if absent (missing-key problem if there is none:
        `_INVALID` or `schema.REQUIRED`)."""
        if key not in m:
            if default is _INVALID or default is schema.REQUIRED:
                self.add(owner_line, _join(path, key), "required key is missing")
                return _INVALID
            return default
        try:
            return parse(m[key])
        except Bad as e:
            self.add(m.value_lines[key], _join(path, key), str(e))
            return _INVALID

    def items(self, m: YMap, key: schema.Key, path: str) -> tuple[Any, ...] | None:
        """`m[key.name]` as a list of unique items parsed by `key.parse` (non-empty
        unless `key.empty_ok`), or None after reporting."""
        v, line, parse = m[key.name], m.value_lines[key.name], key.parse
        path = _join(path, key.name)
        assert parse is not None
        if not isinstance(v, YList) or not (v or key.empty_ok):
            kind = "list" if key.empty_ok else "non-empty list"
            self.add(line, path, f"must be a {kind} of {key.items}, got {describe(v)}")
            return None
        first: dict[Any, int] = {}  # value -> index of its first occurrence
        ok = True
        for i, (item, iline) in enumerate(zip(v, v.item_lines)):
            try:
                value = parse(item)
            except Bad as e:
                self.add(iline, f"{path}[{i}]", str(e))
                ok = False
                continue
            if value in first:
                self.add(iline, f"{path}[{i}]", f"duplicate of {path}[{first[value]}]")
                ok = False
            first.setdefault(value, i)
        return tuple(first) if ok else None

    def run(self, text: str) -> tuple[Config | None, list[str]]:
        """Validate `text`; returns (config or None, problem lines)."""
        try:
            doc, doc_line = load_document(text)
        except YamlProblem as e:
            self.add(e.line, "", e.message)
            return None, self.problems()
        if doc is None:
            self.add(1, "", "the file is empty; expected a mapping with at least 'lan' "
                            "and 'wans'")
            return None, self.problems()
        if not isinstance(doc, YMap):
            self.add(doc_line, "", f"the top level must be a mapping, got {describe(doc)}")
            return None, self.problems()
        config = self.top(doc)
        problems = self.problems()
        return (None if problems else config), problems

    def top(self, doc: YMap) -> Config | None:
        self.mapping(doc, "", doc.line, TOP_KEYS)
        kwargs: dict[str, Any] = {"source": self.source}
        lan = self.field(doc, "lan", "", lambda v: v, owner_line=doc.line)
        lan_ifs: Any = None
        if lan is not _INVALID:
            lan_map = self.mapping(lan, "lan", doc.value_lines["lan"], LAN_KEYS)
            if lan_map is not None and "interfaces" not in lan_map:
                self.add(doc.key_lines["lan"], "lan.interfaces", "required key is missing")
            elif lan_map is not None:
                lan_ifs = self.items(lan_map, schema.key("lan.interfaces"), "lan")
            if lan_map is not None and "addresses" in lan_map:
                addrs = self.items(lan_map, schema.key("lan.addresses"), "lan")
                self.own += [(f"lan.addresses[{i}]", a) for i, a in enumerate(addrs or ())]
        for key in schema.section(""):
            if key.items:               # null: none (where an empty list is fine)
                given = doc.get(key.name) is not None or not key.empty_ok
                got = self.items(doc, key, "") if key.name in doc and given else key.default
                kwargs[key.field] = _INVALID if got is None else got
            elif not key.is_section:
                kwargs[key.field] = self.field(doc, key.name, "", key.parse, key.default)
        if self.check_hooks and kwargs["hooks"] is not _INVALID and kwargs["hooks"]:
            check_hooks(self.add, kwargs["hooks"], doc["hooks"].item_lines)
        for section, keys in _SECTIONS.items():
            sec = self.mapping(doc.get(section), section, doc.value_lines.get(section, 1),
                               tuple(k.name for k in keys), null_ok=True)
            for key in keys if sec is not None else ():
                kwargs[key.field] = self.field(sec, key.name, section, key.parse, key.default)
        probe = self.probe(doc.get("probe"), "probe", doc.value_lines.get("probe", 1))
        self.merge_probe(probe, ({}, set()))  # cross-key checks even if `wans` is broken
        wans = self.wans(doc, probe, kwargs.get("table_base"))
        kwargs["policies"] = parse_policies(self, doc, wans, kwargs.get("table_base"))
        self.global_targets(doc, wans)
        ha = parse_ha(self, doc)
        kwargs["ha"] = None if ha_invalid(ha) else ha
        check_beyond(self.add, self.own, self.targets, self.gateways)
        if self.local:
            check_local(self.add, self.local, {str(a.ip) for _, a in self.own}, self.targets)
        if self.sysctl_root is not None and kwargs.get("hash") == "src" and wans:
            check_hash(self.add, doc.value_lines["hash"],
                       {f for w in wans for f in w.families}, self.sysctl_root)
        if isinstance(lan_ifs, tuple) and wans:
            by_if = {w.interface: w for w in wans}
            lines = doc["lan"]["interfaces"].item_lines
            for i, name in enumerate(lan_ifs):
                if name in by_if:
                    self.add(lines[i], f"lan.interfaces[{i}]",
                             f"'{name}' is also the interface of wans.{by_if[name].name}")
        if isinstance(lan_ifs, tuple) and self.links is not None:
            check_live(self.add, lan_ifs, doc["lan"]["interfaces"].item_lines, self.links,
                       [w.interface for w in wans or ()])
        if self.found or lan_ifs is None or not wans:
            return None
        return Config(lan_interfaces=lan_ifs, wans=tuple(wans), **kwargs)

    def probe(self, v: Any, path: str, line: int) -> tuple[dict[str, Origin], set[str]]:
        """Valid probe keys present in `v` with their origin, and the invalid keys."""
        got: dict[str, Origin] = {}
        bad: set[str] = set()
        sec = self.mapping(v, path, line, PROBE_KEYS, null_ok=True)
        if sec is None:
            return got, set(PROBE_KEYS)
        for k in _PROBE:
            key = k.name
            if key not in sec:
                continue
            kline = sec.value_lines[key]
            if k.items:
                value = self.items(sec, k, path)
                if value:
                    self.targets.append((f"{path}.{key}", value, sec[key].item_lines))
            else:
                value = self.field(sec, key, path, k.parse)
            if value is None and k.items or value is _INVALID:
                bad.add(key)
            else:
                got[key] = (value, f"{path}.{key}", kline)
        return got, bad

    def merge_probe(self, glob: tuple[dict[str, Origin], set[str]],
                    own: tuple[dict[str, Origin], set[str]]) -> ProbeSettings:
        """Defaults <- global <- per-WAN, key by key, then the cross-key checks."""
        m: dict[str, Origin] = {k: (getattr(_DEFAULT_PROBE, k), None, 0) for k in PROBE_KEYS}
        m.update(glob[0])
        m.update(own[0])
        bad = glob[1] | own[1]
        val = {k: o[0] for k, o in m.items()}
        probe_limits(self.add, m, bad)
        return ProbeSettings(**val)

    def wans(self, doc: YMap, probe: tuple[dict[str, Origin], set[str]],
             table_base: Any) -> list[Wan] | None:
        """The WANs (ids assigned) or None; reports per-WAN and cross-WAN problems."""
        line = doc.value_lines.get("wans", doc.line)
        v = self.field(doc, "wans", "", lambda v: v, owner_line=doc.line)
        if v is _INVALID:
            return None
        if not isinstance(v, YMap) or not v:
            self.add(line, "wans", f"must be a non-empty mapping of WAN names to WANs, "
                                   f"got {describe(v)}")
            return None
        self.mapping(v, "wans", line, None)
        if len(v) > MAX_WANS:
            self.add(line, "wans", f"at most {MAX_WANS} WANs, got {len(v)}")
        parts: list[dict[str, Any]] = []
        flush: list[tuple[str, Any, int]] = []
        """(WAN key path, tier, line) of the WANs with ``failback: flush``."""
        # gateways and addresses may repeat: two modems at 192.168.1.1 (the router at
        # 192.168.1.2 behind each), two ISPs. routers at fe80::1,
        # each on its own interface (everything is keyed by WAN and interface)
        seen: dict[str, dict[Any, str]] = {"interface": {}, "id": {}}
        for pos, (name, body) in enumerate(v.items(), start=1):
            path = _join("wans", name)
            if not isinstance(name, str) or not _WAN_NAME.fullmatch(name):
                self.add(v.key_lines[name], path, f"a WAN name must be 1 to 32 of "
                         f"A-Z a-z 0-9 _ . -, got {describe(name)}")
            w = self.mapping(body, path, v.value_lines[name], WAN_KEYS)
            if w is None:
                continue
            kl = v.key_lines[name]
            p: dict[str, Any] = {"name": name, "pos": pos}
            for k in _WAN_VALUES:
                p[k.name] = self.field(w, k.name, path, k.parse, k.default, owner_line=kl)
            addr = p.pop("address")
            self.wan_address6(w, path, p.pop("address6"))
            p["families"] = tuple(f for f, k in ((4, "gateway"), (6, "gateway6")) if k in w)
            if not p["families"]:
                self.add(kl, f"{path}.gateway", "required key is missing: a WAN needs "
                         "gateway (IPv4), gateway6 (IPv6) or both ('auto' learns either)")
                p["families"] = _INVALID
            p["nat"] = self.nat(w, path, p["families"])
            gw = p["gateway"]
            if isinstance(addr, IPv4Interface) and isinstance(gw, IPv4Address):
                net = addr.network
                why = (f"is the router's own address ({path}.address)" if gw == addr.ip else
                       f"is not inside {path}.address {addr}" if gw not in net else
                       f"is the network or broadcast address of {net}"
                       if net.prefixlen <= 30 and gw in (net.network_address,
                                                         net.broadcast_address) else "")
                if why:
                    self.add(w.value_lines["gateway"], f"{path}.gateway", f"{gw} {why}")
            p["address"] = addr.ip if isinstance(addr, IPv4Interface) else None
            if isinstance(addr, IPv4Interface):
                self.own.append((f"{path}.address", addr))
            if isinstance(gw, IPv4Address):
                self.gateways.append((path, gw, w.value_lines["gateway"]))
            p["probe"] = self.merge_probe(
                probe, self.probe(w.get("probe"), f"{path}.probe",
                                  w.value_lines.get("probe", kl)))
            self.family_targets(w, path, p, probe)
            for key, taken in seen.items():
                value = p[key]
                if value is None or value is _INVALID:
                    continue
                if value in taken:
                    shown = f"'{value}'" if key == "interface" else str(value)
                    self.add(w.value_lines[key], f"{path}.{key}",
                             f"{shown} is already the {key} of {taken[value]}")
                else:
                    taken[value] = path
            if p["failback"] == "flush":
                flush.append((path, p["tier"], w.value_lines["failback"]))
            parts.append(p)
        tiers = [p["tier"] for p in parts if isinstance(p["tier"], int)]
        for path, tier, fline in flush:
            if isinstance(tier, int) and tier <= min(tiers):
                self.add(fline, f"{path}.failback", f"flush has no effect: no WAN is in a "
                         f"lower tier than this WAN's tier {tier}")
        used = set(seen["id"])
        for p in parts:  # defaults: the WAN's position, skipping ids set explicitly
            if p["id"] is None:
                free = [i for i in range(p["pos"], 256) if i not in used] or \
                    [i for i in range(1, 256) if i not in used] or [_INVALID]
                p["id"] = free[0]
                used.add(free[0])
        if isinstance(table_base, int):
            if table_base in RESERVED_TABLES:
                self.add(doc["tables"].value_lines["base"], "tables.base",
                         f"ecmpd's multipath route lives in table tables.base ({table_base}),"
                         f" the kernel's '{RESERVED_TABLES[table_base]}' table")
            for p in parts:
                table = table_base + p["id"] if isinstance(p["id"], int) else 0
                if table in RESERVED_TABLES:
                    self.add(doc["tables"].value_lines["base"], "tables.base",
                             f"{_join('wans', p['name'])} (id {p['id']}) would use table "
                             f"{table}, the kernel's '{RESERVED_TABLES[table]}' table")
        out = []
        for p in parts:
            fields = {f.name: p[f.name] for f in dataclasses.fields(Wan)}
            if _INVALID not in fields.values():
                out.append(Wan(**fields))
        return out

    def nat(self, w: YMap, path: str, families: Any) -> Any:
        """The WAN's `nat:` as `Wan.nat`: one mode for every IP version it carries,
        `{snat: ADDRESS}` for the address's version (the other one masqueraded), or a
        mapping ``ipv4:`` / ``ipv6:`` -> mode or `{snat: ADDRESS}` (a version left out is
        masqueraded); naming a version the WAN does not carry is a mistake."""
        if "nat" not in w:
            return ()
        v, where, line = w["nat"], _join(path, "nat"), w.value_lines["nat"]
        modes: dict[int, Any] = {}
        if not isinstance(v, YMap):
            mode = self.field(w, "nat", path, schema.key("wans.*.nat").parse)
            modes = dict.fromkeys(() if families is _INVALID else families,
                                  _INVALID if mode is _INVALID else (mode,))
        elif self.mapping(v, where, line, (*cv.FAMILY_KEYS, SNAT)) is None:
            return _INVALID
        elif SNAT in v:
            if len(v) > 1:
                self.add(line, where, "give snat: alone (for its address's IP version), "
                         "or per version: {ipv4: {snat: ADDRESS}, ipv6: none}")
                return _INVALID
            a = self.field(v, SNAT, where, cv.snat_address)
            if a is _INVALID:
                return _INVALID
            self.carried(families, a.version, v.key_lines[SNAT], _join(where, SNAT), path)
            modes[a.version] = (SNAT, a)
        else:
            for key, f in cv.FAMILY_KEYS.items():
                if key not in v:
                    continue
                modes[f] = self.family_nat(v, key, where, f)
                self.carried(families, f, v.key_lines[key], _join(where, key), path)
        if _INVALID in modes.values():
            return _INVALID
        return tuple((f, *m) for f, m in sorted(modes.items()) if m[0] != MASQUERADE)

    def family_nat(self, v: YMap, key: str, where: str, family: int) -> Any:
        """One version's `nat:` under `ipv4:` / `ipv6:`: ``(mode,)`` or ``("snat", address)``."""
        sub, at = v[key], _join(where, key)
        if not isinstance(sub, YMap):
            mode = self.field(v, key, where, cv.nat_mode)
            return _INVALID if mode is _INVALID else (mode,)
        if self.mapping(sub, at, v.value_lines[key], (SNAT,)) is None:
            return _INVALID
        a = self.field(sub, SNAT, at, partial(cv.snat_address, family=family),
                       owner_line=v.value_lines[key])
        return _INVALID if a is _INVALID else (SNAT, a)

    def carried(self, families: Any, family: int, line: int, where: str, path: str) -> None:
        """A problem unless the WAN at `path` carries IP version `family`."""
        if families is not _INVALID and family not in families:
            self.add(line, where, f"{path} carries no IPv{family} "
                     f"(no {'gateway' if family == 4 else 'gateway6'})")

    def wan_address6(self, w: YMap, path: str, addr: Any) -> None:
        """`address6`, checked only: the WAN carries IPv6, a fixed global gateway6 lies
        in its subnet and is not the address itself; no probe target may be it."""
        if not isinstance(addr, IPv6Interface):
            return
        line = w.value_lines["address6"]
        if "gateway6" not in w:
            self.add(line, f"{path}.address6", "the WAN carries no IPv6 (no gateway6)")
            return
        self.own.append((f"{path}.address6", addr))
        gw = w["gateway6"]
        try:
            gw = IPv6Address(gw)
        except ValueError:
            return                   # auto, or refused already
        why = (f"is the router's own address ({path}.address6)" if gw == addr.ip else
               f"is not inside {path}.address6 {addr}"
               if not gw.is_link_local and addr.network.prefixlen < 128
               and gw not in addr.network else "")
        if why:
            self.add(w.value_lines["gateway6"], f"{path}.gateway6", f"{gw} {why}")

    def family_targets(self, w: YMap, path: str, p: dict[str, Any],
                       probe: tuple[dict[str, Origin], set[str]]) -> None:
        """Each family the WAN carries needs a probe target of that family."""
        settings, families = p["probe"], p["families"]
        if (settings is _INVALID or families is _INVALID
                or not isinstance(getattr(settings, "targets", None), tuple)):
            return
        own = w.get("probe")
        where = (f"{path}.probe.targets" if isinstance(own, YMap) and "targets" in own
                 else "probe.targets")
        origin = probe[0].get("targets")
        line = (own.value_lines["targets"] if where.startswith(path) else
                origin[2] if origin else w.value_lines.get("gateway6", 1))
        for f in families:
            if not settings.family_targets(f):
                self.add(line, where, f"wans.{p['name']} carries IPv{f} "
                         f"({'gateway' if f == 4 else 'gateway6'}) but lists no IPv{f} "
                         f"target: add 'gateway' or an IPv{f} address")
        for f in (4, 6):
            if f not in families and where != "probe.targets" and any(
                    t != GATEWAY_TARGET and family_of(t) == f for t in settings.targets):
                self.add(line, where, f"lists IPv{f} targets, but wans.{p['name']} carries "
                         f"no IPv{f} (no {'gateway' if f == 4 else 'gateway6'})")

    def global_targets(self, doc: YMap, wans: list[Wan] | None) -> None:
        """An address family in `probe.targets` that no WAN carries is a mistake."""
        probe = doc.get("probe")
        if not wans or not isinstance(probe, YMap) or not isinstance(
                targets := probe.get("targets"), list):
            return
        for f in (4, 6):
            if (not any(w.has(f) for w in wans) and any(
                    isinstance(t, str) and t != GATEWAY_TARGET and family_of(t) == f and _parses(t)
                    for t in targets)):
                self.add(probe.value_lines["targets"], "probe.targets",
                         f"lists IPv{f} targets, but no WAN carries IPv{f} "
                         f"(no {'gateway' if f == 4 else 'gateway6'})")


def _parses(target: Any) -> bool:
    try:
        cv.target(target)
    except Bad:
        return False
    return True


def _empty_map(line: int) -> YMap:
    m = YMap()
    m.line, m.key_lines, m.value_lines, m.duplicates, m.bad_keys = line, {}, {}, [], []
    return m
