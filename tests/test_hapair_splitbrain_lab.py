"""The HA pair (`lab.hapair`: keepalived, conntrackd and ecmpd on two routers) with
`ha:` in ecmpd's config: keepalived's notify script sets the roles; while the pair is
healthy neither router sees a split brain; with the VRRP link cut both become master and
both report the split brain (every floating address, the other router's MAC) within a
few checks; the link mended, one goes back to backup and it ends, and new flows all
work again.  What the split does to traffic is printed (held TCP flows, new flows)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lab import driver, netns
from lab.wait import during, until
from tests.conftest import lab_skip_reason, next_lab_prefix

hapair = pytest.importorskip("lab.hapair", reason="the HA pair lab (lab/hapair.py)")

pytestmark = pytest.mark.lab

HELD = 40
SPLIT = 5.0
"""Seconds the VRRP link stays cut."""


def config() -> dict[str, Any]:
    cfg = hapair.ecmpd_config()
    cfg["ha"] = {"vips": [hapair.LAN_VIP, hapair.LAN_VIP6], "detect_interval": "200ms"}
    return cfg


def floating() -> set[str]:
    return {hapair.LAN_VIP, hapair.LAN_VIP6,
            *(a for w in hapair.WANS for a in (w.floating, w.floating6))}


def ha(p, box: str) -> dict[str, Any]:
    return p.ecmpd[box].status()["ha"]


def test_the_vrrp_link_cut_is_a_split_brain_both_routers_report() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    p = hapair.HaPair(prefix=next_lab_prefix()).build()
    try:
        p.start("r1", config())
        until(lambda: p.master() == "r1", 10, "r1 master")
        p.start("r2", config())
        until(lambda: ha(p, "r1")["role"] == "master" and ha(p, "r2")["role"] == "backup",
              10, lambda _: f"the roles from the notify script: {p.notify_log('r2')}")

        def healthy() -> None:
            for box in ("r1", "r2"):
                assert ha(p, box)["split_brain"] is None, (box, ha(p, box))
        during(1.0, healthy, interval=0.2)          # 5 checks of the master: nobody else
        p.procs["lab"].append(driver.start_server(p.ns("inet"), hapair.PORT))
        hold = driver.start_hold(p.ns("cl"), hapair.SERVER, HELD, byte_interval=0.1,
                                 echo_timeout=3.0, wan_of=hapair.wan_of)
        assert hold.wait_established(15) == HELD
        until(lambda: p.synced("r2") >= HELD, 5, "the held flows synced to r2")
        flows = driver.start_flows(p.ns("cl"), hapair.SERVER, int((SPLIT + 1) / 0.02),
                                   interval=0.02, timeout=1.0, wan_of=hapair.wan_of)
        flows.wait_started()
        time.sleep(1.0)

        cut, cut_wall = time.monotonic(), time.time()
        netns.ip(p.ns("r1"), "link", "set", "sync", "down")     # VRRP's link

        def both() -> bool:
            return all((ha(p, b)["split_brain"] or {}).get("addresses") and
                       {a["address"] for a in ha(p, b)["split_brain"]["addresses"]}
                       == floating() for b in ("r1", "r2"))
        until(both, 15, lambda _: f"both to see the split brain: r1 {ha(p, 'r1')}, "
                                  f"r2 {ha(p, 'r2')}")
        seen = time.monotonic() - cut
        for box, other in (("r1", "r2"), ("r2", "r1")):
            got = ha(p, box)
            assert got["role"] == "master"
            assert {a["mac"] for a in got["split_brain"]["addresses"]} <= _macs(p, other), \
                (box, got)
            assert "HA MASTER, SPLIT BRAIN" in p.ecmpd[box].ctl("status").stdout
            assert "split brain: 192.168.88.1 on lan0 is held by another host" in \
                p.ecmpd[box].log()
        r2 = ha(p, "r2")
        print(f"split brain reported by both routers {seen:.2f} s after the VRRP link was "
              f"cut (advert 0.1 s, detect_interval 0.2 s): r2 told master "
              f"{r2['since'] - cut_wall:.2f} s after the cut, r2 saw it "
              f"{r2['split_brain']['since'] - r2['since']:.2f} s later, r1 "
              f"{ha(p, 'r1')['split_brain']['since'] - cut_wall:.2f} s after the cut")
        time.sleep(max(0.0, SPLIT - seen))
        mended = time.time()
        netns.ip(p.ns("r1"), "link", "set", "sync", "up")
        until(lambda: {ha(p, b)["role"] for b in ("r1", "r2")} == {"master", "backup"}, 15,
              "one master again")
        until(lambda: all(ha(p, b)["split_brain"] is None for b in ("r1", "r2")), 10,
              "the split brain to end")
        results, held = flows.result(), hold.stop()
        split = [r for r in results if r.wall and cut_wall + seen <= r.wall <= mended]
        after = driver.start_flows(p.ns("cl"), hapair.SERVER, 50, interval=0.02, timeout=1.0,
                                   wan_of=hapair.wan_of).result()
        broken = sorted(r.broken_wall - cut_wall for r in held if r.broken and r.broken_wall)
        print(f"traffic in the split brain ({mended - cut_wall:.1f} s): new flows "
              f"{sum(not r.ok for r in split)}/{len(split)} failed; held flows "
              f"{len(broken)}/{len(held)} broken"
              + (f" ({broken[0]:.1f}..{broken[-1]:.1f} s after the cut, echo timeout 3 s)"
                 if broken else ""))
        assert after and all(r.ok for r in after), [r for r in after if not r.ok][:3]
    finally:
        p.teardown()


def _macs(p, box: str) -> set[str]:
    """The MAC addresses of `box`'s interfaces."""
    links = json.loads(netns.ip(p.ns(box), "-j", "link", "show").stdout)
    return {link.get("address") for link in links}
