"""`ecmpd`: the daemon's command line.

    ecmpd --config FILE            run in the foreground (systemd Type=notify)
    ecmpd --config FILE --check    validate and exit (0 valid, 2 with one line per problem)
    ecmpd --config FILE --dry-run  print the plan (routes, rules, sysctls, nft table in
                                   nft syntax)
    ecmpd --version

Running the daemon needs CAP_NET_ADMIN and libnftables: without either it says so in one
line and exits 1; a closed stdout (``| head``) ends it quietly (`console`).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from . import console
from .config import ConfigError, load_config
from .configmodel import Config, Wan
from .sysctl import PROC_SYS

# The daemon's modules are imported where used, after main() has told systemd that the
# start is under way (their import is most of a start's time).
if TYPE_CHECKING:
    from . import ownaddr
    from .desired import RouteSpec
    from .state import Addresses, Defaults, Link, State

DEFAULT_CONFIG = "/etc/ecmpd/ecmpd.yaml"
log = logging.getLogger("ecmpd")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecmpd", description="Linux multi-WAN gateway daemon.")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="config file (YAML)")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be installed, change nothing")
    p.add_argument("--socket", help="control socket path (overrides control.socket)")
    p.add_argument("--log-level", default="info", help="the least severe messages logged",
                   choices=["debug", "info", "notice", "warning", "error"])
    console.add_version(p)
    return p


def load(args: argparse.Namespace) -> Config | None:
    """The validated config, or None after printing every problem to stderr.  `--check`
    also refuses probe targets that are this machine's addresses, LAN interfaces that
    are missing or down here (when it can read them: run on the router) and hooks that
    are not executable files; a `hash:` this kernel lacks is refused always (the daemon
    would not start)."""
    local = links = None
    if args.check:
        from .lan import read_links_now
        from .ownaddr import read_now
        local, links = read_now(), read_links_now()
    try:
        cfg = load_config(args.config, local, PROC_SYS, links, check_hooks=args.check)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    if args.socket:
        cfg = replace(cfg, control_socket=args.socket)
    return cfg


def _interfaces_note(cfg: Config) -> str:
    """`--check`'s second line: whether the LAN interfaces were checked on this machine."""
    from .lan import on_this_machine, read_links_now
    links = read_links_now()
    names = [*cfg.lan_interfaces, *(w.interface for w in cfg.wans)]
    if links is None:
        return "  interfaces not checked: cannot read this machine's interfaces"
    if not on_this_machine(names, links):
        return (f"  interfaces not checked: none of {', '.join(dict.fromkeys(names))} exists "
                f"on this machine (not the router)")
    return f"  LAN interfaces present and up: {', '.join(cfg.lan_interfaces)}"


async def dry_run(cfg: Config) -> None:
    """Print the plan for the current network namespace (see `plan`).  Only reads:
    netlink dumps and the disabled WANs' file; needs no root."""
    from . import nftrules, nfttext, routing
    from .disabled import DisabledStore
    from .kernel import Kernel
    from .decision import main_route
    from .state import initial

    # the daemon's reads (`Kernel`), before anything is known of the state
    kernel = Kernel(lambda: initial(cfg, {}, {}, (), 0.0))
    kernel.open()
    try:
        links, addrs = await kernel.dump_links() or {}, await kernel.dump_addresses() or {}
        defaults = await kernel.dump_defaults() or {}
        local = await kernel.dump_local() or frozenset()
        addrs6 = await kernel.dump_addresses(6) or {}
        defaults6 = await kernel.dump_defaults(family=6) or {}
        async with kernel.lock:
            actual = {f: await routing.read_actual(kernel.ipr, cfg, family=f) for f in (4, 6)}
    finally:
        kernel.close()
    disabled = DisabledStore(cfg.control_socket + ".disabled.json").load(
        {w.name for w in cfg.wans})
    for line in plan(cfg, links, addrs, defaults, local, disabled,
                     main_route(actual[4].routes, cfg), addrs6, defaults6,
                     main_route(actual[6].routes, cfg, 6)):
        print(line)
    print(f"# nft table inet {cfg.nft_table} (one atomic transaction, as `nft -f` takes it):")
    for line in nfttext.render(nftrules.replace_commands(cfg)):
        print(line)


