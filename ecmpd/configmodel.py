"""The validated configuration model: what every other module reads.

`ecmpd.config.load_config()` turns a YAML file into a `Config`; nothing downstream ever
sees raw YAML.  All objects are frozen so that a reload can compare old and new models
with `==`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from .control_protocol import DEFAULT_SOCKET

GATEWAY_TARGET = "gateway"
"""The probe target keyword meaning 'this WAN's own gateway' (of each family)."""

FAMILIES = (4, 6)
"""IP versions, in the order they are shown and applied."""


MASQUERADE = "masquerade"
SNAT = "snat"
NAT_MODES = (MASQUERADE, "none")
"""`nat:` values written as a word: `masquerade` (the default) rewrites a connection's
source to the WAN's address; `none` forwards it unchanged (a WAN that routes the LAN's
public prefix).  The third mode, `{snat: ADDRESS}` (`SNAT`), rewrites it to that fixed
address: an HA pair's floating WAN address, the same on either box, so that a NAT
mapping synced to the other box stays valid there."""

NatEntry = tuple[int, str] | tuple[int, str, IPv4Address | IPv6Address]
"""One IP version's `nat:` other than masquerade: (version, "none") or
(version, "snat", address)."""


def family_of(address: str) -> int:
    """4 or 6: the version of an address literal (a ':' makes it IPv6)."""
    return 6 if ":" in address else 4

MAX_WANS = 255


@dataclass(frozen=True)
class ProbeSettings:
    """How one WAN is probed (the global `probe:` merged with the WAN's overrides)."""

    targets: tuple[str, ...] = (GATEWAY_TARGET,)
    """`"gateway"` and/or IPv4 and IPv6 addresses (as strings, normalized), probed
    through this WAN: each family's addresses by that family's probes."""
    interval: float = 0.2
    """Seconds between the starts of two probe rounds."""
    timeout: float = 0.25
    """Seconds: the shortest wait for a reply, and the silence window: a round in which
    nothing at all arrived from the WAN for this long fails at once."""
    max_timeout: float = 4.0
    """Ceiling (seconds) of the adaptive reply timeout; the timeout follows the measured
    RTT (srtt + 4·rttvar, RFC 6298) between `timeout` and `max_timeout`."""
    count: int = 2
    """Echo requests per target per round; the target answers if any reply comes."""
    down: int = 3
    """Consecutive failed rounds before the WAN is DOWN."""
    up: int = 5
    """Consecutive good rounds before a DOWN WAN is UP again."""
    quorum: int | None = None
    """A round is good when at least this many targets answer; None: a majority of the
    resolved targets (see `resolved_quorum`)."""
    max_loss: float | None = None
    """Percent (0..100) of echo requests lost over `window` rounds that fails a round."""
    max_rtt: float | None = None
    """Seconds of mean RTT over `window` rounds that fails a round."""
    window: int = 10
    """Rounds in the sliding window for `max_loss` and `max_rtt`."""

    def family_targets(self, family: int | None) -> tuple[str, ...]:
        """The targets a probe of IP version `family` uses (`gateway` included),
        unresolved (None: all of them)."""
        return tuple(t for t in self.targets
                     if family is None or t == GATEWAY_TARGET or family_of(t) == family)

    def resolved_targets(self, gateway: IPv4Address | IPv6Address | str | None,
                         family: int | None = None) -> tuple[str, ...]:
        """The targets of `family` (None: all; a plane's WANs have only their version's)
        with `gateway` replaced by the WAN's gateway of that version (left out while it is
        unknown: None, an `auto` gateway not learned yet)."""
        out: list[str] = []
        for t in self.family_targets(family):
            addr = (str(gateway) if gateway else None) if t == GATEWAY_TARGET else t
            if addr is not None and addr not in out:
                out.append(addr)
        return tuple(out)

    def resolved_quorum(self, gateway: IPv4Address | IPv6Address | str | None,
                        family: int | None = None) -> int:
        """Targets that must answer for a good round, among `resolved_targets(gateway)`.

        None means a majority (n // 2 + 1): with the gateway and any target beyond it, a
        dead upstream behind a live gateway fails the WAN (1 of n >= 2 answers), and with
        two or more beyond it one silent target alone does not.  An explicit value is
        capped at n: an address listed next to `gateway` that is this WAN's gateway
        counts once.
        """
        n = len(self.resolved_targets(gateway, family))
        return majority(n) if self.quorum is None else min(self.quorum, n)


def majority(n: int) -> int:
    """The smallest number of `n` targets that is more than half of them."""
    return n // 2 + 1


MAX_TIER = 9
"""Tiers run 1..MAX_TIER (a primary, backups, backups of backups...)."""


