"""ledger: the record of ecmpd's ownership numbers (file, planning, nft removal; no root).

The kernel side (handing routes and rules over, removing the old nft table in a real
namespace) is exercised by tests/reliability/test_orphans_kill9.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from ipaddress import IPv4Address
from typing import Any

import pytest

from ecmpd import ledger, routing
from ecmpd.desired import Owned
from ecmpd.ledger import Ledger, merge, plan, plan_switch
from ecmpd.configmodel import Config, Wan

WANS = (Wan("a", "ethA", IPv4Address("10.1.0.1"), 1, 1),
        Wan("b", "ethB", IPv4Address("10.2.0.1"), 1, 2))
A = Owned(236, 0, 1000, 1000, "ecmpd", 0xFF0000, (1, 2))
B = Owned(236, 10, 2000, 3000, "ecmpd2", 0xFF0000, (1, 2))
C = Owned(200, 0, 1000, 1000, "ecmpd", 0xFF0000, (1,))


def cfg(sock: str, **kw: Any) -> Config:
    return Config(lan_interfaces=("lan0",), wans=WANS, control_socket=sock, **kw)


def test_the_file_sits_next_to_the_control_socket() -> None:
    assert ledger.path_for("/run/ecmpd/ecmpd.sock") == "/run/ecmpd/ecmpd.sock.owned.json"


def test_save_and_load_round_trip_atomically(tmp_path) -> None:
    path = str(tmp_path / "x.sock.owned.json")
    assert ledger.load(path) == ()
    assert ledger.save(path, (A, B))
    assert ledger.load(path) == (A, B)
    assert os.listdir(tmp_path) == ["x.sock.owned.json"]       # no temporary file left
    doc = json.loads(open(path).read())
    assert doc["version"] == 1 and doc["owned"][1]["table_base"] == 2000


@pytest.mark.parametrize("text", ["", "nope", "[]", '{"version": 2, "owned": []}',
                                  '{"version": 1, "owned": [1]}',
                                  '{"version": 1, "owned": [{"route_proto": 236}]}'])
def test_a_bad_file_is_ignored_with_a_warning(tmp_path, caplog, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert ledger.load(str(path)) == ()
    assert "ignoring" in caplog.text


def test_save_failure_is_logged_not_raised(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert not ledger.save(str(tmp_path / "no" / "such" / "dir.json"), (A,))
    assert "cannot record" in caplog.text


def test_merge_keeps_one_entry_per_numbering_the_latest_ids_last() -> None:
    a3 = Owned(236, 0, 1000, 1000, "ecmpd", 0xFF0000, (1, 2, 3))
    assert merge([A, B], [a3]) == (B, a3)
    assert merge([A], [A]) == (A,)


def test_plan_at_start() -> None:
    # nothing recorded: record the current numbers, retire nothing
    p = plan((), A)
    assert (p.retire, p.before, p.after) == ((), (A,), (A,))
    # the same numbers (other ids): nothing to retire, the ids are updated
    p = plan((Owned(236, 0, 1000, 1000, "ecmpd", 0xFF0000, (1,)),), A)
    assert (p.retire, p.before) == ((), (A,))
    # other numbers: both recorded before anything is touched, the old retired
    p = plan((A,), B)
    assert (p.retire, p.before, p.after) == ((A,), (A, B), (B,))
    # a crash in an earlier transition left several: all but the current retire, in order
    p = plan((A, C, B), B)
    assert (p.retire, p.before) == ((A, C), (A, C, B))
    assert "tables 1000+id" in p.describe()[0]


def test_plan_on_reload() -> None:
    p = plan_switch((), A, B)
    assert (p.retire, p.before, p.after) == ((A,), (A, B), (B,))
    p = plan_switch((C,), A, B)             # C not yet settled from the previous reload
    assert (p.retire, p.before) == ((C, A), (C, A, B))
    p = plan_switch((), A, A)
    assert (p.retire, p.before) == ((), (A,))


class FakeNft:
    """libnftables' json_cmd over a dict of tables ((family, name) -> listing); a command
    document is one transaction: it fails whole (nothing changed) when one of its
    commands does, as nft's does."""

    def __init__(self, tables: dict[tuple[str, str], dict]) -> None:
        self.tables = tables
        self.calls: list[str] = []

    def json_cmd(self, doc: dict) -> tuple[int, Any, str]:
        cmds = doc["nftables"]
        if "list" in cmds[0]:
            (cmd,) = cmds
            t = cmd["list"]["table"]
            self.calls.append(f"list {t['family']} {t['name']}")
            if (t["family"], t["name"]) not in self.tables:
                return 1, "", "No such file or directory"
            return 0, self.tables[(t["family"], t["name"])], ""
        tables = dict(self.tables)
        done = []
        for cmd in cmds:
            (verb, obj), = cmd.items()
            key = (obj["table"]["family"], obj["table"]["name"])
            if verb == "add":
                tables.setdefault(key, {"nftables": []})
            elif verb == "delete":
                if key not in tables:
                    return 1, "", "No such file or directory"      # all of it undone
                del tables[key]
                done.append(" ".join(key))
            else:
                raise AssertionError(f"unexpected nft command {cmd}")
        self.calls.append("delete " + ", ".join(done))
        self.tables = tables
        return 0, "", ""


def listing(comment: str | None, family: str = "inet") -> dict:
    rule = {"family": family, "table": "t", "chain": "prerouting", "expr": []}
    if comment:
        rule["comment"] = comment
    return {"nftables": [{"table": {"family": family, "name": "t"}}, {"rule": rule}]}


