"""A DHCP ISP in the lab: dnsmasq serves a WAN's customer link, udhcpc runs on the router.

Real uplinks learn their address and gateway from DHCP.  `DhcpWan` makes a lab WAN one:

* the ISP runs ``dnsmasq`` (Debian ``dnsmasq-base``) on ``cust`` as a DHCP server only
  (``--port=0``: no DNS), handing out one address (the WAN's, or the one asked for) with
  option 3 = the gateway; ``--no-ping`` (otherwise dnsmasq pings an address for up to 3 s
  before offering it), ``--dhcp-authoritative`` (a renewal for an address it does not
  know is ACKed or NAKed at once, never ignored).  dnsmasq raises any lease time below
  2 minutes to 2 minutes (checked: ``30s`` -> ``lease time 2m``), so `lease_s` >= 120.
* the router runs busybox ``udhcpc -f -i <wan> -s <script>`` (Debian ``udhcpc``) with a
  script of ours (`SCRIPT`) that applies a lease the way ifupdown + dhclient-script do:
  on a new address flush the old one and add it, and put ``default via <router option>``
  in table `table` at metric `metric` (0 in main like dhclient; 100+ like NetworkManager
  or systemd-networkd), with ``proto dhcp``.  Only our own default route on that
  interface is ever deleted; when another default already sits at the same table and
  metric the ``ip route add`` fails as it would for dhclient, and the event's ``error``
  says so.  udhcpc rather than dhclient: dhclient's script rewrites the host's
  /etc/resolv.conf and runs the host's hook directories (namespaces share the file
  system), while udhcpc runs exactly our script, renews on SIGUSR1 and releases on
  SIGUSR2.

Every script run appends one JSON line to ``events.jsonl`` in the work directory
(`DhcpEvent`: the event, address, gateway, lease time, server, and when it was applied),
so tests see what the client did and when.

The ISP's BCP38 table (`lab.isp.BCP38_TABLE`) is replaced by one that also lets
DHCP from ``0.0.0.0`` (udp 68 -> 67) in, as an ISP's DHCP snooping does; everything else
from outside the customer subnet is still dropped.  Addresses and gateways stay inside
the WAN's subnet (`LabWan.network`), so BCP38, the inet routes and
`Lab.wan_of_source` stay right.

Measured here (dnsmasq 2.90, busybox 1.35, 5 runs, min/median/max): `start` returns
after 0.12/0.13/0.18 s (udhcpc start to applied lease: ~0.08 s); `renew` ~20 ms; a gateway
move (old address removed at once, SIGUSR1) 1.08/1.10/1.30 s: udhcpc's unicast renewal
to the old server address goes unanswered and it rebinds by broadcast after `retry_s`;
with ``keep_old=True`` 0.03/0.04/0.13 s; an address change 3.11/3.14/3.68 s, because
after the NAK udhcpc deconfigures (no address, no route) and sleeps a fixed 3 s before it
discovers again; `release` ~10 ms.

Two busybox quirks: about one unicast renewal in four misses its ACK although the ACK is
on the wire 0.2 ms after the request (most likely it reaches udhcpc's sending socket,
which is closed right after the send), so such a renewal takes `retry_s` longer (udhcpc
then rebinds by broadcast); and udhcpc keeps unicasting renewals to the server of its
last OFFER, not to the ACK's server identifier.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab import netns
from lab.isp import BCP38_TABLE, CUST
from lab.wait import until

if TYPE_CHECKING:
    from lab.base import LabLike

MIN_LEASE_S = 120
"""dnsmasq's shortest lease: anything shorter is raised to this."""

