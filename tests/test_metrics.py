"""Unit tests of ecmpd.metrics: the exposition rendered from a snapshot built here and
parsed back with prometheus_client's own text parser (the same numbers status shows); the
`metrics.listen` key; the endpoint following its address, one render for a burst of
scrapes; the daemon's hooks (state changes, reloads).  The HTTP side:
tests/test_metrics_server.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ecmpd import metrics as metrics_mod
from ecmpd.console import version
from ecmpd.config import ConfigError, parse_config
from ecmpd.configmodel import Config, ProbeSettings, Wan
from ecmpd.desired import MAIN_TABLE, Nexthop, RouteSpec
from ecmpd.events import Transition
from ecmpd.health import Health, Phase
from ecmpd.metrics import REACTION_BUCKETS, Counters, Metrics, exposition
from ecmpd.state import Link, WanState, initial
from ecmpd.status import ProbeReading, Snapshot, TargetReading, render
from tests.test_metrics_server import fetch

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), id=1,
              probe=ProbeSettings(targets=("gateway", "203.0.113.7")),
              gateway6=IPv6Address("fe80::1"), families=(4, 6)),
          Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2)),
)
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True), "eth2": Link(12, True, True)}
UP, DOWN = Health(Phase.UP, 0, "after 5 good rounds"), Health(Phase.DOWN, 3, "no reply")


def snapshot() -> Snapshot:
    """wlan1 dual-stack: IPv4 up and in the route, IPv6 down; wlan2 up but disabled (out
    of the route)."""
    st = initial(CFG, LINKS, {11: (("192.0.2.10", 24),), 12: (("198.51.100.10", 24),)},
                 (), 0.0)
    st = dataclasses.replace(st, wans={"wlan1": WanState(UP, 1.0),
                                       "wlan2": WanState(UP, 2.0, disabled=True)},
                             wans6={"wlan1": WanState(DOWN, 3.0)})
    probes = {
        ("wlan1", 4): ProbeReading({"192.0.2.1": TargetReading(0.0, 0.0042),
                                    "203.0.113.7": TargetReading(12.5, 0.0311)}),
        ("wlan1", 6): ProbeReading({"fe80::1": TargetReading(100.0, None)}),
        ("wlan2", 4): ProbeReading({"198.51.100.1": TargetReading(None, None)}),
    }
    main = RouteSpec(MAIN_TABLE, (Nexthop("192.0.2.1", 11, 1),), 0)
    return Snapshot(st, main, connections={"wlan1": 7, "wlan2": 0}, probes=probes)


def parsed(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, via prometheus_client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def transition(name: str, state: str, family: int = 4) -> Transition:
    return Transition(name, state, "up", "test", 0.0, None, False, family)


def test_the_exposition_parses_back_with_the_snapshots_numbers() -> None:
    c = Counters()
    for t in (transition("wlan1", "falling", 6), transition("wlan1", "down", 6),
              transition("wlan2", "disabled")):
        c.transition(t)
    for s in (0.004, 0.012, 0.2, 7.0):
        c.reaction(s)
    c.reloaded(True)
    c.reloaded(False)
    c.reloaded(True)
    got = parsed(exposition(snapshot(), c))
    w1, w1v6, w2 = ({"wan": "wlan1", "family": "ipv4"}, {"wan": "wlan1", "family": "ipv6"},
                    {"wan": "wlan2", "family": "ipv4"})
    assert [value(got, "ecmpd_wan_up", **w) for w in (w1, w1v6, w2)] == [1, 0, 1]
    assert [value(got, "ecmpd_wan_active", **w) for w in (w1, w1v6, w2)] == [1, 0, 0]
    assert [value(got, "ecmpd_wan_disabled", **w) for w in (w1, w1v6, w2)] == [0, 0, 1]
    assert [value(got, "ecmpd_wan_state_changes_total", **w) for w in (w1, w1v6, w2)] == [0, 2, 1]
    assert value(got, "ecmpd_wan_rtt_seconds", **w1, target="203.0.113.7") == 0.0311
    assert value(got, "ecmpd_wan_loss_ratio", **w1, target="203.0.113.7") == 0.125
    assert value(got, "ecmpd_wan_loss_ratio", **w1v6, target="fe80::1") == 1.0
    # no sample yet, or no reply: no series (a gauge has no "unknown")
    assert ("ecmpd_wan_rtt_seconds", tuple(sorted({**w1v6, "target": "fe80::1"}.items()))) \
        not in got
    assert not any(k[0].startswith("ecmpd_wan_") and ("wan", "wlan2") in k[1] and
                   dict(k[1]).get("target") for k in got)
    assert value(got, "ecmpd_wan_connections", wan="wlan1") == 7
    assert value(got, "ecmpd_wan_connections", wan="wlan2") == 0
    assert value(got, "ecmpd_reaction_seconds_count") == 4
    assert value(got, "ecmpd_reaction_seconds_sum") == pytest.approx(7.216)
    assert value(got, "ecmpd_reaction_seconds_bucket", le="0.005") == 1
    assert value(got, "ecmpd_reaction_seconds_bucket", le="0.025") == 2
    assert value(got, "ecmpd_reaction_seconds_bucket", le="2.5") == 3
    assert value(got, "ecmpd_reaction_seconds_bucket", le="+Inf") == 4
    assert len([k for k in got if k[0] == "ecmpd_reaction_seconds_bucket"]) == \
        len(REACTION_BUCKETS) + 1
    assert value(got, "ecmpd_reloads_total", result="ok") == 2
    assert value(got, "ecmpd_reloads_total", result="failed") == 1
    assert value(got, "ecmpd_info", version=version()) == 1


def test_the_numbers_are_the_ones_status_shows() -> None:
    snap = snapshot()
    got, st = parsed(exposition(snap, Counters())), render(snap)
    for name, wan in st["wans"].items():
        assert value(got, "ecmpd_wan_connections", wan=name) == wan["connections"]
        for fam in wan["families"]:
            per = wan[fam]
            labels = {"wan": name, "family": fam}
            assert value(got, "ecmpd_wan_up", **labels) == (per["health"] == "up")
            assert value(got, "ecmpd_wan_active", **labels) == per["active"]
            for target, t in per["targets"].items():
                key = ("ecmpd_wan_rtt_seconds", tuple(sorted({**labels, "target": target}.items())))
                assert got.get(key) == (None if t["rtt_ms"] is None else
                                        pytest.approx(t["rtt_ms"] / 1000, abs=1e-6))
                key = ("ecmpd_wan_loss_ratio", key[1])
                assert got.get(key) == (None if t["loss_pct"] is None else
                                        pytest.approx(t["loss_pct"] / 100, abs=1e-3))


# ---- config -----------------------------------------------------------------------------

BASE = "lan:\n  interfaces: [lan0]\nwans:\n  a:\n    interface: eth1\n    gateway: 192.0.2.1\n"
"""Six lines: a key appended starts at line 7."""


@pytest.mark.parametrize("listen, expected", [
    ("127.0.0.1:9474", ("127.0.0.1", 9474)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("'[::1]:9474'", ("::1", 9474)),
    ("'[::]:65535'", ("::", 65535)),
    ("null", None),
])
def test_metrics_listen_takes_an_address_and_a_port(listen: str, expected: Any) -> None:
    assert parse_config(BASE + f"metrics:\n  listen: {listen}\n", "e.yaml").metrics_listen \
        == expected
    assert parse_config(BASE, "e.yaml").metrics_listen is None       # off by default
    assert parse_config(BASE + "metrics:\n", "e.yaml").metrics_listen is None


@pytest.mark.parametrize("listen", ["localhost:9474", "127.0.0.1", "::1:9474", "'[::1]'",
                                    "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http",
                                    "'[127.0.0.1]:80'", "9474", "[a]"])
def test_a_wrong_listen_names_file_line_and_key(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + f"metrics:\n  listen: {listen}\n", "e.yaml")
    [problem] = info.value.problems
    assert problem.startswith("e.yaml:8: metrics.listen: must be an address and port like "
                              "127.0.0.1:9474 or [::1]:9474, got "), problem


def test_an_unknown_metrics_key_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "metrics:\n  listne: 127.0.0.1:9474\n", "e.yaml")
    assert info.value.problems == ["e.yaml:8: metrics.listne: unknown key (did you mean "
                                   "'listen'?)"]


# ---- Metrics: listening, snapshots, the daemon's hooks ----------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listen_follows_the_address_and_a_busy_port_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    taken: list[float] = []

    async def snap() -> Snapshot:
        taken.append(time.monotonic())
        return snapshot()

    async def main() -> list[Any]:
        m = Metrics(snap)
        out = []
        port, other = free_port(), free_port()
        await m.listen(("127.0.0.1", port))
        first = m.server
        await m.listen(("127.0.0.1", port))           # unchanged: the same listener
        out.append(m.server is first)
        out.append((await fetch(port)).startswith(b"HTTP/1.1 200 OK"))
        await m.listen(("127.0.0.1", other))          # moved
        out.append(m.server is not first and m.address == ("127.0.0.1", other))
        with pytest.raises(OSError):
            await fetch(port)
        out.append((await fetch(other)).startswith(b"HTTP/1.1 200 OK"))
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            await m.listen(busy.getsockname())     # logged, no exception
            out.append((m.server, m.address))
        await m.listen(None)
        out.append((m.server, m.address))
        await m.close()
        return out
    with caplog.at_level(logging.INFO, "ecmpd"):
        same, served, moved, moved_served, busy, off = asyncio.run(main())
    assert same and served and moved and moved_served
    assert busy == (None, None) and off == (None, None)
    assert any("metrics: cannot listen on 127.0.0.1:" in r.message for r in caplog.records)


def test_scrapes_in_a_burst_share_one_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_mod, "FRESH", 0.2)
    taken: list[int] = []

    async def snap() -> Snapshot:
        taken.append(1)
        await asyncio.sleep(0.05)
        return snapshot()

    async def main() -> list[bytes]:
        m = Metrics(snap)
        burst = await asyncio.gather(*(m.render() for _ in range(10)))
        again = await m.render()                   # fresh still
        await asyncio.sleep(0.25)
        later = await m.render()
        return [*burst, again, later]
    out = asyncio.run(main())
    assert len(taken) == 2
    assert all(b"ecmpd_wan_up" in o for o in out)


def test_the_daemon_counts_state_changes_and_reloads(tmp_path: Path) -> None:
    from ecmpd import daemon
    from ecmpd.sdnotify import Notifier

    path = tmp_path / "ecmpd.yaml"
    path.write_text(BASE + "hash: l5\n")                 # a reload refuses it
    d = daemon.Daemon(parse_config(BASE, str(path)), str(path), Notifier({}))
    assert asyncio.run(d.reload())[0] is False
    for listener in d.listeners:
        listener(transition("a", "down"))
    assert d.metrics.counters.reloads == {"ok": 0, "failed": 1}
    assert d.metrics.counters.changes == {("a", 4): 1}
    assert d.reconciler.on_reaction == d.metrics.reaction
