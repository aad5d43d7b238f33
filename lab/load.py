"""iperf3 load between the LAN client and the inet namespace, each stream on its WAN.

Placing a stream on a WAN: the router's l4 multipath hash of a forwarded packet is the
*sender's* random socket hash (``skb->l4_hash`` crosses the veth), so ``ip route get
... sport`` does not predict it (18 of 40 here).  `reset_client_hash` clears it on the
client's egress (a 3-instruction tc eBPF program); the router then hashes the 5-tuple
and ``ip route get`` predicts every flow.  iperf3's control connection has an ephemeral
port: `Load` restarts a stream until it leaves by the wanted WAN too, and checks both on
the server side (the source address it sees, `Lab.wan_of_source`).

`Load.start(..., family=6)` runs the same over IPv6: iperf3 ``-6`` from the client's
first IPv6 address (``-B``) to the inet server's first IPv6 address, placed with ``ip -6
route get`` (NAT66 on the router: the server sees the WAN's /64).  An IPv4 load and an
IPv6 load may run side by side (their ports differ).
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import random
import re
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from ipaddress import ip_interface
from typing import IO, TYPE_CHECKING, Sequence

from lab.netns import terminate

if TYPE_CHECKING:
    from lab.base import LabLike

log = logging.getLogger(__name__)


class LoadError(RuntimeError):
    """The load cannot run as asked (no route, WAN not in it, no iperf3)."""


# ------------------------------------------------------------ output parsing (pure)

_ADDR_RE = re.compile(r"^\[?(?:::ffff:)?([0-9a-fA-F.:]+?)\]?:(\d+)$")


def parse_ss(text: str) -> list[tuple[str, int, str, int]]:
    """``ss -Htn [state ...]`` -> (local ip, local port, peer ip, peer port)."""
    out = []
    for line in text.splitlines():
        addrs = [m.groups() for tok in line.split() if (m := _ADDR_RE.match(tok))]
        if len(addrs) >= 2:
            (lip, lport), (pip, pport) = addrs[-2:]
            out.append((lip, int(lport), pip, int(pport)))
    return out


def parse_listening(text: str) -> set[int]:
    """The local ports of ``ss -Hltn`` (peer column ``*:*``, ``[::]:*``, ``0.0.0.0:*``)."""
    return {int(p) for p in re.findall(r":(\d+)\s+\S*:\*", text)}


def parse_iperf3(text: str) -> tuple[int, float, str | None]:
    """An ``iperf3 -J`` client report -> (bytes, seconds, error or None): the receiver's
    count if the test completed, else the sum of the intervals the client saw."""
    try:
        data = json.loads(text)
    except ValueError:
        return 0, 0.0, "no JSON report"
    recv = data.get("end", {}).get("sum_received", {})
    if recv.get("bytes"):
        return int(recv["bytes"]), float(recv.get("seconds", 0.0)), data.get("error")
    ivs = [i.get("sum", {}) for i in data.get("intervals", [])]
    return (sum(int(i.get("bytes", 0)) for i in ivs),
            sum(float(i.get("seconds", 0.0)) for i in ivs), data.get("error"))


def client_argv(server: str, port: int, cport: int, secs: int, direction: str,
                congestion: str | None, idle: float, attempt_s: float, family: int = 4,
                bind: str | None = None) -> list[str]:
    """The iperf3 client command of one stream attempt (``download`` is ``-R``); with
    `family` 6 ``-6`` and, given `bind`, ``-B`` (the client's source address)."""
    argv = ["iperf3", "-c", server, "-p", str(port), "--cport", str(cport),
            "-t", str(secs), "-J", "--connect-timeout", str(int(attempt_s * 1000))]
    if family == 6:
        argv += ["-6", *(["-B", bind] if bind else [])]
    argv += ["-C", congestion] if congestion else []
    ms = str(int(idle * 1000))  # each timeout is valid only on the receiving/sending side
    argv += ["-R", "--rcv-timeout", ms] if direction == "download" else ["--snd-timeout", ms]
    return argv


def route_get_script(server: str, client: str, lan: str,
                     pairs: Sequence[tuple[int, int]]) -> str:
    """``ip -batch`` lines asking the router's route for LAN TCP flows (sport, dport)
    from `client` to `server` (either family: the ``ip`` command names it)."""
    head = f"route get {server} from {client} iif {lan}"
    return "".join(f"{head} ipproto tcp sport {sp} dport {dp}\n" for sp, dp in pairs)


def family_ends(lab: LabLike, family: int) -> tuple[str, str]:
    """(inet server, LAN client) addresses of a load of IP version `family`; LoadError
    when the lab has none of that version."""
    if family == 4:
        return lab.spec.server_addresses[0], lab.clients[0]
    if family != 6:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    if not lab.spec.server_addresses6 or not lab.spec.client_addresses6:
        raise LoadError("the lab has no IPv6 server or no IPv6 on the LAN")
    return (lab.spec.server_addresses6[0],
            str(ip_interface(lab.spec.client_addresses6[0]).ip))


# ------------------------------------------------------------ client hash reset (eBPF)

CLEAR_HASH = "lab_clearhash"


def _clear_hash_prog() -> int:
    """BPF_PROG_LOAD of ``bpf_set_hash_invalid(skb); return TC_ACT_OK`` -> its fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    code = b"".join(struct.pack("<BBhi", op, 0, 0, imm) for op, imm in ((0x85, 41), (0xB7, 0),
                                                                        (0x95, 0)))
    insns, lic = ctypes.create_string_buffer(code), ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16s", 3, 3, ctypes.addressof(insns), ctypes.addressof(lic),
                       0, 0, 0, 0, 0, CLEAR_HASH.encode())  # 3 = BPF_PROG_TYPE_SCHED_CLS
    buf = ctypes.create_string_buffer(attr.ljust(144, b"\0"), 144)
    nr = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), -1)
    fd = libc.syscall(nr, 5, buf, 144)  # 5 = BPF_PROG_LOAD
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"BPF_PROG_LOAD: {os.strerror(ctypes.get_errno())}")
    return fd


def reset_client_hash(lab: LabLike) -> bool:
    """Clear the socket hash of every packet leaving the LAN client (tc egress program on
    its ``eth0``), so the router hashes flows by 5-tuple; False (logged) if impossible."""
    shown = lab.run(lab.ns_lan, "tc", "filter", "show", "dev", "eth0", "egress", check=False)
    if CLEAR_HASH in shown.stdout:
        return True
    try:
        from pyroute2 import IPRoute, NetlinkError
        fd = _clear_hash_prog()
        try:
            with IPRoute(netns=lab.ns_lan) as ipr:
                idx = ipr.link_lookup(ifname="eth0")[0]
                try:
                    ipr.tc("add", "clsact", idx)
                except NetlinkError:
                    pass  # already there
                ipr.tc("add-filter", "bpf", idx, ":1", fd=fd, name=CLEAR_HASH,
                       parent="ffff:fff3", classid=1, direct_action=True)
        finally:
            os.close(fd)
        return True
    except Exception as exc:  # noqa: BLE001 - fall back to placement by retries
        log.warning("cannot reset the client's hash (%s): streams are placed by retries", exc)
        return False


# ------------------------------------------------------------ the load generator

@dataclass(frozen=True)
class StreamResult:
    """One iperf3 stream of a `Load`: ``download`` (server -> LAN, -R) or ``upload``."""

    direction: str
    wan: str | None  # of the data connection: the source address the server saw
    control_wan: str | None  # of iperf3's control connection (used at start and end)
    port: int
    cport: int
    bytes: int  # what the receiver got (see `parse_iperf3`)
    seconds: float
    broken: bool  # never started, iperf3 error (reset, timeout) or no report in time
    error: str | None = None
    attempts: int = 1

    @property
    def mbit(self) -> float:
        """Goodput in Mbit/s."""
        return self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class _Stream:
    direction: str
    want: str | None
    port: int
    cports: list[int]
    proc: subprocess.Popen | None = None
    out: IO[bytes] | None = None
    cport: int = 0
    attempts: int = 0
    started: float = 0.0
    wan: str | None = None
    control_wan: str | None = None
    state: str = "connecting"  # then running or failed
    error: str | None = None


class Load:
    """iperf3 streams between the LAN client and the inet namespace (`Load.start`)."""

    ATTEMPT_S = 10.0  # longest wait for one attempt (a full 1 s buffer slows handshakes)

    def __init__(self, lab: LabLike, seconds: float, predict: bool, family: int = 4) -> None:
        self.lab, self.seconds, self.predict = lab, seconds, predict
        self.family = family
        self.server, self.client = family_ends(lab, family)
        self._ip = ["ip", "-6"] if family == 6 else ["ip"]
        self.streams: list[_Stream] = []
        self.servers: list[subprocess.Popen] = []
        self._stopped = False
        self._results: list[StreamResult] | None = None

    @classmethod
    def start(cls, lab: LabLike, wans: Sequence[str] | None = None, download: bool = True,
              upload: bool = True, streams_per_wan: int = 1, seconds: float = 10,
              pin: bool = True, congestion: str | None = "reno", connect_timeout: float = 30,
              idle_timeout: float = 10, family: int = 4) -> "Load":
        """Start `streams_per_wan` streams per direction on each of `wans` (default all).

        With `pin` each stream is placed on its WAN (module docstring; this resets the
        client's socket hash for good); without, the same number of streams go where the
        router puts them.  Streams run `seconds` (iperf3 ``-t``, whole seconds) with TCP
        `congestion` (None: the namespace's).  Returns once every stream runs or failed
        to start (`connect_timeout`); failures are reported in the results.  `family`
        6: the streams are IPv6 (module docstring); the WANs must carry IPv6.
        """
        names = list(wans) if wans is not None else [w.name for w in lab.spec.wans]
        family_ends(lab, family)
        for n in names:
            if not lab.spec.wan(n).has6 and family == 6:
                raise LoadError(f"WAN {n} carries no IPv6")
        dirs = [d for d, on in (("download", download), ("upload", upload)) if on]
        if not dirs or streams_per_wan < 1 or not names:
            raise ValueError("nothing to start: no direction, WAN or stream")
        if lab.run(lab.ns_lan, "iperf3", "--version", check=False).returncode != 0:
            raise LoadError("iperf3 is not installed (Debian package iperf3)")
        load = cls(lab, seconds, pin and reset_client_hash(lab), family)
        if pin and not load.predict:  # an RTO must not re-hash a placed stream elsewhere
            lab.run(lab.ns_lan, "sysctl", "-q", "-w", "net.core.txrehash=0")
        used = parse_listening(lab.run(lab.ns_inet, "ss", "-Hltn").stdout)
        ports = (p for p in range(5201, 65536) if p not in used)
        load.streams = [_Stream(d, n if pin else None, next(ports), [])
                        for d in dirs for n in names for _ in range(streams_per_wan)]
        try:
            load._plan_ports(names if pin else [])
            load.servers = [lab.popen(lab.ns_inet, "iperf3", "-s", "-p", str(s.port),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                            for s in load.streams]
            load._wait_listening()
            load._connect(math.ceil(seconds), congestion, connect_timeout, idle_timeout)
        except BaseException:
            load.stop()
            raise
        return load

    def route_get(self, pairs: Sequence[tuple[int, int]]) -> list[str | None]:
        """The router's WAN (output device) for LAN TCP flows (sport, dport) to the server."""
        lab = self.lab
        cmds = route_get_script(self.server, self.client, lab.spec.lan_interface, pairs)
        out = lab.run(lab.ns_router, *self._ip, "-force", "-batch", "-", input=cmds,
                      check=False).stdout
        devs = re.findall(r"\sdev (\S+)", out)
        return list(devs) if len(devs) == len(pairs) else [None] * len(pairs)

    def _plan_ports(self, wans: list[str]) -> None:
        """Candidate client ports per stream, those routed to its WAN first; LoadError when
        the router has no route, or a wanted WAN is none of its nexthops."""
        lab = self.lab
        probe = lab.run(lab.ns_router, *self._ip, "route", "get", self.server, "from",
                        self.client, "iif", lab.spec.lan_interface, check=False)
        if probe.returncode != 0:
            raise LoadError(f"the router does not route the LAN to {self.server} ("
                            f"{probe.stderr.strip()}): start ecmpd, or add a default route "
                            "and enable forwarding")
        for s in self.streams:
            s.cports = random.sample(range(20000, 32000), 64)
        devs = self.route_get([(p, s.port) for s in self.streams for p in s.cports])
        seen = {d for d in devs if d}
        if seen and (missing := [w for w in wans if w not in seen]):
            raise LoadError(f"WAN(s) {missing} are not nexthops of the router's route to "
                            f"{self.server} (it uses {sorted(seen)})")
        for i, s in enumerate(self.streams):
            dev = dict(zip(s.cports, devs[i * 64:(i + 1) * 64]))
            s.cports.sort(key=lambda p: dev[p] != s.want)

    def _wait_listening(self, timeout: float = 5) -> None:
        end = time.monotonic() + timeout
        while missing := {s.port for s in self.streams} - parse_listening(
                self.lab.run(self.lab.ns_inet, "ss", "-Hltn").stdout):
            dead = [p.returncode for p in self.servers if p.poll() is not None]
            if dead or time.monotonic() >= end:
                raise LoadError(f"iperf3 servers on {sorted(missing)} not listening ({dead})")
            time.sleep(0.02)

    def _spawn(self, s: _Stream, secs: int, congestion: str | None, idle: float) -> None:
        if s.out is not None:
            s.out.close()
        s.cport = s.cports.pop(0) if s.cports else random.randint(20000, 32000)
        s.attempts += 1
        argv = client_argv(self.server, s.port, s.cport, secs, s.direction, congestion, idle,
                           self.ATTEMPT_S, self.family,
                           self.client if self.family == 6 else None)
        s.out = tempfile.TemporaryFile()
        s.proc = self.lab.popen(self.lab.ns_lan, *argv, stdout=s.out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        s.started = time.monotonic()

    def _verdict(self, s: _Stream, srv: list[tuple[str, int, str, int]], ctl: int | None,
                 predicted: str | None, now: float, end: float) -> str | None:
        """None while connecting or once running (state set); else why to retry."""
        if s.want and predicted and predicted != s.want:
            return f"control connection routed to {predicted}"
        data = [c[2] for c in srv if c[1] == s.port and c[3] == s.cport]
        ctrl = [c[2] for c in srv if c[1] == s.port and c[3] == ctl]
        if data and ctrl:
            wan, cwan = self.lab.wan_of_source(data[0]), self.lab.wan_of_source(ctrl[0])
            if s.want is None or wan == cwan == s.want:
                s.wan, s.control_wan, s.state, s.error = wan, cwan, "running", None
                return None
            return f"landed on {wan} (control on {cwan})"
        if s.proc is not None and s.proc.poll() is not None:
            s.out.seek(0)  # type: ignore[union-attr]
            text = s.out.read().decode(errors="replace")  # type: ignore[union-attr]
            return f"iperf3 exited {s.proc.returncode}: {parse_iperf3(text)[2] or text[-200:]}"
        if now - s.started > self.ATTEMPT_S or now >= end:
            return f"no connection within {min(self.ATTEMPT_S, now - s.started):.1f}s"
        return None

    def _connect(self, secs: int, congestion: str | None, timeout: float, idle: float) -> None:
        end = time.monotonic() + timeout
        routes: dict[tuple[int, int], str | None] = {}
        for s in self.streams:
            self._spawn(s, secs, congestion, idle)
        while pending := [s for s in self.streams if s.state == "connecting"]:
            run = self.lab.run
            srv = parse_ss(run(self.lab.ns_inet, "ss", "-Htn", "state", "established").stdout)
            # The client sees its control connection (ephemeral port) from the SYN on.
            lan = parse_ss(run(self.lab.ns_lan, "ss", "-Htn", "state", "syn-sent",
                               "state", "established").stdout)
            data = {s.port: s.cport for s in pending}
            ctl = {c[3]: c[1] for c in lan if c[3] in data and c[1] != data[c[3]]}
            if self.predict:
                ask = [(sp, dp) for dp, sp in ctl.items() if (sp, dp) not in routes]
                routes.update(zip(ask, self.route_get(ask)))
            now = time.monotonic()
            for s in pending:
                pred = routes.get((ctl.get(s.port, 0), s.port))
                if (retry := self._verdict(s, srv, ctl.get(s.port), pred, now, end)) is None:
                    continue
                terminate(s.proc, 5, signal.SIGKILL)
                log.debug("stream %s:%d attempt %d: %s", s.direction, s.port, s.attempts, retry)
                if "parameter error" in retry or now >= end:
                    s.state, s.error = "failed", (f"not started on {s.want or 'any WAN'} "
                                                  f"({s.attempts} attempts): {retry}")
                else:
                    time.sleep(0.05 if "exited" in retry else 0)  # e.g. "server is busy"
                    self._spawn(s, secs, congestion, idle)
            time.sleep(0.01)

    @property
    def wans(self) -> list[str | None]:
        """The WAN of each stream's data connection (None: not started)."""
        return [s.wan for s in self.streams]

    def wait(self, timeout: float | None = None) -> list[StreamResult]:
        """Wait for the streams to end (deadline: `seconds` + 15 s); their results.  A
        stream still running at the deadline is interrupted and reported broken."""
        if self._results is None:
            end = time.monotonic() + (timeout if timeout is not None else self.seconds + 15)
            for s in self.streams:
                if s.state == "running" and s.proc is not None:
                    try:
                        s.proc.wait(max(0.0, end - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        terminate(s.proc, 3, signal.SIGINT)
                        s.error = "no result by the deadline"
            self._finish()
        assert self._results is not None
        return self._results

    def stop(self, timeout: float = 10) -> list[StreamResult]:
        """End every stream now (iperf3 reports what it got so far); the results."""
        if self._results is None:
            self._stopped = True
            for s in self.streams:
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def _finish(self) -> None:
        results = []
        for s in self.streams:
            terminate(s.proc, 5, signal.SIGKILL)
            nbytes, secs, err = 0, 0.0, s.error
            if s.state == "running" and s.out is not None:
                s.out.seek(0)
                nbytes, secs, err = parse_iperf3(s.out.read().decode(errors="replace"))
                err = s.error or err
            if self._stopped and err and "interrupt" in err:
                err = None  # our own stop()
            if s.out is not None:
                s.out.close()
            results.append(StreamResult(s.direction, s.wan, s.control_wan, s.port, s.cport,
                                        nbytes, secs, s.state != "running" or err is not None,
                                        err, s.attempts))
        for p in self.servers:
            terminate(p, 2)
        self._results = results
