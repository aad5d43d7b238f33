"""The config's value parsers: one plain YAML value in, the parsed value or `Bad` out.

`ecmpd.config` adds file, line and key path to a `Bad` message.  Numbers count only as
written in plain decimal (`yamlpos.Spelled` otherwise): `weight: 1:30` is not 90 and
`id: 010` is not 8.  Hex is accepted where the schema documents it (`marks.mask`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface
from typing import Any

from ecmpd.configmodel import NAT_MODES, Config
from ecmpd.yamlpos import Spelled, describe


class Bad(Exception):
    """A value parser's complaint (the message that follows `key.path: `)."""


_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION = re.compile(rf"\s*{_NUMBER}\s*")
"""A plain number: seconds."""
_DURATION_PART = re.compile(rf"\s*{_NUMBER}\s*(ms|s|m)(?![a-z])")
DURATION_UNITS = {"m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001")}
"""The units a duration may use, largest first (a compound goes from large to small)."""
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*")
_MASK_TEXT = re.compile(r"0[xX][0-9a-fA-F]+|[1-9][0-9]*")
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
NFT_KEYWORDS = frozenset("""
    accept add all and arp at bridge chain comment continue counter create ct daddr
    define delete describe destroy drop dup element elements ether exists export fib
    flags flow flowtable flush fwd get goto hook icmp icmpv6 ip ip6 import in include
    inet insert iif iifname jump last limit list log map mark masquerade meta monitor
    netdev nat not notrack oif oifname or policy priority queue quota redirect reject
    rename replace reset return rt rule ruleset saddr set snat dnat synproxy table tcp
    to type udp update vmap with xor""".split())
_NFT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
NOT_INTERFACES = {
    "all": "'all' is not an interface: net.ipv4.conf.all holds the settings of every "
           "interface",
    "default": "'default' is not an interface: net.ipv4.conf.default holds the settings "
               "for new interfaces",
    "lo": "'lo' is the loopback interface, neither a LAN nor a WAN",
}
"""Names a LAN or WAN interface can never have, and why."""


def got(v: Any) -> str:
    """`v` for a message; a `Spelled` number also says what YAML 1.1 makes of it."""
    if isinstance(v, Spelled) and v.value is not None:
        return f"{describe(v)} (YAML 1.1 would read it as {describe(v.value)})"
    return describe(v)


def _number(value: Any) -> Decimal | None:
    """A finite YAML int/float (not a bool) as Decimal; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        d = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def parse_duration(value: Any) -> float | None:
    """Seconds from `1.5`, `2`, `'200ms'`, `'1.5s'`, `'1m'`, `'1m30s'`, `'200 ms'`,
    `'1.5'`; None if not a duration.

    The units are `DURATION_UNITS` (`m` is minutes, as in systemd); a compound names
    each unit at most once, largest first (`1m30s`, `1s 500ms`).  Signs, exponents and
    other units are rejected.  The range is the caller's business (a negative number is
    returned as such).
    """
    if isinstance(value, str):
        if len(value) > 64:
            return None
        if m := _DURATION.fullmatch(value):
            return float(Decimal(m.group(1)))
        total, pos, units = Decimal(0), 0, list(DURATION_UNITS)
        while pos < len(value.rstrip()) or pos == 0:
            m = _DURATION_PART.match(value, pos)
            if not m or m.group(2) not in units:
                return None
            total += Decimal(m.group(1)) * DURATION_UNITS[m.group(2)]
            units = units[units.index(m.group(2)) + 1:]
            pos = m.end()
        return float(total)
    d = _number(value)
    return None if d is None else float(d)


def parse_percent(value: Any) -> float | None:
    """Percent from `20`, `20.5`, `'20%'`, `'20.5 %'`, `'20'`; None if not a percentage."""
    if isinstance(value, str):
        m = _PERCENT.fullmatch(value) if len(value) <= 64 else None
        if not m:
            return None
        return float(Decimal(m.group(1)))
    d = _number(value)
    return None if d is None else float(d)


def format_seconds(seconds: float) -> str:
    """`0.2` -> `200ms`, `1.5` -> `1.5s` (for messages)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    """A parser for an integer written in plain decimal (not a boolean) in lo..hi."""
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            decimal = " in plain decimal" if isinstance(v, Spelled) else ""
            raise Bad(f"must be an integer from {lo} to {hi}{decimal}, got {got(v)}")
        return v
    return parse


