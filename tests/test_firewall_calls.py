"""Firewall's libnftables traffic, with a fake libnftables (no root): what a reload
that changes the table costs (no listing of the old one), and that ensuring the same
table again asks nothing but the ruleset's generation."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from ecmpd import firewall, nftrules
from ecmpd.configmodel import Config, Wan

CFG = Config(lan_interfaces=("lan0",),
             wans=(Wan("wlan1", "eth1", IPv4Address("10.111.0.1"), 1, 1),))


class FakeNft:
    """Answers every command; `calls` names them: tables, list, replace."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_json_output(self, _: bool) -> None: ...

    def set_handle_output(self, _: bool) -> None: ...

    def json_cmd(self, doc: dict[str, Any]) -> tuple[int, Any, str]:
        (cmd,) = doc["nftables"][:1]
        verb, what = next(iter(cmd.items()))
        kind = "replace" if verb != "list" else "tables" if "tables" in what else "list"
        self.calls.append(kind)
        return 0, {"nftables": [{"table": {"family": "inet", "name": CFG.nft_table}}]}, ""


@pytest.fixture
def fw(monkeypatch) -> tuple[firewall.Firewall, FakeNft, list[int]]:
    fake, generation = FakeNft(), [1]
    monkeypatch.setattr(firewall.nftables, "Nftables", lambda: fake)
    monkeypatch.setattr(firewall.Firewall, "_generation", lambda self: generation[0])
    return firewall.Firewall(CFG), fake, generation


def test_a_changed_table_is_written_without_listing_the_old_one(fw) -> None:
    f, nft, generation = fw
    assert f.ensure() is True
    assert nft.calls == ["tables", "list", "replace", "list"]   # start: adopt or write
    nft.calls.clear()
    f.reconfigure(replace(CFG, mark_mask=0xFF00))
    assert f.ensure() is True and nft.calls == ["replace", "list"]
    # the same config again (a reload of the same file), the generation as it was:
    # nothing asked, nothing written
    nft.calls.clear()
    generation[0] = 1
    f.ensure()                            # the listing after the write matched it
    nft.calls.clear()
    for _ in range(3):
        f.reconfigure(replace(CFG, mark_mask=0xFF00))
        assert f.ensure() is False
    assert nft.calls == [] and f.applies == 2
    assert nftrules.digest(f.cfg) == nftrules.digest(replace(CFG, mark_mask=0xFF00))


def test_a_rewrite_apart_falls_back_to_this_process_when_the_child_cannot_run(
        fw, monkeypatch, caplog) -> None:
    import asyncio
    import sys

    from ecmpd.reconciler import _stepped
    f, nft, _ = fw
    f.ensure()
    nft.calls.clear()
    monkeypatch.setattr(firewall, "APART_POLICIES", 0)    # CFG has no policies
    monkeypatch.setattr(sys, "executable", "/bin/false")
    f.reconfigure(replace(CFG, mark_mask=0xFF00))
    assert asyncio.run(_stepped(f.steps(apart=True))) is True
    assert nft.calls == ["replace", "list"] and f.applies == 2
    assert "writing the nft table in a child failed (exit 1)" in caplog.text
    # a child that answered: what it listed is the baseline, nothing asked here
    nft.calls.clear()

    async def listed(doc, table):
        return [{"table": {"family": "inet", "name": table}}]
    monkeypatch.setattr(firewall.nftapart, "write_apart", listed)
    f.reconfigure(CFG)
    assert asyncio.run(_stepped(f.steps(apart=True))) is True
    assert nft.calls == [] and f.applies == 3


def test_a_small_table_is_rewritten_here_not_in_a_child(fw, monkeypatch) -> None:
    import asyncio

    from ecmpd.reconciler import _stepped
    f, nft, _ = fw
    f.ensure()
    nft.calls.clear()

    async def child(doc, table):
        raise AssertionError("a child for a table of no policies")
    monkeypatch.setattr(firewall.nftapart, "write_apart", child)
    assert len(CFG.policies) < firewall.APART_POLICIES
    f.reconfigure(replace(CFG, mark_mask=0xFF00))
    assert asyncio.run(_stepped(f.steps(apart=True))) is True
    assert nft.calls == ["replace", "list"]
