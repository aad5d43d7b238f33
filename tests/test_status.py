"""Unit tests of ecmpd.status: the `ecmpctl status` payload rendered from snapshots built
here directly (no daemon, no root); and `Daemon.snapshot` taking one at one moment, with
the kernel's routes (`routing.read_actual`) and conntrack (`conntrack.count_marks`)
monkeypatched."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import types
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from ecmpd import conntrack, routing
from ecmpd.statusview import render_status as render_text
from ecmpd.desired import MAIN_TABLE, Nexthop, RouteSpec
from ecmpd.health import Health, Phase as H, Verdict
from ecmpd.judge import RoundResult, TargetSample, Window
from ecmpd.configmodel import Config, ProbeSettings, Wan
from ecmpd.routing import Actual
from ecmpd.state import Default, Link, State, WanState, initial
from ecmpd.status import ProbeReading, Snapshot, Stats, TargetReading, reading, render

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), weight=1, id=1,
              probe=ProbeSettings(targets=("gateway", "203.0.113.7", "203.0.113.8"))),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2)),
    hash="l4",
)
MARKS = {"wlan1": 0x10000, "wlan2": 0x20000}
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True), "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.10", 24), ("192.0.2.11", 24)), 12: (("198.51.100.10", 24),)}
UP = Health(H.UP, 0, "after 5 good rounds")


def render_status(payload: dict, now: float) -> str:
    """`ecmpctl status -v`: the detail these tests check (statusview's own tests cover
    the view at a glance)."""
    return render_text(payload, now, verbose=True)


FAMILY_KEYS = {"state", "health", "since", "reason", "last_round", "gateway", "address",
               "active", "targets", "verdict", "note", "timeout_ms", "rested_rounds",
               "gateway_source", "nexthop", "standby", "since_iso", "downs_24h", "last_down"}
"""A WAN's fields of one IP version (under "ipv4" / "ipv6"; the IPv4 ones also at its top)."""
WAN_KEYS = FAMILY_KEYS | {"interface", "weight", "tier", "failback", "nat", "disabled", "carrier", "link", "mark", "table",
                          "connections", "point_to_point", "families", "ipv4", "ipv6"}
TOP_KEYS = {"pid", "config", "uptime", "hash", "new_flows_tier", "wans", "lan", "policies", "route", "route6", "warnings", "stats"}
STATS_KEYS = {"reconciles", "changes", "nft_writes", "events", "reaction_ms", "flushes",
              "resyncs", "monitors"}


def hop(gw: str, oif: int, weight: int = 1) -> Nexthop:
    return Nexthop(gw, oif, weight)


def route(*hops: Nexthop, metric: int = 0) -> RouteSpec:
    return RouteSpec(MAIN_TABLE, tuple(hops), metric)


BOTH = route(hop("192.0.2.1", 11, 1), hop("198.51.100.1", 12, 2))


def state(health: Health = UP, links=LINKS, **per_wan: WanState) -> State:
    st = initial(CFG, links, ADDRS, (), 0.0)
    wans = {w.name: WanState(health, 1_700_000_000.0 + w.id) for w in CFG.wans}
    return dataclasses.replace(st, wans={**wans, **per_wan})


def snap(st: State | None = None, main: RouteSpec | None = BOTH, **kw: Any) -> Snapshot:
    kw.setdefault("connections", {"wlan1": 7})
    kw.setdefault("stats", Stats(12, 4, 2, 37, (0.0041234, 0.0126), 1, 0))
    return Snapshot(st or state(), main, pid=4242, config_path="/etc/ecmpd/ecmpd.yaml",
                    uptime=100.25, **kw)


def test_the_payload_has_the_documented_keys_and_is_json() -> None:
    st = render(snap())
    assert set(st) == TOP_KEYS
    assert (st["pid"], st["config"], st["uptime"], st["hash"]) == \
        (4242, "/etc/ecmpd/ecmpd.yaml", 100.25, "l4")
    assert list(st["wans"]) == ["wlan1", "wlan2"]
    for w in st["wans"].values():
        assert set(w) == WAN_KEYS
        # an IPv4-only WAN: its IPv4 fields at the top and under "ipv4", no IPv6
        assert w["families"] == ["ipv4"] and w["ipv6"] is None
        assert set(w["ipv4"]) == FAMILY_KEYS
        assert {k: w[k] for k in FAMILY_KEYS} == w["ipv4"]
    assert st["wans"]["wlan2"]["ipv4"]["gateway"] == "198.51.100.1"
    assert set(st["route"]) == {"present", "kept_last", "nexthops"}
    # no IPv6 route in an IPv4-only config, and no warning about it
    assert st["route6"] == {"present": False, "kept_last": False, "nexthops": []}
    assert set(st["stats"]) == STATS_KEYS
    assert st["warnings"] == []
    assert json.loads(json.dumps(st)) == st
    text = render_status(st, time.time())
    assert "wan: wlan1" in text and "wan: wlan2" in text
    assert "via 198.51.100.1 dev eth2 weight 2" in text
    assert "warning" not in text


