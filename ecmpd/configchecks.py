"""Config checks across keys: probe timing limits, what probes may be sent to, and
what the kernel must have for `hash:`.

Each check reports through `add(line, key_path, message)` (the validator's collector)
and never raises; values already found invalid are skipped by the caller's `bad` set.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Sequence
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network, ip_address)
from pathlib import Path
from typing import Any

from ecmpd import ownaddr
from ecmpd.desired import hash_fields_sysctl
from ecmpd.configvalues import format_seconds
from ecmpd.configmodel import GATEWAY_TARGET

TIMEOUT_INTERVALS = 5
"""`probe.timeout` may be at most this many `probe.interval`s (rounds may overlap)."""
Origin = tuple[Any, "str | None", int]
"""A validated probe value, the key path that set it (None: default) and its line."""
Add = Callable[[int, str, str], None]


def probe_limits(add: Add, m: dict[str, Origin], bad: set[str]) -> None:
    """The cross-key checks of one WAN's merged probe settings `m` (key -> origin)."""
    val = {k: o[0] for k, o in m.items()}

    def where(key: str) -> str:
        return m[key][1] or "the default"

    n = len(val["targets"])
    quorum = val["quorum"]  # None: a majority, always possible
    if not bad & {"targets", "quorum"} and quorum is not None and quorum > n:
        add(m["quorum"][2], where("quorum"), f"must be at most the number of "
            f"targets ({n} in {where('targets')}), got {val['quorum']}")
    ival, tout = val["interval"], val["timeout"]
    if not bad & {"interval", "timeout"} and tout > TIMEOUT_INTERVALS * ival + 1e-9:
        if m["timeout"][1]:
            add(m["timeout"][2], where("timeout"), f"must be at most "
                f"{TIMEOUT_INTERVALS} x interval ({format_seconds(ival)} in "
                f"{where('interval')}), got {format_seconds(tout)}")
        else:
            add(m["interval"][2], where("interval"), f"must be at least timeout / "
                f"{TIMEOUT_INTERVALS} ({format_seconds(tout)} in the default), "
                f"got {format_seconds(ival)}")
    top = val["max_timeout"]
    if not bad & {"timeout", "max_timeout"} and top < tout - 1e-9:
        if m["max_timeout"][1]:
            add(m["max_timeout"][2], where("max_timeout"), f"must be at least "
                f"timeout ({format_seconds(tout)} in {where('timeout')}), "
                f"got {format_seconds(top)}")
        else:
            add(m["timeout"][2], where("timeout"), f"must be at most max_timeout "
                f"({format_seconds(top)} in the default), got {format_seconds(tout)}")
    rtt = val["max_rtt"]
    if rtt is not None and not bad & {"timeout", "max_rtt"} and rtt > tout:
        add(m["max_rtt"][2], where("max_rtt"), f"must be at most timeout "
            f"({format_seconds(tout)} in {where('timeout')}), a slower reply "
            f"counts as lost; got {format_seconds(rtt)}")


