"""ha/ecmpd-ha-notify, keepalived's notify script, run with stand-ins for conntrackd and
ecmpctl: conntrackd's primary-backup steps then `ecmpctl role`, per state, and exit 0
whatever fails (keepalived must never wait on it or see it fail)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTIFY = ROOT / "ha" / "ecmpd-ha-notify"


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A bin directory whose conntrackd and ecmpctl log their arguments to calls.log
    and exit with $FAIL (0 unless set)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("conntrackd", "ecmpctl", "logger"):
        (bin_ / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls.log\n'
                                 'exit ${FAIL:-0}\n')
        (bin_ / tool).chmod(0o755)
    return tmp_path


def notify(tmp: Path, *args: str, fail: int = 0) -> list[str]:
    env = {**os.environ, "PATH": f"{tmp}/bin:{os.environ['PATH']}", "FAIL": str(fail)}
    env.pop("ECMPD_SOCKET", None)
    env.pop("CONNTRACKD_CONFIG", None)
    p = subprocess.run([str(NOTIFY), *args], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    log = tmp / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


CT = "conntrackd -C /etc/conntrackd/conntrackd.conf"


def test_each_state_runs_conntrackds_steps_then_tells_ecmpd(stand_ins: Path) -> None:
    calls = notify(stand_ins, "INSTANCE", "ecmpd", "MASTER", "150")
    assert [c for c in calls if not c.startswith("logger")] == [
        f"{CT} -c", f"{CT} -f", f"{CT} -R", f"{CT} -B", "ecmpctl role master"]
    calls = notify(stand_ins, "GROUP", "pair", "BACKUP", "100")
    assert [c for c in calls if not c.startswith("logger")] == [
        f"{CT} -t", f"{CT} -n", "ecmpctl role backup"]
    calls = notify(stand_ins, "INSTANCE", "ecmpd", "FAULT", "150")
    assert [c for c in calls if not c.startswith("logger")] == [f"{CT} -t", "ecmpctl role fault"]
    # keepalived's own stop: nothing to do
    assert [c for c in notify(stand_ins, "INSTANCE", "ecmpd", "STOP", "150")
            if not c.startswith("logger")] == []


def test_options_name_the_conntrackd_config_socket_and_ecmpctl(stand_ins: Path) -> None:
    own = stand_ins / "bin" / "ecmpctl"
    calls = notify(stand_ins, "--conntrackd-config", "/x/ct.conf", "--socket", "/x/e.sock",
                   "--ecmpctl", str(own), "--log", str(stand_ins / "n.log"),
                   "INSTANCE", "ecmpd", "BACKUP", "100")
    assert [c for c in calls if not c.startswith("logger")] == [
        "conntrackd -C /x/ct.conf -t", "conntrackd -C /x/ct.conf -n",
        "ecmpctl --socket /x/e.sock role backup"]
    assert "INSTANCE ecmpd: BACKUP (priority 100)" in (stand_ins / "n.log").read_text()


def test_failures_are_logged_and_the_script_goes_on(stand_ins: Path) -> None:
    calls = notify(stand_ins, "INSTANCE", "ecmpd", "MASTER", "150", fail=1)
    steps = [c for c in calls if not c.startswith("logger")]
    assert steps[-1] == "ecmpctl role master" and len(steps) == 5
    failures = [c for c in calls if c.startswith("logger") and "failed (1)" in c]
    assert len(failures) == 5
    # an unknown state changes nothing and still exits 0
    assert [c for c in notify(stand_ins, "INSTANCE", "ecmpd", "WEIRD", "1")
            if not c.startswith("logger")] == []