def test_learned_gateways_show_what_is_in_use_and_null_while_unknown() -> None:
    cfg = dataclasses.replace(CFG, wans=(dataclasses.replace(CFG.wans[0], gateway=None),
                                         dataclasses.replace(CFG.wans[1], gateway=None,
                                                             interface="ppp0")))
    links = {**LINKS, "ppp0": Link(20, True, True, pointopoint=True)}
    st = initial(cfg, links, {**ADDRS, 20: (("10.64.0.7", 32, "10.64.0.1"),)}, (), 0.0)
    payload = render(snap(st, main=route(hop("", 20))))
    w1, w2 = payload["wans"]["wlan1"], payload["wans"]["wlan2"]
    assert (w1["gateway"], w1["nexthop"], w1["gateway_source"]) == (None, None, "learned")
    assert (w1["state"], w1["reason"]) == ("down", "waiting for a gateway")
    assert (w2["gateway"], w2["nexthop"]) == (None, "dev ppp0")
    # a single nexthop: the WAN's weight (the kernel keeps none on a one-nexthop route)
    assert payload["route"]["nexthops"] == [{"gateway": None, "interface": "ppp0",
                                             "onlink": False, "weight": 2}]
    text = render_status(payload, time.time())
    assert "gateway: none yet (learned)" in text
    assert "gateway: none needed (point-to-point: dev ppp0)" in text
    assert "\n  dev ppp0 weight 2\n" in text + "\n"
    learned = dataclasses.replace(st, defaults={254: (Default(0, 11, "192.0.2.254"),)})
    w1 = render(snap(learned))["wans"]["wlan1"]
    assert (w1["gateway"], w1["nexthop"]) == ("192.0.2.254", "via 192.0.2.254 dev eth1")


def test_nat_per_ip_version_in_json_and_in_text_only_where_not_masquerade() -> None:
    w1, w2 = CFG.wans
    cfg = dataclasses.replace(CFG, wans=(
        dataclasses.replace(w1, gateway6=IPv6Address("fe80::1"), families=(4, 6),
                            nat=((6, "none"),)), w2))
    payload = render(snap(initial(cfg, LINKS, ADDRS, (), 0.0)))
    assert [w["nat"] for w in payload["wans"].values()] == [
        {"ipv4": "masquerade", "ipv6": "none"}, {"ipv4": "masquerade"}]
    text = render_status(payload, time.time())
    assert text.count("  nat: ") == 1 and "\n  nat: ipv6 none\n" in text
    plain = dataclasses.replace(cfg, wans=(cfg.wans[0], dataclasses.replace(w2, nat=((4, "none"),))))
    payload = render(snap(initial(plain, LINKS, ADDRS, (), 0.0)))
    assert payload["wans"]["wlan2"]["nat"] == {"ipv4": "none"}
    wlan2 = render_status(payload, time.time()).split("wan: wlan2")[1]
    assert wlan2.count("  nat: ") == 1 and "\n  nat: ipv4 none\n" in wlan2
    snat = dataclasses.replace(cfg, wans=(cfg.wans[0], dataclasses.replace(
        w2, nat=((4, "snat", IPv4Address("198.51.100.10")),))))
    payload = render(snap(initial(snat, LINKS, ADDRS, (), 0.0)))
    assert payload["wans"]["wlan2"]["nat"] == {"ipv4": "snat 198.51.100.10"}
    assert "\n  nat: ipv4 snat 198.51.100.10\n" in render_status(payload, time.time())


def test_a_snapshot_is_immutable() -> None:
    s = snap()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.main = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.state.wans["wlan1"] = WanState()  # type: ignore[index]


