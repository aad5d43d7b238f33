"""The HA pair in `ecmpctl status`: the JSON `ha` object (absent standalone), the role
in the text header, a split brain loudly, the numbers both routers must share in -v
(no root)."""

from __future__ import annotations

import dataclasses
import json

from ecmpd import events as ev, hastep
from ecmpd.configmodel import Ha
from ecmpd.role import Sighting, marks_digest
from ecmpd.status import render
from ecmpd.statusview import render_status

from tests.test_status import CFG, TOP_KEYS, snap, state

T = 1_700_000_100.0
HA_CFG = dataclasses.replace(CFG, ha=Ha(vips=("192.168.88.1", "fd00:88::1")))


def ha_state(role: str = "master", seen: tuple[Sighting, ...] = ()):
    st = dataclasses.replace(state(), cfg=HA_CFG)
    st, _ = ev.step(st, hastep.SetRole(role), T)
    if seen:
        st, _ = ev.step(st, hastep.SplitBrainChecked(seen), T + 5)
    return st


def test_standalone_has_no_ha_object_and_no_role_in_the_header() -> None:
    payload = render(snap())
    assert set(payload) == TOP_KEYS
    assert render_status(payload, T).splitlines()[0].endswith("up 1m40s")


def test_the_ha_object_and_the_header() -> None:
    payload = render(snap(ha_state()))
    assert set(payload) == TOP_KEYS | {"ha"}
    ha = payload["ha"]
    assert {k: ha[k] for k in ("role", "since", "reason", "split_brain", "vips",
                               "detect_interval")} == {
        "role": "master", "since": T, "reason": "ecmpctl role", "split_brain": None,
        "vips": ["192.168.88.1", "fd00:88::1"], "detect_interval": 1.0}
    assert ha["floating"] == {"lan0": ["192.168.88.1", "fd00:88::1"]}
    assert ha["marks_digest"] == marks_digest(HA_CFG) and len(ha["marks_digest"]) == 16
    assert [m["wan"] for m in ha["marks"]] == ["wlan1", "wlan2"]
    assert json.loads(json.dumps(payload)) == payload
    glance = render_status(payload, T + 60)
    assert glance.splitlines()[0].endswith(", HA master") and "SPLIT" not in glance
    assert "marks digest" not in glance
    verbose = render_status(payload, T + 60, verbose=True)
    assert ", HA master" in verbose.splitlines()[0]
    assert f"  marks digest {marks_digest(HA_CFG)} (the same on both routers)" in verbose
    assert "  wlan2: mark 0x00020000, table 1002" in verbose
    assert "  floating: lan0 192.168.88.1, fd00:88::1" in verbose


def test_a_split_brain_is_shown_loudly_with_address_mac_and_since() -> None:
    s = Sighting("lan0", "192.168.88.1", "52:54:00:00:00:02")
    payload = render(snap(ha_state(seen=(s,))))
    split = payload["ha"]["split_brain"]
    assert split["since"] == T + 5 and split["addresses"] == [
        {"address": "192.168.88.1", "interface": "lan0", "mac": "52:54:00:00:00:02",
         "since": T + 5, "since_iso": split["since_iso"]}]
    assert payload["warnings"][0].startswith("SPLIT BRAIN: another host answers for "
                                             "192.168.88.1 on lan0 (52:54:00:00:00:02)")
    lines = render_status(payload, T + 60).splitlines()
    assert lines[0].endswith(", HA MASTER, SPLIT BRAIN")
    assert lines[1].startswith("SPLIT BRAIN since ") and "another router is master" in lines[1]
    assert lines[2].startswith("  192.168.88.1 on lan0 held by 52:54:00:00:00:02 since ")


def test_a_backup_shows_its_role() -> None:
    payload = render(snap(ha_state("backup")))
    assert payload["ha"]["role"] == "backup"
    assert render_status(payload, T).splitlines()[0].endswith(", HA backup")


def test_ha_transitions_in_history_and_monitor_lines() -> None:
    from ecmpd.history import as_json
    from ecmpd.statusview import event_line, render_history
    _, effects = ev.step(ha_state("backup"), hastep.SetRole("master"), T + 30)
    (t,) = [e for e in effects if isinstance(e, ev.Transition)]
    e = as_json(t)
    assert (e["wan"], e["family"], e["previous"], e["state"], e["active"]) == (
        "ha", None, "backup", "master", None)
    assert event_line(e, T + 30).endswith(" ha backup -> master: ecmpctl role (backup 30s)")
    assert "  ha   backup -> master  30s     ecmpctl role" in render_history({"transitions": [e]}, T + 30)


def test_metrics_show_the_role_and_a_split_brain_and_count_no_ha_change_as_a_wans() -> None:
    from ecmpd.metrics import Counters, exposition
    s = Sighting("lan0", "192.168.88.1", "52:54:00:00:00:02")
    text = exposition(snap(ha_state(seen=(s,))), Counters()).decode()
    assert 'ecmpd_ha_role{role="master"} 1.0' in text
    assert 'ecmpd_ha_role{role="backup"} 0.0' in text
    assert "ecmpd_ha_split_brain 1.0" in text
    assert "ecmpd_ha_" not in exposition(snap(), Counters()).decode()
    c = Counters()
    _, effects = ev.step(ha_state("backup"), hastep.SetRole("master"), T + 30)
    for t in effects:
        if isinstance(t, ev.Transition):
            c.transition(t)
    assert c.changes == {}
