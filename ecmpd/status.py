"""The status payload of `ecmpctl status`: what the daemon believes, next to what the
kernel has right now (the route is read back from the kernel, not from memory)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import conntrack, routing
from .desired import MAIN_TABLE
from .health import Verdict

if TYPE_CHECKING:
    from .daemon import Daemon


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def build(d: "Daemon") -> dict[str, Any]:
    """The status as a JSON-ready dict (see ecmpd.ctl.render_status for its text form)."""
    cfg = d.cfg
    assert d.ipr is not None
    async with d.netlink_lock:    # Fix: unlocked, it raced a reconcile's dump (EBUSY)
        actual = await routing.read_actual(d.ipr, cfg)
    main = actual.routes.get((MAIN_TABLE, cfg.route_metric))
    index_to_name = {link["index"]: name for name, link in d.links.items()}
    in_route = main.hops() if main else set()
    counts = await conntrack.count_marks({w.name: cfg.mark_of(w) for w in cfg.wans},
                                         cfg.mark_mask)
    wans: dict[str, Any] = {}
    for name, rt in d.wans.items():
        wan = rt.wan
        link = d.links.get(wan.interface)
        targets: dict[str, Any] = {}
        if rt.prober is not None:
            per = rt.prober.window().per_target()
            for addr in wan.probe.resolved_targets(wan.gateway):
                loss, rtt = per.get(addr, (None, None))
                srtt, rttvar = rt.prober.rtt(addr)
                targets[addr] = {"loss_pct": None if loss is None else round(loss, 1),
                                 "rtt_ms": _ms(rtt), "srtt_ms": _ms(srtt),
                                 "rttvar_ms": _ms(rttvar)}
        last = rt.prober.last() if rt.prober else None
        wans[name] = {
            # DISABLED (by the administrator) overrides; `health` is what the probes say
            "state": "disabled" if name in d.disabled else rt.health.state.value,
            "health": rt.health.state.value,
            "since": rt.since,
            "reason": rt.health.reason,
            "last_round": last.reason if last else None,
            "verdict": last.verdict.value if last else None,
            # "probes late, traffic flowing" and the like: why a WAN is kept although
            # its probes are not answered in time
            "note": last.reason if last and last.verdict is Verdict.SLOW else None,
            "timeout_ms": _ms(rt.prober.timeout()) if rt.prober else None,
            "interface": wan.interface,
            "gateway": str(wan.gateway),
            "address": d.wan_address(wan),
            "weight": wan.weight,
            "active": bool(link) and (str(wan.gateway), link["index"]) in in_route,
            "disabled": name in d.disabled,
            "carrier": d.carrier(wan),
            "mark": hex(cfg.mark_of(wan)),
            "table": cfg.table_of(wan),
            "connections": counts.get(name, 0),
            "targets": targets,
        }
    warnings: list[str] = []
    if d.kept_last:
        warnings.append("all WANs are down: keeping the last route")
    if actual.foreign_main:
        warnings.append(f"a route that is not ecmpd's holds table main metric "
                        f"{cfg.route_metric}: {actual.foreign_main}")
    if main is None:
        warnings.append("no ecmpd route in the kernel")
    return {
        "pid": os.getpid(),
        "config": d.config_path,
        "uptime": round(time.time() - d.started, 3),
        "hash": cfg.hash,
        "wans": wans,
        "route": {
            "present": main is not None,
            "kept_last": d.kept_last,
            "nexthops": [{"gateway": h.gateway, "interface": index_to_name.get(h.oif, str(h.oif)),
                          # a single-nexthop route carries no weight in the kernel
                          "weight": h.weight if len(main.nexthops) > 1 else None}
                         for h in (main.nexthops if main else ())],
        },
        "warnings": warnings,
        "stats": {"reconciles": d.reconciles, "changes": d.changes,
                  "nft_writes": d.firewall.applies, "events": d.watcher.events,
                  "reaction_ms": [round(x * 1000, 3) for x in d.reactions]},
    }