def test_per_wan_fields_come_from_config_links_and_health() -> None:
    st = state(wlan2=WanState(Health(H.FALLING, 1, "after 1 failed round: silent"), 5.0))
    w1, w2 = render(snap(st))["wans"].values()
    assert w1["state"] == w1["health"] == "up"
    assert (w1["reason"], w1["since"]) == ("after 5 good rounds", 1_700_000_001.0)
    assert (w1["interface"], w1["gateway"], w1["weight"]) == ("eth1", "192.0.2.1", 1)
    assert w1["address"] == "192.0.2.10"          # the primary one
    assert w1["carrier"] is True and w1["disabled"] is False
    assert (w1["mark"], w1["table"]) == ("0x10000", 1001)
    assert (w2["mark"], w2["table"], w2["weight"]) == ("0x20000", 1002, 2)
    assert w2["state"] == w2["health"] == "falling"
    assert (w2["reason"], w2["since"]) == ("after 1 failed round: silent", 5.0)


def test_a_disabled_wan_shows_disabled_while_health_keeps_the_probe_state() -> None:
    st = state(wlan2=WanState(Health(H.DOWN, 0, "after 3 failed rounds"), 5.0, disabled=True))
    w1, w2 = render(snap(st, route(hop("192.0.2.1", 11))))["wans"].values()
    assert (w2["state"], w2["health"], w2["disabled"], w2["active"]) == \
        ("disabled", "down", True, False)
    assert (w1["state"], w1["disabled"]) == ("up", False)


def test_active_is_what_the_kernel_route_holds_not_what_the_daemon_believes() -> None:
    # both UP in the state, but the kernel's route has only wlan2
    wans = render(snap(main=route(hop("198.51.100.1", 12))))["wans"]
    assert wans["wlan1"]["health"] == "up" and wans["wlan1"]["active"] is False
    assert wans["wlan2"]["active"] is True
    # and the other way round: a DOWN WAN still in the kernel's route is active
    st = state(wlan1=WanState(Health(H.DOWN, 0, "carrier lost"), 5.0))
    assert render(snap(st))["wans"]["wlan1"]["active"] is True


def test_active_is_a_nexthop_via_its_interface_in_the_kernels_route() -> None:
    st = render(snap(main=route(hop("192.0.2.99", 11), hop("198.51.100.1", 13))))
    # the kernel still routes through eth1 (via a gateway it has from before): active
    assert st["wans"]["wlan1"]["active"] is True
    assert st["wans"]["wlan2"]["active"] is False     # right gateway, other interface
    assert st["route"]["nexthops"][0]["gateway"] == "192.0.2.99"


def test_a_wan_without_its_interface() -> None:
    links = {k: v for k, v in LINKS.items() if k != "eth2"}
    w2 = render(snap(state(links=links)))["wans"]["wlan2"]
    assert w2["active"] is False and w2["carrier"] is False and w2["address"] is None
    assert w2["interface"] == "eth2" and w2["link"] == "missing"
    assert render(snap(state()))["wans"]["wlan2"]["link"] == "up"


def test_each_lan_interface_as_the_kernel_has_it_and_a_warning_for_a_problem() -> None:
    assert render(snap())["lan"] == [{"interface": "lan0", "present": True, "up": True,
                                      "carrier": True, "problem": None}]
    gone = {k: v for k, v in LINKS.items() if k != "lan0"}
    st = render(snap(state(links=gone)))
    assert st["lan"] == [{"interface": "lan0", "present": False, "up": False,
                          "carrier": False, "problem": "does not exist"}]
    assert st["warnings"] == ["LAN interface lan0 (lan.interfaces[0]) does not exist: "
                              "nothing from it is forwarded"]
    assert "LAN interface lan0 (lan.interfaces[0]) does not exist" in \
        render_status(st, time.time())
    down = {**LINKS, "lan0": Link(3, False, False)}
    st = render(snap(state(links=down)))
    assert st["lan"][0]["problem"] == "is down" and st["lan"][0]["present"]
    assert st["warnings"] == ["LAN interface lan0 (lan.interfaces[0]) is down: nothing "
                              "from it is forwarded"]
    # the WANs are judged as before: a LAN problem does not touch them
    assert all(w["state"] == "up" for w in st["wans"].values())


