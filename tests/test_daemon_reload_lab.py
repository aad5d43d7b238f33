"""The daemon's runtime, part 2: reloads (SIGHUP and `ecmpctl reload`) with real traffic.

A valid new config is applied as a diff (changed weights, a WAN added, a WAN removed):
long-lived flows on WANs that stay never break and unchanged WANs keep their health
state and `since`.  An invalid one is refused with the very lines `ecmpd --check`
prints, and nothing in the kernel changes.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from lab.runner import config_for, kernel_hops, kernel_dump
from lab.wait import within

pytestmark = pytest.mark.lab


def unbroken(results, wans: set[str]) -> None:
    """Assert that every held flow on `wans` survived, and that each WAN had some."""
    by_wan = Counter(r.wan for r in results)
    assert wans <= set(by_wan), by_wan
    broken = [r for r in results if r.wan in wans and r.broken]
    assert not broken, f"{len(broken)} held flows on {sorted(wans)} broke: {broken[:3]}"


@pytest.fixture
def lab3_names() -> list[str]:
    return ["north", "south", "west"]


def test_reload_changed_weights_by_sighup_and_ecmpctl(make_lab, ecmpd_in):
    lab = make_lab()
    cfg = config_for(lab, weights={"wlan1": 1, "wlan2": 1})
    d = ecmpd_in(lab, cfg)
    lab.start_servers()
    held = lab.hold_flows(80, byte_interval=0.1)
    assert held.wait_established() == 80
    before = d.status()["wans"]
    # SIGHUP
    d.write_config(config_for(lab, weights={"wlan1": 1, "wlan2": 5}))
    d.signal(signal.SIGHUP)
    st = d.wait_for(lambda s: {h["interface"]: h["weight"] for h in s["route"]["nexthops"]}
                    == {"wlan1": 1, "wlan2": 5}, what="weights 1:5 after SIGHUP")
    assert kernel_hops(lab) == {("10.111.0.1", "wlan1", 1), ("10.112.0.1", "wlan2", 5)}
    assert "reloaded" in d.log()
    # ecmpctl reload: the route is changed by the time it answers
    d.write_config(config_for(lab, weights={"wlan1": 3, "wlan2": 5}))
    res = d.ctl("reload")
    assert res.returncode == 0 and "reloaded" in res.stdout
    assert kernel_hops(lab) == {("10.111.0.1", "wlan1", 3), ("10.112.0.1", "wlan2", 5)}
    st = d.status()
    for name in ("wlan1", "wlan2"):
        assert st["wans"][name]["state"] == "up" and st["wans"][name]["active"]
        assert st["wans"][name]["since"] == before[name]["since"], name
    assert {n: w["weight"] for n, w in st["wans"].items()} == {"wlan1": 3, "wlan2": 5}
    # the same file again: nothing is written (routes, rules, the nft table)
    dump, writes = kernel_dump(lab), st["stats"]["nft_writes"]
    assert d.ctl("reload").returncode == 0
    assert (kernel_dump(lab), d.status()["stats"]["nft_writes"]) == (dump, writes)
    # new flows follow the new weights (3:5), old ones are all still alive
    new = lab.new_flows(400, timeout=3.0)
    assert all(r.ok for r in new)
    share = Counter(r.wan for r in new)["wlan1"] / len(new)
    assert 0.25 < share < 0.50, share            # 3/8 = 0.375
    unbroken(held.stop(), {"wlan1", "wlan2"})


def test_reload_adds_then_removes_a_wan(lab3, ecmpd_in):
    lab = lab3
    full = config_for(lab)
    for i, wan in enumerate(full["wans"].values(), 1):
        wan["id"] = i                      # explicit ids: removing a WAN renumbers nothing
    two = dict(full, wans={k: v for k, v in full["wans"].items() if k != "west"})
    d = ecmpd_in(lab, two)
    lab.start_servers()
    ns = lab.ns_router
    rules = lambda: {r["priority"] for r in json.loads(lab.run(ns, "ip", "-j", "rule").stdout)}
    table = lambda t: lab.run(ns, "ip", "route", "show", "table", str(t), check=False).stdout
    assert {h[1] for h in kernel_hops(lab)} == {"north", "south"}
    assert table(1003) == "" and 1003 not in rules()
    held = lab.hold_flows(60, byte_interval=0.1)
    assert held.wait_established() == 60
    north_since = d.status()["wans"]["north"]["since"]
    # add west
    d.write_config(full)
    assert d.ctl("reload").returncode == 0
    st = d.wait_states({"north": "up", "south": "up", "west": "up"})
    assert {h[1] for h in kernel_hops(lab)} == {"north", "south", "west"}
    assert "via 10.103.0.1 dev west" in table(1003) and {1003, 1259} <= rules()
    held2 = lab.hold_flows(60, byte_interval=0.1)        # some of these go by west
    assert held2.wait_established() == 60
    # remove south
    d.write_config(dict(full, wans={k: v for k, v in full["wans"].items() if k != "south"}))
    d.signal(signal.SIGHUP)
    st = d.wait_for(lambda s: "south" not in s["wans"], what="south gone")
    assert {h[1] for h in kernel_hops(lab)} == {"north", "west"}
    assert table(1002) == "" and not {1002, 1258} & rules()
    assert "south" not in lab.run(ns, "nft", "list", "table", "inet", "ecmpd").stdout
    assert st["wans"]["north"]["since"] == north_since and st["wans"]["north"]["state"] == "up"
    res = lab.new_flows(60, timeout=3.0)
    assert all(r.ok for r in res) and {r.wan for r in res} == {"north", "west"}
    unbroken(held.stop(), {"north"})
    unbroken(held2.stop(), {"north", "west"})


BROKEN = {"wlan2": {"weight": 0}, "top": {"hash": "l5"}}
"""Two mistakes: a weight out of range and an unknown hash policy."""


def test_broken_config_is_refused_and_changes_nothing(make_lab, ecmpd_in):
    lab = make_lab()
    good = config_for(lab, weights={"wlan1": 1, "wlan2": 5})
    d = ecmpd_in(lab, good)
    before_st = d.status()
    kernel = kernel_dump(lab)
    bad = json.loads(json.dumps(good))
    bad["wans"]["wlan2"].update(BROKEN["wlan2"])
    bad.update(BROKEN["top"])
    d.write_config(bad)
    check = lab.run(lab.ns_router, *d.argv("--check"), check=False)
    assert check.returncode == 2
    problems = check.stderr.strip().splitlines()
    assert len(problems) == 2 and all(str(d.config_path) in p for p in problems), problems
    # ecmpctl reload: exit 1, the same problem lines
    res = d.ctl("reload", check=False)
    assert res.returncode == 1, res
    assert "refused" in res.stderr
    for p in problems:
        assert p in res.stderr.splitlines(), (p, res.stderr)
    assert kernel_dump(lab) == kernel
    # SIGHUP: refused as well, the problems logged
    logged = d.log().count(f"reload refused: {problems[0]}")
    assert logged == 1
    d.signal(signal.SIGHUP)
    within(lambda: d.log().count(f"reload refused: {problems[0]}") != logged, 5)
    assert d.log().count(f"reload refused: {problems[0]}") == logged + 1, d.log()[-2000:]
    assert f"reload refused: {problems[1]}" in d.log()
    assert kernel_dump(lab) == kernel
    # the daemon runs on as before
    st = d.status()
    assert st["pid"] == before_st["pid"] and st["hash"] == before_st["hash"] == "l4"
    for name, wan in st["wans"].items():
        assert wan["state"] == "up" and wan["active"]
        assert (wan["since"], wan["weight"]) == (before_st["wans"][name]["since"],
                                                 before_st["wans"][name]["weight"])
    lab.start_servers()
    assert all(r.ok for r in lab.new_flows(30, timeout=3.0))
    # and a valid config is taken again
    d.write_config(good)
    assert d.ctl("reload").returncode == 0


def test_reload_onto_a_real_interface_judges_it_from_what_is_observed(make_lab, tmp_path):
    """A WAN first configured on a missing interface, then reloaded onto the real one
    whose ISP is dead, must go DOWN by its probes (not sit INIT in the route)."""
    from lab.runner import Ecmpd
    lab = make_lab()
    cfg = config_for(lab)
    cfg["wans"]["wlan1"]["interface"] = "ghost0"
    cfg["wans"]["wlan1"].pop("address")
    d = Ecmpd(lab, cfg, workdir=str(tmp_path / "d"))
    d.start()
    try:
        d.wait_states({"wlan1": "down", "wlan2": "up"})
        lab.fault("wlan1", "dead")
        d.write_config(config_for(lab))
        d.ctl("reload")
        st = d.wait_states({"wlan1": "down", "wlan2": "up"})
        assert {h["interface"] for h in st["route"]["nexthops"]} == {"wlan2"}
        lab.start_servers()
        assert all(r.ok for r in lab.new_flows(60, timeout=3.0))
        lab.heal("wlan1")
        d.wait_states({"wlan1": "up"})
    finally:
        d.stop()


def test_removing_a_wan_by_reload_deletes_its_pinned_connections(lab3, ecmpd_in):
    lab = lab3
    cfg = config_for(lab)
    for i, wan in enumerate(cfg["wans"].values(), 1):
        wan["id"] = i        # explicit ids: west keeps its mark when south goes
    d = ecmpd_in(lab, cfg)
    lab.start_servers()
    held = lab.hold_flows(60, byte_interval=0.1)
    held.wait_established()
    south = int(d.status()["wans"]["south"]["mark"], 16)
    count = lambda: sum(1 for line in lab.run(lab.ns_router, "conntrack", "-L", "-p", "tcp",
                                               check=False).stdout.splitlines()
                        if f"mark={south} " in line)
    assert count() > 0
    del cfg["wans"]["south"]
    d.write_config(cfg)
    d.ctl("reload")
    within(lambda: not count(), 5)
    assert count() == 0
    results = held.stop()
    assert not [r for r in results if r.wan != "south" and r.broken]


def test_reload_between_masquerade_and_snat(make_lab, ecmpd_in):
    """`nat:` masquerade -> {snat: ...} -> masquerade by reload, both IP versions: new
    connections leave with the SNAT address, then the WAN's own again; the other WAN's
    held flows never notice; the WANs keep their health."""
    from lab.runner import nft_table
    lab = make_lab()
    lab.run(lab.ns_router, "ip", "addr", "add", "10.111.0.9/24", "dev", "wlan1")
    # deprecated: masquerade, like any source selection, never picks it; SNAT may
    lab.run(lab.ns_router, "ip", "addr", "add", "2001:db8:1::9/64", "dev", "wlan1", "nodad",
            "preferred_lft", "0")
    cfg = config_for(lab, ipv6=True)
    d = ecmpd_in(lab, cfg)
    lab.start_servers()
    held = lab.hold_flows(40, byte_interval=0.1)
    assert held.wait_established() == 40
    since = {n: w["since"] for n, w in d.status()["wans"].items()}
    snat = json.loads(json.dumps(cfg))
    snat["wans"]["wlan1"]["nat"] = {"ipv4": {"snat": "10.111.0.9"},
                                    "ipv6": {"snat": "2001:db8:1::9"}}

    def sources(server: str | None = None) -> set[str]:
        new = lab.new_flows(60, timeout=3.0, server=server)
        assert all(r.ok for r in new)
        return {r.source for r in new if r.wan == "wlan1"}

    for config, want4, want6 in ((snat, "10.111.0.9", "2001:db8:1::9"),
                                 (cfg, "10.111.0.2", "2001:db8:1::2")):
        d.write_config(config)
        assert d.ctl("reload").returncode == 0
        assert ("snat ip to 10.111.0.9" in nft_table(lab)) == (config is snat)
        assert (sources(), sources(lab.server6)) == ({want4}, {want6})
        assert {n: w["since"] for n, w in d.status()["wans"].items()} == since
    unbroken([r for r in held.stop() if r.wan == "wlan2"], {"wlan2"})
