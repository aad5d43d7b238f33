"""A point-to-point ISP in the lab: a PPP-like link made of two tun devices and a relay.

There is no ppp driver here (no ``/dev/ppp``, no pppoe), but PPPoE's ``ppp0`` and an LTE
modem in raw-ip mode look the same to routing: a POINTOPOINT + NOARP device without a
gateway (the nexthop is the device), ``inet <local> peer <remote>``, which appears when
the session connects and vanishes when it ends, with a new address on every reconnect.
A tun device is exactly that kind of device, so a session here is:

* the router's tun, named like the WAN (e.g. ``ppp0``), and the ISP's tun, named
  ``cust`` like the Ethernet ISPs' customer link (so `Lab.fault` ``dead``/``upstream``,
  `Lab.set_loss` and the BCP38 table work on it unchanged), both opened by one relay
  process: ``python -m lab.ptp relay`` starts in the router namespace under
  `Lab.popen`, opens its tun there, enters the ISP namespace (``setns``) and opens the
  other; two threads copy packets between the two file descriptors;
* "connect": the ISP side gets ``<gateway> peer <customer>/32`` (so the ISP routes the
  customer address to its tun) and BCP38 for that one address, then the router side gets
  ``<customer> peer <gateway>``, the MTU (1492, PPPoE's) and goes up;
* "disconnect": the relay ends; both tun devices vanish with it (they are not
  persistent), and so do their addresses and routes.

Build such a WAN with ``LabWan(..., kind="ptp")``: the lab then wires its ISP to the
internet namespace as usual (transit link, inet route to the WAN's subnet, which is the
ISP's address pool) but creates no customer veth and gives the router nothing.  While
connected, `Lab.fault` ``dead``/``upstream`` and `Lab.set_loss` work as on any WAN; the
``carrier`` fault does not (a tun's carrier is its open fd): `PtpWan.disconnect` is the
ptp WAN's carrier loss, and `Lab.heal` needs the session up (it sets ``cust`` up).

Measured here (2 shared cores): one iperf3 TCP stream between the router and the inet
namespace runs at 1.1-3.0 Gbit/s through the relay either way (through a veth WAN:
11-17 Gbit/s); 100-byte UDP gets ~80-100 k packets/s through, beyond that the tun queue
drops.  Far above the lab's shaped lines, but not a line-rate WAN.  `PtpWan.connect`
takes 0.12-0.21 s (mostly the relay's Python start), `disconnect` 35-75 ms.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from lab import driver, netns
from lab.isp import CUST, bcp38_script
from lab.wait import until

if TYPE_CHECKING:
    from lab.base import LabLike

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
PPPOE_MTU = 1492
"""PPPoE's MTU (1500 minus the 8-byte PPPoE + PPP header)."""
BUFSIZE = 65536


# ------------------------------------------------------------ the relay (in the namespaces)