def test_multipath_nexthops_carry_the_kernel_weights_and_interface_names() -> None:
    st = render(snap(main=route(hop("192.0.2.1", 11, 1), hop("198.51.100.1", 12, 3),
                                hop("203.0.113.1", 77, 2))))
    assert st["route"] == {"present": True, "kept_last": False, "nexthops": [
        {"gateway": "192.0.2.1", "interface": "eth1", "onlink": False, "weight": 1},
        {"gateway": "198.51.100.1", "interface": "eth2", "onlink": False,
         "weight": 3},                                                    # not config's 2
        {"gateway": "203.0.113.1", "interface": "77", "onlink": False,
         "weight": 2},                                                    # unknown index
    ]}
    assert st["wans"]["wlan2"]["weight"] == 2                            # config's


def test_a_single_nexthop_route_shows_its_wans_weight() -> None:
    # the kernel keeps no weight on a one-nexthop route: the WAN's, which it carries as
    # soon as another nexthop joins
    st = render(snap(main=route(hop("198.51.100.1", 12, 1))))
    assert st["route"]["nexthops"] == [
        {"gateway": "198.51.100.1", "interface": "eth2", "onlink": False, "weight": 2}]
    assert "dev eth2 weight 2" in render_status(st, time.time()).split("route:")[1]


def test_no_route_in_the_kernel_is_a_warning() -> None:
    st = render(snap(main=None))
    assert st["route"] == {"present": False, "kept_last": False, "nexthops": []}
    assert st["warnings"] == ["no ecmpd route in the kernel"]
    assert not any(w["active"] for w in st["wans"].values())
    assert "route: none" in render_status(st, time.time())


def test_kept_last_is_derived_from_the_snapshot_and_the_kernel_route() -> None:
    down = Health(H.DOWN, 0, "after 3 failed rounds")
    st = render(snap(state(down)))
    assert st["route"]["kept_last"] is True and st["route"]["present"] is True
    assert st["warnings"] == ["all WANs are down: keeping the last route"]
    # the kept route still holds both nexthops: status says so
    assert all(w["active"] for w in st["wans"].values())
    # no route to keep
    assert render(snap(state(down), None))["route"]["kept_last"] is False


@pytest.mark.parametrize("health, disabled", [
    (UP, False), (Health(H.FALLING, 1, ""), False), (Health(H.DOWN, 0, ""), True)])
def test_kept_last_never_shows_next_to_a_usable_wan(health, disabled) -> None:
    """The flaky status: every WAN UP while `kept_last` was still true.  Derived from one
    snapshot, a usable WAN rules it out, whatever the kernel's route is right now."""
    st = state(Health(H.DOWN, 0, "x"), wlan2=WanState(health, 5.0, disabled=disabled))
    payload = render(snap(st))
    assert payload["route"]["kept_last"] is disabled
    assert ("all WANs are down: keeping the last route" in payload["warnings"]) is disabled


def test_a_wan_not_yet_judged_is_not_usable_and_the_route_is_kept() -> None:
    st = render(snap(state(Health())))                  # INIT, not adopted
    assert {w["state"] for w in st["wans"].values()} == {"init"}
    assert st["route"]["kept_last"] is True
    adopted = state(Health(), wlan1=WanState(Health(), 5.0, adopted=True))
    assert render(snap(adopted))["route"]["kept_last"] is False


def test_a_foreign_route_in_ecmpd_place_is_a_warning() -> None:
    foreign = "default via 192.0.2.254 proto 4 metric 0"
    st = render(snap(main=None, foreign_main=foreign))
    assert len(st["warnings"]) == 2
    assert st["warnings"][0].endswith(foreign) and "metric 0" in st["warnings"][0]
    assert "not ecmpd's" in st["warnings"][0]
    assert st["warnings"][1] == "no ecmpd route in the kernel"
    assert "holds table 1000 metric 0" in st["warnings"][0]


def test_stray_own_proto_routes_are_warnings() -> None:
    stray = ("a default route with ecmpd's proto 236 at metric 77 (via 192.0.2.1) sits below",)
    assert render(snap(stray=stray))["warnings"] == list(stray)


def test_connections_come_from_the_counts() -> None:
    wans = render(snap(connections={"wlan1": 7, "wlan2": 3000}))["wans"]
    assert (wans["wlan1"]["connections"], wans["wlan2"]["connections"]) == (7, 3000)
    assert render(snap(connections={"wlan1": 7}))["wans"]["wlan2"]["connections"] == 0


