"""Run the real `ecmpd` inside a lab's router namespace (tests, demo, benchmarks).

`config_for()` writes an ecmpd config for a lab's topology; `Ecmpd` starts the daemon
in the router namespace with its own control socket, waits until it answers, and talks
to it with the real `ecmpctl`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import yaml

from lab.lab import Lab
from lab.wait import until


def config_for(lab: Lab, weights: dict[str, int] | None = None, targets: str = "gateway",
               probe: dict[str, Any] | None = None, ipv6: bool = False,
               **top: Any) -> dict[str, Any]:
    """An ecmpd config (as a dict) for `lab`: every lab WAN, LAN = the router's LAN side.

    `targets`: ``gateway`` (the gateway only), ``beyond`` (two addresses beyond the
    gateway, reached only through this WAN: its ISP's upstream and the first internet
    server; quorum 1), or ``both`` (the gateway and the ISP's upstream, quorum 2); with
    `ipv6`, each WAN carrying IPv6 gets its `gateway6` and the same targets of IPv6.
    A lab WAN without IPv4 gets no `gateway` (an IPv6-only WAN).
    """
    wans: dict[str, Any] = {}
    for w in lab.spec.wans:
        six = ipv6 and w.has6
        tg: list[str] = []
        quorum = {"gateway": 1, "beyond": 1, "both": 2}[targets]
        for has, upstream, server in (
                (w.has4, w.has4 and lab.upstream_address(w.name), lab.spec.server_addresses[0]),
                (six, six and lab.upstream_address6(w.name), lab.server6)):
            if has:
                tg += {"gateway": ["gateway"], "beyond": [upstream, server],
                       "both": ["gateway", upstream]}[targets]
        wan: dict[str, Any] = {"interface": w.name, "weight": (weights or {}).get(w.name, 1)}
        if w.has4:
            wan["gateway"] = w.gateway
            wan["address"] = str(IPv4Interface(w.address))
        if six:
            wan["gateway6"] = w.gateway6
        if targets != "gateway":
            wan["probe"] = {"targets": list(dict.fromkeys(tg)), "quorum": quorum}
        wans[w.name] = wan
    cfg: dict[str, Any] = {"lan": {"interfaces": [lab.spec.lan_interface]}, "wans": wans}
    if probe:
        cfg["probe"] = dict(probe)
    cfg.update(top)
    return cfg


class Ecmpd:
    """One ecmpd process in `lab`'s router namespace."""

    def __init__(self, lab: Lab, config: dict[str, Any] | str, workdir: str | None = None,
                 log_level: str = "info") -> None:
        self.lab = lab
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="ecmpd-lab-")
            atexit.register(shutil.rmtree, workdir, True)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "ecmpd.yaml"
        self.socket = str(self.dir / "ecmpd.sock")
        self.log_path = self.dir / "ecmpd.log"
        self.log_level = log_level
        self.write_config(config)
        self.proc: subprocess.Popen | None = None

    def write_config(self, config: dict[str, Any] | str) -> None:
        """Replace the config file (a dict is dumped as YAML)."""
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(self.config_path),
                "--socket", self.socket, *extra]

    def start(self, timeout: float = 15.0) -> "Ecmpd":
        """Start the daemon and wait until its control socket answers."""
        log = open(self.log_path, "ab")
        self.proc = self.lab.popen(self.lab.ns_router, *self.argv("--log-level", self.log_level),
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ecmpd exited with {self.proc.returncode}:\n{self.log()}")
            return self.ctl("status", "--json", check=False).returncode == 0

        until(answers, timeout, lambda _: f"ecmpd did not answer within {timeout}s:\n{self.log()}")
        return self

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ecmpctl --socket <ours> ARGS` (in the router namespace)."""
        argv = [sys.executable, "-m", "ecmpd.ecmpctl_command", "--socket", self.socket, *args]
        return self.lab.run(self.lab.ns_router, *argv, check=check, timeout=30)

    def status(self) -> dict[str, Any]:
        """`ecmpctl status --json`, parsed."""
        return json.loads(self.ctl("status", "--json").stdout)

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> dict[str, Any]:
        """Poll status until predicate(status) is true; returns that status."""
        st: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            nonlocal st
            st = self.status()
            return st if predicate(st) else None

        return until(reached, timeout, lambda _: f"{what} not reached within {timeout}s; last "
                     f"status: {json.dumps(st, indent=1)}\n{self.log()[-3000:]}")

    def wait_states(self, states: dict[str, str], timeout: float = 10.0,
                    family: int | None = None) -> dict[str, Any]:
        """Wait until every named WAN is in the given state ("up", "down", ...) and, for
        "up" and "down", the kernel's route agrees (the nexthop is in it, or not: an UP
        WAN of a tier that stands by is not).
        `family` 4 or 6: that IP version's state and route (None: the WAN's top-level
        fields, its IPv4 ones when it carries IPv4)."""
        route = "route6" if family == 6 else "route"

        def settled(st: dict[str, Any]) -> bool:
            for name, state in states.items():
                top = st["wans"][name]
                wan = top if family is None else top[f"ipv{family}"]
                if wan is None or state not in (wan["state"], wan.get("health")):
                    return False
                if state in ("up", "down") and not top["disabled"] \
                        and not st[route]["kept_last"] \
                        and wan["active"] != (state == "up" and not wan.get("standby")):
                    return False
            return True
        return self.wait_for(settled, timeout, f"IPv{family or 4} states {states}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL: the daemon gets no chance to clean up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def table(self) -> int:
        """The table of ecmpd's multipath route (`tables.base` of its config)."""
        try:
            cfg = yaml.safe_load(self.config_path.read_text()) or {}
            return int((cfg.get("tables") or {}).get("base", DEFAULT_TABLE))
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
            return DEFAULT_TABLE

    def route(self) -> str:
        """ecmpd's multipath default route (`ip route show default table <base>`)."""
        return route_text(self.lab, self.table())


DEFAULT_TABLE = 1000
"""`tables.base` by default: the table of ecmpd's multipath route."""


def route_text(lab: Lab, table: int = DEFAULT_TABLE) -> str:
    """`ip route show default table <table>` in the router namespace."""
    return lab.run(lab.ns_router, "ip", "route", "show", "default", "table", str(table)).stdout


def kernel_hops(lab: Lab, table: int = DEFAULT_TABLE) -> set[tuple[str, str, int]]:
    """(gateway, dev, weight) of ecmpd's multipath default route, from `ip -j route`
    (gateway "" for a device nexthop)."""
    routes = json.loads(lab.run(lab.ns_router, "ip", "-j", "route", "show", "default",
                                "table", str(table)).stdout)
    assert len(routes) == 1, routes
    hops = routes[0].get("nexthops") or [dict(routes[0], weight=1)]
    return {(h.get("gateway", ""), h["dev"], h.get("weight", 1)) for h in hops}


def nft_table(lab: Lab, table: str = "ecmpd") -> str:
    """`nft list table inet <table>` in the router namespace, counter values left out."""
    text = lab.run(lab.ns_router, "nft", "list", "table", "inet", table).stdout
    return re.sub(r"packets \d+ bytes \d+", "packets - bytes -", text)


def add_foreign(lab: Lab, ip_commands: list[str], nft_script: str | None = None) -> None:
    """Give the router objects that are not ecmpd's: `ip -batch` lines (routes, rules)
    and an nft script (other tables), for tests that ecmpd leaves them alone."""
    lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join(ip_commands) + "\n")
    if nft_script:
        lab.nft(lab.ns_router, nft_script)


def _without_counts(obj: Any) -> Any:
    """`obj` (parsed nft JSON) without counter values: they move with every packet."""
    if isinstance(obj, dict):
        return {k: _without_counts(v) for k, v in obj.items() if k not in ("packets", "bytes")}
    if isinstance(obj, list):
        return [_without_counts(v) for v in obj]
    return obj


def kernel_dump(lab: Lab) -> tuple[str, str, str]:
    """The router's IPv4 routes (all tables), ip rules and nft ruleset (without counter
    values), as JSON text."""
    r = lambda *cmd: lab.run(lab.ns_router, *cmd).stdout  # noqa: E731
    nft = json.dumps(_without_counts(json.loads(r("nft", "-j", "list", "ruleset"))))
    return (r("ip", "-4", "-j", "route", "show", "table", "all"), r("ip", "-j", "rule"), nft)
