"""ecmpd.history (the last transitions in memory), ecmpd.journal (each one a structured
journal entry) and their place among the daemon's listeners."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import tempfile

import pytest

from ecmpd import events as ev
from ecmpd.events import Transition
from ecmpd.history import LIMIT, History, as_json, iso
from ecmpd.journal import MESSAGE_ID, Journal, encode, fields, under_systemd

from tests.test_state import CFG, T0, start, step

DAY = 86400.0


def t(name: str, state: str, at: float, previous: str = "up", reason: str = "why",
      family: int = 4, lasted: float | None = 10.0) -> Transition:
    return Transition(name, state, previous, reason, at, lasted, state == "up", family)


def test_the_ring_keeps_the_last_1000_oldest_first() -> None:
    h = History()
    for i in range(LIMIT + 250):
        h.record(t("wlan1" if i % 2 else "wlan2", "down", T0 + i))
    assert len(h) == LIMIT == h.limit
    ats = [x.at for x in h.entries()]
    assert ats == [T0 + i for i in range(250, LIMIT + 250)]


def test_one_wans_entries_downs_in_the_last_day_and_its_last_down() -> None:
    h = History()
    now = T0 + 2 * DAY
    h.record(t("wlan1", "down", now - DAY - 5, reason="too old"))      # over a day ago
    h.record(t("wlan1", "rising", now - DAY, "down"))
    h.record(t("wlan2", "down", now - 3600, reason="carrier lost"))
    h.record(t("wlan1", "down", now - 600, "falling", reason="0/2 targets answered"))
    h.record(t("wlan1", "down", now - 60, reason="v6 silent", family=6))
    h.record(t("wlan1", "up", now - 30, "rising"))
    assert [x.state for x in h.entries("wlan1")] == ["down", "rising", "down", "down", "up"]
    assert [x.name for x in h.entries()] == ["wlan1"] * 2 + ["wlan2"] + ["wlan1"] * 3
    assert h.entries("nope") == []
    assert [x.reason for x in h.downs("wlan1", now)] == ["0/2 targets answered", "v6 silent"]
    assert [x.reason for x in h.downs("wlan1", now, family=4)] == ["0/2 targets answered"]
    assert h.last_down("wlan1").reason == "v6 silent"
    assert h.last_down("wlan1", 4).at == now - 600
    assert h.last_down("wlan3") is None
    s = h.summary(["wlan1", "wlan2", "wlan3"], (4, 6), now)
    assert (s[("wlan1", 4)].downs_24h, s[("wlan1", 6)].downs_24h, s[("wlan2", 4)].downs_24h,
            s[("wlan3", 4)].downs_24h) == (1, 1, 1, 0)
    assert s[("wlan2", 4)].as_json() == {"downs_24h": 1, "last_down": {
        "at": now - 3600, "at_iso": iso(now - 3600), "reason": "carrier lost"}}
    assert s[("wlan3", 6)].as_json() == {"downs_24h": 0, "last_down": None}


def test_a_transition_as_json() -> None:
    assert as_json(t("wlan1", "down", T0 + 0.12345, "falling", "0/2", 6, 2.00049)) == {
        "wan": "wlan1", "family": "ipv6", "state": "down", "previous": "falling",
        "reason": "0/2", "at": T0 + 0.123, "at_iso": "2023-11-14T22:13:20.123+00:00",
        "lasted": 2.0, "active": False}
    assert as_json(t("a", "up", T0, lasted=None))["lasted"] is None


# ---- journal ---------------------------------------------------------------------------

def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol read back: KEY=value lines, or KEY\\n + length + value."""
    out, rest = {}, datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            out[line.decode()] = after[8:8 + size].decode()
            assert after[8 + size:9 + size] == b"\n"
            rest = after[9 + size:]
    return out