class FakeProber:
    def __init__(self, window: Window, last: RoundResult | None,
                 rtts: dict[str, tuple[float, float]] | None = None,
                 timeout: float = 0.25, rested: int = 0) -> None:
        self._window, self._last, self._rtts, self._timeout = window, last, rtts or {}, timeout
        self.rested_total = rested

    def rtt(self, address: str) -> tuple[float | None, float | None]:
        return self._rtts.get(address, (None, None))

    def timeout(self) -> float:
        return self._timeout

    def window(self) -> Window:
        return self._window

    def last(self) -> RoundResult | None:
        return self._last


TARGETS = ("192.0.2.1", "203.0.113.7", "203.0.113.8")


def test_targets_loss_and_rtt_come_from_the_probe_window() -> None:
    window = Window(10)
    window.add([TargetSample("192.0.2.1", 2, 2, 0.0123456),
                TargetSample("203.0.113.7", 2, 1, 0.050)])
    window.add([TargetSample("192.0.2.1", 2, 2, 0.0123456),
                TargetSample("203.0.113.7", 1, 0, None)])
    last = RoundResult(Verdict.GOOD, (), "2/3 targets answered", 5.0)
    prober = FakeProber(window, last, {"192.0.2.1": (0.012, 0.003)}, 0.3, rested=17)
    probe = reading(prober, TARGETS)
    assert probe.targets["203.0.113.8"] == TargetReading()
    w1, w2 = render(snap(probes={"wlan1": probe}))["wans"].values()
    none = {"srtt_ms": None, "rttvar_ms": None, "reason": None}
    assert w1["targets"] == {
        "192.0.2.1": {"loss_pct": 0.0, "rtt_ms": 12.346, "srtt_ms": 12.0, "rttvar_ms": 3.0,
                      "reason": None},
        "203.0.113.7": {"loss_pct": 66.7, "rtt_ms": 50.0, **none},      # 2 of 3 lost
        "203.0.113.8": {"loss_pct": None, "rtt_ms": None, **none},      # no sample yet
    }
    assert list(w1["targets"]) == list(TARGETS)
    # probes are keyed (WAN, IP version); a plain name is the IPv4 prober
    keyed = render(snap(probes={("wlan1", 4): probe}))["wans"]["wlan1"]
    assert keyed["targets"] == w1["targets"] and keyed["ipv4"]["targets"] == w1["targets"]
    assert render(snap(probes={("wlan1", 6): probe}))["wans"]["wlan1"]["targets"] == {}
    assert w1["last_round"] == "2/3 targets answered"
    assert (w1["verdict"], w1["note"], w1["timeout_ms"]) == ("good", None, 300.0)
    assert (w1["rested_rounds"], w2["rested_rounds"]) == (17, 0)
    # no prober (not started): no targets, no last round
    assert (w2["targets"], w2["last_round"], w2["timeout_ms"]) == ({}, None, None)
    text = render_status(render(snap(probes={"wlan1": probe})), time.time())
    assert "203.0.113.7  rtt 50.00ms  srtt -  loss 66.7%" in text
    assert "last round (good): 2/3 targets answered" in text
    # probes late but traffic flowing: said in the JSON and the text
    slow = reading(FakeProber(window, RoundResult(Verdict.SLOW, (), "probes late, traffic "
                                                  "flowing", 6.0, traffic=True), timeout=1.9),
                   TARGETS)
    payload = render(snap(probes={"wlan1": slow}))
    w1 = payload["wans"]["wlan1"]
    assert (w1["verdict"], w1["note"], w1["timeout_ms"]) == (
        "slow", "probes late, traffic flowing", 1900.0)
    assert "last round (slow): probes late, traffic flowing" in render_status(payload, 0.0)


def test_a_prober_without_any_round_yet() -> None:
    probe = reading(FakeProber(Window(10), None), ("198.51.100.1",))
    assert probe == ProbeReading({"198.51.100.1": TargetReading()}, 0.25, None)
    w2 = render(snap(probes={"wlan2": probe}))["wans"]["wlan2"]
    assert w2["targets"] == {"198.51.100.1": {"loss_pct": None, "rtt_ms": None,
                                              "srtt_ms": None, "rttvar_ms": None,
                                              "reason": None}}
    assert w2["last_round"] is None


def test_stats() -> None:
    assert render(snap())["stats"] == {"reconciles": 12, "changes": 4, "nft_writes": 2,
                                       "events": 37, "reaction_ms": [4.123, 12.6],
                                       "flushes": 1, "resyncs": 0, "monitors": 0}