def open_tun(name: str) -> int:
    """Create tun device `name` (IFF_TUN, no packet info) in the current namespace; its fd.
    The device lives as long as the fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def enter_netns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _pump(src: int, dst: int) -> None:
    """Copy packets from fd `src` to fd `dst` until `src` ends or fails."""
    read, write = os.read, os.write
    while True:
        try:
            pkt = read(src, BUFSIZE)
        except OSError:
            return
        if not pkt:
            return
        try:
            write(dst, pkt)
        except OSError:  # e.g. EIO while the other side is down: the packet is lost
            pass


def relay(a: int, b: int) -> None:
    """Copy packets between tun fds `a` and `b`, one thread per direction; returns when
    either side ends (normally the process is killed first)."""
    done = threading.Event()

    def run(src: int, dst: int) -> None:
        try:
            _pump(src, dst)
        finally:
            done.set()

    for fds in ((a, b), (b, a)):
        threading.Thread(target=run, args=fds, daemon=True).start()
    done.wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.ptp relay --ifname N --peer-netns PATH --peer-ifname M``."""
    p = argparse.ArgumentParser(prog="python -m lab.ptp", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay", help="create both tun devices and relay between them")
    r.add_argument("--ifname", required=True, help="tun device here (the router's)")
    r.add_argument("--peer-netns", required=True, help="path of the other namespace")
    r.add_argument("--peer-ifname", required=True, help="tun device there (the ISP's)")
    a = p.parse_args(argv)
    here = open_tun(a.ifname)
    enter_netns(a.peer_netns)
    there = open_tun(a.peer_ifname)
    print("ready", flush=True)
    relay(here, there)
    return 0


# ------------------------------------------------------------ the lab side

@dataclass(frozen=True)
class PtpSession:
    """One connected session of a point-to-point WAN."""

    ifname: str
    """The router's device, e.g. ``ppp0``."""
    address: str
    """The router's (customer) address, no prefix length."""
    peer: str
    """The ISP's address at the other end (not a gateway: the route is ``dev ifname``)."""
    mtu: int
    connected: float
    """Epoch time when both ends were up."""


class PtpWan:
    """Connects, disconnects and reconnects the session of a ``kind="ptp"`` lab WAN."""

    def __init__(self, lab: LabLike, wan: str, mtu: int = PPPOE_MTU) -> None:
        self.lab = lab
        self.wan = wan
        self.spec = lab.spec.wan(wan)
        if self.spec.kind != "ptp":
            raise ValueError(f"{wan} is not a point-to-point lab WAN (LabWan kind='ptp')")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"bad MTU {mtu}")
        self.mtu = mtu
        self.session: PtpSession | None = None
        self.proc: subprocess.Popen | None = None
        self._last: str | None = None

    @property
    def connected(self) -> bool:
        """Whether a session is up (its relay is running)."""
        return self.proc is not None and self.proc.poll() is None

    def _check_address(self, address: str) -> str:
        ip = IPv4Address(address.split("/")[0])
        net = self.spec.network
        if ip not in net or ip in (net.network_address, net.broadcast_address) \
                or str(ip) == self.spec.gateway:
            raise ValueError(f"{ip} is not a customer address of {self.wan}'s pool {net} "
                             f"(gateway {self.spec.gateway})")
        return str(ip)

    def next_address(self) -> str:
        """A pool address other than the last session's (the next one, wrapping)."""
        net = self.spec.network
        hosts = [str(h) for h in net.hosts() if str(h) != self.spec.gateway]
        cur = self._last or str(self.spec.interface.ip)
        i = hosts.index(cur) if cur in hosts else -1
        return hosts[(i + 1) % len(hosts)]

    def connect(self, address: str | None = None, timeout: float = 5.0,
                defaultroute: int | None = None) -> PtpSession:
        """Bring the session up with `address` (default: the WAN's spec address).

        `defaultroute`: also add ``default dev <wan> metric N`` in the router's main
        table, as pppd's ``defaultroute`` option does (None: no route, the default)."""
        if self.connected:
            raise RuntimeError(f"{self.wan} is connected already; disconnect first")
        addr = self._check_address(address or str(self.spec.interface.ip))
        isp = self.lab.ns_isp(self.wan)
        err = tempfile.TemporaryFile()
        proc = self.lab.popen(
            self.lab.ns_router, sys.executable, "-m", "lab.ptp", "relay",
            "--ifname", self.wan, "--peer-netns", str(netns.NETNS_DIR / isp),
            "--peer-ifname", CUST, stdout=subprocess.PIPE, stderr=err,
            stdin=subprocess.DEVNULL, env=driver.tool_env())
        proc._lab_stderr = err  # type: ignore[attr-defined]
        self.proc = proc
        try:
            driver.LineReader(proc).wait_line("ready", timeout)
            gw = self.spec.gateway
            netns.nft(isp, bcp38_script(f"{addr}/32"))
            netns.ip_batch(isp, [f"link set dev {CUST} mtu {self.mtu}",
                                 f"addr add {gw}/32 peer {addr}/32 dev {CUST}",
                                 f"link set dev {CUST} up"])
            cmds = [f"link set dev {self.wan} mtu {self.mtu}",
                    f"addr add {addr}/32 peer {gw}/32 dev {self.wan}",
                    f"link set dev {self.wan} up"]
            if defaultroute is not None:
                cmds.append(f"route add default dev {self.wan} metric {defaultroute}")
            netns.ip_batch(self.lab.ns_router, cmds)
            self.lab.wait_carrier([self.wan], True, timeout)
        except BaseException:
            self._end()
            raise
        self.session = PtpSession(self.wan, addr, gw, self.mtu, time.time())
        self._last = addr
        return self.session

    def _end(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        netns.terminate(proc, timeout)

    def disconnect(self, timeout: float = 5.0) -> None:
        """End the session: the relay exits, the router's device (and the ISP's) vanish.
        Idempotent."""
        self._end(timeout)
        self.session = None
        until(lambda: not self.device_exists(), timeout,
              lambda _: f"{self.wan} still exists {timeout}s after the disconnect", interval=0.01)

    def reconnect(self, address: str | None = None, timeout: float = 5.0,
                  defaultroute: int | None = None) -> PtpSession:
        """Disconnect (if connected) and connect again with `address` (default: a NEW
        address, `next_address`)."""
        new = address or self.next_address()
        self.disconnect(timeout)
        return self.connect(new, timeout, defaultroute)

    def device_exists(self, side: str = "router") -> bool:
        """Whether the session's device exists right now: the router's (named like the
        WAN) or, with `side` ``isp``, the ISP's ``cust``."""
        if side not in ("router", "isp"):
            raise ValueError(f"side must be router or isp, not {side!r}")
        ns, dev = ((self.lab.ns_router, self.wan) if side == "router"
                   else (self.lab.ns_isp(self.wan), CUST))
        return netns.ip(ns, "link", "show", "dev", dev, check=False).returncode == 0

if __name__ == "__main__":
    sys.exit(main())
