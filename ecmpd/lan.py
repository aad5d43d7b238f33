"""The LAN interfaces against the live system.  Pure, except `read_links_now`.

ecmpd forwards what arrives on `lan.interfaces`; one that does not exist (a typo,
`br-lan` for `Local`), is down or has no carrier forwards nothing, while every WAN is
UP and the routes look right.  So it is reported like a WAN's link problem: `ecmpd
--check` on the router refuses a LAN interface that is missing or down (`check_live`:
the key, its line and "did you mean" among the interfaces there are), the daemon logs a
WARNING at start and whenever one goes wrong (and when it is right again), and status
lists each LAN interface with its problem.  The daemon still starts: a bridge may be
created after ecmpd, and its sysctls are written when it appears (a reconcile, see
`appeared`; none is written for an interface that does not exist).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Link, State

Links = Mapping[str, "Link"]
"""Interface name -> link, as `state.State.links`."""
MAX_NAMED = 8
"""Interfaces listed at most when no name is close to a missing one."""


def problem(links: Links, name: str) -> str | None:
    """Why LAN interface `name` forwards nothing now (None: it exists, up, carrier)."""
    link = links.get(name)
    if link is None:
        return "does not exist"
    if not link.up:
        return "is down"
    if not link.carrier:
        return "has no carrier"
    return None


def label(cfg_lan: Sequence[str], name: str) -> str:
    """``LAN interface br-lan (lan.interfaces[0])``."""
    return f"LAN interface {name} (lan.interfaces[{list(cfg_lan).index(name)}])"


def warnings(st: "State") -> list[str]:
    """One line per LAN interface of `st`'s config with a problem (for status)."""
    lan = st.cfg.lan_interfaces
    return [f"{label(lan, n)} {why}: nothing from it is forwarded"
            for n in lan if (why := problem(st.links, n))]


def entries(st: "State") -> list[dict[str, Any]]:
    """Status: each LAN interface, in config order, as the kernel has it now."""
    out = []
    for name in st.cfg.lan_interfaces:
        link = st.links.get(name)
        out.append({"interface": name, "present": link is not None,
                    "up": bool(link and link.up), "carrier": bool(link and link.carrier),
                    "problem": problem(st.links, name)})
    return out


def changes(before: "State | None", after: "State") -> list[tuple[int, str]]:
    """(level, message) log lines for the LAN interfaces whose problem changed from
    `before` (None: at start, when only problems are logged) to `after` (a reload may
    list other interfaces: each is compared by name)."""
    out = []
    lan = after.cfg.lan_interfaces
    for name in lan:
        was = problem(before.links, name) if before is not None and \
            name in before.cfg.lan_interfaces else None
        now = problem(after.links, name)
        if now and now != was:
            more = (": nothing from it is forwarded until it appears (ecmpd sets it up "
                    "then)" if now == "does not exist" else ": nothing from it is forwarded")
            out.append((logging.WARNING, f"{label(lan, name)} {now}{more}"))
        elif was and not now:
            out.append((logging.INFO, f"{label(lan, name)} is up: forwarding from it"))
    return out


def appeared(before: "State", after: "State") -> bool:
    """Whether a LAN interface of `after`'s config is new to the kernel (it did not
    exist, or was recreated with another index): its sysctls must be written."""
    for name in after.cfg.lan_interfaces:
        old, new = before.links.get(name), after.links.get(name)
        if new is not None and (old is None or old.index != new.index):
            return True
    return False


def check_live(add: Callable[[int, str, str], None], names: Sequence[str],
               lines: Sequence[int], links: Links, wan_interfaces: Sequence[str] = ()) -> None:
    """`--check` on the router: each LAN interface must exist and be up (`links`: the
    machine's now).  A missing one is named with the interface it most likely meant:
    the closest name among those there that are no WAN's (or a list of them).  Where
    none of the config's interfaces exists, this is not the router (a file checked on
    another machine): nothing is checked (`on_this_machine`)."""
    if not on_this_machine([*names, *wan_interfaces], links):
        return
    others = [n for n in links if n != "lo" and n not in wan_interfaces]
    for i, name in enumerate(names):
        why = problem(links, name)
        if why == "does not exist":
            add(lines[i], f"lan.interfaces[{i}]", f"'{name}' does not exist on this machine"
                f" ({_suggest(name, others)})")
        elif why == "is down":
            add(lines[i], f"lan.interfaces[{i}]", f"'{name}' is down: nothing from it is "
                f"forwarded (ip link set {name} up)")


def on_this_machine(interfaces: Sequence[str], links: Links) -> bool:
    """Whether any of a config's `interfaces` exists here: the machine is its router."""
    return any(n in links for n in interfaces)


def _suggest(name: str, others: Sequence[str]) -> str:
    """``did you mean 'Local'?``, or the interfaces there are."""
    lower = {n.lower(): n for n in others}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    if close or len(others) == 1:
        return f"did you mean '{lower[close[0]] if close else others[0]}'?"
    if not others:
        return "it has no interface but lo and the WANs'"
    shown = sorted(others)[:MAX_NAMED]
    more = f", and {len(others) - MAX_NAMED} more" if len(others) > MAX_NAMED else ""
    return f"interfaces here: {', '.join(shown)}{more}"


def read_links_now() -> "dict[str, Link] | None":
    """Every interface of the current network namespace, read synchronously for
    `--check`; None when they cannot be read (no netlink, a sandbox): not checked."""
    try:
        from pyroute2.iproute.linux import IPRoute

        from .interfaces import link_state
        from .state import Link

        with IPRoute() as ipr:
            return {m.get("ifname"): Link.of(link_state(m)) for m in ipr.link("dump")}
    except Exception:
        return None