@dataclass(frozen=True)
class Wan:
    """One WAN uplink, carrying IPv4, IPv6 or both (`families`)."""

    name: str
    interface: str
    gateway: IPv4Address | None
    """The fixed IPv4 gateway; None: `gateway: auto`, learned from the kernel (the
    default route a DHCP client installs for `interface`, or the device of a
    point-to-point link; see `ecmpd.state.gateway`), or no IPv4 on this WAN (4 not in
    `families`)."""
    weight: int = 1
    id: int = 1
    """1..255: selects the WAN's packet/ct mark, routing table and rule priorities."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    gateway6: IPv6Address | None = None
    """The fixed IPv6 gateway (often link-local: meaningful only with `interface`);
    None: `gateway6: auto` (learned from the default route that router advertisements,
    a DHCPv6 client or pppd put via `interface`), or no IPv6 on this WAN."""
    families: tuple[int, ...] = (4,)
    """The IP versions this WAN carries: 4 when `gateway` is given, 6 when `gateway6`
    is; at least one."""
    tier: int = 1
    """New flows use only the WANs of the lowest tier that has a usable one (1 first);
    the others stand by, probed all the time, their pinned flows going on."""
    failback: str = "keep"
    """`keep`: this WAN's flows go on when a lower tier takes new flows again; `flush`:
    they are removed then (a metered backup carries nothing it need not)."""
    nat: tuple[NatEntry, ...] = ()
    """`NatEntry` of each version this WAN carries whose `nat:` is not `masquerade`
    (``(4, "none")``, ``(6, "snat", IPv6Address(...))``); a version left out is
    masqueraded (so the default is `()`)."""

    def has(self, family: int) -> bool:
        """Whether this WAN carries IP version `family`."""
        return family in self.families

    def label(self, family: int) -> str:
        """The WAN in messages about its IP version `family`: the name alone on an
        IPv4-only WAN, else the name and the version (``wlan1 IPv6``)."""
        return self.name if self.families == (4,) else f"{self.name} IPv{family}"

    def nat_mode(self, family: int) -> str:
        """`nat:` of IP version `family`: `masquerade`, `none` or `snat`."""
        return next((e[1] for e in self.nat if e[0] == family), MASQUERADE)

    def snat_address(self, family: int) -> IPv4Address | IPv6Address | None:
        """The fixed source address of IP version `family` (`nat: {snat: ...}`: an HA
        pair's floating WAN address), or None when that version is not SNATed."""
        return next((e[2] for e in self.nat if e[0] == family and len(e) == 3), None)

    def masquerades(self, family: int) -> bool:
        """Whether connections of IP version `family` leaving by this WAN are
        masqueraded (False for a version it does not carry)."""
        return self.has(family) and self.nat_mode(family) == MASQUERADE

    def fixed_gateway(self, family: int) -> IPv4Address | IPv6Address | None:
        """The configured gateway of `family` (None: `auto`, or no such family)."""
        return self.gateway if family == 4 else self.gateway6


PORT_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136}
"""Protocols with ports (a policy's `sport`/`dport` need one of them)."""
PROTOCOLS = {**PORT_PROTOCOLS, "icmp": 1, "icmpv6": 58, "gre": 47, "esp": 50, "ah": 51}
"""Protocol names a policy's `proto` takes (numbers 0..255 too)."""
PROTOCOL_NAMES = {n: name for name, n in PROTOCOLS.items()}
"""Protocol number -> the name a policy's `proto` takes for it."""
FALLBACKS = ("balance", "drop")


@dataclass(frozen=True)
class Policy:
    """One entry of `policies:`: new LAN connections matching it use only its WANs.

    A connection matches when it matches every field given (an empty one matches
    anything) and one of the values of each (a list is "any of").  The first policy
    that matches wins."""

    position: int
    """1-based place in `policies:` (first match wins)."""
    use: tuple[str, ...]
    """WAN names, balanced by weight over the usable ones of their lowest usable tier."""
    route: int
    """1..255, not a WAN id: the packet mark (shifted into `mark_mask`), routing table
    (`table_base + route`) and rule priority offset of this policy's WAN set; policies
    with the same `use` and `fallback` share it."""
    name: str = ""
    fallback: str = "balance"
    """When none of `use` is usable: `balance` (over every WAN, as unmatched traffic)
    or `drop`."""
    src: tuple[str, ...] = ()
    """Source prefixes, normalized (``10.0.0.0/8``, ``2001:db8::/32``), either family."""
    dst: tuple[str, ...] = ()
    proto: tuple[int, ...] = ()
    """IP protocol numbers."""
    sport: tuple[tuple[int, int], ...] = ()
    """Inclusive port ranges (a single port is (p, p))."""
    dport: tuple[tuple[int, int], ...] = ()
    iif: tuple[str, ...] = ()
    """Interfaces the connection comes in by."""

    @property
    def label(self) -> str:
        """The policy in messages and status: its name, else ``policy <position>``."""
        return self.name or f"policy {self.position}"

    def families(self) -> tuple[int, ...]:
        """The IP versions it can match: those of its prefixes (both when it has none)."""
        prefixes = self.src + self.dst
        if not prefixes:
            return FAMILIES
        found = {family_of(p) for p in prefixes}
        return tuple(f for f in FAMILIES if f in found)


