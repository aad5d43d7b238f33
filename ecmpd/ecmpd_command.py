"""`ecmpd`: the daemon's command line.

    ecmpd --config FILE            run in the foreground (systemd Type=notify)
    ecmpd --config FILE --check    validate and exit (0 valid, 2 with one line per problem)
    ecmpd --config FILE --dry-run  print the plan (routes, rules, sysctls, nft table)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from .sysctl import PROC_SYS

# The config's and the daemon's modules are imported where used, after main() has told
# systemd that the start is under way (their import is most of a start's time).
if TYPE_CHECKING:
    from .configmodel import Config, Wan
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
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "notice", "warning", "error"])
    return p


def load(args: argparse.Namespace) -> Config | None:
    """The validated config, or None after printing every problem to stderr.  `--check`
    also refuses probe targets that are this machine's addresses (when it can read them);
    a `hash:` this kernel lacks is refused always (the daemon would not start)."""
    from .config import ConfigError, load_config
    local = None
    if args.check:
        from .ownaddr import read_now
        local = read_now()
    try:
        cfg = load_config(args.config, local, PROC_SYS)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    if args.socket:
        cfg = replace(cfg, control_socket=args.socket)
    return cfg


async def dry_run(cfg: Config) -> None:
    """Print the plan for the current network namespace (see `plan`).  Only reads:
    netlink dumps and the disabled WANs' file; needs no root."""
    from . import nftrules, policyrules, routing
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
    for line in policyrules.describe(cfg):
        print(line)
    print(f"# nft table inet {cfg.nft_table} (one atomic transaction):")
    print(json.dumps(nftrules.replace_commands(cfg), indent=1))


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

    st = state.initial(cfg, links, addresses, disabled, 0.0, defaults, local, addresses6,
                       defaults6)
    st, _ = events.step(st, events.Adopted(kernel_main), 0.0)
    st, _ = events.step(st, events.Adopted(kernel_main6, 6), 0.0)
    notes: list[str] = []
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
    return notes + describe(decision.desired, cfg) + (
        describe(decision.desired6, cfg) if 6 in cfg.families() else [])


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
        return 0
    import asyncio
    if args.dry_run:
        asyncio.run(dry_run(cfg))
        return 0
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
