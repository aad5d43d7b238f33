"""`ecmpd`: the daemon's command line.

    ecmpd --config FILE            run in the foreground (systemd Type=notify)
    ecmpd --config FILE --check    validate and exit (0 valid, 2 with one line per problem)
    ecmpd --config FILE --dry-run  print the plan (routes, rules, sysctls, nft table)
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import sys
from dataclasses import replace

from .config import ConfigError, load_config
from .model import Config

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
    also refuses probe targets that are this machine's addresses (when it can read them)."""
    local = None
    if args.check:
        from .ownaddr import read_now
        local = read_now()
    try:
        cfg = load_config(args.config, local)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    if args.socket:
        cfg = replace(cfg, control_socket=args.socket)
    return cfg


async def dry_run(cfg: Config) -> None:
    """Print the plan for the current network namespace's links and addresses."""
    from .netlinkimport import AsyncIPRoute

    from . import gateways, nftrules, routing, state
    from .desired import build_desired, describe, table_range

    async with AsyncIPRoute() as ipr:
        links = await routing.read_links(ipr)
        addrs = await routing.read_addresses(ipr)
        defaults = (await gateways.read_defaults(ipr, cfg.route_proto, table_range(cfg))
                    if gateways.learns(cfg) else {})
    index = {name: link["index"] for name, link in links.items()}
    st = state.initial(cfg, {n: state.Link.of(v) for n, v in links.items()},
                       {i: tuple(a) for i, a in addrs.items()}, (), 0.0, defaults)
    gws = state.gateways(st)
    for wan in cfg.wans:
        if wan.interface not in links:
            print(f"# {wan.name}: interface {wan.interface} does not exist (no routes for it)")
        elif wan.gateway is None:
            gw = gws.get(wan.name)
            print(f"# {wan.name}: gateway auto: " + ("none known yet" if gw is None else
                                                      gw or f"the device {wan.interface}"))
    wan_addrs = {w.name: a for w in cfg.wans
                 if (a := routing.primary_address(links, addrs, w.interface))}
    active = {w.name for w in cfg.wans if links.get(w.interface, {}).get("carrier")}
    for line in describe(build_desired(cfg, index, wan_addrs, active, gateways=gws)):
        print(line)
    print(f"# nft table ip {cfg.nft_table} (one atomic transaction):")
    print(json.dumps(nftrules.replace_commands(cfg), indent=1))


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
    cfg = load(args)
    if cfg is None:
        return 2
    if args.check:
        print(f"{args.config}: ok ({len(cfg.wans)} WANs: {', '.join(w.name for w in cfg.wans)})")
        return 0
    if args.dry_run:
        asyncio.run(dry_run(cfg))
        return 0
    from .daemon import Daemon
    from .logsetup import setup_logging
    from .nslock import hold_namespace

    fix_mmap_threshold()
    setup_logging(args.log_level)
    hold_namespace(cfg.control_socket)  # one ecmpd per netns, else exit 1
    try:
        return asyncio.run(Daemon(cfg, args.config).run())
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # start-up failures: one clear line, not a traceback
        log.error("ecmpd cannot run: %s", exc)
        log.debug("details", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
