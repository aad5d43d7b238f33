"""What ecmpd's and ecmpctl's start-up imports, each in a fresh interpreter (issue #20).

Importing is most of a start's CPU time (bench/startup.py, figure 15; 20x slower under
software emulation).  These checks fail when a module that the start does not need
comes back at import: they list module names, never time anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported(statement: str) -> set[str]:
    """`sys.modules` after `statement` in a new interpreter (ecmpd from this tree)."""
    listing = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", f"{statement}; {listing}"], capture_output=True, text=True,
        cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


DAEMON_NEVER = {
    # pyroute2.netlink.rtnl.iprsocket imports unittest.mock; the package's __init__ (test
    # runner, loader, argparse-driven main) is skipped (ecmpd.netlinkimport.DEFERRED)
    "unittest.case", "unittest.loader", "unittest.main", "unittest.runner", "unittest.suite",
    # pyroute2's package __init__ (NDB, IPDB, ...: ecmpd.netlinkimport)
    "pyroute2.ndb", "pyroute2.ipdb", "pyroute2.nslink", "pyroute2.netlink.nl80211",
    # only with `metrics: {listen: ...}`, and only when the endpoint opens
    "prometheus_client", "ecmpd.metrics_server",
    # only for --version and ecmpd_info (read when asked)
    "importlib.metadata",
    # a status snapshot is taken on request, a reload planned on SIGHUP, not at start
    "ecmpd.status", "ecmpd.statusview", "ecmpd.reloadplan",
}


@pytest.mark.parametrize("statement", ["import ecmpd.daemon",
                                       "import ecmpd.ecmpd_command; import ecmpd.daemon"])
def test_the_daemon_imports_nothing_it_does_not_start_with(statement: str) -> None:
    mods = imported(statement)
    assert "ecmpd.daemon" in mods and "pyroute2.iproute.linux" in mods   # the check sees
    assert sorted(DAEMON_NEVER & mods) == []


def test_unittest_completes_when_asked_for() -> None:
    """The bare ``unittest`` becomes the whole package on first use of a package name."""
    mods = imported("import ecmpd.daemon, unittest; assert unittest.TestCase.__name__ "
                    "== 'TestCase'; from unittest import mock; mock.Mock()")
    assert {"unittest.case", "unittest.mock"} <= mods


COMMAND_NEVER = {
    # imported after STATUS "loading ecmpd" tells systemd the start is under way
    "asyncio", "pyroute2", "ecmpd.daemon", "ecmpd.events", "ecmpd.state", "icmplib",
    "nftables", "unittest", "prometheus_client", "importlib.metadata",
}


def test_the_command_line_reports_progress_before_the_heavy_imports() -> None:
    mods = imported("import ecmpd.ecmpd_command")
    assert "yaml" in mods                  # the config is read before "loading ecmpd"
    assert sorted(COMMAND_NEVER & mods) == []


ECMPCTL_NEVER = {
    # the admin's command: a socket, JSON and text; none of the daemon's machinery
    "asyncio", "yaml", "pyroute2", "icmplib", "nftables", "dataclasses", "datetime",
    "typing", "ecmpd.config", "ecmpd.configmodel", "ecmpd.events", "ecmpd.state",
    "importlib.metadata", "unittest", "logging",
}


def test_ecmpctl_imports_only_what_a_request_needs() -> None:
    mods = imported("import ecmpd.ecmpctl_command")
    assert "ecmpd.statusview" in mods
    assert sorted(ECMPCTL_NEVER & mods) == []