SCRIPT = r"""#!/bin/sh
# udhcpc event script written by lab.dhcp: applies a lease as ifupdown + dhclient do
# and appends one JSON line per event to $LAB_EVENTS.  From udhcpc: $1 (deconfig, bound,
# renew, nak, leasefail), $interface $ip $mask $router $lease $serverid.  From the lab:
# LAB_EVENTS LAB_TABLE LAB_METRIC LAB_PROTO LAB_LIFETIME (1: addresses expire with the lease).
ev=$1
tbl=${LAB_TABLE:-main}
err=
drop_defaults() {  # every default route of ours on this interface, whatever the gateway
    n=0
    while [ $n -lt 32 ] && ip -4 route del 0.0.0.0/0 dev "$interface" table "$tbl" \
            proto "$LAB_PROTO" 2>/dev/null; do n=$((n + 1)); done
}
case "$ev" in
deconfig)
    drop_defaults
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound|renew)
    new="$ip/${mask:-32}"
    have=$(ip -4 -o addr show dev "$interface" | awk '{print $4}')
    [ "$have" = "$new" ] || ip -4 addr flush dev "$interface"
    lft=
    [ "${LAB_LIFETIME:-0}" = 1 ] &&
        lft="valid_lft ${lease:-forever} preferred_lft ${lease:-forever}"
    err=$(ip -4 addr replace "$new" broadcast + dev "$interface" $lft 2>&1)
    gw=${router%% *}
    if [ -z "$gw" ]; then
        drop_defaults
    elif [ -z "$(ip -4 -o route show table "$tbl" exact 0.0.0.0/0 via "$gw" dev "$interface" \
                 proto "$LAB_PROTO")" ]; then
        drop_defaults
        err="$err$(ip -4 route add 0.0.0.0/0 via "$gw" dev "$interface" metric "$LAB_METRIC" \
                   table "$tbl" proto "$LAB_PROTO" 2>&1)"
    fi
    ;;
esac
err=$(printf '%s' "$err" | tr -d '"\\' | tr '\n\t' '  ')
fmt='{"event":"%s","ip":"%s","mask":"%s","router":"%s","lease":"%s","serverid":"%s",'
printf "$fmt"'"error":"%s","t":%s}\n' \
    "$ev" "${ip:-}" "${mask:-}" "${router:-}" "${lease:-}" "${serverid:-}" "$err" \
    "$(date +%s.%N)" >> "$LAB_EVENTS"
"""


@dataclass(frozen=True)
class DhcpEvent:
    """One run of the client's script, as it recorded it."""

    kind: str
    """``deconfig``, ``bound``, ``renew``, ``nak`` or ``leasefail`` (udhcpc's names)."""
    address: str | None
    """The leased address with prefix length, e.g. ``10.111.0.2/24`` (bound/renew)."""
    gateway: str | None
    """The first router option (None: the lease had none)."""
    lease_s: int | None
    server: str | None
    """The DHCP server identifier."""
    error: str | None
    """What ``ip`` said when applying failed (e.g. another default at that table and
    metric: ``File exists``).  Not raised: the operations return the event, check it."""
    applied: float
    """Epoch time (`time.time()`) when the script had applied it."""

    @property
    def ip(self) -> str | None:
        """The leased address without prefix length."""
        return self.address.split("/")[0] if self.address else None


def parse_events(text: str) -> list[DhcpEvent]:
    """The events of an ``events.jsonl`` (incomplete or broken lines are skipped)."""
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        ip, mask = d.get("ip") or None, d.get("mask") or None
        lease = d.get("lease") or None
        out.append(DhcpEvent(
            d.get("event", ""), f"{ip}/{mask or 32}" if ip else None,
            (d.get("router") or "").split(" ")[0] or None,
            int(lease) if lease and str(lease).isdigit() else None,
            d.get("serverid") or None, d.get("error") or None, float(d.get("t", 0))))
    return out


def dhcp_bcp38_script(customer_net: str) -> str:
    """The ISP's BCP38 table for a DHCP customer: DHCP from 0.0.0.0 in, else the subnet."""
    net = IPv4Network(customer_net)
    return (f"add table ip {BCP38_TABLE}\ndelete table ip {BCP38_TABLE}\n"
            f"table ip {BCP38_TABLE} {{\n"
            "  chain bcp38 {\n"
            "    type filter hook prerouting priority -300; policy accept;\n"
            f'    iifname "{CUST}" ip saddr 0.0.0.0 ip daddr 255.255.255.255 '
            "udp sport 68 udp dport 67 accept\n"
            f'    iifname "{CUST}" ip saddr != {net} counter drop\n'
            "  }\n}\n")


