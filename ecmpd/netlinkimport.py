"""The few pyroute2 names ecmpd uses, imported without pyroute2's package ``__init__``.

Why: ``import pyroute2`` (also ``from pyroute2 import X`` and ``import pyroute2.sub``) runs
``pyroute2/__init__.py``, which imports the whole library (NDB, IPDB, nl80211, WireGuard,
IPVS, plan9, ...): about 5 MB of extra RSS in the daemon for code it never calls.  ecmpd
needs four things, all in submodules that do not depend on the package ``__init__``::

    pyroute2.iproute.linux.AsyncIPRoute
    pyroute2.netlink.nfnetlink.nfctsocket.AsyncNFCTSocket
    pyroute2.netlink.exceptions.NetlinkError
    pyroute2.netlink.rtnl.RTMGRP_*

How: when ``pyroute2`` is not imported yet, a *bare* package module is made from the
package's own import spec (``importlib.util.module_from_spec``: ``__path__``, ``__spec__``
and ``__file__`` set, ``__init__`` not run) and registered in ``sys.modules``; then the
submodules above are imported normally.  ``pyroute2.config.log`` is imported as well, so the
``pyroute2`` logger gets the NullHandler the package ``__init__`` would have given it.

Later imports keep working: the bare module has a module ``__getattr__`` (PEP 562) that
completes it on first use of any package-level name (``from pyroute2 import IPRoute``,
``pyroute2.__version__``, ``pyroute2.__all__``) by running the real ``__init__`` in it, so
code that imports pyroute2 normally afterwards in the same process (tests do) gets the
full package, with the same class objects ecmpd already holds.  Submodule names are not
completed there: they are left to the import system (``from pyroute2 import config`` inside
pyroute2 imports ``pyroute2.config``, as it would anyway).

``unittest`` gets the same treatment while pyroute2 loads: ``pyroute2.netlink.rtnl.iprsocket``
imports ``unittest.mock`` (for its mock sockets), whose package ``__init__`` loads the test
runner, loader and argparse; ``unittest.mock`` itself is loaded (a class body there calls
it), ``unittest``'s ``__init__`` runs only if a later import asks for a package-level name
(``unittest.TestCase``).  Measured: about 9 ms of CPU (`python -c 'import unittest.mock'`
with and without the bare package, after asyncio; README, start-up).

If pyroute2 changes its layout (any exception on the bare path), every ``pyroute2*`` (and
``unittest*``) entry this module added to ``sys.modules`` is removed and the names are
imported the ordinary way (``FALLBACK_USED`` is then True): ecmpd keeps working and only
loses the memory saving.  If ``pyroute2`` was already imported when this module loads, its submodules are used as
they are (``BARE`` is then False).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from typing import TYPE_CHECKING, Any

log = logging.getLogger("ecmpd")

PACKAGE = "pyroute2"
DEFERRED = ("unittest",)
"""Packages pyroute2 imports for code ecmpd never runs: made bare like pyroute2 itself."""

WANTED: tuple[tuple[str, str, str], ...] = (
    # (name here, module, attribute)
    ("AsyncIPRoute", "pyroute2.iproute.linux", "AsyncIPRoute"),
    ("AsyncNFCTSocket", "pyroute2.netlink.nfnetlink.nfctsocket", "AsyncNFCTSocket"),
    ("NFCTAttrTuple", "pyroute2.netlink.nfnetlink.nfctsocket", "NFCTAttrTuple"),
    ("NetlinkError", "pyroute2.netlink.exceptions", "NetlinkError"),
    ("RTMGRP_LINK", "pyroute2.netlink.rtnl", "RTMGRP_LINK"),
    ("RTMGRP_IPV4_IFADDR", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_IFADDR"),
    ("RTMGRP_IPV4_ROUTE", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_ROUTE"),
    ("RTMGRP_IPV4_RULE", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_RULE"),
)
"""What ecmpd imports: its name here, the defining submodule, the attribute there."""

FALLBACK: tuple[tuple[str, str, str], ...] = (
    ("AsyncIPRoute", "pyroute2", "AsyncIPRoute"),
    ("AsyncNFCTSocket", "pyroute2", "AsyncNFCTSocket"),
    ("NFCTAttrTuple", "pyroute2.netlink.nfnetlink.nfctsocket", "NFCTAttrTuple"),
    ("NetlinkError", "pyroute2", "NetlinkError"),
    ("RTMGRP_LINK", "pyroute2.netlink.rtnl", "RTMGRP_LINK"),
    ("RTMGRP_IPV4_IFADDR", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_IFADDR"),
    ("RTMGRP_IPV4_ROUTE", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_ROUTE"),
    ("RTMGRP_IPV4_RULE", "pyroute2.netlink.rtnl", "RTMGRP_IPV4_RULE"),
)
"""The same names imported the ordinary way (through the package ``__init__``)."""

_KEEP_DUNDERS = frozenset({"__all__", "__version__"})


def _completer(module: types.ModuleType, spec: Any, package: str = PACKAGE) -> Any:
    """A module ``__getattr__`` that runs the package ``__init__`` on first real use."""
    state = {"done": False}

    def __getattr__(name: str) -> Any:
        dunder = name.startswith("__") and name.endswith("__")
        if state["done"] or (dunder and name not in _KEEP_DUNDERS):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            submodule = importlib.util.find_spec(f"{package}.{name}") is not None
        except (ImportError, ValueError):
            submodule = False
        if submodule:  # let the import system load it (as the real package would)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        state["done"] = True
        log.debug("%s.%s requested: completing the %s package", package, name, package)
        spec.loader.exec_module(module)  # the real __init__, in the same module object
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


def _bare_package(package: str = PACKAGE) -> types.ModuleType:
    """Register an un-initialised `package` module in ``sys.modules``."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not an importable package")
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = _completer(module, spec, package)  # type: ignore[method-assign]
    sys.modules[package] = module
    return module


