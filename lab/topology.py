"""Lab topology description: which WANs, which addresses, and the derived address plan.

A `LabSpec` is a small frozen description; `Lab` (in `lab.lab`) builds it from
network namespaces and veth pairs.  Everything here is pure (no system access).

Address plan for WAN number ``i`` (1-based, in spec order):

* router ``LabWan.name`` <-> ISP ``cust``: the WAN's own subnet (router ``address``,
  ISP ``gateway``);
* ISP ``up`` 100.64.<i>.1/30 <-> inet ``isp<i>`` 100.64.<i>.2/30 (the transit link);
* inet routes the WAN's subnet via 100.64.<i>.1; the ISP's default route points to
  100.64.<i>.2, which is also the WAN's "upstream" probe target.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface
from typing import Sequence

IFNAMSIZ = 15
"""Longest Linux interface name."""

WAN_KINDS = ("ether", "ptp")
"""`LabWan.kind` values."""

MAX_LAB_WANS = 155
"""`make_spec` uses 10.(100+i).0.0/24, so at most 155 generated WANs."""


@dataclass(frozen=True)
class LabWan:
    """One WAN of the lab: the router-side interface and its ISP."""

    name: str
    """WAN name == router-side interface name, e.g. ``wlan1``."""
    address: str
    """Router's address/prefix on the WAN, e.g. ``10.111.0.2/24``."""
    gateway: str
    """The ISP's address on the customer link, e.g. ``10.111.0.1``."""
    kind: str = "ether"
    """``ether``: a veth customer link, router addressed at build.  ``ptp``: no customer
    link until `lab.ptp.PtpWan.connect` (a tun pair; `address`'s subnet is the ISP's
    pool, `gateway` its end of the link)."""

    @property
    def interface(self) -> IPv4Interface:
        """The router's address as an interface object."""
        return IPv4Interface(self.address)

    @property
    def network(self) -> IPv4Network:
        """The customer subnet (the one BCP38 allows from the router)."""
        return self.interface.network

    @property
    def gateway_interface(self) -> str:
        """The ISP's address with the WAN's prefix length, e.g. ``10.111.0.1/24``."""
        return f"{self.gateway}/{self.interface.network.prefixlen}"


@dataclass(frozen=True)
class LabSpec:
    """What to build: the WANs, the LAN and the internet servers."""

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

    def __post_init__(self) -> None:
        validate_spec(self)

    @property
    def client_addresses(self) -> tuple[str, ...]:
        """The client's addresses (with prefix): ``client_address`` then the extras."""
        base = IPv4Interface(self.client_address)
        net = base.network
        out = [str(base)]
        for k in range(1, self.client_extra + 1):
            addr = base.ip + k
            if addr not in net or addr == net.broadcast_address:
                raise ValueError(f"client_extra={self.client_extra} overflows {net}")
            out.append(f"{addr}/{net.prefixlen}")
        return tuple(out)

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


def transit(index: int) -> tuple[str, str]:
    """(ISP side, inet side) addresses with /30 of the transit link of WAN `index`."""
    if not 1 <= index <= 255:
        raise ValueError(f"WAN index {index} out of 1..255")
    return f"100.64.{index}.1/30", f"100.64.{index}.2/30"


def upstream_of(index: int) -> str:
    """The inet-side transit address of WAN `index`: reachable only through that ISP's path."""
    return transit(index)[1].split("/")[0]


def _check_ifname(name: str, what: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or name.strip() != name or ":" in name:
        raise ValueError(f"bad interface name for {what}: {name!r}")


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
    names = [w.name for w in spec.wans]
    if len(set(names)) != len(names) or spec.lan_interface in names:
        raise ValueError("WAN names and the LAN interface must be distinct")
    nets: list[IPv4Network] = [lan.network]
    for w in spec.wans:
        _check_ifname(w.name, "WAN")
        if w.kind not in WAN_KINDS:
            raise ValueError(f"{w.name}: kind must be one of {WAN_KINDS}, not {w.kind!r}")
        gw = IPv4Address(w.gateway)
        if gw not in w.network or gw == w.interface.ip:
            raise ValueError(f"{w.name}: gateway {gw} must be another address in {w.network}")
        if any(w.network.overlaps(n) for n in nets):
            raise ValueError(f"{w.name}: {w.network} overlaps another lab subnet")
        nets.append(w.network)
    for s in spec.server_addresses:
        addr = ip_address(s)
        if any(addr in n for n in nets):
            raise ValueError(f"server address {s} lies in a lab subnet")


def seed_spec() -> LabSpec:
    """The seed recipe's topology: wlan1 10.111.0.2/24 (gw .1), wlan2 10.112.0.2/24 (gw .1)."""
    return LabSpec(
        wans=(
            LabWan("wlan1", "10.111.0.2/24", "10.111.0.1"),
            LabWan("wlan2", "10.112.0.2/24", "10.112.0.1"),
        )
    )


def make_spec(n_wans: int, names: Sequence[str] | None = None, **kw: object) -> LabSpec:
    """`n_wans` WANs named `names` (default wan1..), WAN i on 10.(100+i).0.2/24 gw .1.

    Extra keyword arguments go to `LabSpec` (e.g. ``client_extra=3``).
    """
    if not 1 <= n_wans <= MAX_LAB_WANS:
        raise ValueError(f"n_wans must be in 1..{MAX_LAB_WANS}")
    if names is None:
        names = [f"wan{i}" for i in range(1, n_wans + 1)]
    if len(names) != n_wans:
        raise ValueError("need exactly one name per WAN")
    wans = tuple(
        LabWan(name, f"10.{100 + i}.0.2/24", f"10.{100 + i}.0.1")
        for i, name in enumerate(names, start=1)
    )
    return LabSpec(wans=wans, **kw)  # type: ignore[arg-type]


def wan_of_source(spec: LabSpec, addr: str | None) -> str | None:
    """The WAN whose customer subnet holds `addr` (a source seen by a server), else None."""
    if not addr:
        return None
    try:
        ip = ip_interface(addr).ip
    except ValueError:
        return None
    for w in spec.wans:
        if ip in w.network:
            return w.name
    return None
