"""Unit tests of ecmpd.status.build: the `ecmpctl status` payload from a fake daemon, with
the kernel's routes (`routing.read_actual`) and conntrack (`conntrack.count_marks`)
monkeypatched (no root, no namespaces)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import types
from collections import deque
from ipaddress import IPv4Address
from typing import Any

import pytest

from ecmpd import conntrack, routing, status
from ecmpd.ctl import render_status
from ecmpd.desired import MAIN_TABLE, Nexthop, RouteSpec
from ecmpd.health import Health, State, Verdict
from ecmpd.model import Config, ProbeSettings, Wan
from ecmpd.judge import RoundResult, TargetSample, Window
from ecmpd.routing import Actual

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), weight=1, id=1,
              probe=ProbeSettings(targets=("gateway", "203.0.113.7", "203.0.113.8"))),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2)),
    hash="l4",
)
MARKS = {"wlan1": 0x10000, "wlan2": 0x20000}

WAN_KEYS = {"state", "health", "since", "reason", "last_round", "interface", "gateway",
            "address", "weight", "active", "disabled", "carrier", "mark", "table",
            "connections", "targets", "verdict", "note", "timeout_ms"}
TOP_KEYS = {"pid", "config", "uptime", "hash", "wans", "route", "warnings", "stats"}


def hop(gw: str, oif: int, weight: int = 1) -> Nexthop:
    return Nexthop(gw, oif, weight)


def main_route(*hops: Nexthop, metric: int = 0) -> dict:
    return {(MAIN_TABLE, metric): RouteSpec(MAIN_TABLE, tuple(hops), metric)}


BOTH = main_route(hop("192.0.2.1", 11, 1), hop("198.51.100.1", 12, 2))


class FakeProber:
    def __init__(self, window: Window, last: RoundResult | None,
                 rtts: dict[str, tuple[float, float]] | None = None,
                 timeout: float = 0.25) -> None:
        self._window, self._last, self._rtts, self._timeout = window, last, rtts or {}, timeout

    def rtt(self, address: str) -> tuple[float | None, float | None]:
        return self._rtts.get(address, (None, None))

    def timeout(self) -> float:
        return self._timeout

    def window(self) -> Window:
        return self._window

    def last(self) -> RoundResult | None:
        return self._last


class FakeDaemon:
    """What status.build uses of ecmpd.daemon.Daemon."""

    def __init__(self, cfg: Config = CFG) -> None:
        self.cfg = cfg
        self.config_path = "/etc/ecmpd/ecmpd.yaml"
        self.started = time.time() - 100
        self.wans = {w.name: types.SimpleNamespace(
            wan=w, health=Health(State.UP, 0, "after 5 good rounds"),
            since=1_700_000_000.0 + w.id, prober=None, link_ok=True) for w in cfg.wans}
        self.disabled: set[str] = set()
        self.links: dict[str, dict] = {
            "lan0": {"index": 3, "up": True, "carrier": True},
            "eth1": {"index": 11, "up": True, "carrier": True},
            "eth2": {"index": 12, "up": True, "carrier": True},
        }
        self.addresses: dict[int, list[tuple[str, int]]] = {
            11: [("192.0.2.10", 24), ("192.0.2.11", 24)], 12: [("198.51.100.10", 24)]}
        self.ipr = object()
        self.netlink_lock = asyncio.Lock()
        self.kept_last = False
        self.reconciles, self.changes = 12, 4
        self.firewall = types.SimpleNamespace(applies=2)
        self.watcher = types.SimpleNamespace(events=37)
        self.reactions: deque[float] = deque([0.0041234, 0.0126])

    def wan_address(self, wan: Wan) -> str | None:
        link = self.links.get(wan.interface)
        addrs = self.addresses.get(link["index"], []) if link else []
        return addrs[0][0] if addrs else None

    def carrier(self, wan: Wan) -> bool:
        link = self.links.get(wan.interface)
        return bool(link and link["carrier"])


@pytest.fixture
def kernel(monkeypatch):
    """The kernel as status sees it: set `.actual` and `.counts`; records the calls."""
    k = types.SimpleNamespace(actual=Actual(routes=dict(BOTH)), counts={"wlan1": 7},
                              reads=[], count_calls=[])

    async def read_actual(ipr: Any, cfg: Config) -> Actual:
        k.reads.append((ipr, cfg, k.daemon.netlink_lock.locked()))
        return k.actual

    async def count_marks(marks: dict[str, int], mask: int) -> dict[str, int]:
        k.count_calls.append((dict(marks), mask))
        return dict(k.counts)

    monkeypatch.setattr(routing, "read_actual", read_actual)
    monkeypatch.setattr(conntrack, "count_marks", count_marks)
    k.daemon = FakeDaemon()
    return k


def build(d: Any) -> dict:
    return asyncio.run(status.build(d))


def test_the_payload_has_the_documented_keys_and_is_json(kernel) -> None:
    d = kernel.daemon
    st = build(d)
    assert set(st) == TOP_KEYS
    assert st["pid"] == os.getpid()
    assert st["config"] == "/etc/ecmpd/ecmpd.yaml"
    assert st["uptime"] >= 100
    assert st["hash"] == "l4"
    assert list(st["wans"]) == ["wlan1", "wlan2"]
    for w in st["wans"].values():
        assert set(w) == WAN_KEYS
    assert set(st["route"]) == {"present", "kept_last", "nexthops"}
    assert set(st["stats"]) == {"reconciles", "changes", "nft_writes", "events",
                                "reaction_ms"}
    assert st["warnings"] == []
    assert json.loads(json.dumps(st)) == st
    text = render_status(st, time.time())
    assert "wan: wlan1" in text and "wan: wlan2" in text
    assert "via 198.51.100.1 dev eth2 weight 2" in text
    assert "warning" not in text


def test_the_kernel_is_read_under_the_netlink_lock(kernel) -> None:
    d = kernel.daemon
    build(d)
    assert kernel.reads == [(d.ipr, CFG, True)]
    assert not d.netlink_lock.locked()


def test_per_wan_fields_come_from_config_links_and_health(kernel) -> None:
    d = kernel.daemon
    d.wans["wlan2"].health = Health(State.FALLING, 1, "after 1 failed round: silent")
    w1, w2 = build(d)["wans"].values()
    assert w1["state"] == w1["health"] == "up"
    assert w1["reason"] == "after 5 good rounds"
    assert w1["since"] == 1_700_000_001.0
    assert (w1["interface"], w1["gateway"], w1["weight"]) == ("eth1", "192.0.2.1", 1)
    assert w1["address"] == "192.0.2.10"          # the primary one
    assert w1["carrier"] is True and w1["disabled"] is False
    assert (w1["mark"], w1["table"]) == ("0x10000", 1001)
    assert (w2["mark"], w2["table"], w2["weight"]) == ("0x20000", 1002, 2)
    assert w2["state"] == w2["health"] == "falling"
    assert w2["reason"] == "after 1 failed round: silent"


def test_a_disabled_wan_shows_disabled_while_health_keeps_the_probe_state(kernel) -> None:
    d = kernel.daemon
    d.disabled = {"wlan2"}
    d.wans["wlan2"].health = Health(State.DOWN, 0, "after 3 failed rounds")
    kernel.actual = Actual(routes=main_route(hop("192.0.2.1", 11)))
    w1, w2 = build(d)["wans"].values()
    assert (w2["state"], w2["health"], w2["disabled"]) == ("disabled", "down", True)
    assert w2["active"] is False
    assert (w1["state"], w1["disabled"]) == ("up", False)


def test_active_is_what_the_kernel_route_holds_not_what_the_daemon_believes(kernel) -> None:
    d = kernel.daemon
    # both UP in the daemon's eyes, but the kernel's route has only wlan2
    kernel.actual = Actual(routes=main_route(hop("198.51.100.1", 12)))
    st = build(d)
    assert st["wans"]["wlan1"]["health"] == "up"
    assert st["wans"]["wlan1"]["active"] is False
    assert st["wans"]["wlan2"]["active"] is True
    # and the other way round: a DOWN WAN still in the kernel's route is active
    d.wans["wlan1"].health = Health(State.DOWN, 0, "carrier lost")
    kernel.actual = Actual(routes=dict(BOTH))
    assert build(d)["wans"]["wlan1"]["active"] is True


def test_active_needs_the_same_gateway_and_interface(kernel) -> None:
    d = kernel.daemon
    kernel.actual = Actual(routes=main_route(hop("192.0.2.99", 11), hop("198.51.100.1", 13)))
    wans = build(d)["wans"]
    assert wans["wlan1"]["active"] is False     # right interface, other gateway
    assert wans["wlan2"]["active"] is False     # right gateway, other interface


def test_only_the_route_at_ecmpd_metric_in_main_counts(kernel) -> None:
    d = kernel.daemon
    kernel.actual = Actual(routes={
        **main_route(hop("192.0.2.1", 11), metric=5),
        (1001, 0): RouteSpec(1001, (hop("192.0.2.1", 11),), 0),
    })
    st = build(d)
    assert not st["wans"]["wlan1"]["active"]
    assert st["route"]["present"] is False


def test_a_wan_without_its_interface(kernel) -> None:
    d = kernel.daemon
    del d.links["eth2"]
    w2 = build(d)["wans"]["wlan2"]
    assert w2["active"] is False and w2["carrier"] is False and w2["address"] is None
    assert w2["interface"] == "eth2"


def test_multipath_nexthops_carry_the_kernel_weights_and_interface_names(kernel) -> None:
    d = kernel.daemon
    kernel.actual = Actual(routes=main_route(hop("192.0.2.1", 11, 1),
                                             hop("198.51.100.1", 12, 3),
                                             hop("203.0.113.1", 77, 2)))
    st = build(d)
    assert st["route"] == {"present": True, "kept_last": False, "nexthops": [
        {"gateway": "192.0.2.1", "interface": "eth1", "weight": 1},
        {"gateway": "198.51.100.1", "interface": "eth2", "weight": 3},   # not config's 2
        {"gateway": "203.0.113.1", "interface": "77", "weight": 2},      # unknown index
    ]}
    assert st["wans"]["wlan2"]["weight"] == 2                            # config's


def test_a_single_nexthop_route_shows_no_weight(kernel) -> None:
    d = kernel.daemon
    kernel.actual = Actual(routes=main_route(hop("198.51.100.1", 12, 1)))
    st = build(d)
    assert st["route"]["nexthops"] == [
        {"gateway": "198.51.100.1", "interface": "eth2", "weight": None}]
    assert "weight" not in render_status(st, time.time()).split("route:")[1]


def test_no_route_in_the_kernel_is_a_warning(kernel) -> None:
    d = kernel.daemon
    kernel.actual = Actual()
    st = build(d)
    assert st["route"] == {"present": False, "kept_last": False, "nexthops": []}
    assert st["warnings"] == ["no ecmpd route in the kernel"]
    assert not any(w["active"] for w in st["wans"].values())
    assert "route: none" in render_status(st, time.time())


def test_kept_last_route_is_a_warning(kernel) -> None:
    d = kernel.daemon
    d.kept_last = True
    for rt in d.wans.values():
        rt.health = Health(State.DOWN, 0, "after 3 failed rounds")
    st = build(d)
    assert st["route"]["kept_last"] is True and st["route"]["present"] is True
    assert st["warnings"] == ["all WANs are down: keeping the last route"]
    # the kept route still holds both nexthops: status says so
    assert all(w["active"] for w in st["wans"].values())


def test_a_foreign_route_in_ecmpd_place_is_a_warning(kernel) -> None:
    d = kernel.daemon
    foreign = "default via 192.0.2.254 proto 4 metric 0"
    kernel.actual = Actual(foreign_main=foreign)
    st = build(d)
    assert len(st["warnings"]) == 2
    assert st["warnings"][0].endswith(foreign) and "metric 0" in st["warnings"][0]
    assert "not ecmpd's" in st["warnings"][0]
    assert st["warnings"][1] == "no ecmpd route in the kernel"


def test_connections_come_from_conntrack_by_mark(kernel) -> None:
    d = kernel.daemon
    kernel.counts = {"wlan1": 7, "wlan2": 3000}
    wans = build(d)["wans"]
    assert kernel.count_calls == [(MARKS, 0x00FF0000)]
    assert (wans["wlan1"]["connections"], wans["wlan2"]["connections"]) == (7, 3000)
    kernel.counts = {"wlan1": 7}        # a name missing from the count: 0
    assert build(d)["wans"]["wlan2"]["connections"] == 0


def test_targets_loss_and_rtt_come_from_the_probe_window(kernel) -> None:
    d = kernel.daemon
    window = Window(10)
    window.add([TargetSample("192.0.2.1", 2, 2, 0.0123456),
                TargetSample("203.0.113.7", 2, 1, 0.050)])
    window.add([TargetSample("192.0.2.1", 2, 2, 0.0123456),
                TargetSample("203.0.113.7", 1, 0, None)])
    last = RoundResult(Verdict.GOOD, (), "2/3 targets answered", 5.0)
    d.wans["wlan1"].prober = FakeProber(window, last, {"192.0.2.1": (0.012, 0.003)}, 0.3)
    w1, w2 = build(d)["wans"].values()
    none = {"srtt_ms": None, "rttvar_ms": None}
    assert w1["targets"] == {
        "192.0.2.1": {"loss_pct": 0.0, "rtt_ms": 12.346, "srtt_ms": 12.0, "rttvar_ms": 3.0},
        "203.0.113.7": {"loss_pct": 66.7, "rtt_ms": 50.0, **none},      # 2 of 3 lost
        "203.0.113.8": {"loss_pct": None, "rtt_ms": None, **none},      # no sample yet
    }
    assert list(w1["targets"]) == ["192.0.2.1", "203.0.113.7", "203.0.113.8"]
    assert w1["last_round"] == "2/3 targets answered"
    assert (w1["verdict"], w1["note"], w1["timeout_ms"]) == ("good", None, 300.0)
    # no prober (not started): no targets, no last round
    assert w2["targets"] == {} and w2["last_round"] is None
    text = render_status(build(d), time.time())
    assert "203.0.113.7  rtt 50.00ms  srtt -  loss 66.7%" in text
    assert "last round (good): 2/3 targets answered" in text
    # probes late but traffic flowing: said in the JSON and the text
    d.wans["wlan1"].prober = FakeProber(window, RoundResult(
        Verdict.SLOW, (), "probes late, traffic flowing", 6.0, traffic=True), timeout=1.9)
    w1 = build(d)["wans"]["wlan1"]
    assert (w1["verdict"], w1["note"], w1["timeout_ms"]) == (
        "slow", "probes late, traffic flowing", 1900.0)
    assert "last round (slow): probes late, traffic flowing" in render_status(build(d), time.time())


def test_a_prober_without_any_round_yet(kernel) -> None:
    d = kernel.daemon
    d.wans["wlan2"].prober = FakeProber(Window(10), None)
    w2 = build(d)["wans"]["wlan2"]
    assert w2["targets"] == {"198.51.100.1": {"loss_pct": None, "rtt_ms": None,
                                              "srtt_ms": None, "rttvar_ms": None}}
    assert w2["last_round"] is None


def test_stats(kernel) -> None:
    d = kernel.daemon
    assert build(d)["stats"] == {"reconciles": 12, "changes": 4, "nft_writes": 2,
                                 "events": 37, "reaction_ms": [4.123, 12.6]}


def test_build_runs_on_a_real_daemon(kernel) -> None:
    """The fake's attribute names are the real Daemon's (constructed, never run)."""
    from ecmpd.daemon import Daemon
    from ecmpd.sdnotify import Notifier

    async def body() -> dict:
        d = Daemon(CFG, "/tmp/ecmpd-test.yaml", Notifier(environ={}))
        kernel.daemon = d
        d.ipr = object()  # type: ignore[assignment]
        d.links = dict(FakeDaemon().links)
        d.addresses = dict(FakeDaemon().addresses)
        d.disabled.add("wlan2")
        return await status.build(d)

    kernel.actual = Actual(routes=main_route(hop("192.0.2.1", 11)))
    st = asyncio.run(body())
    assert set(st) == TOP_KEYS
    w1, w2 = st["wans"].values()
    assert (w1["active"], w1["address"], w1["carrier"], w1["state"]) == \
        (True, "192.0.2.10", True, "init")
    assert (w2["active"], w2["state"], w2["health"]) == (False, "disabled", "init")
    assert st["stats"]["events"] == 0 and st["stats"]["nft_writes"] == 0
    assert kernel.reads and kernel.reads[0][2] is True
