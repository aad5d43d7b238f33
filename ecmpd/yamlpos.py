"""YAML loading that remembers line numbers, plus the value parsers the config uses.

`load_yaml()` returns plain Python data in which every mapping is a `YMap` and every
sequence a `YList`; both record the 1-based line of the container and of each key,
value and item, and a `YMap` lists repeated keys instead of silently keeping the last.
Scalars stay plain (`int`, `str`, ...), so their line is looked up in the parent.
Every YAML problem comes back as one `YamlProblem` (line + one-line message).

The value parsers (`integer`, `duration`, `ipv4`, ...) take one plain YAML value and
return it parsed or raise `Bad(message)`; `ecmpd.config` adds file, line and key path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import yaml


class YamlProblem(Exception):
    """The text is not loadable YAML; `line` is 1-based, `message` a single line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


class YMap(dict):
    """A mapping with line information (all lines 1-based)."""

    line: int = 1
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]
    """(key, line of the repeated key, line of its first occurrence)."""
    bad_keys: list[tuple[str, int]]
    """(description, line) of keys that cannot be dictionary keys (lists, mappings)."""


class YList(list):
    """A sequence with line information (all lines 1-based)."""

    line: int = 1
    item_lines: list[int]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader building YMap/YList and turning value errors into marked errors."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as e:
            # e.g. an impossible date (2024-13-01) or an int beyond Python's digit limit
            why = "too many digits" if "digits" in str(e) else str(e)
            shown = describe(node.value) if isinstance(node, yaml.ScalarNode) else "value"
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid value {shown}: {why}", node.start_mark) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    data = YMap()
    data.line = _line(node)
    data.key_lines, data.value_lines, data.duplicates, data.bad_keys = {}, {}, [], []
    yield data
    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    n_merged = len(node.value) - own  # flatten_mapping puts merged pairs first
    own_keys: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            data.bad_keys.append((describe(key), _line(key_node)))
            continue
        if i >= n_merged:
            if key in own_keys:
                data.duplicates.append((key, _line(key_node), data.key_lines[key]))
                continue
            own_keys.add(key)
        data[key] = loader.construct_object(value_node, deep=False)
        data.key_lines[key] = _line(key_node)
        data.value_lines[key] = _line(value_node)


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Any:
    data = YList()
    data.line = _line(node)
    data.item_lines = [_line(n) for n in node.value]
    yield data
    data.extend(loader.construct_object(n, deep=False) for n in node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(text: str) -> Any:
    """Parse one YAML document (None when empty); raises only `YamlProblem`."""
    try:
        loader = _Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = e.problem or "cannot parse"
        if e.context:
            at = f" at line {e.context_mark.line + 1}" if e.context_mark else ""
            msg += f" ({e.context}{at})"
        if "<block end>" in msg:
            msg += "; check the indentation"
        elif "'\\t'" in msg:
            msg += "; indent with spaces, not tabs"
        kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) \
            else "YAML syntax error"
        problem = YamlProblem(mark.line + 1 if mark else 1, f"{kind}: {_one_line(msg)}")
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, max(e.position, 0)) + 1
        char = f" #x{e.character:04x}" if isinstance(e.character, int) else ""
        problem = YamlProblem(line, f"YAML syntax error: unacceptable character{char}: "
                                    f"{e.reason}")
    except yaml.YAMLError as e:
        problem = YamlProblem(1, f"YAML syntax error: {_one_line(str(e))}")
    except RecursionError:
        problem = YamlProblem(1, "YAML syntax error: nesting too deep")
    raise problem


def _one_line(s: str) -> str:
    return " ".join(s.split())


def describe(value: Any) -> str:
    """A short YAML-flavoured rendering of a value for messages ('abc', 5, null, a list)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 128:
        return "a very large integer"  # repr() of > 4300 digits raises ValueError
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__} value"


_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?\s*")
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*")


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
    """Seconds from `1.5`, `2`, `'200ms'`, `'1.5s'`, `'200 ms'`, `'1.5'`; None if not a duration.

    Only the units `ms` and `s` exist; signs, exponents and other units are rejected.
    The range is the caller's business (a negative number is returned as such).
    """
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m or len(value) > 64:
            return None
        d = Decimal(m.group(1))
        return float(d / 1000 if m.group(2) == "ms" else d)
    d = _number(value)
    return None if d is None else float(d)


def parse_percent(value: Any) -> float | None:
    """Percent from `20`, `20.5`, `'20%'`, `'20.5 %'`, `'20'`; None if not a percentage."""
    if isinstance(value, str):
        m = _PERCENT.fullmatch(value)
        if not m or len(value) > 64:
            return None
        return float(Decimal(m.group(1)))
    d = _number(value)
    return None if d is None else float(d)


def format_seconds(seconds: float) -> str:
    """`0.2` -> `200ms`, `1.5` -> `1.5s` (for messages)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


