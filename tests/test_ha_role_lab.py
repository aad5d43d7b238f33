"""The real ecmpd as one router of a pair, in the lab: it starts as backup, `ecmpctl
role master` makes it master; a LAN host that answers for a VIP is a split brain in
status (address, MAC, since), in the log (ERROR once) and in history; removing the
address there ends it; a restarted ecmpd keeps its role.  A backup leaves a dead WAN's
connections in conntrack, the new master flushes them."""

from __future__ import annotations

import json
import re

import pytest

from lab import netns
from lab.runner import Ecmpd, config_for
from lab.wait import during, until

pytestmark = pytest.mark.lab

VIP4, VIP6 = "192.168.0.254", "fd00::fe"


def split(st: dict) -> list[tuple[str, str]]:
    sb = st["ha"]["split_brain"]
    return [] if sb is None else sorted((a["address"], a["mac"]) for a in sb["addresses"])


def test_roles_split_brain_and_a_restart(make_lab, ecmpd_in, tmp_path) -> None:
    lab = make_lab()
    config = config_for(lab, ha={"vips": [VIP4, VIP6], "detect_interval": "200ms"})
    d = ecmpd_in(lab, config)
    st = d.status()
    assert (st["ha"]["role"], st["ha"]["split_brain"]) == ("backup", None)
    assert st["ha"]["floating"] == {lab.spec.lan_interface: [VIP4, VIP6]}
    # keepalived's master holds the VIPs; the client answers for them too (a second master)
    for vip, plen in ((VIP4, 24), (VIP6, 64)):
        netns.ip(lab.ns_router, "addr", "add", f"{vip}/{plen}", "dev", lab.spec.lan_interface,
                 "nodad" if ":" in vip else "noprefixroute")
        netns.ip(lab.ns_lan, "addr", "add", f"{vip}/{plen}", "dev", "eth0",
                 *(["nodad"] if ":" in vip else []))
    client = json.loads(netns.ip(lab.ns_lan, "-j", "link", "show", "eth0").stdout)[0]["address"]
    assert d.ctl("role", "master").stdout == "role backup -> master\n"
    st = d.wait_for(lambda s: len(split(s)) == 2, 10, "a split brain on both VIPs")
    assert split(st) == sorted([(VIP4, client), (VIP6, client)])
    assert st["warnings"][0].startswith("SPLIT BRAIN")
    assert "HA MASTER, SPLIT BRAIN" in d.ctl("status").stdout.splitlines()[0]
    for vip in (VIP4, VIP6):
        netns.ip(lab.ns_lan, "addr", "del", f"{vip}/{24 if ':' not in vip else 64}",
                 "dev", "eth0")
    d.wait_for(lambda s: s["ha"]["split_brain"] is None, 10, "the split brain to end")
    log = d.log()
    for vip in (VIP4, VIP6):
        assert log.count(f"split brain: {vip} on {lab.spec.lan_interface} is held by "
                         f"another host ({client})") == 1, log[-3000:]
    assert "split brain over" in log
    ha = [(t["previous"], t["state"]) for t in
          json.loads(d.ctl("history", "ha", "--json").stdout)["transitions"]]
    assert ha == [("backup", "master"), ("master", "split-brain"), ("split-brain", "master")]
    # keepalived notifies only on a change: a restarted ecmpd keeps the role
    assert d.stop() == 0
    again = Ecmpd(lab, config, workdir=str(d.dir))
    try:
        again.start()
        st = again.status()
        assert (st["ha"]["role"], st["ha"]["reason"]) == ("master",
                                                          "kept from before the restart")
        assert "HA role master, kept from before the restart" in again.log()
        assert again.ctl("role", "backup").stdout == "role master -> backup\n"
    finally:
        again.stop()


def ct_marks(lab, mark: int) -> int:
    """conntrack entries (TCP) in the router namespace whose mark & 0xff0000 == mark."""
    out = lab.run(lab.ns_router, "conntrack", "-L", "-p", "tcp", check=False).stdout
    return sum(1 for m in re.findall(r"mark=(\d+)", out) if int(m) & 0xFF0000 == mark)


def test_a_backup_leaves_a_dead_wans_connections_and_the_new_master_flushes_them(
        make_lab, ecmpd_in) -> None:
    """conntrackd syncs the master's deletions: the backup deletes none itself; the
    router that becomes master flushes what it skipped."""
    lab = make_lab()
    d = ecmpd_in(lab, config_for(lab, ha={"vips": [VIP4]}))
    lab.start_servers()
    held = lab.hold_flows(40, byte_interval=0.1)
    held.wait_established()
    marks = {n: int(w["mark"], 16) for n, w in d.status()["wans"].items()}
    until(lambda: all(ct_marks(lab, m) for m in marks.values()), 5,
          "both WANs carrying held flows")
    lab.fault("wlan1", "dead")
    d.wait_states({"wlan1": "down"})
    until(lambda: "HA backup: not deleting wlan1's connections" in d.log(), 5,
          lambda _: f"the backup to say what it leaves to the master:\n{d.log()[-2000:]}")

    def kept() -> None:
        assert ct_marks(lab, marks["wlan1"]) > 0, "the backup flushed the dead WAN's entries"
    during(1.0, kept, interval=0.1)     # a flush would take a few ms: none comes
    assert d.ctl("role", "master").returncode == 0
    until(lambda: ct_marks(lab, marks["wlan1"]) == 0, 5,
          lambda _: f"the new master to flush wlan1's {ct_marks(lab, marks['wlan1'])} entries")
    assert ct_marks(lab, marks["wlan2"]) > 0
    assert "HA master: flushing the connections of the WANs that are down here: wlan1" in d.log()
    held.stop()
    lab.heal("wlan1")
