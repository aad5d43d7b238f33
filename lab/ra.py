"""IPv6 router advertisements from a lab ISP: dnsmasq on the ISP's customer link.

`RaServer` runs (Debian ``dnsmasq-base``, inside the ISP's namespace, under `Lab.popen`)::

    dnsmasq --no-daemon --port=0 --enable-ra --dhcp-range=::,constructor:cust,ra-stateless,64

with its own pid, lease and log files in a temporary directory.  The advertisements come
from the ISP's link-local address (`Lab.isp_link_local`, ``fe80::1`` by default) and
announce the WAN's /64 (``cust`` has its global address, as ``constructor:`` needs).

What the router's kernel does with them is the router's business: with
``net.ipv6.conf.<wan>.forwarding=1`` it needs ``accept_ra=2`` to take them, and then
installs ``default via fe80::… dev <wan> proto ra`` in table main (plus a SLAAC address
in the /64).  Set ``accept_ra=2`` before ``forwarding=1``: turning forwarding on purges
the RA default routes of every interface whose ``accept_ra`` is not 2.

The ISP's router changes (`change_link_local`): the running dnsmasq says goodbye (an
advertisement with router lifetime 0, as RFC 4861 6.2.5 asks of a router that stops;
dnsmasq itself sends none when it exits, so a short second dnsmasq with
``--ra-param=cust,0,0`` does), the ISP's link-local address is replaced and dnsmasq
starts again from the new one.  ``goodbye=False`` is the rude case: the old router
just vanishes and the router keeps its stale route until the lifetime runs out.

Measured here (dnsmasq 2.90): the first advertisement leaves about 1 s after the start;
the router's route appears within ~1.7 s; a goodbye removes it in ~1 s.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lab import netns
from lab.isp import CUST
from lab.wait import until

if TYPE_CHECKING:
    from lab.base import LabLike

SENT = b"RTR-ADVERT("
"""dnsmasq's log line for each advertisement it sends."""
READY = b"IPv6 router advertisement enabled"


def ra_argv(iface: str, workdir: str, run: int, interval: int = 0,
            lifetime: int | None = None) -> list[str]:
    """dnsmasq as a stateless RA server on `iface` (files ``<workdir>/*.<run>``).

    `interval`: seconds between unsolicited advertisements (0: dnsmasq's default, 600 s
    at most, answering solicitations at once); `lifetime`: router lifetime in seconds
    (None: dnsmasq's default; 0: "not a default router")."""
    argv = ["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--interface={iface}", "--enable-ra",
            f"--dhcp-range=::,constructor:{iface},ra-stateless,64",
            f"--pid-file={workdir}/dnsmasq.pid.{run}",
            f"--dhcp-leasefile={workdir}/dnsmasq.leases.{run}", "--log-facility=-",
            "--log-dhcp"]
    if interval or lifetime is not None:
        param = f"--ra-param={iface},{interval}"
        argv.append(param if lifetime is None else f"{param},{lifetime}")
    return argv


class RaServer:
    """Router advertisements on `wan`'s customer link (see the module docstring)."""

    def __init__(self, lab: LabLike, wan: str, *, interval: int = 0,
                 lifetime: int | None = None,
                 workdir: str | os.PathLike[str] | None = None) -> None:
        self.lab = lab
        self.wan = wan
        w = lab.spec.wan(wan)
        if w.kind != "ether" or not w.has6:
            raise ValueError(f"{wan} has no IPv6 customer link to advertise on")
        if interval < 0 or (lifetime is not None and not 0 <= lifetime <= 9000):
            raise ValueError("interval must be >= 0 and lifetime in 0..9000 s")
        self.interval, self.lifetime = interval, lifetime
        self._tmp = tempfile.TemporaryDirectory(prefix="ecmpd-ra-") if workdir is None else None
        self.workdir = Path(self._tmp.name if self._tmp else workdir)  # type: ignore[arg-type]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self._runs = itertools.count(1)
        self.log_path: Path | None = None
        """The running (or last) dnsmasq's log."""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log(self, path: Path | None) -> bytes:
        try:
            return path.read_bytes() if path else b""
        except OSError:
            return b""

    def advertisements(self) -> int:
        """How many advertisements the running (or last) dnsmasq sent so far."""
        return self._log(self.log_path).count(SENT)

    def _spawn(self, lifetime: int | None, timeout: float) -> tuple[subprocess.Popen, Path]:
        run = next(self._runs)
        path = self.workdir / f"dnsmasq.log.{run}"
        argv = ra_argv(CUST, str(self.workdir), run, self.interval, lifetime)
        with open(path, "wb") as log:
            proc = self.lab.popen(self.lab.ns_isp(self.wan), *argv, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        until(lambda: READY in self._log(path) or proc.poll() is not None, timeout,
              lambda _: f"{self.wan}: dnsmasq (RA) not ready within {timeout}s: "
                        f"{self._log(path)[-1500:]!r}", interval=0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq (RA) exited {proc.returncode}: {self._log(path)[-1500:]!r}")
        return proc, path

    def start(self, timeout: float = 5.0) -> "RaServer":
        """Start advertising (no-op when running); returns once dnsmasq is ready (its first
        advertisement follows within about a second: `wait_sent`)."""
        if not self.running:
            self.proc, self.log_path = self._spawn(self.lifetime, timeout)
        return self

    def wait_sent(self, count: int = 1, timeout: float = 5.0) -> int:
        """Wait until the running dnsmasq sent at least `count` advertisements."""
        return until(lambda: (n := self.advertisements()) >= count and n, timeout,
                     f"{count} router advertisements from {self.wan}'s ISP")

    def stop(self, goodbye: bool = False, timeout: float = 5.0) -> None:
        """Stop advertising.  `goodbye`: then send an advertisement with router lifetime 0
        from the current link-local address (the router drops its RA default route)."""
        netns.terminate(self.proc)
        self.proc = None
        if goodbye:
            proc, path = self._spawn(0, timeout)
            try:
                until(lambda: SENT in self._log(path), timeout,
                      f"a goodbye advertisement from {self.wan}'s ISP")
            finally:
                netns.terminate(proc)

    def change_link_local(self, address: str, goodbye: bool = True,
                          timeout: float = 5.0) -> None:
        """The ISP's router changes: stop (saying goodbye unless told not to), take
        link-local `address` on ``cust`` (`Lab.set_isp_link_local`), start again."""
        self.stop(goodbye, timeout)
        self.lab.set_isp_link_local(self.wan, address)
        self.start(timeout)

    def close(self) -> None:
        """Stop (no goodbye) and remove the temporary work directory.  Idempotent."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
