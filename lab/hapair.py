"""Two ecmpd routers as one HA pair (keepalived + conntrackd), in network namespaces.

Topology (namespaces ``<prefix>sw``, ``cl``, ``r1``, ``r2``, ``isp1``, ``isp2``, ``inet``)::

      cl ── br_lan ──┬── r1 ──┬── br_wan1 ── isp1 ──┐
                     │   sync │                      inet (server 192.0.2.10)
                     └── r2 ──┴── br_wan2 ── isp2 ──┘

The bridges live in a switch namespace ``sw``.  A box dies (`HaPair.kill`): its
processes are SIGKILLed and its links set down, so the survivor loses carrier on the
sync link as with a direct cable; it comes back (`HaPair.reboot`, `mend`, `start`).  The
address plan and the configs are `lab.haplan`'s (those of the shipped ``ha/`` examples).
Each ISP routes its customer subnet (BCP38 drops any other source from it); inet routes
both subnets to their ISPs.  Each box loads the shipped ``ha/ecmpd-ha.nft``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import driver, netns
from lab.haplan import (BOXES, CLIENT, CLIENT6, HA, LAN_BOXES, LAN_BOXES6, LAN_VIP, LAN_VIP6,
                        LINKS, NOTIFY, PORT, ROUTER_SYSCTL, SERVER, SERVER6, SYNC, WANS,
                        conntrackd_conf, ecmpd_config, keepalived_conf, wan_of)
from lab.isp import CUST, UP, bcp38_6_script, bcp38_script
from lab.runner import Ecmpd
from lab.wait import until

_CT = re.compile(rf"src=(\S+) dst=\S+ sport=(\d+) dport={PORT} .*?src=\S+ dst=(\S+) "
                 rf"sport={PORT} dport=\d+.*?mark=(\d+)")
"""A `conntrack -L` line: client, client port, the reply's destination (the NAT
address), ct mark."""


class _Netns:
    """What `lab.runner.Ecmpd` needs of a lab: run and start commands in one namespace."""

    def __init__(self, ns: str, procs: list[subprocess.Popen]) -> None:
        self.ns_router = ns
        self._procs = procs

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return netns.run_in(ns, *cmd, check=check, timeout=timeout, input=input)

    def popen(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(netns.exec_argv(ns, *cmd), start_new_session=True, **kw)
        self._procs.append(proc)
        return proc


class HaPair:
    """The pair's namespaces, links and processes; `teardown` removes them all."""

    def __init__(self, prefix: str | None = None, advert: float = 0.1,
                 invalid_drop: bool = True) -> None:
        self.prefix = prefix or netns.random_prefix("eha")
        self.advert = advert
        self.invalid_drop = invalid_drop
        """Load ha/ecmpd-ha.nft in each box (False: see what it prevents)."""
        self.dir = Path(tempfile.mkdtemp(prefix="ecmpd-hapair-"))
        self.procs: dict[str, list[subprocess.Popen]] = {b: [] for b in (*BOXES, "lab")}
        self.ecmpd: dict[str, Ecmpd] = {}

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(n) for n in ("sw", "cl", *BOXES, "isp1", "isp2", "inet")]

    # ------------------------------------------------------------------ build

    def build(self) -> "HaPair":
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces:
            netns.create(ns)
        sw, cl, inet = self.ns("sw"), self.ns("cl"), self.ns("inet")
        transit = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1,
                   "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                   "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0}
        for box in BOXES:
            netns.sysctl(self.ns(box), ROUTER_SYSCTL)
            if self.invalid_drop:
                netns.nft(self.ns(box), (HA / "ecmpd-ha.nft").read_text())
        netns.sysctl(cl, {"net.ipv6.conf.all.accept_dad": 0,
                          "net.ipv6.conf.default.accept_dad": 0})
        for n in ("isp1", "isp2", "inet"):
            netns.sysctl(self.ns(n), transit)
        # the bridges: no STP, no forwarding delay, no multicast snooping in the way
        netns.ip_batch(sw, [line for br in ("br_lan", *(f"br_{w.name}" for w in WANS))
                            for line in (f"link add {br} type bridge forward_delay 0 "
                                         f"stp_state 0 mcast_snooping 0",
                                         f"link set dev {br} up")])
        netns.ip_batch(cl, [f"link add eth0 type veth peer name cl netns {sw}",
                            f"addr add {CLIENT}/24 dev eth0",
                            f"addr add {CLIENT6}/64 dev eth0 nodad",
                            "link set dev eth0 up", f"route add default via {LAN_VIP}",
                            f"route add ::/0 via {LAN_VIP6}"])
        netns.ip_batch(sw, ["link set dev cl master br_lan", "link set dev cl up"])
        netns.ip_batch(inet, [f"addr add {SERVER}/32 dev lo", f"addr add {SERVER6}/128 dev lo",
                              "link set dev lo up"])
        for i, w in enumerate(WANS, start=1):
            isp = self.ns(f"isp{i}")
            netns.ip_batch(isp, [
                f"link add name {CUST} type veth peer name isp{i} netns {sw}",
                f"addr add {w.isp}/29 dev {CUST}", f"addr add {w.isp6}/64 dev {CUST} nodad",
                f"link set dev {CUST} up",
                f"link add name {UP} type veth peer name isp{i} netns {inet}",
                f"addr add {w.upstream[0]}/30 dev {UP}",
                f"addr add {w.upstream6[0]}/64 dev {UP} nodad", f"link set dev {UP} up",
                f"route add default via {w.upstream[1]}",
                f"route add ::/0 via {w.upstream6[1]}"])
            netns.nft(isp, bcp38_script(w.net))
            netns.nft(isp, bcp38_6_script(w.net6))
            netns.ip_batch(sw, [f"link set isp{i} master br_{w.name}", f"link set isp{i} up"])
            netns.ip_batch(inet, [
                f"addr add {w.upstream[1]}/30 dev isp{i}",
                f"addr add {w.upstream6[1]}/64 dev isp{i} nodad", f"link set isp{i} up",
                f"route add {w.net} via {w.upstream[0]}",
                f"route add {w.net6} via {w.upstream6[0]}"])
            netns.sysctl(inet, {f"net.ipv4.conf.isp{i}.rp_filter": 0})
        for box in BOXES:
            self.connect(box)

    def connect(self, box: str) -> None:
        """Give `box` its LAN, WAN and sync links (the sync link with the first box)."""
        b, ns, sw = BOXES.index(box), self.ns(box), self.ns("sw")
        lines = [f"link add name {name} type veth peer name {box}{name} netns {sw}"
                 for name in LINKS]
        lines += [f"addr add {LAN_BOXES[b]}/24 dev lan0",
                  f"addr add {LAN_BOXES6[b]}/64 dev lan0 nodad"]
        for w in WANS:
            lines += [f"addr add {w.boxes[b]}/29 dev {w.name}",
                      f"addr add {w.boxes6[b]}/64 dev {w.name} nodad"]
        if b == 1:
            lines.append(f"link add name sync type veth peer name sync netns {self.ns(BOXES[0])}")
        netns.ip_batch(ns, lines)
        netns.ip_batch(sw, [f"link set dev {box}{name} master br_{name.replace('0', '')}"
                            for name in LINKS] + [f"link set dev {box}{name} up" for name in LINKS])
        if b == 1:
            for i, end in enumerate((self.ns(BOXES[0]), ns)):
                netns.ip_batch(end, [f"addr add {SYNC[i]}/30 dev sync", "link set dev sync up"])
        netns.ip_batch(ns, [f"link set dev {n} up" for n in LINKS])

    def cut(self, box: str) -> None:
        """Every link of `box` down (its peers lose carrier, as when a box dies)."""
        netns.ip_batch(self.ns(box), [f"link set dev {n} down" for n in (*LINKS, "sync")])

    def mend(self, box: str) -> None:
        """Every link of `box` up again (addresses kept: keep_addr_on_down)."""
        netns.ip_batch(self.ns(box), [f"link set dev {n} up" for n in (*LINKS, "sync")])

    def reboot(self, box: str) -> None:
        """What a reboot clears of a dead box before it comes back: the floating
        addresses its killed keepalived left behind, its conntrack table."""
        held = self.vips(box)
        lines = [f"addr del {a}/{128 if ':' in a else 32} dev {dev}" for a, dev in
                 ((a, self._vip_dev(a)) for a in sorted(held))]
        if lines:
            netns.ip_batch(self.ns(box), lines)
        netns.run_in(self.ns(box), "conntrack", "-F", check=False)

    @staticmethod
    def _vip_dev(addr: str) -> str:
        if addr in (LAN_VIP, LAN_VIP6):
            return "lan0"
        return next(w.name for w in WANS if addr in (w.floating, w.floating6))

    # ------------------------------------------------------------------ processes

    def box_dir(self, box: str) -> Path:
        d = self.dir / box
        d.mkdir(exist_ok=True)
        return d

    def start(self, box: str, config: dict[str, Any] | None = None) -> None:
        """Start conntrackd, ecmpd and keepalived in `box` (in that order: the notify
        script that keepalived runs at once talks to both)."""
        b, d, ns = BOXES.index(box), self.box_dir(box), self.ns(box)
        for stale in ("conntrackd.lock", "conntrackd.ctl"):
            (d / stale).unlink(missing_ok=True)
        ct_conf = d / "conntrackd.conf"
        ct_conf.write_text(conntrackd_conf(b, d))
        self._popen(box, "conntrackd", "-C", str(ct_conf), log=d / "conntrackd.out")
        until(lambda: (d / "conntrackd.ctl").exists(), 10, "conntrackd's socket")
        ecmpd = Ecmpd(_Netns(ns, self.procs[box]), config or ecmpd_config(),  # type: ignore[arg-type]
                      workdir=str(d / "ecmpd"))
        self.ecmpd[box] = ecmpd.start()
        ecmpctl = Path(sys.executable).with_name("ecmpctl")
        notify = (f"{NOTIFY} --conntrackd-config {ct_conf} --socket {ecmpd.socket} "
                  f"--log {d / 'notify.log'} --ecmpctl {ecmpctl}")
        ka_conf = d / "keepalived.conf"
        ka_conf.write_text(keepalived_conf(b, notify, self.advert))
        self._popen(box, "keepalived", "-f", str(ka_conf), "-p", str(d / "keepalived.pid"),
                    "-r", str(d / "vrrp.pid"), "-c", str(d / "checkers.pid"),
                    "--vrrp", "-n", "-l", "-D", log=d / "keepalived.out")

    def start_pair(self, server_port: int | None = None) -> subprocess.Popen | None:
        """r1 started and master, then r2 started and backup, both routers' WANs UP; with
        `server_port`, a TCP server on it in the internet (returned, stopped at teardown)."""
        self.start("r1")
        until(lambda: self.master() == "r1", 10, "r1 master")
        self.start("r2")
        until(lambda: "BACKUP" in self.notify_log("r2"), 10, "r2 backup")
        for box in BOXES:
            self.ecmpd[box].wait_states({"wan1": "up", "wan2": "up"}, timeout=10)
        if server_port is None:
            return None
        server = driver.start_server(self.ns("inet"), server_port)
        self.procs["lab"].append(server)
        return server

    def _popen(self, box: str, *cmd: str, log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(netns.exec_argv(self.ns(box), *cmd), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[box].append(proc)
        return proc

    def kill(self, box: str) -> float:
        """The box dies: SIGKILL every process of it (no goodbye advert), then its links
        go down.  The epoch of the kill."""
        at = time.time()
        for proc in self.procs[box]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.cut(box)
        for proc in self.procs[box]:
            proc.wait(5)
        self.procs[box].clear()
        self.ecmpd.pop(box, None)
        return at

    def kill_conntrackd(self, box: str) -> None:
        """SIGKILL `box`'s conntrackd (the first process `start` started)."""
        proc = self.procs[box][0]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def vips(self, box: str) -> set[str]:
        """The floating addresses `box` holds now."""
        want = {LAN_VIP, LAN_VIP6, *(a for w in WANS for a in (w.floating, w.floating6))}
        out = netns.ip(self.ns(box), "-o", "addr", "show", check=False).stdout
        return {f.split("/")[0] for line in out.splitlines() for f in line.split()[3:4]} & want

    def holds_all(self, box: str) -> bool:
        """Whether `box` holds every floating address."""
        return self.vips(box) == {LAN_VIP, LAN_VIP6,
                                  *(a for w in WANS for a in (w.floating, w.floating6))}

    def master(self) -> str | None:
        """The box holding every floating address (None: neither, or both: a killed
        box keeps what its keepalived had until `reboot`)."""
        holders = [b for b in BOXES if self.holds_all(b)]
        return holders[0] if len(holders) == 1 else None

    def notify_log(self, box: str) -> str:
        p = self.box_dir(box) / "notify.log"
        return p.read_text() if p.exists() else ""

    def conntrack(self, box: str, *args: str) -> str:
        return netns.run_in(self.ns(box), "conntrack", *args, check=False).stdout

    def pinned(self, box: str, family: int = 4) -> dict[int, tuple[str, str]]:
        """Client port -> (WAN by its floating address, ct mark) of each established
        TCP connection of IP version `family` from the client to the server in `box`'s
        kernel (`conntrack -L`)."""
        out = self.conntrack(box, "-L", "-f", f"ipv{family}", "-p", "tcp", "--dport",
                             str(PORT), "--state", "ESTABLISHED")
        client = CLIENT if family == 4 else CLIENT6
        return {int(m[2]): (wan_of(m[3]) or m[3], hex(int(m[4])))
                for m in map(_CT.search, out.splitlines()) if m and m[1] == client}

    def synced(self, box: str) -> int:
        """How many connections to the server `box`'s conntrackd keeps from its peer
        (its external cache)."""
        conf = str(self.box_dir(box) / "conntrackd.conf")
        out = netns.run_in(self.ns(box), "conntrackd", "-C", conf, "-e", check=False).stdout
        return out.count(f"dport={PORT}")

    def teardown(self) -> None:
        """Kill every process started here, delete the namespaces and the temp dir."""
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        proc.kill()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            procs.clear()
        netns.destroy(self.namespaces)
        shutil.rmtree(self.dir, ignore_errors=True)
