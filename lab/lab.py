"""The network-namespace lab: a client LAN, a bare router, N ISPs and an "internet".

::

    lan(eth0) -- (Local)rtr(wlan1) -- (cust)isp1(up) -- (isp1)
                          (wlan2) -- (cust)isp2(up) -- (isp2)inet(lo: servers)

The router is left unprogrammed (no default route, no forwarding in either family, no
nft) for ecmpd or a test.  Each ISP enforces BCP38 (IPv4 and IPv6) on its customer link
and can be broken with `Lab.fault` (both families or one).  Every command runs inside the
lab's own namespaces; nothing touches the host's.

The lab is dual-stack (address plan: `lab.topology`).  In every lab namespace duplicate
address detection is off (``accept_dad=0``, all and default, set before any link
exists), so addresses are usable at once; the router's IPv6 is a plain host's
(``forwarding=0``, the kernel's default ``accept_ra=1``), as its IPv4 is
(``ip_forward=0``); the ISPs and inet forward both families.  An ISP's ``cust`` has one
link-local address (`LabWan.link_local6`, no EUI-64 one), which `Lab.set_isp_link_local`
changes and `Lab.ra` advertises (`lab.ra`).

In an ISP, BCP38, faults, loss and modem NAT each live in an nft table of their own
(`lab.isp`).
"""

from __future__ import annotations

import re
import subprocess
from ipaddress import (IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network,
                       ip_interface)
from typing import Any, Sequence

from lab import driver, lines, netns
from lab.dhcp import DhcpWan
from lab.flood import Flood, start_flood
from lab.isp import (ALL_MODES, CUST, FAULT_MODES, bcp38_6_script, bcp38_script, fault_script,
                     heal_script, loss_script, modem_script)
from lab.load import Load
from lab.ptp import PtpWan
from lab.ra import RaServer
from lab.topology import (LINK_LOCAL, LabSpec, seed_spec, transit, transit6, upstream6_of,
                          upstream_of, wan_of_source)
from lab.traffic import FlowResult
from lab.wait import until

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def _addr_add(address: str, dev: str) -> str:
    """The ``ip`` line adding `address` (with prefix) to `dev` (IPv6: usable at once)."""
    return f"addr add {address} dev {dev}" + (" nodad" if ":" in address else "")


def _close_files(proc: subprocess.Popen) -> None:
    for f in (proc.stdout, proc.stderr, getattr(proc, "_lab_stderr", None)):
        try:
            if f is not None:
                f.close()
        except Exception:  # noqa: BLE001 - cleanup must not raise
            pass