# Value parsers: each returns the parsed value or raises `Bad` with the message that
# follows `key.path: ` in a problem line.

class Bad(Exception):
    """A value parser's complaint."""


NFT_KEYWORDS = frozenset("""
    accept add all and arp at bridge chain comment continue counter create ct daddr
    define delete describe destroy drop dup element elements ether exists export fib
    flags flow flowtable flush fwd get goto hook icmp icmpv6 ip ip6 import in include
    inet insert iif iifname jump last limit list log map mark masquerade meta monitor
    netdev nat not notrack oif oifname or policy priority queue quota redirect reject
    rename replace reset return rt rule ruleset saddr set snat dnat synproxy table tcp
    to type udp update vmap with xor""".split())
_NFT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    """A parser for a YAML integer (not a boolean) in lo..hi."""
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise Bad(f"must be an integer from {lo} to {hi}, got {describe(v)}")
        return v
    return parse


def duration(v: Any) -> float:
    """Seconds from a duration (see `parse_duration`) in 10ms..60s."""
    d = parse_duration(v)
    if d is None or not 0.01 <= d <= 60:
        raise Bad(f"must be a duration from 10ms to 60s (like 200ms, 1.5s or 1.5), "
                  f"got {describe(v)}")
    return d


def percent(v: Any) -> float:
    """A percentage (see `parse_percent`) in 0..100."""
    p = parse_percent(v)
    if p is None or not 0 <= p <= 100:
        raise Bad(f"must be a percentage from 0 to 100 (like 20, 20% or 20.5%), "
                  f"got {describe(v)}")
    return p


def or_null(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, but null is accepted as None."""
    return lambda v: None if v is None else parse(v)


def ifname(v: Any) -> str:
    """A Linux interface name: 1..15 bytes, not . or .., no '/', ':' or whitespace."""
    if (not isinstance(v, str) or not v.isprintable() or not 1 <= len(v.encode()) <= 15
            or v in (".", "..") or any(c in "/:" or c.isspace() for c in v)):
        raise Bad(f"must be an interface name (1 to 15 bytes, no '/', ':' or "
                  f"whitespace), got {describe(v)}")
    return v


def unicast(a: IPv4Address, shown: Any) -> None:
    """Raise `Bad` unless `a` is a usable unicast address."""
    kind = ("unspecified" if a.is_unspecified else "loopback" if a.is_loopback else
            "multicast" if a.is_multicast else "broadcast/reserved" if a.is_reserved else "")
    if kind:
        raise Bad(f"must be a unicast IPv4 address, got {shown} ({kind})")


def ipv4(v: Any) -> IPv4Address:
    """A unicast IPv4 address written as a string."""
    try:
        a = IPv4Address(v) if isinstance(v, str) else None
    except ValueError:
        a = None
    if a is None:
        raise Bad(f"must be a unicast IPv4 address, got {describe(v)}")
    unicast(a, a)
    return a


def address(v: Any) -> IPv4Interface:
    """An address/prefix with room for a gateway (not the network/broadcast address)."""
    try:
        i = IPv4Interface(v) if isinstance(v, str) and "/" in v else None
    except ValueError:
        i = None
    if i is None:
        raise Bad(f"must be an IPv4 address/prefix like 10.111.0.2/24, got {describe(v)}")
    unicast(i.ip, i)
    if i.network.prefixlen == 32:
        raise Bad(f"/32 leaves no room for the gateway, got {i}")
    if i.network.prefixlen <= 30 and i.ip in (i.network.network_address,
                                             i.network.broadcast_address):
        raise Bad(f"{i.ip} is the network or broadcast address of {i.network}")
    return i


def target(v: Any) -> str:
    """A probe target: `gateway` or a unicast IPv4 address (normalized)."""
    if v == "gateway":
        return "gateway"
    try:
        return str(ipv4(v))
    except Bad:
        raise Bad(f"must be 'gateway' or a unicast IPv4 address, got {describe(v)}") from None


def choice(*options: str) -> Callable[[Any], str]:
    """A parser accepting exactly one of `options`."""
    def parse(v: Any) -> str:
        if v not in options or not isinstance(v, str):
            raise Bad(f"must be {' or '.join(options)}, got {describe(v)}")
        return v
    return parse


def boolean(v: Any) -> bool:
    """A YAML boolean."""
    if not isinstance(v, bool):
        raise Bad(f"must be true or false, got {describe(v)}")
    return v


def mark_mask(v: Any) -> int:
    """A 32-bit mark mask (int or '0x...' string): one run of >= 8 contiguous bits."""
    m: Any = v
    if isinstance(v, str) and len(v) <= 34:
        try:
            m = int(v.strip(), 0)
        except ValueError:
            pass
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
