"""Tests for ecmpd.netlinkimport: pyroute2 without its package __init__.

Every check runs in a fresh interpreter (what is imported is the point).  The root part
(marker `lab`) uses the classes for real in a network namespace of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def fresh(script: str, netns: str | None = None) -> Any:
    """Run `script` in a new interpreter (in `netns` if given); its stdout as JSON."""
    argv = [sys.executable, "-c", script]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    run = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


IMPORTS = r"""
import json, logging, sys
import ecmpd.daemon, ecmpd.ecmpd_command, ecmpd.conntrack, ecmpd.routing, ecmpd.watcher
from ecmpd import netlinkimport as n
import pyroute2.iproute.linux as linux
import pyroute2.netlink.exceptions as exc
import pyroute2.netlink.nfnetlink.nfctsocket as nfct
import pyroute2.netlink.rtnl as rtnl
after_daemon = {
    "bare": n.BARE, "fallback": n.FALLBACK_USED,
    "heavy": sorted(m for m in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.netlink.nl80211",
                                "pyroute2.netlink.generic.wireguard", "pyroute2.ipset")
                    if m in sys.modules),
    "same": [n.AsyncIPRoute is linux.AsyncIPRoute, n.NetlinkError is exc.NetlinkError,
             n.AsyncNFCTSocket is nfct.AsyncNFCTSocket,
             ecmpd.routing.AsyncIPRoute is linux.AsyncIPRoute,
             ecmpd.conntrack.AsyncNFCTSocket is nfct.AsyncNFCTSocket,
             (n.RTMGRP_LINK, n.RTMGRP_IPV4_IFADDR, n.RTMGRP_IPV4_ROUTE, n.RTMGRP_IPV4_RULE)
             == (rtnl.RTMGRP_LINK, rtnl.RTMGRP_IPV4_IFADDR, rtnl.RTMGRP_IPV4_ROUTE,
                 rtnl.RTMGRP_IPV4_RULE)],
    "null_handler": any(isinstance(h, logging.NullHandler)
                        for h in logging.getLogger("pyroute2").handlers),
}
# submodule imports through the bare package do not complete it
from pyroute2 import config, netns
import pyroute2.netlink.rtnl.ifaddrmsg
after_submodules = "pyroute2.ndb" in sys.modules
# a package-level name completes it: ordinary pyroute2 code keeps working
from pyroute2 import IPRoute, NDB, AsyncIPRoute
import pyroute2
completed = {
    "ndb": "pyroute2.ndb" in sys.modules, "version": pyroute2.__version__,
    "same_class": AsyncIPRoute is n.AsyncIPRoute, "all": IPRoute in pyroute2.__all__,
}
try:
    pyroute2.no_such_name
    missing = "no error"
except AttributeError:
    missing = "AttributeError"
print(json.dumps({"after_daemon": after_daemon, "after_submodules": after_submodules,
                  "completed": completed, "missing": missing}))
"""


def test_daemon_imports_skip_the_package_init() -> None:
    out = fresh(IMPORTS)
    d = out["after_daemon"]
    assert (d["bare"], d["fallback"]) == (True, False)
    assert d["heavy"] == []
    assert all(d["same"])
    assert d["null_handler"]
    assert out["after_submodules"] is False
    c = out["completed"]
    assert c["ndb"] and c["same_class"] and c["all"]
    assert c["version"].startswith("0.")
    assert out["missing"] == "AttributeError"


PREIMPORTED = r"""
import json, sys
import pyroute2
from ecmpd import netlinkimport as n
print(json.dumps([n.BARE, n.FALLBACK_USED, n.AsyncIPRoute is pyroute2.AsyncIPRoute,
                  n.NetlinkError is pyroute2.NetlinkError]))
"""


def test_pyroute2_imported_first_is_used_as_is() -> None:
    assert fresh(PREIMPORTED) == [False, False, True, True]


FALLBACK = r"""
import json, sys
from ecmpd import netlinkimport as n
for m in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
    del sys.modules[m]
# pretend pyroute2 moved AsyncIPRoute: the bare path fails half-way
wanted = n.WANTED[1:] + (("AsyncIPRoute", "pyroute2.iproute.nosuchmodule", "AsyncIPRoute"),)
names, bare, fallback = n.load(wanted)
pkg = sys.modules["pyroute2"]
print(json.dumps({
    "bare": bare, "fallback": fallback, "full": "pyroute2.ndb" in sys.modules,
    "class": names["AsyncIPRoute"].__module__ + "." + names["AsyncIPRoute"].__name__,
    "same": names["AsyncIPRoute"] is pkg.AsyncIPRoute,
    "no_bare_left": "__getattr__" not in vars(pkg),
    "names": sorted(names),
}))
"""


def test_layout_change_falls_back_to_the_ordinary_import() -> None:
    out = fresh(FALLBACK)
    assert (out["bare"], out["fallback"], out["full"]) == (False, True, True)
    assert out["class"] == "pyroute2.iproute.linux.AsyncIPRoute" and out["same"]
    assert out["no_bare_left"]
    assert out["names"] == sorted(["AsyncIPRoute", "AsyncNFCTSocket", "NFCTAttrTuple", "NetlinkError",
                                   "RTMGRP_LINK", "RTMGRP_IPV4_IFADDR", "RTMGRP_IPV4_ROUTE",
                                   "RTMGRP_IPV4_RULE"])


RSS = r"""
import json, sys
import ecmpd.daemon
rss = lambda: int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")][0])
before = rss()
from pyroute2 import IPRoute  # runs the package __init__: what ecmpd no longer loads
print(json.dumps(rss() - before))
"""


def test_skipping_the_package_init_saves_memory() -> None:
    # the saving the module exists for (about 5 MB with pyroute2 0.9.7); 2 MB is a
    # floor that any layout still worth the trick clears
    assert fresh(RSS) > 2048


# --- root part: the classes at work ----------------------------------------------------

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and ip")

USE = r"""
import asyncio, json, sys
import ecmpd.daemon
from ecmpd import conntrack, interfaces, netlinkimport as n

async def use():
    async with n.AsyncIPRoute() as ipr:
        links = sorted(await interfaces.read_links(ipr))
        try:
            await ipr.link("get", index=424242)
            err = None
        except n.NetlinkError as e:
            err = e.code
    async with n.AsyncIPRoute() as ipr:
        await ipr.bind(groups=n.RTMGRP_LINK | n.RTMGRP_IPV4_IFADDR)
    counts = await conntrack.count_marks({"wan1": 0x10000}, 0xFF0000)
    flushed = await conntrack.flush_mark(0x10000, 0xFF0000)
    return {"links": links, "err": err, "counts": counts, "flushed": flushed}

out = {"bare": asyncio.run(use()), "ndb_after_use": "pyroute2.ndb" in sys.modules}
from pyroute2 import NDB  # the full package in the same process
out["full"] = asyncio.run(use())
print(json.dumps(out))
"""


@pytest.fixture
def netns(make_netns: Callable[[str], str]) -> str:
    return make_netns("nli")


@NEEDS_ROOT
@pytest.mark.lab
def test_classes_work_before_and_after_a_full_import(netns: str) -> None:
    out = fresh(USE, netns)
    expected = {"links": ["lo"], "err": 19, "counts": {"wan1": 0}, "flushed": True}
    assert out["bare"] == expected  # ENODEV for the missing link
    assert out["ndb_after_use"] is False
    assert out["full"] == expected
