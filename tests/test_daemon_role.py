"""`ecmpctl role` as the daemon answers it (`Daemon.handle`, no kernel, no root): refused
without `ha:`, a bad role refused, the change recorded in history and kept in the role
file, and a restarted daemon starting in the role kept."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from ecmpd.configmodel import Ha
from ecmpd.daemon import Daemon

from tests.test_state import CFG


def daemon(tmp_path: Path, ha: bool = True) -> Daemon:
    cfg = dataclasses.replace(CFG, control_socket=str(tmp_path / "ecmpd.sock"),
                              ha=Ha(vips=("192.168.88.1",)) if ha else None)
    return Daemon(cfg, str(tmp_path / "ecmpd.yaml"))


def test_role_needs_an_ha_section(tmp_path: Path) -> None:
    d = daemon(tmp_path, ha=False)
    got = asyncio.run(d.handle({"cmd": "role", "role": "master"}))
    assert got == {"ok": False, "error": "no ha: section in the config (this router is "
                                         "standalone)"}
    assert d.state.ha.role == "standalone" and not (tmp_path / "ecmpd.sock.role.json").exists()


def test_role_sets_records_and_keeps_the_role(tmp_path: Path) -> None:
    d = daemon(tmp_path)
    assert d.state.ha.role == "backup"
    got = asyncio.run(d.handle({"cmd": "role", "role": "master"}))
    assert got == {"ok": True, "role": "master", "previous": "backup",
                   "message": "role backup -> master"}
    assert d.state.ha.role == "master"
    assert [(t.name, t.previous, t.state) for t in d.history.entries()] == [
        ("ha", "backup", "master")]
    assert asyncio.run(d.handle({"cmd": "role", "role": "master"}))["message"] == \
        "role master (unchanged)"
    assert asyncio.run(d.handle({"cmd": "role", "role": "king"}))["ok"] is False
    assert (tmp_path / "ecmpd.sock.role.json").exists()
    again = daemon(tmp_path)
    again.state = again.ha.restored(again.state)
    assert (again.state.ha.role, again.state.ha.since) == ("master",
                                                          round(d.state.ha.since, 3))
