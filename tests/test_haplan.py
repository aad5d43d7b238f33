"""lab.haplan (pure): the HA pair's one ecmpd config, and the shipped ha/ examples turned
into each box's keepalived and conntrackd configs."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path

import pytest
import yaml

from ecmpd.config import parse_config
from lab import haplan


def test_both_boxes_run_one_config_that_snats_to_the_floating_addresses() -> None:
    cfg = parse_config(yaml.safe_dump(haplan.ecmpd_config()), "pair.yaml")
    # nothing per box in it: the same ids, so the same marks and tables on both
    assert [(w.name, w.id, cfg.mark_of(w)) for w in cfg.wans] == [
        ("wan1", 1, 0x10000), ("wan2", 2, 0x20000)]
    for w, plan in zip(cfg.wans, haplan.WANS):
        assert (w.snat_address(4), w.snat_address(6)) == (ip_address(plan.floating),
                                                          ip_address(plan.floating6))
    assert haplan.wan_of("203.0.113.4") == "wan2" and haplan.wan_of("192.0.2.1") is None
    # a pair: the notify script's `ecmpctl role` needs ha:, whose VIPs are the LAN's
    assert cfg.ha is not None and cfg.ha.vips == (haplan.LAN_VIP, haplan.LAN_VIP6)


def test_keepalived_conf_per_box_from_the_shipped_example() -> None:
    a = haplan.keepalived_conf(0, "/x/notify --socket /x/s", 0.2)
    b = haplan.keepalived_conf(1, "/x/notify", 0.1)
    assert 'notify "/x/notify --socket /x/s"' in a and "advert_int 0.2" in a
    assert "enable_script_security" not in a
    assert re.search(r"unicast_src_ip 10.255.255.1\n", a)
    assert re.search(r"unicast_src_ip 10.255.255.2\n\s+unicast_peer \{\n\s+10.255.255.1\n", b)
    assert "priority 100" in b and "router_id ecmpd-b" in b and "nopreempt" in b
    # every floating address of the plan moves, each on its own interface
    vips = {haplan.LAN_VIP: "lan0", haplan.LAN_VIP6: "lan0",
            **{a: w.name for w in haplan.WANS for a in (w.floating, w.floating6)}}
    for addr, dev in vips.items():
        assert re.search(rf"\n\s+{re.escape(addr)}/(32|128) dev {dev}\n", a), addr


def test_conntrackd_conf_per_box_from_the_shipped_example(tmp_path: Path) -> None:
    b = haplan.conntrackd_conf(1, tmp_path)
    assert ("IPv4_address 10.255.255.2\n        IPv4_Destination_Address 10.255.255.1"
            in b)
    assert f"LockFile {tmp_path}/conntrackd.lock" in b and f"Path {tmp_path}/conntrackd.ctl" in b
    assert "Systemd off" in b


def test_an_example_the_lab_does_not_know_fails_loudly() -> None:
    with pytest.raises(ValueError, match="no longer contains 'x = 1'"):
        haplan._swap("y = 2", {"x = 1": "x = 2"})
