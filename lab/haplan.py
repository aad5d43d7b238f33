"""The HA pair lab's address plan and configs (`lab.hapair` builds and runs it) — pure.

The plan is the one of the shipped examples in ``ha/``: the LAN 192.168.88.0/24 and
fd00:88::/64 (gateway .1/::1 floating, the boxes .2 and .3, the client .10), WAN 1
198.51.100.0/29 and 2001:db8:a::/64, WAN 2 203.0.113.0/29 and 2001:db8:b::/64 (the ISP
.1/::1, the boxes .2/.3, the floating address .4/::4, which keepalived moves and ecmpd
SNATs to), the sync link 10.255.255.0/30.  The configs of keepalived and conntrackd are
the shipped examples with per-box and per-run values replaced (`keepalived_conf`,
`conntrackd_conf`): a change to the examples that the lab does not expect fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HA = ROOT / "ha"
NOTIFY = HA / "ecmpd-ha-notify"
SERVER = "192.0.2.10"
SERVER6 = "2001:db8:feed::10"
PORT = 5000


@dataclass(frozen=True)
class WanPlan:
    """One WAN segment: the ISP's address, each box's own, the floating one (per family)."""

    name: str
    net: str
    isp: str
    boxes: tuple[str, str]
    floating: str
    net6: str
    isp6: str
    boxes6: tuple[str, str]
    floating6: str
    upstream: tuple[str, str]
    """(ISP side, inet side) of the transit link, /30."""
    upstream6: tuple[str, str]


WANS = (
    WanPlan("wan1", "198.51.100.0/29", "198.51.100.1", ("198.51.100.2", "198.51.100.3"),
            "198.51.100.4", "2001:db8:a::/64", "2001:db8:a::1",
            ("2001:db8:a::2", "2001:db8:a::3"), "2001:db8:a::4",
            ("100.64.1.1", "100.64.1.2"), ("2001:db8:ffff:1::1", "2001:db8:ffff:1::2")),
    WanPlan("wan2", "203.0.113.0/29", "203.0.113.1", ("203.0.113.2", "203.0.113.3"),
            "203.0.113.4", "2001:db8:b::/64", "2001:db8:b::1",
            ("2001:db8:b::2", "2001:db8:b::3"), "2001:db8:b::4",
            ("100.64.2.1", "100.64.2.2"), ("2001:db8:ffff:2::1", "2001:db8:ffff:2::2")),
)
LAN_VIP, LAN_VIP6 = "192.168.88.1", "fd00:88::1"
LAN_BOXES, LAN_BOXES6 = ("192.168.88.2", "192.168.88.3"), ("fd00:88::2", "fd00:88::3")
CLIENT, CLIENT6 = "192.168.88.10", "fd00:88::10"
SYNC = ("10.255.255.1", "10.255.255.2")
BOXES = ("r1", "r2")
LINKS = ("lan0", "wan1", "wan2")
ROUTER_SYSCTL = {
    "net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.conf.all.rp_filter": 2, "net.ipv4.conf.default.rp_filter": 2,
    "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.keep_addr_on_down": 1, "net.ipv6.conf.default.keep_addr_on_down": 1,
    # a packet of a connection the kernel does not know is INVALID, not a new
    # connection: between the VIP moving and conntrackd's commit, a mid-stream packet
    # must not create an entry (with a fresh mark and NAT) that the commit cannot replace
    "net.netfilter.nf_conntrack_tcp_loose": 0,
}


def wan_of(source: str | None) -> str | None:
    """The WAN whose floating address (what the server sees) is `source`."""
    return next((w.name for w in WANS if source in (w.floating, w.floating6)), None)


def ecmpd_config(hash_: str = "l4", interval: str = "100ms") -> dict[str, Any]:
    """The one config both boxes run: static WANs SNATed to their floating addresses,
    no box-specific key (no `address`), so the marks mean the same WAN on both."""
    wans = {w.name: {"interface": w.name, "gateway": w.isp, "gateway6": w.isp6,
                     "nat": {"ipv4": {"snat": w.floating}, "ipv6": {"snat": w.floating6}}}
            for w in WANS}
    return {"lan": {"interfaces": ["lan0"]}, "wans": wans, "hash": hash_,
            # the pair: keepalived's notify script sets the role (`ecmpctl role`)
            "ha": {"vips": [LAN_VIP, LAN_VIP6]},
            "probe": {"interval": interval, "timeout": "200ms", "down": 3, "up": 3}}


def _swap(text: str, pairs: dict[str, str]) -> str:
    """`text` with each key replaced by its value; every key must occur (else the
    shipped example changed in a way the lab does not know)."""
    for old, new in pairs.items():
        if old not in text:
            raise ValueError(f"the shipped example no longer contains {old!r}")
        text = text.replace(old, new)
    return text


def keepalived_conf(box: int, notify: str, advert: float) -> str:
    """ha/keepalived.conf for box `box` (0: A, 1: B) with the lab's notify command."""
    text = (HA / "keepalived.conf").read_text()
    pairs = {'notify "/usr/lib/ecmpd/ecmpd-ha-notify"': f'notify "{notify}"',
             "advert_int 0.1": f"advert_int {advert}",
             # scripts under the test's temp dir: the lab is root-only anyway
             "    enable_script_security\n": ""}
    if box == 1:
        pairs.update({"router_id ecmpd-a": "router_id ecmpd-b", "priority 150": "priority 100",
                      f"unicast_src_ip {SYNC[0]}": f"unicast_src_ip {SYNC[1]}",
                      f"        {SYNC[1]}\n": f"        {SYNC[0]}\n"})
    return _swap(text, pairs)


def conntrackd_conf(box: int, workdir: Path) -> str:
    """ha/conntrackd.conf for box `box` with its lock, socket and log in `workdir`."""
    text = (HA / "conntrackd.conf").read_text()
    pairs = {"LockFile /var/lock/conntrack.lock": f"LockFile {workdir}/conntrackd.lock",
             "Path /var/run/conntrackd.ctl": f"Path {workdir}/conntrackd.ctl",
             "LogFile on": f"LogFile {workdir}/conntrackd.log",
             "Systemd on": "Systemd off"}
    if box == 1:
        pairs.update({f"IPv4_address {SYNC[0]}\n        IPv4_Destination_Address {SYNC[1]}":
                      f"IPv4_address {SYNC[1]}\n        IPv4_Destination_Address {SYNC[0]}"})
    return _swap(text, pairs)
