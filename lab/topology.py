"""Lab topology description: which WANs, which addresses, and the derived address plan.

A `LabSpec` is a small frozen description; `Lab` (in `lab.lab`) builds it from
network namespaces and veth pairs.  Everything here is pure (no system access).

The lab is dual-stack.  Address plan for WAN number ``i`` (1-based, in spec order;
``<i>`` in an IPv6 address is the decimal number written as a hex group, so WAN 12's
customer prefix is ``2001:db8:12::/64``):

* router ``LabWan.name`` <-> ISP ``cust``: the WAN's own subnet (router ``address``,
  ISP ``gateway``) and its own IPv6 /64, by default ``2001:db8:<i>::/64`` (router
  ``address6`` ``::2``, ISP ``::1``).  The ISP's ``cust`` has one fixed link-local
  address, ``link_local6`` (default ``fe80::1``, no EUI-64 one), which is what a router
  advertisement names as the gateway; ``gateway6`` is the router's static IPv6 gateway,
  by default the ISP's global ``::1``, or a link-local (then the ISP's ``link_local6``);
* ISP ``up`` 100.64.<i>.1/30 and 2001:db8:ffff:<i>::1/64 <-> inet ``isp<i>``
  100.64.<i>.2/30 and 2001:db8:ffff:<i>::2/64 (the transit link, dual-stack even when
  the customer link is single-stack);
* inet routes the WAN's subnet via 100.64.<i>.1 and its /64 via 2001:db8:ffff:<i>::1;
  the ISP's default routes point to 100.64.<i>.2 and 2001:db8:ffff:<i>::2, which are
  also the WAN's "upstream" probe targets (`upstream_of`, `upstream6_of`);
* LAN: router ``lan_address`` 192.168.0.1/24 and ``lan_address6`` fd00::1/64 (a ULA);
  the client ``client_address`` 192.168.0.2/24 and ``client_address6`` fd00::2/64, its
  ``client_extra`` extra addresses the next ones in both (192.168.0.3, fd00::3, ...);
* inet servers on ``lo``: ``server_addresses`` (203.0.113.10) and
  ``server_addresses6`` (2001:db8:feed::10);
* optionally public LAN prefixes (``lan_public``, none by default): the router's and the
  client's addresses in them (``client_public``), routed by the ``routes_public`` WAN's
  ISP to the router and by inet to that ISP.

Single-stack WANs: ``address=None, gateway=None`` is an IPv6-only WAN (no IPv4 on the
customer link; the ISP drops every IPv4 packet from it), ``address6=None`` an IPv4-only
one (the ISP's ``cust`` has IPv6 disabled, so not even a link-local answers there).  A
``ptp`` WAN is always IPv4-only (`lab.ptp` relays and configures IPv4 only).

"Same gateway" ISPs (``modem_nat=True``, see `modem_spec`): like home modems, several
ISPs may use one IPv4 subnet (192.168.1.1 the modem, 192.168.1.2 the router on each) and
``gateway6="fe80::1"``.  The inet host cannot route one subnet back to two ISPs, so such
an ISP masquerades (both families) what it forwards to inet, and a server sees the ISP's
transit address (100.64.<i>.1, 2001:db8:ffff:<i>::1), which `wan_of_source` maps back to
the WAN.  Only ``modem_nat`` WANs may share an IPv4 subnet; IPv6 prefixes stay distinct.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network, ip_address, ip_interface)
from typing import Sequence

IFNAMSIZ = 15
"""Longest Linux interface name."""

WAN_KINDS = ("ether", "ptp")
"""`LabWan.kind` values."""

MAX_LAB_WANS = 155
"""`make_spec` uses 10.(100+i).0.0/24, so at most 155 generated WANs."""

AUTO = "auto"
"""`LabWan.address6` / `LabWan.gateway6` default: derived from the WAN's position by
`LabSpec` (``2001:db8:<i>::2/64`` and the ISP's ``::1``)."""

LINK_LOCAL = IPv6Network("fe80::/10")

ISP_LINK_LOCAL = "fe80::1"
"""The ISP's link-local address on ``cust`` unless `LabWan.link_local6` says otherwise."""


@dataclass(frozen=True)
class LabWan:
    """One WAN of the lab: the router-side interface and its ISP."""

    name: str
    """WAN name == router-side interface name, e.g. ``wlan1``."""
    address: str | None
    """Router's address/prefix on the WAN, e.g. ``10.111.0.2/24``; None: IPv6-only WAN."""
    gateway: str | None
    """The ISP's address on the customer link, e.g. ``10.111.0.1`` (None with `address`)."""
    kind: str = "ether"
    """``ether``: a veth customer link, router addressed at build.  ``ptp``: no customer
    link until `lab.ptp.PtpWan.connect` (a tun pair; `address`'s subnet is the ISP's
    pool, `gateway` its end of the link)."""
    address6: str | None = AUTO
    """Router's IPv6 address/prefix on the WAN, e.g. ``2001:db8:1::2/64``; `AUTO` (made
    concrete by `LabSpec`): ``2001:db8:<i>::2/64``; None: IPv4-only WAN."""
    gateway6: str | None = AUTO
    """The router's static IPv6 gateway: the ISP's global address (`AUTO`: ``::1`` of the
    /64) or a link-local one (then it must be `link_local6`).  None when no IPv6."""
    link_local6: str = ISP_LINK_LOCAL
    """The ISP's link-local address on ``cust`` (the source of its router advertisements)."""
    modem_nat: bool = False
    """The ISP masquerades (IPv4 and IPv6) what it forwards upstream, like a home modem;
    inet has no route to the customer subnets."""
    routes_public: bool = False
    """The ISP routes the LAN's public prefixes (`LabSpec.lan_public`) of each version
    the customer link carries to the router's WAN address, accepts them from it (BCP38)
    and is inet's way to them.  At most one WAN."""

    @property
    def has4(self) -> bool:
        """Whether the customer link carries IPv4."""
        return self.address is not None

    @property
    def has6(self) -> bool:
        """Whether the customer link carries IPv6."""
        return self.address6 is not None

    @property
    def interface(self) -> IPv4Interface:
        """The router's address as an interface object."""
        if self.address is None:
            raise ValueError(f"{self.name} has no IPv4 address (an IPv6-only WAN)")
        return IPv4Interface(self.address)

    @property
    def network(self) -> IPv4Network:
        """The customer subnet (the one BCP38 allows from the router)."""
        return self.interface.network

    @property
    def gateway_interface(self) -> str:
        """The ISP's address with the WAN's prefix length, e.g. ``10.111.0.1/24``."""
        return f"{self.gateway}/{self.interface.network.prefixlen}"

    @property
    def interface6(self) -> IPv6Interface:
        """The router's IPv6 address as an interface object."""
        if self.address6 is None or self.address6 == AUTO:
            raise ValueError(f"{self.name} has no (concrete) IPv6 address: {self.address6!r}")
        return IPv6Interface(self.address6)

    @property
    def network6(self) -> IPv6Network:
        """The customer /64 (the one IPv6 BCP38 allows from the router)."""
        return self.interface6.network

    @property
    def isp_interface6(self) -> str:
        """The ISP's global address on ``cust`` with prefix length, e.g.
        ``2001:db8:1::1/64``: `gateway6` when that is global, else the first address of
        the /64 that is not the router's."""
        net = self.network6
        gw = self.gateway6
        if gw and gw != AUTO and IPv6Address(gw) not in LINK_LOCAL:
            return f"{gw}/{net.prefixlen}"
        first = net.network_address + 1
        if first == self.interface6.ip:
            first += 1
        return f"{first}/{net.prefixlen}"


@dataclass(frozen=True)
class LabSpec:
    """What to build: the WANs, the LAN and the internet servers.

    `AUTO` IPv6 fields of the WANs are made concrete here (so ``spec.wans`` holds the
    WANs with their actual ``address6`` / ``gateway6``)."""

    wans: tuple[LabWan, ...]
    lan_interface: str = "Local"
    """Router's LAN interface name."""
    lan_address: str = "192.168.0.1/24"
    """Router's LAN address/prefix; the client's default gateway."""
    client_address: str = "192.168.0.2/24"
    client_extra: int = 0
    """Extra client addresses (the next ones in the LAN subnet), for l3-hash tests."""
    server_addresses: tuple[str, ...] = ("203.0.113.10",)
    """"Internet" server addresses, on ``lo`` in the inet namespace."""
    router_rp_filter: int = 2
    """rp_filter (all, default and every router interface); 2 = loose, a distro default."""
    lan_address6: str | None = "fd00::1/64"
    """Router's LAN IPv6 address/prefix (a ULA); the client's IPv6 default gateway.
    None: no IPv6 on the LAN."""
    client_address6: str = "fd00::2/64"
    """The client's IPv6 address; ``client_extra`` more follow it (fd00::3, ...)."""
    server_addresses6: tuple[str, ...] = ("2001:db8:feed::10",)
    """"Internet" IPv6 server addresses, on ``lo`` in the inet namespace."""
    lan_public: tuple[str, ...] = ()
    """The router's addresses/prefixes in the LAN's public prefixes (either version, e.g.
    ``203.0.113.65/26``, ``2001:db8:ff::1/64``), routed to it by the `routes_public`
    WAN's ISP; the client has the next address of each (`client_public`).  Empty: none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "wans", tuple(
            _concrete(w, i) for i, w in enumerate(self.wans, start=1)))
        validate_spec(self)

    @property
    def client_addresses(self) -> tuple[str, ...]:
        """The client's addresses (with prefix): ``client_address`` then the extras."""
        return _extras(IPv4Interface(self.client_address), self.client_extra)

    @property
    def client_addresses6(self) -> tuple[str, ...]:
        """The client's IPv6 addresses (with prefix): ``client_address6`` then the extras
        (empty when the LAN has no IPv6)."""
        if self.lan_address6 is None:
            return ()
        return _extras(IPv6Interface(self.client_address6), self.client_extra)

    @property
    def client_public(self) -> tuple[str, ...]:
        """The client's address (with prefix) in each of `lan_public`."""
        return tuple(_extras(ip_interface(a), 1)[1] for a in self.lan_public)

    def wan(self, name: str) -> LabWan:
        """The WAN called `name` (KeyError if none)."""
        for w in self.wans:
            if w.name == name:
                return w
        raise KeyError(name)

    def wan_index(self, name: str) -> int:
        """1-based position of WAN `name`: its ISP namespace and transit number."""
        for i, w in enumerate(self.wans, start=1):
            if w.name == name:
                return i
        raise KeyError(name)


def _extras(base: IPv4Interface | IPv6Interface, extra: int) -> tuple[str, ...]:
    net = base.network
    out = [str(base)]
    for k in range(1, extra + 1):
        addr = base.ip + k
        if addr not in net or (net.version == 4 and addr == net.broadcast_address):
            raise ValueError(f"client_extra={extra} overflows {net}")
        out.append(f"{addr}/{net.prefixlen}")
    return tuple(out)


def default_address6(index: int) -> str:
    """The router's default IPv6 address on WAN `index`: ``2001:db8:<index>::2/64``."""
    if not 1 <= index <= 255:
        raise ValueError(f"WAN index {index} out of 1..255")
    return f"2001:db8:{index}::2/64"


def _concrete(w: LabWan, index: int) -> LabWan:
    """`w` with `AUTO` IPv6 fields replaced by the plan's values for position `index`."""
    address6, gateway6 = w.address6, w.gateway6
    if address6 == AUTO:
        address6 = None if w.kind == "ptp" else default_address6(index)
    if address6 is None:
        gateway6 = None
    if address6 == w.address6 and gateway6 == w.gateway6 and gateway6 != AUTO:
        return w
    w = replace(w, address6=address6, gateway6=None if gateway6 == AUTO else gateway6)
    if gateway6 == AUTO:
        w = replace(w, gateway6=w.isp_interface6.split("/")[0])
    return w


def transit(index: int) -> tuple[str, str]:
    """(ISP side, inet side) addresses with /30 of the transit link of WAN `index`."""
    if not 1 <= index <= 255:
        raise ValueError(f"WAN index {index} out of 1..255")
    return f"100.64.{index}.1/30", f"100.64.{index}.2/30"


TRANSIT6 = IPv6Network("2001:db8:ffff::/48")
"""Every IPv6 transit link lies in here."""


def transit6(index: int) -> tuple[str, str]:
    """(ISP side, inet side) IPv6 addresses with /64 of the transit link of WAN `index`."""
    if not 1 <= index <= 255:
        raise ValueError(f"WAN index {index} out of 1..255")
    return f"2001:db8:ffff:{index}::1/64", f"2001:db8:ffff:{index}::2/64"


def upstream_of(index: int) -> str:
    """The inet-side transit address of WAN `index`: reachable only through that ISP's path."""
    return transit(index)[1].split("/")[0]


def upstream6_of(index: int) -> str:
    """The inet-side IPv6 transit address of WAN `index` (only through that ISP's path)."""
    return transit6(index)[1].split("/")[0]


def _check_ifname(name: str, what: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or name.strip() != name or ":" in name:
        raise ValueError(f"bad interface name for {what}: {name!r}")


def _validate_wan6(w: LabWan, nets6: list[IPv6Network]) -> None:
    iface = w.interface6
    if iface.ip in LINK_LOCAL or iface.network.prefixlen > 126:
        raise ValueError(f"{w.name}: address6 {iface} must be a global address in a /126 or wider")
    ll = IPv6Address(w.link_local6)
    if ll not in LINK_LOCAL:
        raise ValueError(f"{w.name}: link_local6 {ll} is not link-local")
    gw = IPv6Address(w.gateway6)  # type: ignore[arg-type]
    if gw in LINK_LOCAL:
        if gw != ll:
            raise ValueError(f"{w.name}: a link-local gateway6 must be the ISP's link_local6 {ll}")
    elif gw not in iface.network or gw == iface.ip:
        raise ValueError(f"{w.name}: gateway6 {gw} must be another address in {iface.network}")
    if IPv6Interface(w.isp_interface6).ip == iface.ip:
        raise ValueError(f"{w.name}: the ISP's address and the router's are both {iface.ip}")
    if any(iface.network.overlaps(n) for n in nets6):
        raise ValueError(f"{w.name}: {iface.network} overlaps another lab IPv6 subnet")
    nets6.append(iface.network)


def validate_spec(spec: LabSpec) -> None:
    """Raise ValueError when `spec` cannot be built (names, overlaps, gateways)."""
    if not spec.wans:
        raise ValueError("a lab needs at least one WAN")
    if len(spec.wans) > 255:
        raise ValueError("at most 255 WANs")
    _check_ifname(spec.lan_interface, "LAN")
    lan = IPv4Interface(spec.lan_address)
    client = IPv4Interface(spec.client_address)
    if client.network != lan.network or client.ip == lan.ip:
        raise ValueError("client_address must be another address in the LAN subnet")
    if spec.client_extra < 0:
        raise ValueError("client_extra must be >= 0")
    nets6: list[IPv6Network] = [TRANSIT6]
    if spec.lan_address6 is not None:
        lan6, client6 = IPv6Interface(spec.lan_address6), IPv6Interface(spec.client_address6)
        if client6.network != lan6.network or client6.ip == lan6.ip:
            raise ValueError("client_address6 must be another address in the LAN IPv6 subnet")
        nets6.append(lan6.network)
        spec.client_addresses6  # noqa: B018 - raises when the extras overflow
    names = [w.name for w in spec.wans]
    if len(set(names)) != len(names) or spec.lan_interface in names:
        raise ValueError("WAN names and the LAN interface must be distinct")
    nets: list[IPv4Network] = [lan.network]
    modem_nets: list[IPv4Network] = []
    for w in spec.wans:
        _check_ifname(w.name, "WAN")
        if w.kind not in WAN_KINDS:
            raise ValueError(f"{w.name}: kind must be one of {WAN_KINDS}, not {w.kind!r}")
        if not w.has4 and not w.has6:
            raise ValueError(f"{w.name}: a WAN needs IPv4 or IPv6 (address or address6)")
        if w.has6:
            if w.kind != "ether":
                raise ValueError(f"{w.name}: a {w.kind} WAN is IPv4-only (address6=None)")
            _validate_wan6(w, nets6)
        if not w.has4:
            if w.gateway is not None:
                raise ValueError(f"{w.name}: an IPv6-only WAN (address None) has no gateway")
            if w.kind != "ether":
                raise ValueError(f"{w.name}: a {w.kind} WAN needs IPv4")
            continue
        if w.gateway is None:
            raise ValueError(f"{w.name}: an IPv4 address needs a gateway")
        gw = IPv4Address(w.gateway)
        if gw not in w.network or gw == w.interface.ip:
            raise ValueError(f"{w.name}: gateway {gw} must be another address in {w.network}")
        if any(w.network.overlaps(n) for n in nets) or (
                not w.modem_nat and any(w.network.overlaps(n) for n in modem_nets)):
            raise ValueError(f"{w.name}: {w.network} overlaps another lab subnet "
                             "(only modem_nat WANs may share one)")
        (modem_nets if w.modem_nat else nets).append(w.network)
    if sum(w.routes_public for w in spec.wans) > 1:
        raise ValueError("at most one WAN routes_public (inet routes the prefixes to it)")
    for a in spec.lan_public:
        net = ip_interface(a).network
        if any(net.overlaps(n) for n in [*nets, *modem_nets, *nets6] if n.version == net.version):
            raise ValueError(f"lan_public {a} overlaps another lab subnet")
        (nets if net.version == 4 else nets6).append(net)  # type: ignore[arg-type]
    spec.client_public  # noqa: B018 - raises when a prefix has no room for the client
    for s in spec.server_addresses:
        addr = ip_address(s)
        if any(addr in n for n in nets + modem_nets):
            raise ValueError(f"server address {s} lies in a lab subnet")
    for s in spec.server_addresses6:
        addr6 = IPv6Address(s)
        if addr6 in LINK_LOCAL or any(addr6 in n for n in nets6):
            raise ValueError(f"IPv6 server address {s} lies in a lab subnet")


def seed_spec() -> LabSpec:
    """The seed recipe's topology: wlan1 10.111.0.2/24 (gw .1), wlan2 10.112.0.2/24 (gw .1);
    IPv6 2001:db8:1::2/64 and 2001:db8:2::2/64 (gw ::1)."""
    return LabSpec(
        wans=(
            LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
            LabWan("wlan2", "10.112.0.2/24", "10.112.0.1"),
        )
    )


def make_spec(n_wans: int, names: Sequence[str] | None = None, *,
              ipv4_only: Sequence[str] = (), ipv6_only: Sequence[str] = (),
              **kw: object) -> LabSpec:
    """`n_wans` WANs named `names` (default wan1..), WAN i on 10.(100+i).0.2/24 gw .1 and
    2001:db8:<i>::2/64 gw ::1; the WANs named in `ipv4_only` / `ipv6_only` lack the other
    family on their customer link.

    Extra keyword arguments go to `LabSpec` (e.g. ``client_extra=3``).
    """
    if not 1 <= n_wans <= MAX_LAB_WANS:
        raise ValueError(f"n_wans must be in 1..{MAX_LAB_WANS}")
    if names is None:
        names = [f"wan{i}" for i in range(1, n_wans + 1)]
    if len(names) != n_wans:
        raise ValueError("need exactly one name per WAN")
    unknown = (set(ipv4_only) | set(ipv6_only)) - set(names)
    if unknown or set(ipv4_only) & set(ipv6_only):
        raise ValueError(f"ipv4_only / ipv6_only: unknown or both: {sorted(unknown) or ''}")
    wans = []
    for i, name in enumerate(names, start=1):
        v4 = (None, None) if name in ipv6_only else (f"10.{100 + i}.0.2/24", f"10.{100 + i}.0.1")
        wans.append(LabWan(name, *v4, address6=None if name in ipv4_only else AUTO))
    return LabSpec(wans=tuple(wans), **kw)  # type: ignore[arg-type]


MODEM_GATEWAY = "192.168.1.1"
"""Every `modem_spec` ISP's IPv4 address on its customer link (a home modem's)."""


def modem_spec(n_modems: int = 2, names: Sequence[str] | None = None, *,
               distinct: bool = False, others: Sequence[LabWan] = (), **kw: object) -> LabSpec:
    """"Same gateway" ISPs: `n_modems` WANs (default names ``modem1``..) whose ISPs are all
    192.168.1.1 and ``fe80::1`` (``gateway6`` link-local) and masquerade upstream
    (``modem_nat``).  The router is 192.168.1.2/24 on every one (the kernel takes one
    address on several interfaces, as identical modems' DHCP would hand out), or with
    `distinct` 192.168.1.2, .3, ...  IPv6 prefixes stay per WAN (2001:db8:<i>::/64).
    `others`: further (ordinary) WANs after the modems; `kw` goes to `LabSpec`."""
    if names is None:
        names = [f"modem{i}" for i in range(1, n_modems + 1)]
    if len(names) != n_modems or not 1 <= n_modems <= 250:
        raise ValueError("need 1..250 modems and exactly one name per modem")
    wans = tuple(
        LabWan(name, f"192.168.1.{2 + (k if distinct else 0)}/24", MODEM_GATEWAY,
               gateway6=ISP_LINK_LOCAL, link_local6=ISP_LINK_LOCAL, modem_nat=True)
        for k, name in enumerate(names))
    return LabSpec(wans=wans + tuple(others), **kw)  # type: ignore[arg-type]


def wan_of_source(spec: LabSpec, addr: str | None) -> str | None:
    """The WAN whose customer subnet (IPv4 or IPv6) holds `addr` (a source seen by a
    server), or, for a ``modem_nat`` WAN, whose ISP transit address it is; else None.
    (Modems sharing one IPv4 subnet: the first of them.)"""
    if not addr:
        return None
    try:
        ip = ip_interface(addr).ip
    except ValueError:
        return None
    for i, w in enumerate(spec.wans, start=1):
        if ip.version == 4 and w.has4 and ip in w.network:
            return w.name
        if ip.version == 6 and w.has6 and ip in w.network6:
            return w.name
        if w.modem_nat and str(ip) in (transit(i)[0].split("/")[0],
                                       transit6(i)[0].split("/")[0]):
            return w.name
    return None