OTHERS_PROTOS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
    10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp",
    17: "mrouted", 18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis",
    188: "ospf", 189: "rip", 190: "ripng", 191: "nhrp", 192: "eigrp", 193: "ldp",
    194: "sharp", 195: "pbr", 196: "static (FRR)", 197: "openfabric", 198: "srte"}
"""Route protocols the kernel (``rtnetlink.h``) or routing suites (FRR's
``rt_protos.d``) tag their routes with: ecmpd would take such routes for its own."""
PROTOS = (5, 255)
TABLE_BASES = (1, 2**32 - 1 - 256)
"""`tables.base`: the multipath table; WAN id i uses table base + i (up to 255)."""
RULE_PRIORITIES = (1, 32000)
"""`rules.priority`: ecmpd's rules span it .. +512, all below main's 32766."""
ROUTE_METRICS = (0, 2**32 - 1)
DURATIONS = (0.01, 60.0)
"""Seconds: the range of every duration."""
PERCENTS = (0.0, 100.0)
_PROTO = integer(*PROTOS)
table_base = integer(*TABLE_BASES)
rule_priority = integer(*RULE_PRIORITIES)
route_metric = integer(*ROUTE_METRICS)


def route_proto(v: Any) -> int:
    """`route.proto`: 5..255 and no other program's protocol."""
    n = _PROTO(v)
    if n in OTHERS_PROTOS:
        raise Bad(f"{n} is the '{OTHERS_PROTOS[n]}' protocol of the kernel or another "
                  f"routing program: ecmpd would take its routes for its own; choose "
                  f"another from {PROTOS[0]} to {PROTOS[1]} (default {Config.route_proto})")
    return n


def _within(x: float | None, bounds: tuple[float, float], show: Callable[[float], str],
            what: str, v: Any) -> float:
    """`x` (parsed from `v`; None: not parsable) if it lies in `bounds`, else `Bad`."""
    lo, hi = bounds
    if x is None or not lo <= x <= hi:
        raise Bad(f"must be {what.format(lo=show(lo), hi=show(hi))}, got {got(v)}")
    return x


def duration(v: Any) -> float:
    """Seconds from a duration (see `parse_duration`) in `DURATIONS`."""
    return _within(parse_duration(v), DURATIONS, format_seconds,
                   "a duration from {lo} to {hi} in ms, s or m (like 200ms, 1.5s, 1m, 1m30s; "
                   "a plain number is seconds)", v)


def percent(v: Any) -> float:
    """A percentage (see `parse_percent`) in `PERCENTS`."""
    return _within(parse_percent(v), PERCENTS, "{:g}".format,
                   "a percentage from {lo} to {hi} (like 20, 20% or 20.5%)", v)