def plan(cfg: Config, links: Mapping[str, "Link"], addresses: "Addresses",
         defaults: "Defaults", local: "ownaddr.Local", disabled: Iterable[str],
         kernel_main: "RouteSpec | None", addresses6: "Addresses | None" = None,
         defaults6: "Defaults | None" = None,
         kernel_main6: "RouteSpec | None" = None) -> list[str]:
    """What the daemon started now would install, as `# notes` and the plan's lines.

    The daemon's own path: the state at start from the same dumps (`state.initial`), the
    route found in the kernel adopted (`events.Adopted`), then `decision.decide`.  A WAN
    that waits for its first probe verdict takes no new flows in the daemon; the plan
    shows the route once the first rounds passed: such a WAN is given a good round
    (`events.ProbeRound`) unless its probes cannot pass (no target, or too few that are
    not the router's own addresses).
    """
    from . import events, state
    from .decision import decide
    from .desired import describe
    from .lan import warnings as lan_warnings

    st = state.initial(cfg, links, addresses, disabled, 0.0, defaults, local, addresses6,
                       defaults6)
    st, _ = events.step(st, events.Adopted(kernel_main), 0.0)
    st, _ = events.step(st, events.Adopted(kernel_main6, 6), 0.0)
    notes: list[str] = [f"# {line}" for line in lan_warnings(st)]
    for family in (4, 6):
        p = state.plane(st, family)
        waiting = set(state.awaiting_verdict(p))
        for wan in p.cfg.wans:
            label = wan.name if family == 4 and cfg.families() == (4,) else \
                f"{wan.name} IPv{family}"
            st, more = _plan_wan(st, family, wan, label, wan.name in waiting, links)
            notes += more
    decision = decide(st, kernel_main, kernel_main6)
    for family in cfg.families():
        desired, _, kept = decision.of(family)
        if kept:
            notes.append(f"# no {cfg.version_prefix(family)}WAN is usable: ecmpd's route in "
                         f"the kernel is kept")
    lines = describe(decision.desired, cfg) + (
        describe(decision.desired6, cfg) if 6 in cfg.families() else [])
    return notes + with_names(lines, links)


_OIF = re.compile(r"\boif (\d+)\b")


def with_names(lines: list[str], links: Mapping[str, "Link"]) -> list[str]:
    """`lines` with each ``oif N`` as ``dev NAME``, as `ip route` shows them (the
    kernel's routes hold interface indexes; an admin reads names)."""
    names = {link.index: name for name, link in links.items()}

    def name(m: re.Match[str]) -> str:
        found = names.get(int(m[1]))
        return f"dev {found}" if found else m[0]
    return [_OIF.sub(name, line) for line in lines]


def _plan_wan(st: "State", family: int, wan: Wan, label: str, waiting: bool,
              links: Mapping[str, "Link"]) -> tuple["State", list[str]]:
    """One WAN's notes in one IP version's plan, and the state after its first round."""
    from . import events, state
    from .health import Verdict

    p = state.plane(st, family)
    name, ws = wan.name, p.wan(wan.name)
    if wan.interface not in links:
        return st, [f"# {label}: interface {wan.interface} does not exist (no routes for it)"]
    notes = []
    if wan.gateway is None:
        gw = state.gateway(p, wan)
        notes.append(f"# {label}: gateway{'' if family == 4 else '6'} auto: " + (
            "none known yet" if gw is None else gw or f"the device {wan.interface}"))
    targets, quorum = state.probe_targets(p, wan)
    own = state.own_targets(p, wan)
    passes = bool(targets) and len(targets) - len(own) >= quorum
    if waiting and passes:
        st, _ = events.step(st, events.ProbeRound(name, Verdict.GOOD, family=family), 0.0)
    if ws.disabled:
        why = "out: disabled by the administrator"
    elif waiting:
        why = ("joins once its first probe round passes" if passes else
               "out: " + (state.no_target(p, wan) if not targets else
                          f"its probe targets {', '.join(own)} are this router's "
                          f"own addresses"))
    elif ws.adopted:
        why = "adopted from ecmpd's route in the kernel"
    else:
        why = f"out: {ws.health.reason or ws.health.state.value}"
    return st, notes + [f"# {label}: {why}"]