def dnsmasq_argv(iface: str, first: str, last: str, netmask: str, gateway: str, lease_s: int,
                 leasefile: str, pidfile: str) -> list[str]:
    """dnsmasq as a DHCP-only server on `iface`: range `first`..`last`, option 3 `gateway`."""
    return ["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--interface={iface}", "--bind-interfaces",
            f"--dhcp-range={first},{last},{netmask},{lease_s}s",
            f"--dhcp-option=3,{gateway}", f"--dhcp-leasefile={leasefile}",
            f"--pid-file={pidfile}", "--dhcp-authoritative", "--no-ping",
            "--log-facility=-"]


def udhcpc_argv(iface: str, script: str, retry_s: int = 1) -> list[str]:
    """busybox udhcpc in the foreground on `iface` with `script`; retries every `retry_s`."""
    return ["udhcpc", "-f", "-i", iface, "-s", script, "-T", str(retry_s), "-t", "5",
            "-A", str(max(1, retry_s))]


class DhcpWan:
    """A lab WAN that gets its address and gateway from its ISP's DHCP server.

    `start` removes the router's static address from the WAN, starts dnsmasq in the ISP
    and udhcpc on the router and returns the applied lease.  Every process runs under
    `Lab.popen` (killed on teardown); files live in `workdir` (default: a temporary
    directory removed by `stop` or when this object goes away).
    """

    def __init__(self, lab: LabLike, wan: str, *, metric: int = 0, table: int | str = "main",
                 proto: str = "dhcp", lease_s: int = MIN_LEASE_S, address: str | None = None,
                 gateway: str | None = None, lifetimes: bool = False, retry_s: int = 1,
                 workdir: str | os.PathLike[str] | None = None) -> None:
        self.lab = lab
        self.wan = wan
        self.spec = lab.spec.wan(wan)
        if self.spec.kind != "ether":
            raise ValueError(f"{wan} is not an Ethernet WAN: DHCP needs the customer veth")
        if lease_s < MIN_LEASE_S:
            raise ValueError(f"lease_s must be >= {MIN_LEASE_S} (dnsmasq's minimum), not {lease_s}")
        if not 0 <= metric <= 0xFFFFFFFF or retry_s < 1:
            raise ValueError("metric must be a u32 and retry_s >= 1")
        self.metric, self.table, self.proto = metric, str(table), proto
        self.lease_s, self.lifetimes, self.retry_s = lease_s, lifetimes, retry_s
        self.address = self._in_subnet(address or str(self.spec.interface.ip), "address")
        self.gateway = self._in_subnet(gateway or self.spec.gateway, "gateway")
        self._check_distinct(self.address, self.gateway)
        self._tmp = tempfile.TemporaryDirectory(prefix="ecmpd-dhcp-") if workdir is None else None
        self.workdir = Path(self._tmp.name if self._tmp else workdir)  # type: ignore[arg-type]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events_path = self.workdir / "events.jsonl"
        self.leasefile = self.workdir / "dnsmasq.leases"
        self.script = self.workdir / "udhcpc.script"
        self.server: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None

    # ------------------------------------------------------------ helpers

    @property
    def network(self) -> IPv4Network:
        """The customer subnet (the WAN's)."""
        return self.spec.network

    def _in_subnet(self, addr: str, what: str) -> str:
        ip = IPv4Address(addr.split("/")[0])
        net = self.spec.network
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"{what} {ip} is not a host address of {self.wan}'s subnet {net}")
        return str(ip)

    @staticmethod
    def _check_distinct(address: str, gateway: str) -> None:
        if address == gateway:
            raise ValueError(f"address and gateway are both {address}")

    def _log(self, name: str) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def _isp(self, *args: str) -> None:
        netns.ip(self.lab.ns_isp(self.wan), *args)

    # ------------------------------------------------------------ processes

    def _start_server(self) -> None:
        net = self.network
        argv = dnsmasq_argv(CUST, self.address, self.address, str(net.netmask), self.gateway,
                            self.lease_s, str(self.leasefile), str(self.workdir / "dnsmasq.pid"))
        path = self.workdir / "dnsmasq.log"
        log = open(path, "ab")
        try:
            start = log.tell()  # the log is appended over restarts: wait for this run's line
            server = self.server = self.lab.popen(
                self.lab.ns_isp(self.wan), *argv, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        finally:
            log.close()

        def ready() -> bool:
            with open(path, "rb") as f:
                f.seek(start)
                return b"sockets bound" in f.read() or server.poll() is not None
        self._wait(ready, "dnsmasq start", 5.0)
        if server.poll() is not None:
            raise RuntimeError(f"dnsmasq exited {server.returncode}: {self._log('dnsmasq.log')}")

    def _stop_server(self) -> None:
        netns.terminate(self.server)
        self.server = None

    def _restart_server(self) -> None:
        """dnsmasq has no reload for ranges and options: restart it (leases persist)."""
        self._stop_server()
        self._start_server()

    def _client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LAB_EVENTS=str(self.events_path), LAB_TABLE=self.table,
                   LAB_METRIC=str(self.metric), LAB_PROTO=self.proto,
                   LAB_LIFETIME="1" if self.lifetimes else "0")
        return env

    def _signal_client(self, sig: int) -> None:
        if self.client is None or self.client.poll() is not None:
            raise RuntimeError(f"udhcpc on {self.wan} is not running: {self._log('udhcpc.log')}")
        self.client.send_signal(sig)

    # ------------------------------------------------------------ events

    def events(self) -> list[DhcpEvent]:
        """Every script run so far, oldest first."""
        try:
            return parse_events(self.events_path.read_text())
        except FileNotFoundError:
            return []

    @property
    def lease(self) -> DhcpEvent | None:
        """The lease in force: the last bound/renew event, None after a deconfig."""
        for ev in reversed(self.events()):
            if ev.kind in ("bound", "renew"):
                return ev
            if ev.kind == "deconfig":
                return None
        return None

    def _wait(self, cond: Callable[[], Any], what: str, timeout: float) -> Any:
        return until(cond, timeout, lambda _: f"{self.wan}: no {what} within {timeout}s; "
                     f"udhcpc: {self._log('udhcpc.log')!r}; "
                     f"dnsmasq: {self._log('dnsmasq.log')!r}", interval=0.01)

    def wait_event(self, pred: Callable[[DhcpEvent], bool], after: int = 0, timeout: float = 10.0,
                   what: str = "matching DHCP event") -> DhcpEvent:
        """The first event at index >= `after` for which `pred` holds (TimeoutError)."""
        def found() -> DhcpEvent | None:
            return next((e for e in self.events()[after:] if pred(e)), None)
        return self._wait(found, what, timeout)

    def _wait_lease(self, after: int, timeout: float, what: str,
                    pred: Callable[[DhcpEvent], bool] = lambda e: True) -> DhcpEvent:
        return self.wait_event(lambda e: e.kind in ("bound", "renew") and pred(e), after, timeout,
                               what)

    # ------------------------------------------------------------ operations

    def start(self, timeout: float = 10.0) -> "DhcpWan":
        """Remove the WAN's static address, start server and client, wait for the lease."""
        isp = self.lab.ns_isp(self.wan)
        netns.nft(isp, dhcp_bcp38_script(str(self.network)))
        netns.sysctl(isp, {f"net.ipv4.conf.{CUST}.promote_secondaries": 1})
        netns.ip(self.lab.ns_router, "-4", "addr", "flush", "dev", self.wan)
        self.script.write_text(SCRIPT)
        self.script.chmod(0o755)
        self._start_server()
        log = open(self.workdir / "udhcpc.log", "ab")
        try:
            argv = udhcpc_argv(self.wan, str(self.script), self.retry_s)
            self.client = self.lab.popen(self.lab.ns_router, *argv, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self._client_env())
        finally:
            log.close()
        self._wait_lease(0, timeout, "lease")
        return self

    def renew(self, timeout: float = 10.0,
              pred: Callable[[DhcpEvent], bool] = lambda e: True) -> DhcpEvent:
        """SIGUSR1 (renew; after a release: start over) and wait for a lease with `pred`.
        ~20 ms, or `retry_s` more when busybox misses the unicast ACK (module docstring)."""
        n = len(self.events())
        self._signal_client(signal.SIGUSR1)
        return self._wait_lease(n, timeout, "renewed lease", pred)

    def move_gateway(self, new_gateway: str, timeout: float = 15.0,
                     keep_old: bool = False) -> DhcpEvent:
        """The ISP re-addresses its side (old gateway address removed, `new_gateway` added),
        changes option 3 and the client renews; returns the lease with the new gateway.

        By default the old address goes before the renewal (an ISP that re-addresses at
        once: the client's unicast renewals to the old server go unanswered and it rebinds
        by broadcast, ~3 s); `keep_old` removes it only after the client took the new one.
        """
        new = self._in_subnet(new_gateway, "gateway")
        self._check_distinct(self.address, new)
        old = self.gateway
        if new == old:
            raise ValueError(f"{self.wan}'s gateway is already {new}")
        plen = self.network.prefixlen
        self._isp("addr", "add", f"{new}/{plen}", "dev", CUST)
        self.gateway = new
        if not keep_old:
            self._isp_del(old, plen)
        self._restart_server()
        lease = self.renew(timeout, lambda e: e.gateway == new)
        if keep_old:
            self._isp_del(old, plen)
        return lease

    def _isp_del(self, addr: str, plen: int) -> None:
        self._isp("addr", "del", f"{addr}/{plen}", "dev", CUST)

    def change_address(self, new_address: str, timeout: float = 15.0) -> DhcpEvent:
        """The ISP hands out `new_address` instead (new range); the client renews, gets a
        NAK, drops its lease and takes the new one.  Returns the new lease."""
        new = self._in_subnet(new_address, "address")
        self._check_distinct(new, self.gateway)
        if new == self.address:
            raise ValueError(f"{self.wan}'s address is already {new}")
        self.address = new
        self._restart_server()
        return self.renew(timeout, lambda e: e.ip == new)

    def release(self, timeout: float = 5.0) -> DhcpEvent:
        """SIGUSR2: udhcpc sends a RELEASE and deconfigures (address and route go).  The
        client stays running; `renew` starts it over."""
        n = len(self.events())
        self._signal_client(signal.SIGUSR2)
        return self.wait_event(lambda e: e.kind == "deconfig", n, timeout, "deconfig")

    def stop(self) -> None:
        """Kill client and server (the client does not release: its address and route stay,
        as after a crash).  Idempotent; removes the temporary work directory."""
        netns.terminate(self.client)
        self.client = None
        self._stop_server()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------ observation

    def default_routes(self) -> list[dict[str, Any]]:
        """The router's IPv4 default routes on this WAN, in every table (``ip -j`` dicts)."""
        out = netns.ip(self.lab.ns_router, "-j", "-4", "route", "show", "table", "all",
                       "exact", "0.0.0.0/0", "dev", self.wan).stdout
        return json.loads(out or "[]")

    def router_addresses(self) -> list[str]:
        """The router's IPv4 addresses on this WAN (``a.b.c.d/len``)."""
        out = netns.ip(self.lab.ns_router, "-j", "-4", "addr", "show", "dev", self.wan).stdout
        return [f"{a['local']}/{a['prefixlen']}" for i in json.loads(out or "[]")
                for a in i.get("addr_info", [])]

    def server_leases(self) -> list[str]:
        """dnsmasq's lease file, one lease a line (``expiry mac ip host clientid``)."""
        try:
            return [x for x in self.leasefile.read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []


