"""The HA pair (`lab.hapair`: keepalived, conntrackd and ecmpd on two routers) with
`ha:` in ecmpd's config: keepalived's notify script sets the roles; while the pair is
healthy neither router sees a split brain; with the VRRP link cut both become master and
both report the split brain (every floating address, the other router's MAC) within a
few checks; the link mended, one goes back to backup and it ends."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lab import netns
from lab.wait import during, until
from tests.conftest import lab_skip_reason, next_lab_prefix

hapair = pytest.importorskip("lab.hapair", reason="the HA pair lab (lab/hapair.py)")

pytestmark = pytest.mark.lab


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

        cut = time.monotonic()
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
        print(f"split brain reported by both routers {seen:.2f} s after the VRRP link was "
              f"cut (advert 0.1 s, detect_interval 0.2 s)")
        netns.ip(p.ns("r1"), "link", "set", "sync", "up")
        until(lambda: {ha(p, b)["role"] for b in ("r1", "r2")} == {"master", "backup"}, 15,
              "one master again")
        until(lambda: all(ha(p, b)["split_brain"] is None for b in ("r1", "r2")), 10,
              "the split brain to end")
    finally:
        p.teardown()


def _macs(p, box: str) -> set[str]:
    """The MAC addresses of `box`'s interfaces."""
    links = json.loads(netns.ip(p.ns(box), "-j", "link", "show").stdout)
    return {link.get("address") for link in links}
