"""The config's schema in one table: every key, where it goes in the model, its parser,
its default and its range.

`SCHEMA` lists each key of the YAML file once, in the order the file documents them:
the section it belongs to (``""`` the top level, ``wans.*`` every WAN; a WAN's own
``probe:`` takes the keys of ``probe``), the model field it fills, its value parser
(`ecmpd.configvalues`) and the range as config/ecmpd.yaml states it.  Defaults are not
written here: they are the model's dataclass defaults (`ecmpd.configmodel`), so the model, the
validator and the example cannot disagree.  `ecmpd.config` takes its key lists, parsers,
defaults and "did you mean" candidates from here, `ecmpd.desired` its parsers of the
ownership numbers; tests/test_schema.py checks that the example's comments state each
default and range given here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ecmpd import configvalues as cv
from ecmpd.configmodel import MAX_TIER, Config, Ha, ProbeSettings, Wan
from ecmpd.yamlpos import describe

REQUIRED: Any = object()
"""The default of a key that must be given."""
_FROM_MODEL: Any = object()


def _yaml(v: Any) -> str:
    """`v` written as in the YAML file."""
    if isinstance(v, tuple):
        return "[" + ", ".join(map(_yaml, v)) + "]"
    return describe(v) if v is None or isinstance(v, bool) else str(v)


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _span(lo: float, hi: float, show: Callable[[Any], str] = _number) -> str:
    """A range as the example writes it: ``1..10``, ``10ms..60s``."""
    return f"{show(lo)}..{show(hi)}"


@dataclass(frozen=True)
class Key:
    """One key of the config file."""

    section: str
    """Dotted path of the mapping holding it: ``""``, ``lan``, ``wans.*``, ``probe``..."""
    name: str
    model: type | None = None
    """The dataclass whose `field` the key fills (None: a section, or only checked)."""
    field: str = ""
    parse: Callable[[Any], Any] | None = None
    """The value parser; for a list (`items`), the parser of one item; None: a section."""
    range: str = ""
    """The range as the example states it (``1..10``, ``10ms..60s``; empty: none)."""
    items: str = ""
    """A list of unique items, non-empty unless `empty_ok`: what they are (for messages)."""
    empty_ok: bool = False
    show: Callable[[Any], str] = _yaml
    """The default written as in the file."""
    config_default: Any = _FROM_MODEL
    """The default when the file leaves the key out, where not the model's."""
    shown_default: str = ""
    """What the example says the default is, where not `show(default)`."""
    required: bool = False
    """A section that must be given."""

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def is_section(self) -> bool:
        return self.parse is None

    @property
    def default(self) -> Any:
        """The value taken when the key is left out; `REQUIRED`: it must be given; None
        for a key only checked (no model field) or an optional section."""
        if self.config_default is not _FROM_MODEL:
            return self.config_default
        if self.required:
            return REQUIRED
        if self.model is None:
            return None
        f = next(f for f in dataclasses.fields(self.model) if f.name == self.field)
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return REQUIRED

    def default_text(self) -> str:
        """The default as the example's comments state it: ``default 200ms``,
        ``required``, ``optional`` (only checked); empty for a section."""
        d = self.default
        if self.is_section:
            return ""
        if self.shown_default:
            return f"default {self.shown_default}"
        if d is REQUIRED:
            return "required"
        if d is None and self.model is None:
            return "optional"
        return f"default {self.show(d)}"


def _int(section: str, name: str, model: type, field: str, lo: int, hi: int,
         **kw: Any) -> Key:
    return Key(section, name, model, field, cv.integer(lo, hi), _span(lo, hi), **kw)


def _duration(name: str) -> Key:
    return Key("probe", name, ProbeSettings, name, cv.duration,
               _span(*cv.DURATIONS, cv.format_seconds), show=cv.format_seconds)


_OPTIONAL_SECONDS = lambda v: "null" if v is None else cv.format_seconds(v)  # noqa: E731