def check_beyond(add: Add, own: Sequence[tuple[str, IPv4Interface | IPv6Interface]],
                 targets: Sequence[tuple[str, tuple[str, ...], list[int]]],
                 gateways: Sequence[tuple[str, IPv4Address, int]]) -> None:
    """Probe targets and gateways must lie beyond the router: not one of its own
    addresses (`own`: key path, address), not inside a LAN, not an IPv4 subnet's network
    or broadcast address.  A probe the router answers itself never fails: the WAN would
    never fail over.  `targets`: (key path, targets, their lines); `gateways`: (WAN key
    path, gateway, its line), whose own WAN's subnet is checked by the caller.
    Lookups are by dictionary: a hostile file may list thousands of each."""
    mine: dict[IPv4Address | IPv6Address, list[str]] = {}
    edges: dict[IPv4Address, tuple[str, IPv4Network]] = {}
    # (version, network, length) -> (key path, network)
    lans: dict[tuple[int, int, int], tuple[str, IPv4Network | IPv6Network]] = {}
    for where, addr in own:
        net = addr.network
        mine.setdefault(addr.ip, []).append(where)
        if where.startswith("lan."):
            lans.setdefault((net.version, int(net.network_address), net.prefixlen),
                            (where, net))
        if net.version == 4 and net.prefixlen <= 30:
            for edge in (net.network_address, net.broadcast_address):
                edges.setdefault(edge, (where, net))
    bits = {4: 32, 6: 128}
    masks = [(v, n, (1 << bits[v]) - (1 << (bits[v] - n)))
             for v, n in sorted({(k[0], k[2]) for k in lans})]
    checks = [(ip_address(t), f"{path}[{i}]", lines[i], "")
              for path, values, lines in targets
              for i, t in enumerate(values) if t != GATEWAY_TARGET]
    checks += [(gw, f"{path}.gateway", line, f"{path}.address") for path, gw, line in gateways]
    for a, path, line, skip in checks:
        where = next((w for w in mine.get(a, ()) if w != skip), None)
        lan = next((lans[k] for v, n, mask in masks
                    if v == a.version and (k := (v, int(a) & mask, n)) in lans), None)
        if where:
            why = f"is the router's own address ({where})"
            if not skip:
                why += ": the router answers it, so the WAN would never fail over"
        elif lan:
            why = f"is inside the LAN {lan[1]} ({lan[0]}), not beyond a WAN"
        elif a in edges and edges[a][0] != skip:  # type: ignore[comparison-overlap]
            why = f"is the network or broadcast address of {edges[a][1]} ({edges[a][0]})"  # type: ignore[index]
        else:
            continue
        add(line, path, f"{a} {why}")


def check_local(add: Add, local: Collection[str], configured: Collection[str],
                targets: Sequence[tuple[str, tuple[str, ...], list[int]]]) -> None:
    """Probe targets must not be one of this machine's addresses (`local`, read from
    the kernel by `--check`): the router would answer them itself.  Targets that are
    addresses `configured` in the file are left to `check_beyond`."""
    for path, values, lines in targets:
        for i, t in enumerate(values):
            if t != GATEWAY_TARGET and t not in configured and ownaddr.normal(t) in local:
                add(lines[i], f"{path}[{i}]", f"{t} is one of this router's own addresses "
                    f"(on this machine now): the router answers it, so the WAN would never "
                    f"fail over")


def check_hash(add: Add, line: int, families: Collection[int], sysctl_root: str) -> None:
    """`hash: src` needs the kernel's custom multipath hash, whose fields sysctl of each
    IP version the config carries must exist under `sysctl_root` (this machine's
    /proc/sys): without it ecmpd could not set the hash and one client's connections
    would spread over the WANs."""
    missing = [hash_fields_sysctl(f) for f in sorted(families)
               if not (Path(sysctl_root) / hash_fields_sysctl(f)).exists()]
    if missing:
        names = " and ".join(m.replace("/", ".") for m in missing)
        add(line, "hash", f"src needs the kernel's custom multipath hash (Linux 5.14 or "
            f"later): this machine has no sysctl {names}; use l3 or l4")


def hook_problem(path: str) -> str | None:
    """Why the hook at `path` cannot run now (None: it is an executable file)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("does not exist" if isinstance(exc, FileNotFoundError) else
                f"cannot be read: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(path, os.X_OK):
        return "is not executable (chmod +x)"
    return None


def check_hooks(add: Add, hooks: Sequence[str], lines: Sequence[int]) -> None:
    """Each hook must be an executable file on this machine (`--check` on the router):
    a hook that cannot run would only fail in the log, at the next WAN failure."""
    for i, path in enumerate(hooks):
        if (why := hook_problem(path)) is not None:
            add(lines[i], f"hooks[{i}]", f"{path} {why}")