CAP_NET_ADMIN = 12
NOT_PRIVILEGED = ("ecmpd: needs root (CAP_NET_ADMIN) to set routes, rules and nftables: run "
                  "it as root or as ecmpd.service (--check and --dry-run need no privilege)")
NO_LIBNFTABLES = ("ecmpd: libnftables not found: install the Debian package python3-nftables "
                  "(libnftables1)")


def has_net_admin(status: str = "/proc/self/status") -> bool:
    """Whether this process may change the network: CAP_NET_ADMIN in its effective set
    (root has it; so has a unit that grants only that), else, without /proc, root."""
    try:
        with open(status, encoding="ascii") as f:
            caps = next(line.split()[1] for line in f if line.startswith("CapEff:"))
        return bool(int(caps, 16) >> CAP_NET_ADMIN & 1)
    except (OSError, StopIteration, IndexError, ValueError):
        return os.geteuid() == 0


def has_libnftables() -> bool:
    """Whether the `nftables` module loads and finds libnftables.so.1 (it opens the
    library when a context is made, so a missing library shows only then)."""
    try:
        import nftables
        nftables.Nftables()
    except (ImportError, OSError):
        return False
    return True


def refusal() -> str | None:
    """Why the daemon cannot run here (one line), or None."""
    if not has_net_admin():
        return NOT_PRIVILEGED
    if not has_libnftables():
        return NO_LIBNFTABLES
    return None


M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(size: int = 128 * 1024) -> None:
    """Keep glibc's mmap threshold fixed at `size` (its default, 128 KiB).

    Netlink reads start with a large buffer that is shrunk to what arrived (asyncio's
    datagram transport under pyroute2 uses 256 KiB).  glibc raises its threshold the
    first time such a mapped buffer is freed; after that they come from the brk heap
    and fragment it: RSS crept up by a few KB per fault/heal cycle (bench/soak.py)
    while nothing stayed allocated.  With the threshold fixed they are mapped and
    unmapped again.  A no-op without glibc."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


@console.quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .sdnotify import Notifier
    notifier = Notifier()
    if not (args.check or args.dry_run):
        # the start's first sign of life: each phase extends systemd's start timeout
        notifier.starting("loading the config")
    cfg = load(args)
    if cfg is None:
        return 2
    if args.check:
        print(f"{args.config}: ok ({len(cfg.wans)} WANs: {', '.join(w.name for w in cfg.wans)})")
        print(_interfaces_note(cfg))
        return 0
    import asyncio
    if args.dry_run:
        asyncio.run(dry_run(cfg))
        return 0
    why = refusal()
    if why:
        print(why, file=sys.stderr)
        return 1
    notifier.starting("loading ecmpd")
    from .daemon import Daemon
    from .logsetup import setup_logging
    from .nslock import hold_namespace

    fix_mmap_threshold()
    setup_logging(args.log_level)
    hold_namespace(cfg.control_socket)  # one ecmpd per netns, else exit 1
    try:
        return asyncio.run(Daemon(cfg, args.config, notifier).run())
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # start-up failures: one clear line, not a traceback
        log.error("ecmpd cannot run: %s", exc)
        log.debug("details", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