def or_null(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, but null is accepted as None."""
    return lambda v: None if v is None else parse(v)


def ifname(v: Any) -> str:
    """The name of a real LAN or WAN interface.

    The kernel's rules (1..15 bytes, not . or .., no '/', ':' or whitespace), plus: no
    '%' (the kernel reads it as a name template), no '*' (nft reads it as a wildcard),
    and not `all`, `default` (sysctl directories, not interfaces) or `lo`.
    """
    if (not isinstance(v, str) or not v.isprintable() or not 1 <= len(v.encode()) <= 15
            or v in (".", "..") or any(c in "/:%*" or c.isspace() for c in v)):
        raise Bad(f"must be an interface name (1 to 15 bytes, no '/', ':', '%', '*' or "
                  f"whitespace), got {describe(v)}")
    if v in NOT_INTERFACES:
        raise Bad(NOT_INTERFACES[v])
    return v


def unicast_kind(a: IPv4Address) -> str:
    """Why `a` is no unicast address ('unspecified', 'loopback', ...), or ''."""
    return ("unspecified" if a.is_unspecified else "this network, 0.0.0.0/8"
            if a in _THIS_NETWORK else "loopback" if a.is_loopback else
            "multicast" if a.is_multicast else "broadcast/reserved" if a.is_reserved else "")


def unicast(a: IPv4Address, shown: Any) -> None:
    """Raise `Bad` unless `a` is a usable unicast address."""
    kind = unicast_kind(a)
    if kind:
        raise Bad(f"must be a unicast IPv4 address, got {shown} ({kind})")


def unicast6_kind(a: IPv6Address) -> str:
    """Why `a` is no unicast IPv6 address ('unspecified', 'multicast', ...), or ''."""
    return ("unspecified" if a.is_unspecified else "loopback" if a.is_loopback else
            "multicast" if a.is_multicast else
            "IPv4-mapped" if a.ipv4_mapped is not None else "")


def _ipv6_or_none(v: Any) -> IPv6Address | None:
    """An IPv6 literal without a scope (``%eth0``: the WAN's interface is the scope)."""
    try:
        return IPv6Address(v) if isinstance(v, str) and "%" not in v else None
    except ValueError:
        return None


def _ipv4_or_none(v: Any) -> IPv4Address | None:
    try:
        return IPv4Address(v) if isinstance(v, str) else None
    except ValueError:
        return None


AUTO = "auto"
"""`gateway: auto`: the gateway is learned from the kernel (see `ecmpd.gateways`)."""


def gateway(v: Any) -> IPv4Address | None:
    """A WAN's gateway: a unicast IPv4 address, or `auto` (None: learned at run time)."""
    if v == AUTO:
        return None
    a = _ipv4_or_none(v)
    if a is None:
        raise Bad(f"must be a unicast IPv4 address or 'auto', got {describe(v)}")
    unicast(a, a)
    return a


def gateway6(v: Any) -> IPv6Address | None:
    """A WAN's IPv6 gateway: a unicast IPv6 address (link-local included: the WAN's
    interface is its scope), or `auto` (None: learned at run time)."""
    if v == AUTO:
        return None
    a = _ipv6_or_none(v)
    kind = unicast6_kind(a) if a is not None else ""
    if a is None or kind:
        raise Bad(f"must be a unicast IPv6 address (without %scope: the WAN's interface "
                  f"is the scope) or 'auto', got {describe(v)}" + (f" ({kind})" if kind else ""))
    return a


def lan_address(v: Any) -> IPv4Interface | IPv6Interface:
    """A unicast address/prefix of this router (IPv4 or IPv6), not its IPv4 network's
    network or broadcast address."""
    if not (isinstance(v, str) and ":" in v and "/" in v):
        return _ipv4_interface(v)
    try:
        i6: IPv6Interface | None = IPv6Interface(v)
    except ValueError:
        i6 = None
    kind = unicast6_kind(i6.ip) if i6 is not None else ""
    if i6 is None or kind:
        raise Bad(f"must be an IPv6 address/prefix like fd00:1::1/64, got {describe(v)}"
                  + (f" ({kind})" if kind else ""))
    return i6


def _ipv4_interface(v: Any) -> IPv4Interface:
    try:
        i = IPv4Interface(v) if isinstance(v, str) and "/" in v else None
    except ValueError:
        i = None
    if i is None:
        raise Bad(f"must be an IPv4 address/prefix like 10.111.0.2/24, got {describe(v)}")
    unicast(i.ip, i)
    if i.network.prefixlen <= 30 and i.ip in (i.network.network_address,
                                             i.network.broadcast_address):
        raise Bad(f"{i.ip} is the network or broadcast address of {i.network}")
    return i


def address(v: Any) -> IPv4Interface:
    """A WAN's IPv4 address/prefix: room for a gateway (not /32, not network/broadcast)."""
    i = _ipv4_interface(v)
    if i.network.prefixlen == 32:
        raise Bad(f"/32 leaves no room for the gateway, got {i}")
    return i


def address6(v: Any) -> IPv6Interface:
    """A WAN's global IPv6 address/prefix (a /128 too: a DHCPv6 or PPP address with a
    link-local gateway)."""
    try:
        i6 = IPv6Interface(v) if isinstance(v, str) and ":" in v and "/" in v else None
    except ValueError:
        i6 = None
    kind = unicast6_kind(i6.ip) if i6 is not None else ""
    if i6 is not None and not kind and i6.ip.is_link_local:
        kind = "link-local: give the WAN's global address"
    if i6 is None or kind:
        raise Bad(f"must be an IPv6 address/prefix like 2001:db8:1::2/64, got {describe(v)}"
                  + (f" ({kind})" if kind else ""))
    return i6


def target(v: Any) -> str:
    """A probe target: `gateway` (each family's own) or a unicast IPv4 or IPv6 address
    (normalized); an IPv6 target is global (a link-local one means nothing without its
    interface: `gateway` is the way to probe a link-local gateway)."""
    if v == "gateway":
        return "gateway"
    if isinstance(v, str) and ":" in v:
        a6 = _ipv6_or_none(v)
        kind = unicast6_kind(a6) if a6 is not None else ""
        if a6 is not None and not kind and a6.is_link_local:
            kind = "link-local: probe a link-local gateway with 'gateway'"
        if a6 is None or kind:
            raise Bad(f"must be 'gateway' or a unicast IPv4 or IPv6 address, got "
                      f"{describe(v)}" + (f" ({kind})" if kind else ""))
        return str(a6)
    a = _ipv4_or_none(v)
    kind = unicast_kind(a) if a is not None else ""
    if a is None or kind:
        raise Bad(f"must be 'gateway' or a unicast IPv4 or IPv6 address, got {describe(v)}"
                  + (f" ({kind})" if kind else ""))
    return str(a)


def choice(*options: str) -> Callable[[Any], str]:
    """A parser accepting exactly one of `options`."""
    shown = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]

    def parse(v: Any) -> str:
        if v not in options or not isinstance(v, str):
            raise Bad(f"must be {shown}, got {describe(v)}")
        return v
    return parse


FAMILY_KEYS = {"ipv4": 4, "ipv6": 6}
"""The keys of a value given per IP version (`nat: {ipv4: masquerade, ipv6: none}`)."""
nat_mode = choice(*NAT_MODES)
"""One IP version's `nat:`."""


def nat(v: Any) -> str:
    """A WAN's `nat:` written as one value, for every IP version it carries."""
    if not isinstance(v, str) or v not in NAT_MODES:
        hint = " (YAML reads no and off as false: write none)" if v is False else ""
        raise Bad(f"must be {' or '.join(NAT_MODES)}, {{snat: ADDRESS}}, or per IP version "
                  f"like {{ipv4: masquerade, ipv6: none}}, got {describe(v)}{hint}")
    return v


def snat_address(v: Any, family: int | None = None) -> IPv4Address | IPv6Address:
    """The address of `{snat: ADDRESS}`: a unicast IPv4 or IPv6 address (of `family` when
    it is given, i.e. under `ipv4:` / `ipv6:`); IPv6 global, not link-local (the world
    sees it)."""
    a: IPv4Address | IPv6Address | None = (
        _ipv6_or_none(v) if isinstance(v, str) and ":" in v else _ipv4_or_none(v))
    kind = "" if a is None else unicast_kind(a) if a.version == 4 else unicast6_kind(a)
    if isinstance(a, IPv6Address) and not kind and a.is_link_local:
        kind = "link-local"
    if a is None or kind:
        want = {4: "an IPv4", 6: "an IPv6"}.get(family or 0, "an IPv4 or IPv6")
        raise Bad(f"must be {want} unicast address, got {describe(v)}"
                  + (f" ({kind})" if kind else ""))
    if family is not None and a.version != family:
        raise Bad(f"must be an IPv{family} address (under ipv{family}:), got {a}")
    return a


def boolean(v: Any) -> bool:
    """A YAML boolean."""
    if not isinstance(v, bool):
        raise Bad(f"must be true or false, got {describe(v)}")
    return v


def mark_mask(v: Any) -> int:
    """A 32-bit mark mask, one run of >= 8 contiguous bits: a decimal integer, or hex
    (0x00ff0000) written bare or as a string."""
    m: Any = v
    text = v.strip() if isinstance(v, str) else v.text if isinstance(v, Spelled) else None
    if text is not None and len(text) <= 34 and _MASK_TEXT.fullmatch(text):
        m = int(text, 16 if text.lower().startswith("0x") else 10)
    low = m >> ((m & -m).bit_length() - 1) if isinstance(m, int) and m > 0 else 0
    if (isinstance(m, bool) or not isinstance(m, int) or not 0 < m <= 0xFFFFFFFF
            or low & (low + 1) or low.bit_length() < 8):
        shown = f"0x{m:08x}" if isinstance(m, int) and not isinstance(m, bool) and \
            0 <= m <= 0xFFFFFFFF else describe(v)
        raise Bad(f"must be one run of at least 8 contiguous bits within 32 bits "
                  f"(like 0x00ff0000), got {shown}")
    return m  # at least 8 bits: every id 1..255 fits


def nft_table(v: Any) -> str:
    """An nftables table name that is not an nft keyword."""
    if not isinstance(v, str) or not _NFT_NAME.fullmatch(v):
        raise Bad(f"must be 1 to 32 letters, digits or _ starting with a letter, "
                  f"got {describe(v)}")
    if v.lower() in NFT_KEYWORDS:
        raise Bad(f"'{v}' is an nft keyword, choose another name")
    return v


def socket_path(v: Any) -> str:
    """An absolute path that fits a unix socket address (107 bytes)."""
    if (not isinstance(v, str) or not v.startswith("/") or v.endswith("/")
            or not v.isprintable() or len(v.encode()) > 107):
        raise Bad(f"must be an absolute file path of at most 107 bytes, got {describe(v)}")
    return v


def group_name(v: Any) -> str | None:
    """A group name or None."""
    if v is not None and (not isinstance(v, str) or not v.isprintable() or not 1 <= len(v) <= 32
                          or any(c == ":" or c.isspace() for c in v)):
        raise Bad(f"must be a group name or null, got {describe(v)}")
    return v


def listen_address(v: Any) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (address, port): an IP literal (no name to
    resolve at start) and a port 1..65535."""
    text = v if isinstance(v, str) else ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host, want = host[1:-1], IPv6Address
    else:
        want = IPv4Address
    try:
        address = want(host)
        number = int(port) if sep and port.isdigit() and port.isascii() else 0
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise Bad(f"must be an address and port like 127.0.0.1:9474 or [::1]:9474, "
                  f"got {describe(v)}")
    return str(address), number


def hook_path(v: Any) -> str:
    """A hook: the absolute path of a program (run without a shell, so no arguments)."""
    if (not isinstance(v, str) or not v.startswith("/") or v.endswith("/")
            or not v.isprintable() or len(v.encode()) > 4095):
        raise Bad(f"must be the absolute path of an executable (like "
                  f"/etc/ecmpd/hooks/notify), got {describe(v)}")
    return v


def vip(v: Any) -> str:
    """A floating address of an HA pair (`ha.vips`): a unicast IPv4 or IPv6 address,
    normalized; an IPv6 one may be link-local (VRRPv3's first IPv6 address is), without
    a scope (it lives on the LAN interfaces)."""
    want = "a unicast IPv4 or IPv6 address"
    if isinstance(v, str) and ":" in v:
        a6 = _ipv6_or_none(v)
        kind = unicast6_kind(a6) if a6 is not None else ""
        if a6 is None or kind:
            raise Bad(f"must be {want}, got {describe(v)}" + (f" ({kind})" if kind else ""))
        return str(a6)
    a = _ipv4_or_none(v)
    kind = unicast_kind(a) if a is not None else ""
    if a is None or kind:
        raise Bad(f"must be {want}, got {describe(v)}" + (f" ({kind})" if kind else ""))
    return str(a)