def test_only_an_nft_table_with_ecmpds_digest_is_removed(caplog) -> None:
    nft = FakeNft({("inet", "old"): listing("ecmpd:0123456789abcdef"),
                   ("ip", "older"): listing("ecmpd:0123456789abcdef", "ip"),   # an older ecmpd's
                   ("inet", "theirs"): listing("mine"), ("inet", "bare"): listing(None),
                   ("ip", "iptheirs"): listing("mine", "ip"),
                   ("inet", "both"): listing("ecmpd:00"), ("ip", "both"): listing("ecmpd:11", "ip"),
                   ("inet", "mixed"): listing("ecmpd:00"), ("ip", "mixed"): listing(None, "ip")})
    assert ledger.remove_nft_table("old", nft)
    assert nft.calls == ["list inet old", "list ip old", "delete inet old, ip old"]
    assert ledger.remove_nft_table("older", nft)
    assert ledger.remove_nft_table("both", nft)
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert not ledger.remove_nft_table("theirs", nft)
        assert not ledger.remove_nft_table("bare", nft)
        assert not ledger.remove_nft_table("iptheirs", nft)
        assert not ledger.remove_nft_table("mixed", nft)       # its table ip is not ecmpd's
    assert not ledger.remove_nft_table("absent", nft)
    assert set(nft.tables) == {("inet", "theirs"), ("inet", "bare"), ("ip", "iptheirs"),
                               ("inet", "mixed"), ("ip", "mixed")}
    assert "carries no ecmpd digest" in caplog.text


def test_the_ledger_flow_at_start_and_on_reload(tmp_path, monkeypatch) -> None:
    """take_over / switch / settle write the record before handing over, and only the
    handed-over numberings' nft tables go (the kernel calls are recorded, not made)."""
    sock = str(tmp_path / "e.sock")
    calls: list[tuple[Owned, Owned]] = []

    async def handover(ipr: Any, old: Any, new: Any, desired: Any = None) -> int:
        o, n = Owned.of(old), Owned.of(new)
        # the record already names both when the kernel is touched
        recorded = ledger.load(ledger.path_for(sock))
        assert o.numbers() in {r.numbers() for r in recorded}
        assert n.numbers() in {r.numbers() for r in recorded}
        calls.append((o, n))
        return 3

    monkeypatch.setattr(routing, "handover", handover)
    old_cfg = cfg(sock)
    new_cfg = cfg(sock, table_base=2000, rule_priority=3000, route_metric=10, nft_table="e2")
    nft = FakeNft({("inet", "ecmpd"): listing("ecmpd:00"), ("inet", "e2"): listing("ecmpd:11")})

    async def body() -> None:
        first = Ledger(sock)
        assert await first.take_over(object(), old_cfg) == 0     # nothing recorded yet
        assert calls == [] and ledger.load(first.path) == (Owned.of(old_cfg),)
        first.settle(old_cfg, nft)
        assert nft.calls == []
        # kill -9; a restart with other numbers hands the old objects over
        second = Ledger(sock)
        assert await second.take_over(object(), new_cfg) == 3
        assert calls == [(Owned.of(old_cfg), Owned.of(new_cfg))]
        assert ledger.load(second.path) == (Owned.of(old_cfg), Owned.of(new_cfg))
        second.settle(new_cfg, nft)
        assert nft.calls == ["list inet ecmpd", "list ip ecmpd", "delete inet ecmpd, ip ecmpd"]
        assert set(nft.tables) == {("inet", "e2")}
        assert ledger.load(second.path) == (Owned.of(new_cfg),)
        # a reload back: recorded, handed over, settled
        calls.clear()
        assert await second.switch(object(), new_cfg, old_cfg) == 3
        assert calls == [(Owned.of(new_cfg), Owned.of(old_cfg))]
        assert ledger.load(second.path) == (Owned.of(new_cfg), Owned.of(old_cfg))
        nft.tables[("inet", "ecmpd")] = listing("ecmpd:22")
        second.settle(old_cfg, nft)
        assert set(nft.tables) == {("inet", "ecmpd")}
        # a reload that changes only WANs or the nft table name hands no route over
        calls.clear()
        assert await second.switch(object(), old_cfg, cfg(sock, nft_table="e3")) == 0
        assert calls == []
        assert [o.nft_table for o in second.pending] == ["ecmpd"]

    asyncio.run(body())


def test_entries_no_config_could_hold_are_left_out_with_one_warning(tmp_path, caplog) -> None:
    path = tmp_path / "x.sock.owned.json"
    host = [{**A.to_json(), "rule_priority": 0},          # lookup local's priority
            {**A.to_json(), "rule_priority": 32766},      # lookup main's
            {**A.to_json(), "table_base": 254},           # table main
            {**A.to_json(), "route_proto": 3},            # boot
            {**A.to_json(), "route_proto": 2, "table_base": 250, "ids": [4, 5]},
            {**A.to_json(), "mark_mask": "everything"},
            "not an object", {"route_proto": 236}]
    path.write_text(json.dumps({"version": 1, "owned": [*host, B.to_json()]}))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert ledger.load(str(path)) == (B,)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "ignoring 8 entries" in caplog.text and "no ecmpd config could hold" in caplog.text
    assert ledger.entries(json.loads(path.read_text()))[0] == (B,)
    with pytest.raises(ValueError):
        ledger.entries({"version": 2, "owned": []})


def test_a_hostile_ledger_file_counts_as_none(tmp_path) -> None:
    fifo = tmp_path / "fifo.owned.json"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", tmp_path / "zero.owned.json")
    big = tmp_path / "big.owned.json"
    big.write_text(json.dumps({"version": 1, "owned": [A.to_json()] * 2000}))
    for p in (fifo, tmp_path / "zero.owned.json", big):
        assert ledger.load(str(p)) == ()