# ---- Daemon.snapshot: one moment --------------------------------------------------------

@pytest.fixture
def kernel(monkeypatch):
    """The kernel as the daemon reads it: set `.actual` and `.counts`; records calls."""
    k = types.SimpleNamespace(actual=Actual(routes={(MAIN_TABLE, 0): route(hop("192.0.2.1",
                                                                               11))}),
                              actual6=Actual(family=6),
                              counts={"wlan1": 7}, reads=[], count_calls=[], during=None)

    async def read_actual(ipr: Any, cfg: Config, tables: Any = (), family: int = 4) -> Actual:
        k.reads.append((ipr, cfg, k.daemon.kernel.lock.locked(), family))
        if k.during is not None:
            k.during()                  # the state changes while the kernel is read
        return k.actual if family == 4 else k.actual6

    async def count_marks(marks: dict[str, int], mask: int) -> dict[str, int]:
        k.count_calls.append((dict(marks), mask))
        return dict(k.counts)

    monkeypatch.setattr(routing, "read_actual", read_actual)
    monkeypatch.setattr(conntrack, "count_marks", count_marks)
    return k


def test_the_daemon_takes_the_snapshot_with_its_kernel_read(kernel) -> None:
    from ecmpd.daemon import Daemon
    from ecmpd.events import ProbeRound, SetDisabled
    from ecmpd.sdnotify import Notifier

    async def body() -> tuple[Snapshot, State]:
        d = Daemon(CFG, "/tmp/ecmpd-test.yaml", Notifier(environ={}))
        kernel.daemon = d
        d.kernel.ipr = object()  # type: ignore[assignment]
        d.reconciler.closed = True      # no reconcile pass: nothing may touch this host
        d.state = initial(CFG, LINKS, ADDRS, (), time.time())
        d.submit(SetDisabled("wlan2", True))
        # a verdict arriving during the kernel read is in the snapshot (taken after it)
        kernel.during = lambda: d.submit(ProbeRound("wlan1", Verdict.GOOD, "ok"))
        return await d.snapshot(), d.state

    s, now = asyncio.run(body())
    assert s.state is now
    # both IP versions read, under the netlink lock
    assert [r[1:] for r in kernel.reads] == [(CFG, True, 4), (CFG, True, 6)]
    assert s.main == route(hop("192.0.2.1", 11)) and s.main6 is None
    assert kernel.count_calls == [(MARKS, 0x00FF0000)]
    payload = render(s)
    assert set(payload) == TOP_KEYS and payload["pid"] == os.getpid()
    w1, w2 = payload["wans"].values()
    assert (w1["active"], w1["address"], w1["carrier"], w1["state"]) == \
        (True, "192.0.2.10", True, "up")
    assert (w2["active"], w2["state"], w2["health"]) == (False, "disabled", "init")
    assert payload["route"]["kept_last"] is False
    assert payload["route6"]["present"] is False
    assert payload["stats"]["events"] == 0 and payload["stats"]["nft_writes"] == 0


def test_the_snapshot_takes_the_ipv6_route_from_the_ipv6_read(kernel) -> None:
    from ecmpd.daemon import Daemon
    from ecmpd.desired import balance_table, metric_of
    from ecmpd.sdnotify import Notifier

    six = RouteSpec(balance_table(CFG), (Nexthop("fe80::1", 11, 1),), metric_of(0, 6))
    kernel.actual6 = Actual(routes={(six.table, six.metric): six}, family=6,
                            foreign_main="default via fe80::99 dev eth2 proto ra")

    async def body() -> Snapshot:
        d = Daemon(CFG, "/tmp/ecmpd-test.yaml", Notifier(environ={}))
        kernel.daemon = d
        d.kernel.ipr = object()  # type: ignore[assignment]
        d.reconciler.closed = True
        d.state = initial(CFG, LINKS, ADDRS, (), time.time())
        return await d.snapshot()

    s = asyncio.run(body())
    assert (s.main, s.main6) == (route(hop("192.0.2.1", 11)), six)
    assert (s.foreign_main, s.foreign_main6) == (None, "default via fe80::99 dev eth2 proto ra")
    assert render(s)["route6"]["nexthops"] == [
        {"gateway": "fe80::1", "interface": "eth1", "onlink": False, "weight": 1}]