class Lab:
    """A built (or buildable) lab; use as a context manager or call build()/teardown()."""

    def __init__(self, spec: LabSpec | None = None, prefix: str | None = None) -> None:
        self.spec: LabSpec = spec if spec is not None else seed_spec()
        self.prefix: str = prefix if prefix is not None else netns.random_prefix()
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r}")
        self.ns_lan = f"{self.prefix}lan"
        self.ns_router = f"{self.prefix}rtr"
        self.ns_inet = f"{self.prefix}inet"
        self.built = False
        self.leftovers: list[str] = []
        """Namespaces the last teardown could not delete (normally empty)."""
        self._procs: list[subprocess.Popen] = []
        self._servers: dict[tuple[str, int], subprocess.Popen] = {}
        self._faults: dict[str, set[str]] = {w.name: set() for w in self.spec.wans}
        self._isp_ll: dict[str, str] = {w.name: w.link_local6 for w in self.spec.wans}

    # ------------------------------------------------------------ names

    def ns_isp(self, wan: str) -> str:
        """The namespace of WAN `wan`'s ISP."""
        return f"{self.prefix}isp{self.spec.wan_index(wan)}"

    @property
    def namespaces(self) -> list[str]:
        """All of the lab's namespaces."""
        isps = [self.ns_isp(w.name) for w in self.spec.wans]
        return [self.ns_lan, self.ns_router, self.ns_inet, *isps]

    @property
    def clients(self) -> list[str]:
        """The client's addresses (no prefix length), first the main one."""
        return [str(IPv4Interface(a).ip) for a in self.spec.client_addresses]

    @property
    def clients6(self) -> list[str]:
        """The client's IPv6 addresses (no prefix length), first the main one."""
        return [str(IPv6Interface(a).ip) for a in self.spec.client_addresses6]

    @property
    def clients_public(self) -> list[str]:
        """The client's addresses in the LAN's public prefixes (`LabSpec.lan_public`)."""
        return [str(ip_interface(a).ip) for a in self.spec.client_public]

    @property
    def _public(self) -> list[IPv4Network | IPv6Network]:
        return [ip_interface(a).network for a in self.spec.lan_public]

    @property
    def server6(self) -> str:
        """The first inet IPv6 server address (``2001:db8:feed::10`` by default)."""
        return self.spec.server_addresses6[0]

    def upstream_address(self, wan: str) -> str:
        """An address beyond `wan`'s gateway, reached only through that ISP (probe target)."""
        return upstream_of(self.spec.wan_index(wan))

    def upstream_address6(self, wan: str) -> str:
        """The IPv6 address beyond `wan`'s gateway, reached only through that ISP
        (``2001:db8:ffff:<i>::2``; routed by the ISP whatever its customer link carries)."""
        return upstream6_of(self.spec.wan_index(wan))

    def isp_link_local(self, wan: str) -> str:
        """The link-local address `wan`'s ISP has on ``cust`` right now (what its router
        advertisements come from)."""
        return self._isp_ll[wan]

    def wan_of_source(self, addr: str | None) -> str | None:
        """Which WAN a source address seen by a server belongs to (None: no WAN)."""
        return wan_of_source(self.spec, addr)

    def _ns(self, ns: str) -> str:
        """Resolve a full lab namespace name or a short one (``rtr``, ``isp1``)."""
        names = self.namespaces
        if ns in names:
            return ns
        if self.prefix + ns in names:
            return self.prefix + ns
        if ns == "router":
            return self.ns_router
        raise ValueError(f"{ns!r} is not a namespace of lab {self.prefix!r}")

    # ------------------------------------------------------------ processes

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in lab namespace `ns` (text mode, output captured)."""
        return netns.run_in(self._ns(ns), *cmd, check=check, timeout=timeout, input=input)

    def nft(self, ns: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Load an nft script into lab namespace `ns`."""
        return netns.nft(self._ns(ns), script, check=check)

    def popen(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen:
        """Start `cmd` in lab namespace `ns`; it is killed on teardown."""
        return self._popen(netns.exec_argv(self._ns(ns), *cmd), **kw)

    def _popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        for done in [p for p in self._procs if p.returncode is not None]:
            _close_files(done)  # reaped already: forget it
            self._procs.remove(done)
        proc = subprocess.Popen(argv, **kw)
        self._procs.append(proc)
        return proc

    # ------------------------------------------------------------ build / teardown

    def build(self) -> "Lab":
        """Create every namespace, link, address, route and ISP rule. No-op if built."""
        if self.built:
            return self
        if any(netns.exists(ns) for ns in self.namespaces):
            raise RuntimeError(f"namespaces with prefix {self.prefix!r} already exist")
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        self.built = True
        return self

    def _build(self) -> None:
        spec = self.spec
        for ns in self.namespaces:
            netns.create(ns)
        rp = spec.router_rp_filter
        # Before any link exists: links take conf.default at creation.
        v6 = {"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0}
        netns.sysctl(self.ns_lan, {"net.ipv4.ip_forward": 0, "net.ipv6.conf.all.forwarding": 0,
                                   **v6})
        netns.sysctl(self.ns_router, {"net.ipv4.ip_forward": 0, "net.ipv4.conf.all.rp_filter": rp,
                                      "net.ipv4.conf.default.rp_filter": rp,
                                      "net.ipv6.conf.all.forwarding": 0, **v6})
        transit_sys = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                       "net.ipv4.conf.default.rp_filter": 0, "net.ipv6.conf.all.forwarding": 1,
                       # A carrier fault (cust down) keeps the ISP's global IPv6 addresses.
                       "net.ipv6.conf.all.keep_addr_on_down": 1,
                       "net.ipv6.conf.default.keep_addr_on_down": 1, **v6}
        for ns in [self.ns_inet] + [self.ns_isp(w.name) for w in spec.wans]:
            netns.sysctl(ns, transit_sys)

        lan_ip = str(IPv4Interface(spec.lan_address).ip)
        lan6 = []
        if spec.lan_address6 is not None:
            lan6 = [*(f"addr add {a} dev eth0 nodad" for a in spec.client_addresses6),
                    f"route add ::/0 via {IPv6Interface(spec.lan_address6).ip}"]
        netns.ip_batch(self.ns_lan, [
            f"link add name eth0 type veth peer name {spec.lan_interface} netns {self.ns_router}",
            *(f"addr add {a} dev eth0" for a in spec.client_addresses),
            *(_addr_add(a, "eth0") for a in spec.client_public),
            "link set dev eth0 up",
            f"route add default via {lan_ip}",
            *lan6,
        ])
        rtr = [f"addr add {spec.lan_address} dev {spec.lan_interface}",
               f"link set dev {spec.lan_interface} up"]
        if spec.lan_address6 is not None:
            rtr.insert(1, f"addr add {spec.lan_address6} dev {spec.lan_interface} nodad")
        rtr[1:1] = [_addr_add(a, spec.lan_interface) for a in spec.lan_public]
        inet = [f"addr add {a}/32 dev lo" for a in spec.server_addresses]
        inet += [f"addr add {a}/128 dev lo nodad" for a in spec.server_addresses6]
        for i, w in enumerate(spec.wans, start=1):
            isp = self.ns_isp(w.name)
            isp_side, inet_side = transit(i)
            isp6, inet6 = transit6(i)
            cust: list[str] = []
            if w.kind == "ether":  # a ptp WAN's customer link appears on connect (lab.ptp)
                # Create the customer link from the router side, the transit from the ISP.
                netns.ip(self.ns_router, "link", "add", "name", w.name, "type", "veth",
                         "peer", "name", CUST, "netns", isp)
                if w.has4:
                    cust.append(f"addr add {w.gateway_interface} dev {CUST}")
                    rtr.append(f"addr add {w.address} dev {w.name}")
                if w.has6:
                    cust += [f"link set dev {CUST} addrgenmode none", *self._cust6(w.name)]
                    rtr.append(f"addr add {w.address6} dev {w.name} nodad")
                else:  # an IPv4-only link: not even a link-local answers on the ISP's side
                    netns.sysctl(isp, {f"net.ipv6.conf.{CUST}.disable_ipv6": 1})
                cust.append(f"link set dev {CUST} up")
                rtr.append(f"link set dev {w.name} up")
            # the LAN's public prefixes this ISP routes to the router, by IP version
            public = {v: [n for n in self._public if n.version == v]
                      if w.routes_public and (w.has4 if v == 4 else w.has6) else [] for v in (4, 6)}
            to_router = {4: w.has4 and w.interface.ip, 6: w.has6 and w.interface6.ip}
            netns.ip_batch(isp, [
                f"link add name up type veth peer name isp{i} netns {self.ns_inet}",
                *cust,
                *(f"route add {n} via {to_router[v]}" for v in (4, 6) for n in public[v]),
                f"addr add {isp_side} dev up",
                f"addr add {isp6} dev up nodad",
                "link set dev up up",
                f"route add default via {inet_side.split('/')[0]}",
                f"route add ::/0 via {inet6.split('/')[0]}",
            ])
            netns.nft(isp, bcp38_script(str(w.network), *public[4]) if w.has4 else
                      bcp38_script(None))
            netns.nft(isp, bcp38_6_script(str(w.network6) if w.has6 else None, *public[6]))
            if w.modem_nat:
                netns.nft(isp, modem_script())
            inet += [f"addr add {inet_side} dev isp{i}", f"addr add {inet6} dev isp{i} nodad",
                     f"link set dev isp{i} up"]
            if not w.modem_nat:  # a modem's customers are behind its NAT
                if w.has4:
                    inet.append(f"route add {w.network} via {isp_side.split('/')[0]}")
                if w.has6:
                    inet.append(f"route add {w.network6} via {isp6.split('/')[0]}")
                inet += [f"route add {n} via {(isp_side if v == 4 else isp6).split('/')[0]}"
                         for v in (4, 6) for n in public[v]]
        netns.ip_batch(self.ns_router, rtr)
        netns.ip_batch(self.ns_inet, inet)
        # Interfaces inherit conf.default, but set them explicitly: effective = max(all, if).
        ether = [w.name for w in spec.wans if w.kind == "ether"]
        netns.sysctl(self.ns_router, {f"net.ipv4.conf.{n}.rp_filter": rp for n in
                                      [spec.lan_interface, *ether]})
        netns.sysctl(self.ns_inet, {f"net.ipv4.conf.isp{i}.rp_filter": 0
                                    for i in range(1, len(spec.wans) + 1)})
        for w in spec.wans:
            netns.sysctl(self.ns_isp(w.name), {"net.ipv4.conf.up.rp_filter": 0, **(
                {"net.ipv4.conf.cust.rp_filter": 0} if w.kind == "ether" else {})})
        self.wait_carrier([spec.lan_interface, *ether], True)

    def _cust6(self, wan: str, verb: str = "add") -> list[str]:
        """``ip`` lines giving `wan`'s ISP ``cust`` its IPv6 addresses (link-local, global)."""
        w = self.spec.wan(wan)
        return [f"addr {verb} {self._isp_ll[wan]}/64 dev {CUST} nodad",
                f"addr {verb} {w.isp_interface6} dev {CUST} nodad"]

    def link_up(self, ns: str, ifname: str) -> bool:
        """Whether `ifname` in `ns` has carrier (LOWER_UP) and is admin up."""
        out = netns.ip(self._ns(ns), "-o", "link", "show", "dev", ifname, check=False).stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
        return "LOWER_UP" in flags and "UP" in flags

    def wait_carrier(self, ifnames: Sequence[str], up: bool, timeout: float = 5.0) -> None:
        """Wait until every router interface in `ifnames` has (or lacks) carrier."""
        pending: list[str] = []

        def settled() -> bool:
            pending[:] = [n for n in ifnames if self.link_up(self.ns_router, n) != up]
            return not pending

        until(settled, timeout, lambda _: f"router links {pending} not {'up' if up else 'down'}",
              interval=0.01)

    def teardown(self) -> None:
        """Kill every process in the lab's namespaces and delete them. Never raises."""
        try:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()
            for proc in self._procs:
                try:
                    proc.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    pass
                _close_files(proc)
            self._procs.clear()
            self._servers.clear()
        except Exception:  # noqa: BLE001 - teardown must not raise
            pass
        try:
            self.leftovers = netns.destroy(self.namespaces)
        except Exception:  # noqa: BLE001
            self.leftovers = [ns for ns in self.namespaces if netns.exists(ns)]
        self.built = False

    def __enter__(self) -> "Lab":
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # ------------------------------------------------------------ faults

    def fault(self, wan: str, mode: str, family: int | None = None) -> None:
        """Break `wan`'s ISP: ``dead`` (silent), ``upstream`` (forwards nothing) or
        ``carrier`` (customer link down). Faults add up; `heal` undoes all.

        `family` 4 or 6 limits ``dead`` / ``upstream`` to that family (an IPv6-only
        outage: ``fault(wan, "dead", family=6)`` drops every IPv6 frame on the customer
        link, neighbour discovery included, while IPv4 works; ``upstream`` with a family
        stops forwarding that family only); it is recorded in `active_faults` as e.g.
        ``dead6``.  ``carrier`` has no family.

        On a shaped line (`shape`) ``dead`` and ``upstream`` drop in nft hooks that run
        before the qdisc: new packets are dropped, but what already waits in the ISP's tbf
        still drains to the router (measured: the whole ~1 s backlog arrives during the
        second after the fault), and upload queued in the router's tbf is sent and dropped
        at the ISP.  ``carrier`` purges the ISP's queue; the tbf itself survives down/up.
        """
        isp = self.ns_isp(wan)
        if mode == "carrier":
            if family is not None:
                raise ValueError("a carrier fault has no family")
            netns.ip(isp, "link", "set", "dev", "cust", "down")
            self.wait_carrier([wan], False)
        elif mode in FAULT_MODES:
            netns.nft(isp, fault_script(mode, family))
        else:
            raise ValueError(f"unknown fault mode {mode!r} (one of {ALL_MODES})")
        self._faults[wan].add(mode if family is None else f"{mode}{family}")

    def active_faults(self, wan: str) -> frozenset[str]:
        """The fault modes active on `wan` (set through this object)."""
        return frozenset(self._faults[wan])

    def heal(self, wan: str) -> None:
        """Undo every fault on `wan`'s ISP (loss is separate: `set_loss(wan, 0)`)."""
        isp = self.ns_isp(wan)
        netns.nft(isp, heal_script())
        netns.ip(isp, "link", "set", "dev", "cust", "up")
        w = self.spec.wan(wan)
        if w.kind == "ether" and w.has6:  # link down dropped the link-local (and addrgenmode
            netns.ip_batch(isp, self._cust6(wan, "replace"))  # none makes no new one)
        if "carrier" in self._faults[wan]:
            self.wait_carrier([wan], True)
        self._faults[wan].clear()

    def set_loss(self, wan: str, percent: float) -> None:
        """Drop `percent` % of packets at random on `wan`'s customer link, each way; 0 = off."""
        netns.nft(self.ns_isp(wan), loss_script(percent))

    # ------------------------------------------------------------ IPv6 router advertisements

    def set_isp_link_local(self, wan: str, address: str) -> None:
        """Give `wan`'s ISP another link-local address on ``cust`` (the old one goes): "the
        ISP's router changes".  A running `lab.ra.RaServer` keeps advertising from the old
        one until restarted: use `RaServer.change_link_local`, which does all of it."""
        w = self.spec.wan(wan)
        if w.kind != "ether" or not w.has6:
            raise ValueError(f"{wan} has no IPv6 customer link")
        new = IPv6Address(address)
        if new not in LINK_LOCAL:
            raise ValueError(f"{address} is not a link-local address")
        old = self._isp_ll[wan]
        if new == IPv6Address(old):
            return
        netns.ip_batch(self.ns_isp(wan), [f"addr add {new}/64 dev {CUST} nodad",
                                          f"addr del {old}/64 dev {CUST}"])
        self._isp_ll[wan] = str(new)

    def ra(self, wan: str, **kw: Any) -> RaServer:
        """Start router advertisements (dnsmasq) on `wan`'s customer link, from the ISP's
        link-local address, for its /64 (`lab.ra.RaServer`, keywords go there)."""
        return RaServer(self, wan, **kw).start()

    # ------------------------------------------------------------ dynamic WANs

    def dhcp(self, wan: str, **kw: Any) -> DhcpWan:
        """Make Ethernet WAN `wan` a DHCP WAN, started: dnsmasq in its ISP, udhcpc on the
        router, the static address removed (`lab.dhcp.DhcpWan`, keywords go there)."""
        return DhcpWan(self, wan, **kw).start()

    def ptp(self, wan: str, address: str | None = None, **kw: Any) -> PtpWan:
        """Connect the session of point-to-point WAN `wan` (``LabWan(kind="ptp")``) with
        `address`; the returned `lab.ptp.PtpWan` disconnects and reconnects it."""
        link = PtpWan(self, wan, **kw)
        link.connect(address)
        return link

    # ------------------------------------------------------------ real lines

    def shape(self, wan: str, line: lines.Line) -> None:
        """Make `wan` a modem-like line: tbf download on the ISP's `cust`, upload on the
        router's WAN (see `lab.lines`; faults keep working, queued packets drain)."""
        lines.shape(self, wan, line)

    def unshape(self, wan: str) -> None:
        """Remove `wan`'s shaping (idempotent)."""
        lines.unshape(self, wan)

    def load(self, wans: Sequence[str] | None = None, **kw: Any) -> Load:
        """iperf3 load from the LAN, pinned to `wans` (default all): `Load.start`."""
        return Load.start(self, wans, **kw)

    def flood(self, wan: str, **kw: Any) -> Flood:
        """ICMP flood from the inet namespace at the router's `wan` address: `start_flood`."""
        return start_flood(self, wan, **kw)

    # ------------------------------------------------------------ traffic

    def start_servers(self, ns: str | None = None, port: int = 5000) -> subprocess.Popen:
        """Start the traffic server in `ns` (default inet) on 0.0.0.0:`port` and [::]:`port`
        (TCP and UDP); wait until it listens."""
        name = self._ns(ns) if ns is not None else self.ns_inet
        proc = self._servers.get((name, port))
        if proc is None or proc.poll() is not None:
            proc = driver.start_server(name, port, popen=self._popen)
            self._servers[(name, port)] = proc
        return proc

    def start_flows(self, count: int, interval: float = 0.0, timeout: float = 1.0,
                    server: str | None = None, port: int = 5000, proto: str = "tcp",
                    from_ns: str | None = None,
                    sources: list[str] | None = None) -> driver.FlowRun:
        """`new_flows` in the background: `.result()` returns the FlowResults."""
        return driver.start_flows(
            self._ns(from_ns) if from_ns else self.ns_lan,
            server or self.spec.server_addresses[0], count, interval, timeout, port, proto,
            sources, popen=self._popen, wan_of=self.wan_of_source)

    def new_flows(self, count: int, interval: float = 0.0, timeout: float = 1.0,
                  server: str | None = None, port: int = 5000, proto: str = "tcp",
                  from_ns: str | None = None, sources: list[str] | None = None) -> list[FlowResult]:
        """Open `count` new flows (one every `interval` s) from `from_ns` (default lan) to
        `server` (default the first IPv4 server; ``server=lab.server6`` for IPv6)."""
        return self.start_flows(count, interval, timeout, server, port, proto, from_ns,
                                sources).result()

    def hold_flows(self, count: int, byte_interval: float = 0.1, server: str | None = None,
                   port: int = 5000, from_ns: str | None = None, sources: list[str] | None = None,
                   echo_timeout: float = 2.0) -> driver.HeldFlows:
        """Start `count` long-lived flows in the background (see `driver.HeldFlows`)."""
        return driver.start_hold(
            self._ns(from_ns) if from_ns else self.ns_lan,
            server or self.spec.server_addresses[0], count, byte_interval, port, sources,
            echo_timeout, popen=self._popen, wan_of=self.wan_of_source)
