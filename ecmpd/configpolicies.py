"""Validate `policies:` into `ecmpd.configmodel.Policy` objects (part of `ecmpd.config`).

`policies` is a list; each entry matches new LAN connections by any of `src`, `dst`
(prefixes or addresses of either IP version, or lists of them), `proto` (a name of
`PROTOCOLS` or a number, or a list), `sport` / `dport` (ports ``5060`` or ranges
``"10000-20000"``, or lists; they need a `proto` with ports), `iif` (interfaces, not
WANs), and says `use: [wan, ...]` (required) and `fallback: balance | drop`.  Every
mistake is one problem with the entry's path (``policies[2].dport[1]``) and line:
an unknown WAN, a bad prefix or one with host bits, a bad port or range, a port
without `proto`, a prefix of an IP version none of its WANs carries, src and dst of
different versions only (it could never match).

Each distinct (set of WANs, fallback) gets a `route` value: the highest 1..255 not
a WAN id, downwards; it is that set's mark, table offset and rule offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import ip_network
from typing import Any, Protocol

from .configmodel import FALLBACKS, PORT_PROTOCOLS, PROTOCOLS, Policy, Wan, family_of
from .configvalues import Bad, ifname
from .desired import RESERVED_TABLES
from .yamlpos import YList, YMap, describe

POLICY_KEYS = ("name", "src", "dst", "proto", "sport", "dport", "iif", "use", "fallback")
MAX_POLICIES = 10_000
MAX_ELEMENTS = 100_000
"""Match combinations (the product of an entry's lists) over all policies, at most: a
hostile file must not make the nft table explode."""
_INVALID = object()


class Validator(Protocol):
    """What this module needs of `ecmpd.config`'s validator."""

    def add(self, line: int, path: str, message: str) -> None: ...

    def mapping(self, v: Any, path: str, line: int, keys: Sequence[str] | None,
                null_ok: bool = False) -> YMap | None: ...


def prefix(v: Any) -> str:
    """A prefix (``10.0.0.0/8``) or an address (a /32 or /128), normalized."""
    want = "an IPv4 or IPv6 prefix like 10.0.0.0/8 or 2001:db8::/32"
    if not isinstance(v, str):
        raise Bad(f"must be {want}, got {describe(v)}")
    try:
        loose = ip_network(v, strict=False)
    except ValueError:
        raise Bad(f"must be {want}, got {describe(v)}") from None
    try:
        ip_network(v)
    except ValueError:
        raise Bad(f"{v} has host bits set (did you mean {loose}?)") from None
    return str(loose)


def protocol(v: Any) -> int:
    """A protocol name of `PROTOCOLS` or a number 0..255."""
    if isinstance(v, str) and v.lower() in PROTOCOLS:
        return PROTOCOLS[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255:
        return v
    raise Bad(f"must be one of {', '.join(PROTOCOLS)} or a number 0..255, got {describe(v)}")


def port_range(v: Any) -> tuple[int, int]:
    """A port 1..65535 or a range ``"low-high"`` (low <= high)."""
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535:
        return v, v
    if isinstance(v, str) and v.count("-") == 1:
        low, high = (x.strip() for x in v.split("-"))
        if low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535:
            return int(low), int(high)
    raise Bad(f"must be a port 1..65535 or a range like \"10000-20000\" (low <= high), "
              f"got {describe(v)}")


def _items(v: YMap, key: str, path: str) -> list[tuple[Any, str, int]]:
    """`v[key]` as (item, its key path, its line) per item: a list's items
    (``key[i]``), or the one value (``key``)."""
    raw = v[key]
    if isinstance(raw, YList):
        return [(item, f"{path}.{key}[{i}]", line)
                for i, (item, line) in enumerate(zip(raw, raw.item_lines))]
    return [(raw, f"{path}.{key}", v.value_lines[key])]


def _values(v: YMap, key: str, path: str, parse: Callable[[Any], Any],
            add: Callable[[int, str, str], None]) -> tuple[Any, ...] | object:
    """`v[key]`: one value or a non-empty list of unique values, each parsed."""
    items = _items(v, key, path)
    if not items:
        add(v.value_lines[key], f"{path}.{key}", "must be a value or a non-empty list, got []")
        return _INVALID
    out: list[Any] = []
    ok = True
    for item, where, iline in items:
        try:
            value = parse(item)
        except Bad as e:
            add(iline, where, str(e))
            ok = False
            continue
        if value in out:
            add(iline, where, f"repeats {describe(item)}")
            ok = False
        out.append(value)
    return tuple(out) if ok else _INVALID


def parse_policies(val: Validator, doc: YMap, wans: Sequence[Wan] | None,
                   table_base: Any = None) -> tuple[Policy, ...]:
    """The validated `policies:` of `doc` (problems go to `val`; () when absent)."""
    if "policies" not in doc or doc["policies"] is None:
        return ()
    raw, line = doc["policies"], doc.value_lines["policies"]
    if not isinstance(raw, YList):
        val.add(line, "policies", f"must be a list of policies, got {describe(raw)}")
        return ()
    if len(raw) > MAX_POLICIES:
        val.add(line, "policies", f"at most {MAX_POLICIES} policies, got {len(raw)}")
        return ()
    by_name = {w.name: w for w in wans or ()}
    parsed: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    elements = 0
    for i, (body, bline) in enumerate(zip(raw, raw.item_lines)):
        path = f"policies[{i}]"
        m = val.mapping(body, path, bline, POLICY_KEYS)
        if m is None:
            continue
        p = _entry(val, m, path, bline, by_name, wans is not None)
        if p is None:
            continue
        if p["name"]:
            if p["name"] in names:
                val.add(m.value_lines["name"], f"{path}.name",
                        f"'{p['name']}' is already the name of {names[p['name']]}")
            names.setdefault(p["name"], path)
        n = 1
        for key in ("src", "dst", "proto", "sport", "dport", "iif"):
            n *= max(1, len(p[key]))
        elements += n
        parsed.append(p)
    if elements > MAX_ELEMENTS:
        val.add(line, "policies", f"the policies' value lists combine to {elements} matches; "
                                  f"at most {MAX_ELEMENTS}")
        return ()
    return _with_routes(val, line, parsed, wans or (),
                        table_base if isinstance(table_base, int) else 0)


def _entry(val: Validator, m: YMap, path: str, line: int, wans: dict[str, Wan],
           check_wans: bool) -> dict[str, Any] | None:
    """One policy's fields, or None after reporting."""
    add = val.add
    p: dict[str, Any] = {"position": int(path[9:-1]) + 1, "name": "", "fallback": "balance"}
    ok = True
    if "name" in m:
        name = m["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
            add(m.value_lines["name"], f"{path}.name",
                f"must be a name of 1 to 64 printable characters, got {describe(name)}")
            ok = False
        else:
            p["name"] = name
    if "fallback" in m:
        if m["fallback"] not in FALLBACKS:
            add(m.value_lines["fallback"], f"{path}.fallback",
                f"must be balance or drop, got {describe(m['fallback'])}")
            ok = False
        else:
            p["fallback"] = m["fallback"]
    parsers: dict[str, Callable[[Any], Any]] = {
        "src": prefix, "dst": prefix, "proto": protocol, "sport": port_range,
        "dport": port_range, "iif": ifname, "use": _wan_name(wans, check_wans)}
    for key, parse in parsers.items():
        p[key] = ()
        if key in m:
            got = _values(m, key, path, parse, add)
            ok = ok and got is not _INVALID
            p[key] = got if got is not _INVALID else ()
    if "use" not in m:
        add(line, f"{path}.use", "required key is missing: the WANs this policy's "
                                 "connections use")
        return None
    if not ok:
        return None
    return p if _coherent(add, m, path, p, wans) else None


def _wan_name(wans: dict[str, Wan], check: bool) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or (check and v not in wans):
            known = ", ".join(wans) or "none valid"
            raise Bad(f"no WAN {describe(v)} (WANs: {known})")
        return v
    return parse


def _coherent(add: Callable[[int, str, str], None], m: YMap, path: str, p: dict[str, Any],
              wans: dict[str, Wan]) -> bool:
    """Cross-field checks: ports need a protocol with ports; prefixes need a WAN of their
    IP version among `use`; src and dst must share a version; iif is no WAN."""
    ok = True
    for key in ("sport", "dport"):
        if not p[key]:
            continue
        if not p["proto"]:
            add(m.value_lines[key], f"{path}.{key}",
                f"ports need proto: {', '.join(PORT_PROTOCOLS)}")
            ok = False
        elif bad := [n for n in p["proto"] if n not in PORT_PROTOCOLS.values()]:
            add(m.value_lines[key], f"{path}.{key}", f"ports need proto: "
                f"{', '.join(PORT_PROTOCOLS)} only (protocol {bad[0]} has no ports)")
            ok = False
    carried = {f for name in p["use"] if name in wans for f in wans[name].families}
    for key in ("src", "dst"):
        # p[key] holds one parsed value per item, in order (a key given is valid here)
        for pre, (_, where, line) in zip(p[key], _items(m, key, path) if p[key] else ()):
            f = family_of(pre)
            if wans and f not in carried:
                add(line, where, f"{pre} is IPv{f}, but none of use ({', '.join(p['use'])})"
                                 f" carries IPv{f}")
                ok = False
    src_f = {family_of(x) for x in p["src"]}
    dst_f = {family_of(x) for x in p["dst"]}
    if src_f and dst_f and not src_f & dst_f:
        add(m.value_lines["dst"], f"{path}.dst", "src and dst are of different IP versions "
                                                 "only: the policy could never match")
        ok = False
    wan_ifs = {w.interface: w.name for w in wans.values()}
    for i, name in enumerate(p["iif"]):
        if name in wan_ifs:
            add(m.value_lines["iif"], f"{path}.iif", f"'{name}' is the interface of "
                f"wans.{wan_ifs[name]}: policies choose the WAN of connections from the LAN")
            ok = False
    return ok


def _with_routes(val: Validator, line: int, parsed: list[dict[str, Any]],
                 wans: Sequence[Wan], table_base: int) -> tuple[Policy, ...]:
    """Policies with their WAN set's `route`: the highest free values, downwards (not a
    WAN id, nor a value whose table `table_base + route` is one of the kernel's)."""
    free = [v for v in range(255, 0, -1)
            if v not in {w.id for w in wans} and table_base + v not in RESERVED_TABLES]
    routes: dict[tuple[frozenset[str], str], int] = {}
    out = []
    for p in parsed:
        key = (frozenset(p["use"]), p["fallback"])
        if key not in routes:
            if len(routes) >= len(free):
                val.add(line, "policies", f"at most {len(free)} different sets of use and "
                                          f"fallback (the mark values WAN ids leave free)")
                return ()
            routes[key] = free[len(routes)]
        out.append(Policy(route=routes[key], **p))
    return tuple(out)