SCHEMA: tuple[Key, ...] = (
    # the top level, in the order of "expected one of"
    Key("", "lan", required=True),
    Key("", "wans", required=True),
    Key("", "policies"),
    Key("", "probe"),
    Key("", "hash", Config, "hash", cv.choice("l3", "l4", "src"), "l3, l4 or src"),
    Key("", "marks"),
    Key("", "tables"),
    Key("", "rules"),
    Key("", "route"),
    Key("", "nft"),
    Key("", "keep_on_exit", Config, "keep_on_exit", cv.boolean),
    Key("", "control"),
    Key("", "hooks", Config, "hooks", cv.hook_path, items="absolute paths of executables",
        empty_ok=True),
    Key("", "hook_timeout", Config, "hook_timeout", cv.duration,
        _span(*cv.DURATIONS, cv.format_seconds), show=cv.format_seconds),
    Key("", "metrics"),
    Key("", "ha"),
    Key("lan", "interfaces", Config, "lan_interfaces", cv.ifname, items="interface names"),
    Key("lan", "addresses", None, "", cv.lan_address, items="addresses like 192.168.0.1/24 or fd00:1::1/64"),
    Key("wans.*", "interface", Wan, "interface", cv.ifname),
    Key("wans.*", "gateway", Wan, "gateway", cv.gateway, config_default=None,
        shown_default="none"),
    Key("wans.*", "gateway6", Wan, "gateway6", cv.gateway6, config_default=None,
        shown_default="none"),
    _int("wans.*", "weight", Wan, "weight", 1, 256),
    _int("wans.*", "tier", Wan, "tier", 1, MAX_TIER),
    Key("wans.*", "failback", Wan, "failback", cv.choice("keep", "flush"), "keep or flush"),
    _int("wans.*", "id", Wan, "id", 1, 255, config_default=None,
         shown_default="the WAN's position"),
    Key("wans.*", "address", None, "", cv.address),
    Key("wans.*", "address6", None, "", cv.address6),
    Key("wans.*", "nat", Wan, "nat", cv.nat, "masquerade, none or {snat: ADDRESS}",
        shown_default="masquerade"),
    Key("wans.*", "probe"),
    Key("probe", "targets", ProbeSettings, "targets", cv.target,
        items="targets ('gateway' or IPv4/IPv6 addresses)"),
    _duration("interval"),
    _duration("timeout"),
    _duration("max_timeout"),
    _int("probe", "count", ProbeSettings, "count", 1, 10),
    _int("probe", "down", ProbeSettings, "down", 1, 100),
    _int("probe", "up", ProbeSettings, "up", 1, 100),
    Key("probe", "quorum", ProbeSettings, "quorum", cv.or_null(cv.integer(1, 255)),
        "1..number of targets"),
    Key("probe", "max_loss", ProbeSettings, "max_loss", cv.or_null(cv.percent),
        _span(*cv.PERCENTS)),
    Key("probe", "max_rtt", ProbeSettings, "max_rtt", cv.or_null(cv.duration),
        _span(*cv.DURATIONS, cv.format_seconds), show=_OPTIONAL_SECONDS),
    _int("probe", "window", ProbeSettings, "window", 1, 1000),
    Key("marks", "mask", Config, "mark_mask", cv.mark_mask,
        "one run of at least 8 contiguous bits", show="0x{:08x}".format),
    Key("tables", "base", Config, "table_base", cv.table_base, _span(*cv.TABLE_BASES)),
    Key("rules", "priority", Config, "rule_priority", cv.rule_priority,
        _span(*cv.RULE_PRIORITIES)),
    Key("route", "proto", Config, "route_proto", cv.route_proto, _span(*cv.PROTOS)),
    Key("route", "metric", Config, "route_metric", cv.route_metric,
        _span(*cv.ROUTE_METRICS)),
    Key("nft", "table", Config, "nft_table", cv.nft_table),
    Key("control", "socket", Config, "control_socket", cv.socket_path),
    Key("control", "group", Config, "control_group", cv.group_name),
    Key("metrics", "listen", Config, "metrics_listen", cv.or_null(cv.listen_address)),
    Key("ha", "vips", Ha, "vips", cv.vip, items="IPv4 or IPv6 addresses",
        config_default=REQUIRED),
    Key("ha", "detect_interval", Ha, "detect_interval", cv.or_null(cv.duration),
        _span(*cv.DURATIONS, cv.format_seconds), show=_OPTIONAL_SECONDS),
)


def section(name: str) -> tuple[Key, ...]:
    """The keys of section `name`, in order."""
    return tuple(k for k in SCHEMA if k.section == name)


def keys(name: str) -> tuple[str, ...]:
    """The key names of section `name`, in order (the "did you mean" candidates)."""
    return tuple(k.name for k in section(name))


def key(path: str) -> Key:
    """The key at dotted `path` (``probe.interval``, ``wans.*.weight``)."""
    return next(k for k in SCHEMA if k.path == path)


def config_sections() -> dict[str, tuple[Key, ...]]:
    """The top-level sections whose every key is a plain `Config` field (``marks``,
    ``tables``, ...), each with its keys."""
    out = {}
    for s in section(""):
        inner = section(s.name)
        if s.is_section and inner and all(k.model is Config and not k.items for k in inner):
            out[s.name] = inner
    return out


def parser_of(model: type, field: str) -> Callable[[Any], Any]:
    """The parser of the key filling `model.field` (StopIteration: no key does)."""
    parse = next(k.parse for k in SCHEMA if k.model is model and k.field == field)
    assert parse is not None
    return parse
