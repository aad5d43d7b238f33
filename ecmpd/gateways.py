"""Other programs' default routes: where a `gateway: auto` WAN learns its gateway.

A DHCP client (dhclient, systemd-networkd, dhcpcd, NetworkManager, udhcpc) installs a
default route via the gateway it was given, in table main or a table of its own, at
metric 0 or any other; pppd may add ``default dev ppp0``.  ecmpd leaves those routes
alone (its rules shadow main's) and only reads them: `ecmpd.state.gateway` picks, per
WAN interface, the best one via that interface.

Reads are cheap on a router that also carries a full BGP table: every default route of
a table lives in the first leaf of its trie, so `read_table` reads a table's dump only
up to the first other destination (`routereader.RouteReader.defaults`, ~0.1 ms with 1M
routes).  Which tables: main, ``default`` (253), every table an ip rule looks up (a
route in a table no rule looks up carries no traffic) and every table a route event
named (`Watcher`: events about other default routes pass the kernel filter while a WAN
learns its gateway).
"""

from __future__ import annotations

from collections.abc import Iterable

from .desired import MAIN_TABLE
from .configmodel import Config
from .interfaces import AF
from .netlinkimport import AsyncIPRoute
from .routereader import RouteReader, StrictUnsupported
from .routing import RTN_UNICAST, nexthops_of
from .state import Default, Defaults

DEFAULT_TABLE = 253


def learns(cfg: Config, family: int | None = None) -> bool:
    """Whether a WAN of `cfg` learns its gateway of IP version `family` (None: of any)
    (`gateway: auto`, `gateway6: auto`): only then are other programs' default routes
    of that version read and watched."""
    return any(w.has(f) and w.fixed_gateway(f) is None for w in cfg.wans
               for f in ((4, 6) if family is None else (family,)))


def defaults_of(msgs: Iterable, our_proto: int) -> tuple[Default, ...]:
    """The nexthops of the unicast default routes among route messages `msgs` that are
    not ecmpd's (proto `our_proto`), sorted."""
    out: list[Default] = []
    for msg in msgs:
        if (msg["dst_len"] != 0 or msg["proto"] == our_proto
                or msg.get("type", RTN_UNICAST) != RTN_UNICAST):
            continue
        metric = msg.get("priority") or 0
        out += [Default(metric, h.oif, h.gateway, h.onlink) for h in nexthops_of(msg) if h.oif]
    return tuple(sorted(out))


async def read_table(ipr: AsyncIPRoute, table: int, our_proto: int,
                     family: int = 4) -> tuple[Default, ...]:
    """The other programs' default routes of IP version `family` in `table`
    (kernel-filtered: `RouteReader.defaults`; a full dump when the kernel cannot
    filter)."""
    af = AF[family]
    try:
        reader = RouteReader.like(ipr)
    except StrictUnsupported:
        msgs = [m async for m in await ipr.route("dump", family=af) if m.get("table") == table]
        return defaults_of(msgs, our_proto)
    with reader:
        return defaults_of(reader.defaults(table, af), our_proto)


async def rule_tables(ipr: AsyncIPRoute, family: int = 4) -> set[int]:
    """The tables ip rules of IP version `family` look up."""
    af = AF[family]
    return {t async for m in await ipr.rule("dump", family=af) if (t := m.get("table"))}


async def read_defaults(ipr: AsyncIPRoute, our_proto: int, ours: range,
                        known: Iterable[int] = (), family: int = 4) -> Defaults:
    """Table -> other programs' default routes of IP version `family`, for main,
    ``default``, the tables ip rules look up and `known` ones, except ecmpd's own tables
    (`ours`); tables without any are left out."""
    tables = {MAIN_TABLE, DEFAULT_TABLE, *known, *await rule_tables(ipr, family)}
    out: dict[int, tuple[Default, ...]] = {}
    for table in sorted(t for t in tables if t not in ours and t != 255):
        if found := await read_table(ipr, table, our_proto, family):
            out[table] = found
    return out
