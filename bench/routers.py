"""The routers the benchmark compares, driven inside a lab's router namespace:

* ecmpd (`start_ecmpd`; `EpochEcmpd` only changes its log timestamps to epoch µs);
* the baseline (`Baseline`: bench/baseline.py, the seed translated literally);
* by hand, for the throughput figure: a plain NAT gateway (one default route, one
  masquerade rule) and plain routing without any nft (`program_natgw`, `program_plain`).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, Callable

from lab import Lab, netns
from lab.driver import LineReader, TrafficError
from lab.isp import bcp38_script
from lab.runner import Ecmpd, config_for
from lab.topology import transit
from lab.wait import until

from bench import stats

BASELINE = str(Path(__file__).resolve().with_name("baseline.py"))

_EPOCH_LOG = ("import sys, ecmpd.logsetup as l; "
              "l.PLAIN_FORMAT = '%(created).6f ecmpd[%(process)d] %(levelname)s %(message)s'; "
              "from ecmpd.ecmpd_command import main; sys.argv[0] = 'ecmpd'; sys.exit(main())")


class EpochEcmpd(Ecmpd):
    """The real daemon, whose log lines start with an epoch timestamp in µs instead of a
    whole second (for cross-checking reaction times against ``ip -ts monitor``)."""

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-c", _EPOCH_LOG, "--config", str(self.config_path),
                "--socket", self.socket, *extra]


DAEMON_ERRORS: list[str] = []
"""ERROR lines of every daemon `stop_ecmpd` stopped (reported in the table)."""


def start_ecmpd(lab: Lab, weights: dict[str, int] | None = None, targets: str = "gateway",
                cls: type[Ecmpd] = Ecmpd, config: dict[str, Any] | None = None,
                routed: set[str] | None = None, start_timeout: float = 15.0,
                **top: Any) -> Ecmpd:
    """Start ecmpd (defaults unless told; `config` replaces `config_for`'s); return once
    the kernel route has `routed` (default: every WAN; a tiered config routes only its
    first tier) and every WAN is UP, each within `start_timeout`.  Status is polled
    gently (5/s) and only after the route is whole, so the observer stays out of the
    daemon's way.  A daemon that does not get there is stopped (it would hold the
    namespace's lock against the next one)."""
    if config is None:
        config = config_for(lab, weights=weights, targets=targets, **top)
    d = cls(lab, config)
    try:
        d.start(timeout=start_timeout)
        wait_routed(lab, routed or {w.name for w in lab.spec.wans}, start_timeout)
        wait_until(lambda: all(w["state"] == "up" for w in d.status()["wans"].values()),
                   start_timeout, "every WAN UP", step=0.2)
    except BaseException:
        stop_ecmpd(lab, d)
        raise
    return d


def stop_ecmpd(lab: Lab, d: Ecmpd) -> None:
    """Stop the daemon (it removes its dataplane), forget the lab's connections, remove
    its work directory (config, socket, log); its ERROR lines go to `DAEMON_ERRORS`."""
    try:
        code = d.stop(timeout=30.0)   # a daemon still loading a large table answers late
        DAEMON_ERRORS.extend(stats.log_errors(d.log()))
        if code != 0:
            raise RuntimeError(f"ecmpd exited with {code}:\n{d.log()[-2000:]}")
    finally:
        flush_conntrack(lab)
        shutil.rmtree(d.dir, ignore_errors=True)


def flush_conntrack(lab: Lab) -> None:
    """Empty the router namespace's conntrack table (between runs)."""
    lab.run(lab.ns_router, "conntrack", "-F", check=False)


def route_interfaces(lab: Lab, family: int = 4) -> set[str]:
    """The interfaces of the router's default route for new flows of IP version `family`
    (empty: none): ecmpd's in its table (`stats.ECMPD_TABLE`), or the baseline's in table
    main (`stats.route_json_devs`)."""
    out = lab.run(lab.ns_router, "ip", f"-{family}", "-j", "route", "show", "default",
                  "table", "all").stdout
    return stats.route_json_devs(out)


def wait_routed(lab: Lab, names: set[str], timeout: float, family: int = 4) -> None:
    """Poll the kernel until the default route for new flows (of IP version `family`)
    uses exactly `names`."""
    wait_until(lambda: route_interfaces(lab, family) == names, timeout,
               f"IPv{family} route over {sorted(names)}")


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `pred` until true; TimeoutError after `timeout` s."""
    until(pred, timeout, lambda _: f"{what} not reached within {timeout:.0f}s", step)


class Baseline:
    """bench/baseline.py running in `lab`'s router namespace."""

    def __init__(self, lab: Lab, weights: dict[str, int] | None = None, interval: float = 10.0,
                 first_delay: float = 0.0, hash_policy: int = 0) -> None:
        self.lab = lab
        self.interval = interval
        wans = [f"{w.name},{w.gateway},{(weights or {}).get(w.name, 1)}" for w in lab.spec.wans]
        self.args = [a for w in wans for a in ("--wan", w)]
        self.args += ["--interval", str(interval), "--first-delay", str(first_delay)]
        if hash_policy:  # 0, the seed's L3, is baseline.py's default
            self.args += ["--hash-policy", str(hash_policy)]
        self.proc: subprocess.Popen | None = None
        self.reader: LineReader | None = None
        self.first_ping = 0.0
        """Epoch of the first check-gateway ping (then every `interval` s)."""

    def start(self, timeout: float = 15.0) -> "Baseline":
        """Start it; return once the router is programmed and the pings are scheduled."""
        err = tempfile.TemporaryFile()
        self.proc = self.lab.popen(self.lab.ns_router, sys.executable, BASELINE, *self.args,
                                   stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        self.proc._lab_stderr = err  # type: ignore[attr-defined]
        self.reader = LineReader(self.proc)
        try:
            self.reader.wait_line("ready", timeout)
            self.first_ping = float(self.reader.wait_line("schedule", timeout).split()[1])
        except TrafficError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> list[str]:
        """SIGTERM (it removes what it installed), forget the lab's connections; returns
        every line it printed (``ping ...``, ``out IFACE EPOCH``, ``in IFACE EPOCH``)."""
        lines: list[str] = []
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            assert self.reader is not None
            try:
                lines = self.reader.rest(timeout).splitlines()
            except TrafficError:
                lines = list(self.reader.lines)
            err = getattr(self.proc, "_lab_stderr", None)
            if err is not None:
                err.close()
            self.proc = None
        flush_conntrack(self.lab)
        return lines


# ------------------------------------------------------------------ plain routers


def _forward(lab: Lab, on: bool) -> None:
    netns.sysctl(lab.ns_router, {"net.ipv4.ip_forward": int(on)})


NATGW_TABLE = "natgw"


def program_natgw(lab: Lab) -> None:
    """What any NAT gateway does: one default route (first WAN), one masquerade rule."""
    w = lab.spec.wans[0]
    _forward(lab, True)
    lab.run(lab.ns_router, "ip", "route", "replace", "default", "via", w.gateway, "dev", w.name)
    lab.nft(lab.ns_router, f"table ip {NATGW_TABLE} {{\n  chain post {{\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{w.name}" masquerade\n  }}\n}}\n')