@dataclass(frozen=True)
class Ha:
    """`ha:`: this router is one of an active/standby pair (keepalived moves the
    floating addresses, conntrackd syncs connections; `ecmpd.role`)."""

    vips: tuple[str, ...] = ()
    """The LAN gateway addresses that float between the pair (either IP version,
    normalized): keepalived adds them on the master's LAN interface."""
    detect_interval: float | None = 1.0
    """Seconds between the master's split-brain checks (`ecmpd.splitbrain`); None: off."""


@dataclass(frozen=True)
class Config:
    """A whole validated configuration."""

    lan_interfaces: tuple[str, ...]
    wans: tuple[Wan, ...]
    """In config order; names, interfaces, gateways and ids are unique."""
    hash: str = "l4"
    """`l3` (src, dst), `l4` (5-tuple) or `src` (source address: each client on one WAN)
    multipath hashing."""
    mark_mask: int = 0x00FF0000
    """Packet/ct mark bits ecmpd owns; WAN marks are `id` shifted into this mask."""
    table_base: int = 1000
    """WAN `id` uses routing table `table_base + id`."""
    policies: tuple[Policy, ...] = ()
    """`policies:` in order (first match wins)."""
    rule_priority: int = 1000
    """ecmpd's ip rules live in [rule_priority, rule_priority + 511]."""
    route_proto: int = 236
    """rtnetlink `proto` value tagging ecmpd's routes."""
    route_metric: int = 0
    """Metric (priority) of ecmpd's multipath default route in table main."""
    nft_table: str = "ecmpd"
    """Name of ecmpd's own nftables table (family inet: both IP versions)."""
    keep_on_exit: bool = False
    """Leave the dataplane installed when the daemon stops."""
    control_socket: str = DEFAULT_SOCKET
    control_group: str | None = None
    """Group allowed to use the control socket (mode 0660); None: root only."""
    hooks: tuple[str, ...] = ()
    """Absolute paths of programs run, in this order, on every WAN state change
    (`ecmpd.hooks`)."""
    hook_timeout: float = 10.0
    """Seconds a hook may run before it is sent SIGTERM (then SIGKILL)."""
    metrics_listen: tuple[str, int] | None = None
    """(address, port) the Prometheus `/metrics` endpoint listens on; None: off."""
    ha: Ha | None = None
    """`ha:` (one router of a pair); None: standalone."""
    source: str = "<config>"
    """The file the config came from (for messages)."""

    def wan(self, name: str) -> Wan:
        """The WAN called `name` (KeyError if there is none)."""
        w = self.find(name)
        if w is None:
            raise KeyError(name)
        return w

    def find(self, name: str) -> Wan | None:
        """The WAN called `name` (None if there is none)."""
        return next((w for w in self.wans if w.name == name), None)

    def families(self) -> tuple[int, ...]:
        """The IP versions at least one WAN carries, in `FAMILIES` order."""
        return tuple(f for f in FAMILIES if any(w.has(f) for w in self.wans))

    def version_prefix(self, family: int) -> str:
        """``"IPv6 "`` (the version, a space) in messages about one IP version of a
        config that carries IPv6; "" in an IPv4-only config."""
        return "" if self.families() == (4,) else f"IPv{family} "

    def mark_of(self, wan: Wan) -> int:
        """The packet/ct mark value of `wan` (already inside `mark_mask`)."""
        return (wan.id << mask_shift(self.mark_mask)) & self.mark_mask

    def table_of(self, wan: Wan) -> int:
        """The routing table id of `wan`."""
        return self.table_base + wan.id

    def policy_routes(self) -> dict[int, Policy]:
        """Each policy WAN set's `route` -> the first policy using it."""
        out: dict[int, Policy] = {}
        for p in self.policies:
            out.setdefault(p.route, p)
        return out

    def route_mark(self, route: int) -> int:
        """The packet mark of a policy WAN set's `route` (inside `mark_mask`)."""
        return (route << mask_shift(self.mark_mask)) & self.mark_mask


def mask_shift(mask: int) -> int:
    """Position of the lowest set bit of `mask` (mask must be non-zero)."""
    return (mask & -mask).bit_length() - 1