@pytest.fixture
def journal_socket():
    d = tempfile.mkdtemp(prefix="ecmpd-journal-", dir="/tmp")
    path = os.path.join(d, "socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield path, s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def test_each_transition_is_a_journal_entry_with_its_fields(journal_socket) -> None:
    path, s = journal_socket
    j = Journal(path, interface=lambda name: {"wlan1": "eth1"}.get(name))
    j.send(t("wlan1", "down", T0, "falling", "0/2 targets answered", lasted=7384.5))
    j.send(t("wlan2", "up", T0, "rising", "after 3 good rounds", family=6, lasted=None))
    first, second = parse(s.recv(65536)), parse(s.recv(65536))
    assert first == {
        "MESSAGE": "wlan1: falling -> down: 0/2 targets answered, falling for 2h03m",
        "MESSAGE_ID": MESSAGE_ID, "PRIORITY": "4", "SYSLOG_IDENTIFIER": "ecmpd",
        "WAN": "wlan1", "STATE": "down", "PREVIOUS": "falling",
        "REASON": "0/2 targets answered", "FAMILY": "ipv4", "ACTIVE": "0",
        "LASTED_SEC": "7384.500", "INTERFACE": "eth1"}
    assert (second["WAN"], second["STATE"], second["FAMILY"], second["PRIORITY"],
            second["ACTIVE"]) == ("wlan2", "up", "ipv6", "5", "1")
    assert "LASTED_SEC" not in second and "INTERFACE" not in second
    assert second["MESSAGE"] == "wlan2 IPv6: rising -> up: after 3 good rounds"
    assert (j.sent, j.dropped) == (2, 0)


def test_a_value_with_a_newline_takes_the_binary_form() -> None:
    data = encode({"WAN": "a", "REASON": "two\nlines"})
    assert data == b"WAN=a\nREASON\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert parse(data) == {"WAN": "a", "REASON": "two\nlines"}


def test_no_journal_drops_and_counts_never_raises(tmp_path) -> None:
    j = Journal(str(tmp_path / "absent"))
    j.send(t("wlan1", "down", T0))
    assert (j.sent, j.dropped) == (0, 1)
    j.close()


def test_a_full_journal_socket_drops_instead_of_blocking(journal_socket) -> None:
    path, s = journal_socket
    j = Journal(path)
    for i in range(5000):           # nobody reads: the receive queue fills up
        j.send(t("wlan1", "down", T0 + i, reason="x" * 200))
    assert j.dropped > 0 and j.sent + j.dropped == 5000
    assert parse(s.recv(65536))["WAN"] == "wlan1"


def test_only_under_systemd_with_the_journal(journal_socket) -> None:
    path, _ = journal_socket
    assert under_systemd({"JOURNAL_STREAM": "8:1234"}, path)
    assert not under_systemd({}, path)                          # run by hand
    assert not under_systemd({"JOURNAL_STREAM": "8:1"}, path + ".absent")


def test_fields_of_a_disable() -> None:
    st, effects = step(start(), ev.SetDisabled("wlan2", True))
    (tr,) = [e for e in effects if isinstance(e, Transition)]
    f = fields(tr)
    assert (f["WAN"], f["STATE"], f["PREVIOUS"], f["PRIORITY"]) == \
        ("wlan2", "disabled", "init", "5")


# ---- in the daemon ---------------------------------------------------------------------

def test_the_daemon_keeps_its_transitions_and_answers_history(journal_socket,
                                                              monkeypatch) -> None:
    from ecmpd.daemon import Daemon
    path, s = journal_socket
    monkeypatch.setenv("JOURNAL_STREAM", "8:1")
    monkeypatch.setattr("ecmpd.journal.SOCKET", path)
    monkeypatch.setattr("ecmpd.daemon.under_systemd", lambda: True)
    d = Daemon(CFG, "/nonexistent.yaml")
    assert d.journal is not None
    d.journal.path = path

    async def body() -> tuple[dict, dict, dict]:
        d._carry_out([t("wlan1", "down", T0), ev.Log(20, "x"), t("wlan2", "up", T0 + 1)])
        return (await d.handle({"cmd": "history"}),
                await d.handle({"cmd": "history", "wan": "wlan2"}),
                await d.handle({"cmd": "history", "wan": "nope"}))
    every, one, none = asyncio.run(body())
    assert [(e["wan"], e["state"]) for e in every["transitions"]] == \
        [("wlan1", "down"), ("wlan2", "up")]
    assert every["limit"] == LIMIT and every["ok"] is True
    assert [e["wan"] for e in one["transitions"]] == ["wlan2"]
    assert none["ok"] is False and "no WAN named 'nope'" in none["error"]
    assert parse(s.recv(65536))["WAN"] == "wlan1"
    assert parse(s.recv(65536))["INTERFACE"] == "eth2"


def test_under_the_journal_a_changes_log_line_is_its_structured_entry(journal_socket,
                                                                      monkeypatch, caplog):
    """Written once: the line events.step logs for a change goes to the journal with the
    change's fields, not to stderr too; other lines go to stderr as ever."""
    from ecmpd.daemon import Daemon
    from ecmpd.health import Verdict
    from tests.test_state import up
    path, s = journal_socket
    monkeypatch.setattr("ecmpd.daemon.under_systemd", lambda: True)
    d = Daemon(CFG, "/nonexistent.yaml")
    d.journal.path = path
    d.state = up(start())
    caplog.set_level(logging.INFO, logger="ecmpd")

    async def body() -> None:
        d.submit(ev.ProbeRound("wlan1", Verdict.FAILED, "0/1 answered"))
        d._carry_out([ev.Log(logging.INFO, "wlan1: something else")])
    asyncio.run(body())
    entry = parse(s.recv(65536))
    assert (entry["WAN"], entry["STATE"], entry["PREVIOUS"]) == ("wlan1", "falling", "up")
    assert entry["MESSAGE"] == "wlan1: UP -> FALLING after 1 failed round: 0/1 answered"
    assert entry["PRIORITY"] == "6"                 # the line's level: INFO
    assert [r.getMessage() for r in caplog.records] == ["wlan1: something else"]


def test_without_the_journal_the_log_line_goes_to_stderr(monkeypatch, caplog):
    from ecmpd.daemon import Daemon
    from ecmpd.health import Verdict
    from tests.test_state import up
    monkeypatch.setattr("ecmpd.daemon.under_systemd", lambda: False)
    d = Daemon(CFG, "/nonexistent.yaml")
    assert d.journal is None
    d.state = up(start())
    caplog.set_level(logging.INFO, logger="ecmpd")

    async def body() -> None:
        d.submit(ev.ProbeRound("wlan1", Verdict.FAILED, "0/1 answered"))
    asyncio.run(body())
    assert any(r.getMessage().startswith("wlan1: UP -> FALLING") for r in caplog.records)
    assert [(x.name, x.state) for x in d.history.entries()] == [("wlan1", "falling")]


def test_each_transition_is_paired_with_its_own_log_line() -> None:
    from ecmpd.journal import lines_of
    labels = {("wlan1", 4): "wlan1 IPv4", ("wlan1", 6): "wlan1 IPv6", ("wlan2", 4): "wlan2"}
    l1, l2, l3 = (ev.Log(20, "wlan1 IPv4: UP -> DOWN"), ev.Log(20, "wlan2: UP -> DOWN"),
                  ev.Log(20, "wlan1 IPv6: UP -> DOWN"))
    t1, t2, t3 = t("wlan1", "down", T0), t("wlan2", "down", T0), t("wlan1", "down", T0, family=6)
    keyed = ev.Log(20, "wlan2: gateway moved", "gateway wlan2")
    tier = ev.Log(30, "tier 2 takes new flows")
    effects = (l1, ev.Reconcile(True), t1, l2, keyed, t2, tier, l3, t3, t("wlan3", "up", T0))
    pairs = lines_of(effects, lambda name, family: labels.get((name, family)))
    assert pairs == {id(t1): l1, id(t2): l2, id(t3): l3}
    # a transition without its line (another WAN's in between does not count)
    assert lines_of((l2, t1), lambda n, f: labels.get((n, f))) == {}