def test_a_target_that_is_the_routers_own_address_says_so_per_target() -> None:
    st = dataclasses.replace(state(), local=frozenset({"203.0.113.8", "2001:db8::1"}))
    window = Window(10)
    probe = reading(FakeProber(window, None, {}, 0.25), TARGETS)
    payload = render(snap(st, probes={"wlan1": probe}))
    targets = payload["wans"]["wlan1"]["targets"]
    assert targets["203.0.113.8"]["reason"] == "target 203.0.113.8 is this router's own address"
    assert targets["203.0.113.7"]["reason"] is None
    text = render_status(payload, time.time())
    assert "(target 203.0.113.8 is this router's own address: counts as failed)" in text


def test_tiers_show_which_tier_takes_new_flows_and_who_stands_by() -> None:
    cfg = dataclasses.replace(CFG, wans=(CFG.wans[0], dataclasses.replace(
        CFG.wans[1], tier=2, failback="flush")))
    st = dataclasses.replace(state(), cfg=cfg)
    payload = render(snap(st, main=route(hop("192.0.2.1", 11))))
    assert payload["new_flows_tier"] == {"ipv4": 1}
    w1, w2 = payload["wans"].values()
    assert (w1["tier"], w1["standby"], w1["active"]) == (1, False, True)
    assert (w2["tier"], w2["failback"], w2["standby"], w2["active"]) == (2, "flush", True, False)
    text = render_status(payload, time.time())
    assert "new flows: tier 1\n" in text
    assert "weight: 2, tier 2 (failback: flush), active: no (standby)" in text
    # tier 1 gone: the backup takes new flows, and stands by no more
    down = dataclasses.replace(st, wans={**st.wans, "wlan1": WanState(Health(H.DOWN, 0, "x"), 1.0)})
    payload = render(snap(down, main=route(hop("198.51.100.1", 12))))
    assert payload["new_flows_tier"] == {"ipv4": 2}
    assert payload["wans"]["wlan2"]["standby"] is False and payload["wans"]["wlan2"]["active"]
    # one tier only: the text says nothing of tiers
    assert "tier" not in render_status(render(snap()), time.time())


def test_policies_show_their_match_wans_in_use_and_counters() -> None:
    from ecmpd.configmodel import Policy
    pols = (Policy(1, ("wlan2",), 255, "voip", "balance", (), ("198.18.0.0/15",), (17,), (),
                   ((5060, 5060), (10000, 20000))),
            Policy(2, ("wlan1",), 254, "", "drop", ("192.168.0.50/32",)))
    st = dataclasses.replace(state(), cfg=dataclasses.replace(CFG, policies=pols))
    st = dataclasses.replace(st, wans={**st.wans, "wlan2": WanState(Health(H.DOWN, 0, "x"), 1.0)})
    payload = render(snap(st, policy_packets={1: 12}))
    assert payload["policies"] == [
        {"position": 1, "name": "voip", "match": "dst 198.18.0.0/15 proto udp dport "
         "5060,10000-20000", "use": ["wlan2"], "fallback": "balance", "via": {"ipv4": []},
         "packets": 12},
        {"position": 2, "name": "policy 2", "match": "src 192.168.0.50/32", "use": ["wlan1"],
         "fallback": "drop", "via": {"ipv4": ["wlan1"]}, "packets": 0}]
    text = render_status(payload, time.time())
    assert ("  1. voip: dst 198.18.0.0/15 proto udp dport 5060,10000-20000 -> use wlan2 "
            "(fallback balance), 12 packets\n     now: IPv4 via none usable") in text
    assert render(snap())["policies"] == []


def test_each_wan_shows_its_downs_in_the_last_day_its_last_down_and_iso_times() -> None:
    from ecmpd.history import Summary
    downs = {("wlan2", 4): Summary(2, 1_700_000_100.5, "0/2 targets answered")}
    st = render(snap(history=downs))
    w1, w2 = st["wans"]["wlan1"], st["wans"]["wlan2"]
    assert (w1["downs_24h"], w1["last_down"]) == (0, None)
    assert w2["downs_24h"] == 2 == w2["ipv4"]["downs_24h"]
    assert w2["last_down"] == {"at": 1_700_000_100.5, "at_iso": "2023-11-14T22:15:00.500+00:00",
                               "reason": "0/2 targets answered"}
    # ISO 8601 beside the epoch float, the same instant
    assert w1["since"] == 1_700_000_001.0 and w1["since_iso"] == "2023-11-14T22:13:21.000+00:00"
    json.dumps(st)
