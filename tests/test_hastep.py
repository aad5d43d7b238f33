"""The HA role in the state (ecmpd.hastep, ecmpd.role): what a role change does, what a
backup leaves to the master, the split-brain conflicts' onset and end, the numbers both
routers must share, the role kept across a restart (no root)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from ecmpd import events as ev, hastep, role
from ecmpd.configmodel import Ha, Policy
from ecmpd.health import Verdict
from ecmpd.logsetup import NOTICE
from ecmpd.role import Sighting
from ecmpd.state import initial

from tests.test_state import ADDRS, CFG, LINKS, T0, up

HA_CFG = dataclasses.replace(CFG, ha=Ha(vips=("192.168.88.1", "fd00:88::1")))
S1 = Sighting("lan0", "192.168.88.1", "52:54:00:00:00:02")
S2 = Sighting("eth1", "fd00:88::1", "52:54:00:00:00:02")


def pair(role_: str = "backup"):
    st = up(initial(HA_CFG, LINKS, ADDRS, (), T0))
    if role_ != "backup":
        st, _ = ev.step(st, hastep.SetRole(role_), T0 + 1)
    return st


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def down_wlan2(st, now=T0 + 20):
    effects = ()
    for i in range(3):
        st, effects = ev.step(st, ev.ProbeRound("wlan2", Verdict.FAILED, "lost"), now + i)
    return st, effects


def test_a_pair_starts_as_backup_and_a_router_without_ha_is_standalone() -> None:
    assert initial(HA_CFG, LINKS, ADDRS, (), T0).ha == role.HaState("backup", T0)
    assert initial(CFG, LINKS, ADDRS, (), T0).ha.role == "standalone"


def test_a_role_change_is_logged_and_a_transition_of_the_ha_subject() -> None:
    st = pair()
    st, effects = ev.step(st, hastep.SetRole("master"), T0 + 30)
    assert st.ha.role == "master" and st.ha.since == T0 + 30
    (t,) = of(effects, ev.Transition)
    assert (t.name, t.family, t.previous, t.state, t.lasted, t.active) == (
        "ha", 0, "backup", "master", 30.0, False)
    assert [(e.level, e.message) for e in of(effects, ev.Log)] == [
        (NOTICE, "HA role: backup -> master (ecmpctl role)")]
    assert ev.step(st, hastep.SetRole("master"), T0 + 31) == (st, ())    # no change
    _, effects = ev.step(st, hastep.SetRole("fault"), T0 + 32)
    assert of(effects, ev.Log)[0].level == logging.WARNING


def test_a_backup_deletes_no_connections_the_master_does() -> None:
    """conntrackd syncs the master's deletions: a backup that deleted entries too would
    fight it.  Both still reconcile (the same kernel state on both)."""
    st, effects = down_wlan2(pair("backup"))
    assert of(effects, ev.Flush) == [] and of(effects, ev.Reconcile)
    assert any("HA backup: not deleting wlan2's connections" in e.message
               for e in of(effects, ev.Log))
    _, effects = down_wlan2(pair("master"))
    assert of(effects, ev.Flush) == [ev.Flush(0x20000, 0xFF0000, "wlan2")]
    _, effects = down_wlan2(up(initial(CFG, LINKS, ADDRS, (), T0)))
    assert of(effects, ev.Flush) == [ev.Flush(0x20000, 0xFF0000, "wlan2")]   # standalone


def test_a_backup_forgets_no_address_either() -> None:
    st = pair("fault")
    _, effects = ev.step(st, ev.AddressesChanged(11, True, {12: ADDRS[12]}), T0 + 5)
    assert of(effects, ev.ForgetAddress) == []
    _, effects = ev.step(pair("master"), ev.AddressesChanged(11, True, {12: ADDRS[12]}),
                         T0 + 5)
    assert of(effects, ev.ForgetAddress) == [ev.ForgetAddress("wlan1", "192.0.2.10")]


def test_the_new_master_flushes_the_wans_down_here() -> None:
    st, _ = down_wlan2(pair("backup"))
    st, effects = ev.step(st, hastep.SetRole("master"), T0 + 40)
    assert of(effects, ev.Flush) == [ev.Flush(0x20000, 0xFF0000, "wlan2", None)]
    # master -> backup -> master again: the same
    st, effects = ev.step(st, hastep.SetRole("backup"), T0 + 41)
    assert of(effects, ev.Flush) == []
    _, effects = ev.step(pair("backup"), hastep.SetRole("master"), T0 + 40)
    assert of(effects, ev.Flush) == []              # nothing down: nothing to flush


def test_a_split_brain_starts_at_the_first_sighting_and_ends_after_quiet_checks() -> None:
    st = pair("master")
    st, effects = ev.step(st, hastep.SplitBrainChecked((S1,)), T0 + 50)
    assert st.ha.shown == "split-brain" and st.ha.conflicts == (role.Conflict(S1, T0 + 50),)
    errors = [e.message for e in of(effects, ev.Log) if e.level == logging.ERROR]
    assert errors == ["split brain: 192.168.88.1 on lan0 is held by another host "
                      "(52:54:00:00:00:02) while this router is master: both forward for it"]
    (t,) = of(effects, ev.Transition)
    assert (t.name, t.previous, t.state) == ("ha", "master", "split-brain")
    # the same sighting again: nothing new; a second address: its own ERROR, no transition
    st2, effects = ev.step(st, hastep.SplitBrainChecked((S1,)), T0 + 51)
    assert effects == () and st2.ha == st.ha
    st, effects = ev.step(st, hastep.SplitBrainChecked((S1, S2)), T0 + 52)
    assert [e.level for e in of(effects, ev.Log)] == [logging.ERROR]
    assert of(effects, ev.Transition) == []
    # one lost answer does not end it; CLEAR_AFTER quiet checks in a row do
    for i in range(role.CLEAR_AFTER - 1):
        st, effects = ev.step(st, hastep.SplitBrainChecked(()), T0 + 53 + i)
        assert st.ha.split_brain and of(effects, ev.Transition) == []
    st, effects = ev.step(st, hastep.SplitBrainChecked(()), T0 + 60)
    assert not st.ha.split_brain and st.ha.role == "master"
    (t,) = of(effects, ev.Transition)
    assert (t.previous, t.state) == ("split-brain", "master")
    assert [e.level for e in of(effects, ev.Log)] == [NOTICE]


def test_a_sighting_answered_again_starts_counting_afresh() -> None:
    st = pair("master")
    st, _ = ev.step(st, hastep.SplitBrainChecked((S1,)), T0 + 1)
    for i in range(10):                  # lost, answered, lost, ...: never over
        st, _ = ev.step(st, hastep.SplitBrainChecked(() if i % 2 else (S1,)), T0 + 2 + i)
        assert st.ha.split_brain


def test_only_a_master_keeps_conflicts() -> None:
    st = pair("backup")
    assert ev.step(st, hastep.SplitBrainChecked((S1,)), T0 + 1) == (st, ())
    st, _ = ev.step(pair("master"), hastep.SplitBrainChecked((S1,)), T0 + 1)
    st, effects = ev.step(st, hastep.SetRole("backup"), T0 + 2)
    assert st.ha.conflicts == () and "split brain over" in of(effects, ev.Log)[0].message
    assert [(t.previous, t.state) for t in of(effects, ev.Transition)] == [
        ("split-brain", "backup")]


def test_a_reload_adding_or_removing_ha_sets_the_role() -> None:
    from ecmpd.reloadplan import plan_reload
    st = up(initial(CFG, LINKS, ADDRS, (), T0))
    st, effects = ev.step(st, ev.Reloaded(HA_CFG, plan_reload(CFG, HA_CFG)), T0 + 5)
    assert st.ha.role == "backup" and [(t.previous, t.state) for t in
                                       of(effects, ev.Transition)] == [("standalone", "backup")]
    st, _ = ev.step(st, hastep.SetRole("master"), T0 + 6)
    same = dataclasses.replace(HA_CFG, hooks=())
    st2, _ = ev.step(st, ev.Reloaded(same, plan_reload(HA_CFG, same)), T0 + 7)
    assert st2.ha.role == "master"
    st3, _ = ev.step(st, ev.Reloaded(CFG, plan_reload(HA_CFG, CFG)), T0 + 8)
    assert st3.ha.role == "standalone"


def test_the_marks_digest_follows_the_numbers_and_nothing_else() -> None:
    d = role.marks_digest(HA_CFG)
    assert d == role.marks_digest(dataclasses.replace(HA_CFG, hooks=("/bin/true",)))
    assert d == role.marks_digest(dataclasses.replace(HA_CFG, ha=None))
    swapped = dataclasses.replace(CFG, wans=(dataclasses.replace(CFG.wans[0], id=2),
                                             dataclasses.replace(CFG.wans[1], id=1)))
    assert role.marks_digest(swapped) != d
    assert role.marks_digest(dataclasses.replace(CFG, mark_mask=0xFF00)) != d
    assert role.marks_digest(dataclasses.replace(CFG, table_base=2000)) != d
    assert role.marks(CFG) == [
        {"wan": "wlan1", "id": 1, "mark": "0x00010000", "table": 1001, "families": ["ipv4"]},
        {"wan": "wlan2", "id": 2, "mark": "0x00020000", "table": 1002, "families": ["ipv4"]}]
    pol = dataclasses.replace(CFG, policies=(Policy(position=0, use=("wlan2",), route=255),))
    assert role.marks(pol)[-1] == {"set": "wlan2", "route": 255, "mark": "0x00ff0000",
                                   "table": 1255}


def test_the_role_is_kept_in_a_state_file(tmp_path: Path) -> None:
    store = role.RoleStore(str(tmp_path / "ecmpd.sock.role.json"))
    assert store.load() is None
    assert store.save("master", T0 + 1.23456)
    assert store.load() == ("master", T0 + 1.235)
    st = hastep.restored(pair(), *store.load())
    assert (st.ha.role, st.ha.since, st.ha.reason) == ("master", T0 + 1.235,
                                                       "kept from before the restart")


@pytest.mark.parametrize("text", ['{"role": "king", "since": 1}', '{"role": "master"}',
                                  '["master"]', 'not json', '{"role": "master", "since": true}'])
def test_a_bad_role_file_counts_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    os.chmod(path, 0o644)
    assert role.RoleStore(str(path)).load() is None


def test_hooks_are_told_the_role_and_an_ha_change_names_no_wan() -> None:
    from ecmpd.hooks import environment
    st, effects = ev.step(pair(), hastep.SetRole("master"), T0 + 30)
    (t,) = of(effects, ev.Transition)
    env = environment(t, st, {})
    assert {k: env[k] for k in ("ECMPD_WAN", "ECMPD_STATE", "ECMPD_PREVIOUS", "ECMPD_FAMILY",
                                "ECMPD_INTERFACE", "ECMPD_GATEWAY", "ECMPD_ROLE",
                                "ECMPD_ACTIVE")} == {
        "ECMPD_WAN": "ha", "ECMPD_STATE": "master", "ECMPD_PREVIOUS": "backup",
        "ECMPD_FAMILY": "", "ECMPD_INTERFACE": "", "ECMPD_GATEWAY": "", "ECMPD_ROLE": "master",
        "ECMPD_ACTIVE": "0"}
    st, effects = down_wlan2(st)
    (t,) = [e for e in of(effects, ev.Transition) if e.state == "down"]
    assert environment(t, st, {})["ECMPD_ROLE"] == "master"
