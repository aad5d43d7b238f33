"""Forged on-disk state: nothing read from disk makes ecmpd touch what is not its own.

The ownership ledger (``<socket>.owned.json``) and the disabled-WANs list
(``<socket>.disabled.json``) are forged in every way found: numbers naming the host's
rules, tables and routes (``0: lookup local``, ``32766: lookup main``, table main, the
``boot`` and ``dhcp`` route protocols), wrong types, a FIFO, a device, symlinks, a huge
file.  For each, the real ecmpd in a lab router must be serving within 5 s, the router's
foreign rules, routes and nft tables must be the same before, during and after a run
(diffed), new LAN flows must get through, and SIGTERM must end it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Callable

import pytest

from lab.runner import Ecmpd, add_foreign, config_for, kernel_dump

pytestmark = pytest.mark.lab

FOREIGN = [
    "route add default via 10.111.0.1 proto boot metric 7",       # someone's, in main
    "route add default via 10.112.0.1 proto dhcp metric 300",     # a DHCP client's
    "route add default via 10.112.0.1 proto static table 2100",
    "route add default via 10.111.0.1 proto boot table 300",      # in a forged table span
    "rule add priority 1100 lookup main",                         # in ecmpd's rule span
    "rule add priority 1200 lookup 300",                          # ditto, a forged table
    "rule add priority 1300 lookup local",
]
FOREIGN_NFT = "table ip theirs {\n  chain c { type filter hook forward priority 10; }\n}\n"
GOOD = {"route_proto": 236, "route_metric": 0, "table_base": 1000, "rule_priority": 1000,
        "nft_table": "ecmpd", "mark_mask": 0xFF0000, "ids": [1, 2]}
HOST_NUMBERS = [
    {**GOOD, "rule_priority": 0, "table_base": 200},        # 0: lookup local, table 255
    {**GOOD, "rule_priority": 32766, "table_base": 254},    # 32766: lookup main
    {**GOOD, "route_proto": 3, "route_metric": 7, "table_base": 5000},   # boot, in main
    {**GOOD, "route_proto": 16, "route_metric": 300, "table_base": 6000},  # dhcp
    {**GOOD, "table_base": 200, "rule_priority": 1000, "nft_table": "theirs"},
    {**GOOD, "table_base": 2100, "route_proto": 4},         # static, someone's table
]


def _write(text: str) -> Callable[[str], None]:
    def make(path: str) -> None:
        with open(path, "w") as f:
            f.write(text)
    return make


def _fifo(path: str) -> None:
    os.mkfifo(path)


def _device(path: str) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))    # /dev/zero's


def _symlink(to: str) -> Callable[[str], None]:
    return lambda path: os.symlink(to, path)


def _huge(path: str) -> None:
    with open(path, "w") as f:
        f.write('{"version": 1, "owned": [')
        f.write(", ".join([json.dumps(GOOD)] * 200_000))    # ~25 MB
        f.write("]}")


FORGERIES: dict[str, tuple[Callable[[str], None], Callable[[str], None]]] = {
    # kind: (ledger, disabled list)
    "host numbers": (_write(json.dumps({"version": 1, "owned": HOST_NUMBERS})),
                     _write('["wlan1", "wlan2"]')),
    "wrong types": (_write(json.dumps({"version": 1, "owned": [
        {**GOOD, "rule_priority": "0"}, {**GOOD, "table_base": 254.0}, [], None,
        {**GOOD, "ids": "all"}, {**GOOD, "route_proto": True}]})), _write('{"wlan1": 1}')),
    "FIFO": (_fifo, _fifo),
    "device": (_device, _device),
    "symlink to /dev/zero": (_symlink("/dev/zero"), _symlink("/dev/zero")),
    "symlink to a file": (_symlink("/etc/hostname"), _symlink("/etc/hostname")),
    "huge": (_huge, _huge),
}


def foreign(lab) -> dict:
    """The router's routes, rules and nft ruleset without ecmpd's own objects (proto
    236 routes, rules it installs, its nft table)."""
    routes, rules, nft = kernel_dump(lab)
    ecmpd_rules = {(1000, "main"), (1001, "1001"), (1002, "1002"), (1257, "1001"),
                   (1258, "1002"), (1512, "1000")}
    return {
        "routes": sorted(json.dumps(r, sort_keys=True) for r in json.loads(routes)
                         if r.get("protocol") not in ("236", 236)),
        "rules": sorted(json.dumps(r, sort_keys=True) for r in json.loads(rules)
                        if (r["priority"], r.get("table")) not in ecmpd_rules),
        "nft": [x for x in json.loads(nft)["nftables"]
                if "metainfo" not in x and "ecmpd" not in json.dumps(x)],
    }


def diff(a: dict, b: dict) -> dict:
    """What differs between two `foreign` readings: only in a, only in b."""
    return {k: {"gone": [x for x in a[k] if x not in b[k]],
                "new": [x for x in b[k] if x not in a[k]]} for k in a if a[k] != b[k]}


def test_forged_state_never_touches_foreign_objects(make_lab, tmp_path):
    lab = make_lab()
    add_foreign(lab, FOREIGN, FOREIGN_NFT)
    lab.start_servers()
    before = foreign(lab)
    assert any('"priority": 1100' in r for r in before["rules"])
    for n, (kind, (ledger_file, disabled_file)) in enumerate(FORGERIES.items()):
        d = Ecmpd(lab, config_for(lab), workdir=str(tmp_path / f"run{n}"))
        ledger_file(d.socket + ".owned.json")
        disabled_file(d.socket + ".disabled.json")
        t = time.monotonic()
        d.start(timeout=5.0)
        try:
            serving = time.monotonic() - t
            st = d.wait_states({"wlan1": "up", "wlan2": "up"})
            assert not any(w["disabled"] for w in st["wans"].values()), (kind, st["wans"])
            assert not diff(before, foreign(lab)), (kind, diff(before, foreign(lab)))
            flows = lab.new_flows(20, timeout=2.0)
            assert all(r.ok for r in flows), (kind, [r for r in flows if not r.ok][:3])
            assert "Traceback" not in d.log(), (kind, d.log())
            print(f"\n{kind}: serving {serving:.2f}s after launch")
        finally:
            assert d.stop(timeout=5.0) == 0, (kind, d.log()[-3000:])
        assert not diff(before, foreign(lab)), (kind, diff(before, foreign(lab)),
                                                d.log()[-3000:])
        # what a run rewrote is ecmpd's own record again: a regular file, valid
        record = d.socket + ".owned.json"
        assert stat.S_ISREG(os.lstat(record).st_mode), kind
        assert json.loads(open(record).read())["owned"] == [GOOD], kind


def test_every_wan_disabled_then_a_restart_still_routes(make_lab, ecmpd_in):
    lab = make_lab()
    lab.start_servers()
    d = ecmpd_in(lab, keep_on_exit=False)
    assert d.ctl("disable", "wlan1").returncode == 0
    res = d.ctl("disable", "wlan2", check=False)
    assert res.returncode == 1 and "use --force" in res.stderr
    # a refused disable is not recorded: wlan2 still carries the route
    assert json.loads(open(d.socket + ".disabled.json").read()) == ["wlan1"]
    assert d.stop() == 0
    d.start()
    st = d.wait_states({"wlan2": "up"})
    assert st["wans"]["wlan1"]["disabled"] and not st["wans"]["wlan2"]["disabled"]
    assert all(r.ok and r.wan == "wlan2" for r in lab.new_flows(20, timeout=2.0))
    # a list naming every WAN (an older ecmpd, a config that lost a WAN, a hand edit) is
    # not obeyed: a restart never leaves the LAN without a route
    assert d.stop() == 0
    with open(d.socket + ".disabled.json", "w") as f:
        f.write('["wlan1", "wlan2"]')
    d.start()
    d.wait_states({"wlan1": "up", "wlan2": "up"})
    assert "disables every WAN" in d.log()
    assert all(r.ok for r in lab.new_flows(20, timeout=2.0))
    # refused while it is the last usable WAN; once another is usable it takes effect
    assert d.ctl("disable", "wlan1").returncode == 0
    res = d.ctl("disable", "wlan2", check=False)
    assert res.returncode == 1
    assert json.loads(open(d.socket + ".disabled.json").read()) == ["wlan1"]
    assert d.ctl("enable", "wlan1").returncode == 0
    assert d.ctl("disable", "wlan2").returncode == 0
    d.wait_for(lambda s: not s["wans"]["wlan2"]["active"], what="wlan2 leaves the route")
    assert json.loads(open(d.socket + ".disabled.json").read()) == ["wlan2"]