def _fetch(wanted: tuple[tuple[str, str, str], ...]) -> dict[str, Any]:
    return {name: getattr(importlib.import_module(mod), attr) for name, mod, attr in wanted}


def load(wanted: tuple[tuple[str, str, str], ...] = WANTED,
         fallback: tuple[tuple[str, str, str], ...] = FALLBACK) -> tuple[dict[str, Any], bool, bool]:
    """Import `wanted`; returns (name -> object, bare package used, fallback used).

    Without ``pyroute2`` in ``sys.modules`` the bare package is tried first; on any error
    the ``pyroute2`` modules it added are dropped and `fallback` is imported normally.
    """
    if PACKAGE in sys.modules:
        try:
            return _fetch(wanted), False, False
        except Exception:
            return _fetch(fallback), False, True
    before = set(sys.modules)
    try:
        _bare_package()
        for package in DEFERRED:
            if package not in sys.modules:
                _bare_package(package)
        importlib.import_module(f"{PACKAGE}.config.log")  # the logger's NullHandler
        return _fetch(wanted), True, False
    except Exception as exc:
        for name in [m for m in sys.modules if m not in before
                     and any(m == p or m.startswith(p + ".") for p in (PACKAGE, *DEFERRED))]:
            del sys.modules[name]
        log.debug("importing pyroute2 submodules failed (%r): full import instead", exc)
        return _fetch(fallback), False, True


_names, BARE, FALLBACK_USED = load()
"""BARE: the package ``__init__`` was skipped; FALLBACK_USED: the ordinary import was."""

if TYPE_CHECKING:  # type checkers see the real definitions
    from pyroute2.iproute.linux import AsyncIPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket, NFCTAttrTuple
    from pyroute2.netlink.rtnl import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE,
                                       RTMGRP_IPV4_RULE, RTMGRP_LINK)
else:
    AsyncIPRoute = _names["AsyncIPRoute"]
    AsyncNFCTSocket = _names["AsyncNFCTSocket"]
    NFCTAttrTuple = _names["NFCTAttrTuple"]
    NetlinkError = _names["NetlinkError"]
    RTMGRP_LINK = _names["RTMGRP_LINK"]
    RTMGRP_IPV4_IFADDR = _names["RTMGRP_IPV4_IFADDR"]
    RTMGRP_IPV4_ROUTE = _names["RTMGRP_IPV4_ROUTE"]
    RTMGRP_IPV4_RULE = _names["RTMGRP_IPV4_RULE"]
del _names

__all__ = ["AsyncIPRoute", "AsyncNFCTSocket", "NFCTAttrTuple", "NetlinkError", "RTMGRP_LINK",
           "RTMGRP_IPV4_IFADDR", "RTMGRP_IPV4_ROUTE", "RTMGRP_IPV4_RULE", "BARE",
           "FALLBACK_USED", "load"]