def program_plain(lab: Lab) -> None:
    """Plain routing: one default route, no nft at all (see `open_plain_path`)."""
    w = lab.spec.wans[0]
    _forward(lab, True)
    lab.run(lab.ns_router, "ip", "route", "replace", "default", "via", w.gateway, "dev", w.name)


def unprogram(lab: Lab) -> None:
    """Undo `program_natgw` / `program_plain`."""
    lab.run(lab.ns_router, "ip", "route", "del", "default", check=False)
    lab.nft(lab.ns_router, f"add table ip {NATGW_TABLE}\ndelete table ip {NATGW_TABLE}\n")
    _forward(lab, False)
    flush_conntrack(lab)


def open_plain_path(lab: Lab, open_: bool) -> None:
    """Let un-NATed LAN traffic through the first WAN's ISP (for plain routing): its BCP38
    rule also admits the LAN subnet, and the ISP and inet get return routes to the LAN.
    `open_=False` restores the lab's BCP38 and removes the routes."""
    w = lab.spec.wans[0]
    isp = lab.ns_isp(w.name)
    lan = str(IPv4Interface(lab.spec.lan_address).network)
    transit_isp = transit(lab.spec.wan_index(w.name))[0].split("/")[0]
    router_wan = w.address.split("/")[0]
    script = bcp38_script(str(w.network))
    if open_:
        script = script.replace(f"ip saddr != {w.network}", f"ip saddr != {{ {w.network}, {lan} }}")
        lab.run(isp, "ip", "route", "replace", lan, "via", router_wan)
        lab.run(lab.ns_inet, "ip", "route", "replace", lan, "via", transit_isp)
    else:
        lab.run(isp, "ip", "route", "del", lan, check=False)
        lab.run(lab.ns_inet, "ip", "route", "del", lan, check=False)
    lab.nft(isp, script)
