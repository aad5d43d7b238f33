"""Figure 13, forwarding cost: the kernel CPU per forwarded packet at a fixed packet rate,
six routers measured interleaved in one run, in one 2-WAN lab (unshaped veth); the rows
are bench/fwcostrows.py's.

Each window: a generator (Python, one socket per client address) in the LAN namespace
sends `PPS` small UDP packets a second for `Plan.fwcost_seconds` to the internet server,
spread over `LONG` long-lived flows with every `NEW_EVERY`-th packet opening a new flow
(a new source address / destination port pair: policies only look at a connection's
first packet); the internet namespace counts
and drops them in an nft prerouting rule (no reply, no ICMP).  On veth the whole path
(the router's forwarding, NAT, ecmpd's rules, the ISP, the sink) runs as softirq in the
sending task's context, so the cost is the sender's system time (getrusage) plus what
ksoftirqd did beyond an idle window, per packet received: it counts the sendto and the
sink too, the same for every router, so differences are the routers' own.  Second
figure, noisier: the whole machine's kernel CPU (system + irq + softirq of every CPU,
/proc/stat) minus an idle window just before with the same router running; other
work on the host shows in it.

Routers (`VARIANTS`): a bare kernel router (a multipath default route over both WANs and
one masquerade rule, nothing else), the seed's recipe (bench/baseline.py), ecmpd with 0
policies, with 1 000 policies of one shape that match nothing, with 1 000 policies of
six shapes in blocks and the same interleaved, whose last one matches the traffic of
`MATCHING` clients (its new connections must still reach the sink); and the interleaved
set again with every policy but the last on one WAN set.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.runner import config_for

from bench import routers
from bench.figures import _error

if TYPE_CHECKING:
    from lab import Lab

    from bench.plan import Bench

PPS = 20_000
LONG = 64
"""Long-lived flows (source address i, destination port 9000 + i)."""
NEW_EVERY = 10
"""Every 10th packet opens a new flow: 2 000 new flows a second at `PPS`."""
PAYLOAD = 18
"""UDP payload bytes: 46-byte IP packets (a minimal Ethernet frame)."""
MATCHING = 25
"""The mixed policy set's last policy matches the first 25 client addresses."""
POLICIES = 1000
VARIANTS = ("bare", "seed", "ecmpd 0", "ecmpd 1000 nomatch", "ecmpd 1000 by shape",
            "ecmpd 1000 interleaved", "ecmpd 1000 interleaved, one WAN set")
KINDS = {"ecmpd 0": None, "ecmpd 1000 nomatch": "nomatch", "ecmpd 1000 by shape": "sorted",
         "ecmpd 1000 interleaved": "mixed", "ecmpd 1000 interleaved, one WAN set": "mixed1"}
SINK = "fwsink"
RULES: dict[str | None, int] = {}
"""Policy kind -> lookups on the longest way through ecmpd's policy chains (read once
each start)."""

GENERATOR = r"""
import resource, socket, sys, time
srcs, dst = sys.argv[1].split(","), sys.argv[2]
pps, secs, new_every, long_, payload = (int(sys.argv[3]), float(sys.argv[4]),
                                        int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
socks = []
for a in srcs:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a, 0))
    socks.append(s)
n, data = len(socks), b"x" * payload
longs = [(socks[i % n], 9000 + i) for i in range(long_)]
sent = new = errors = 0
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.monotonic()
while True:
    now = time.monotonic() - t0
    if now >= secs:
        break
    due = int(now * pps)
    while sent < due:
        if sent % new_every == 0:
            sock, port = socks[new % n], 10000 + (new // n) % 50000
            new += 1
        else:
            sock, port = longs[sent % long_]
        try:
            sock.sendto(data, (dst, port))
        except OSError:
            errors += 1
        sent += 1
    time.sleep(0.0005)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(sent, new, errors, r1.ru_stime - r0.ru_stime, r1.ru_utime - r0.ru_utime, flush=True)
"""


@dataclass
class Window:
    """One measured window of one variant."""

    variant: str
    kernel_ticks: int
    idle_ticks: int
    """The ticks of the idle window just before (the same router running), scaled to
    this window's length."""
    sent: int
    received: int
    seconds: float
    sender_sys: float = 0.0
    """The generator's system time (s) over its sending loop: its sendto and, on veth,
    the whole forwarding path to the sink, run as softirq in its context."""
    ksoftirqd: int = 0
    """ksoftirqd threads' ticks in the window minus the idle window's (scaled): the
    softirq work deferred out of the sender's context."""
    matched: int | None = None
    """The matching policy's packet counter (ecmpd's status), for the mixed sets."""
    round: int = 0

    @property
    def sender_us(self) -> float:
        """The sender's kernel µs (its system time + deferred softirq) per received packet."""
        if self.received <= 0:
            return float("nan")
        return (self.sender_sys + self.ksoftirqd / TICK) * 1e6 / self.received

    @property
    def us_per_packet(self) -> float:
        """Kernel CPU µs per received packet, the idle window's ticks taken off."""
        if self.received <= 0:
            return float("nan")
        return (self.kernel_ticks - self.idle_ticks) / TICK * 1e6 / self.received


TICK = 100
"""USER_HZ: /proc/stat counts in 1/100 s."""


@dataclass
class FwCost:
    windows: list[Window] = field(default_factory=list)
    idle: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Variant -> the first error of its windows."""


# ------------------------------------------------------------------ pure parts

def kernel_ticks(stat_text: str) -> int:
    """system + irq + softirq jiffies of the ``cpu`` line of /proc/stat (all CPUs)."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            return f[2] + f[5] + f[6]
    raise ValueError("no cpu line in /proc/stat")


_COUNTER = re.compile(r"counter packets (\d+) bytes \d+")


def sink_packets(nft_text: str) -> int:
    """The packets of the sink rule's counter (`nft list table ip fwsink`)."""
    m = _COUNTER.search(nft_text)
    if m is None:
        raise ValueError(f"no counter in the sink table: {nft_text[:200]!r}")
    return int(m.group(1))


def policies(kind: str, clients: list[str], lan_if: str, wans: list[str]) -> list[dict]:
    """`POLICIES` policies: ``nomatch`` one shape (a destination /32 in 198.18.0.0/15,
    none the server); ``mixed`` six shapes rotating (dst, src, proto+dport, src+dst,
    proto+sport range, iif+dst) that match nothing, on the two WANs in turn, then one
    that matches `MATCHING` clients; ``sorted`` the same, the six shapes in blocks;
    ``mixed1`` as ``mixed`` with all but the last on the first WAN.  Interleaved, a
    dst-only and a src-only policy may both match one packet, and when they say
    otherwise (other WANs) their order is kept by a new group (a lookup): ``mixed``
    takes a group per policy, ``mixed1`` one per shape."""
    if kind == "sorted":
        mixed = policies("mixed", clients, lan_if, wans)
        return sorted(mixed[:-1], key=lambda p: int(p["name"][1:]) % 6) + mixed[-1:]
    out: list[dict] = []
    for i in range(POLICIES - (kind != "nomatch")):
        dst = f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}/32"
        use = [wans[0 if kind == "mixed1" else i % len(wans)]]
        shape = 0 if kind == "nomatch" else i % 6
        lo = 1 + i * 11
        p: dict[str, Any] = [
            {"dst": dst},
            {"src": f"10.{200 + (i >> 16 & 7)}.{i >> 8 & 255}.{i & 255}/32"},
            {"proto": "udp", "dport": 1 + i},
            {"src": f"172.{16 + (i >> 16 & 7)}.{i >> 8 & 255}.0/24", "dst": dst},
            {"proto": "tcp", "sport": f"{lo}-{lo + 10}"},
            {"iif": lan_if, "dst": dst},
        ][shape]
        out.append({"name": f"p{i}", **p, "use": use})
    if kind != "nomatch":
        out.append({"name": "matching", "src": [f"{c}/32" for c in clients[:MATCHING]],
                    "use": [wans[-1]]})
    return out


def policy_rules(ruleset: str) -> int:
    """The verdict-map lookups a new connection makes at most in chain ``policies`` of
    `nft list ruleset` (one per group)."""
    chains: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in ruleset.splitlines():
        text = line.strip()
        if text.startswith("chain "):
            lines = chains.setdefault(text.split()[1], [])
        elif lines is not None and text and text != "}":
            lines.append(text)
    return sum("vmap" in text for text in chains.get("policies", []))


def _proc_stat() -> int:
    with open("/proc/stat") as f:
        return kernel_ticks(f.read())


def task_ticks(stat_text: str) -> int:
    """utime + stime of a /proc/PID/stat line."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _ksoftirqd() -> int:
    """The ksoftirqd threads' CPU ticks (utime + stime), all CPUs."""
    total = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith("ksoftirqd/"):
                total += task_ticks((comm.parent / "stat").read_text())
        except OSError:
            continue
    return total


def _install_sink(lab: "Lab") -> None:
    server = lab.spec.server_addresses[0]
    lab.nft(lab.ns_inet, f"add table ip {SINK}\ndelete table ip {SINK}\n"
            f"table ip {SINK} {{\n  chain pre {{\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            f"    ip daddr {server} udp dport 9000-60000 counter drop\n  }}\n}}\n")


def _sunk(lab: "Lab") -> int:
    return sink_packets(lab.run(lab.ns_inet, "nft", "list", "table", "ip", SINK).stdout)


@dataclass
class Sent:
    """One window of traffic as measured."""

    kernel_ticks: int
    ksoftirqd: int
    sent: int
    received: int
    seconds: float
    sender_sys: float


def window(lab: "Lab", seconds: float) -> Sent:
    """Send for `seconds`."""
    srcs = ",".join(str(IPv4Interface(a).ip) for a in lab.spec.client_addresses)
    argv = [sys.executable, "-c", GENERATOR, srcs, lab.spec.server_addresses[0], str(PPS),
            str(seconds), str(NEW_EVERY), str(LONG), str(PAYLOAD)]
    before_rx = _sunk(lab)
    t0, k0, s0 = time.monotonic(), _proc_stat(), _ksoftirqd()
    out = lab.run(lab.ns_lan, *argv, timeout=seconds + 30).stdout.split()
    time.sleep(0.05)  # the last packets cross the veths
    k1, s1, t1 = _proc_stat(), _ksoftirqd(), time.monotonic()
    sent, _new, errors = (int(x) for x in out[:3])
    if errors:
        raise RuntimeError(f"the generator's sendto failed {errors} times")
    return Sent(k1 - k0, s1 - s0, sent, _sunk(lab) - before_rx, t1 - t0, float(out[3]))


def idle(seconds: float) -> tuple[int, int]:
    """(kernel ticks, ksoftirqd ticks) of `seconds` without traffic."""
    k0, s0 = _proc_stat(), _ksoftirqd()
    time.sleep(seconds)
    return _proc_stat() - k0, _ksoftirqd() - s0


def _bare(lab: "Lab") -> Callable[[], None]:
    wans = lab.spec.wans
    netns_run = lab.run
    netns_run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    netns_run(lab.ns_router, "ip", "route", "replace", "default",
              *[x for w in wans for x in ("nexthop", "via", w.gateway, "dev", w.name)])
    names = ", ".join(f'"{w.name}"' for w in wans)
    lab.nft(lab.ns_router, f"table ip {routers.NATGW_TABLE} {{\n  chain post {{\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    oifname {{ {names} }} masquerade\n  }}\n}}\n")
    return lambda: routers.unprogram(lab)


def _seed(lab: "Lab") -> Callable[[], None]:
    b = routers.Baseline(lab).start()
    return lambda: (b.stop(), None)[1]


def _ecmpd(lab: "Lab", kind: str | None) -> tuple[Callable[[], None], Callable[[], int | None]]:
    cfg = config_for(lab)
    if kind:
        cfg["policies"] = policies(kind, [str(IPv4Interface(a).ip)
                                          for a in lab.spec.client_addresses],
                                   lab.spec.lan_interface, [w.name for w in lab.spec.wans])
    # 1 000 policies: the start renders and loads thousands of map elements, slow on
    # a busy shared machine
    d = routers.start_ecmpd(lab, config=cfg, start_timeout=60.0 if kind else 15.0)
    RULES[kind] = policy_rules(lab.run(lab.ns_router, "nft", "list", "ruleset").stdout)

    def matched() -> int | None:
        if kind not in ("mixed", "sorted", "mixed1"):
            return None
        pols = {p["name"]: p for p in d.status().get("policies", [])}
        return int(pols["matching"]["packets"])
    return (lambda: routers.stop_ecmpd(lab, d)), matched


def start(lab: "Lab", variant: str) -> tuple[Callable[[], None], Callable[[], int | None]]:
    """Program `variant` in the router; (stop, the matching policy's counter)."""
    none: Callable[[], int | None] = lambda: None  # noqa: E731
    if variant == "bare":
        return _bare(lab), none
    if variant == "seed":
        return _seed(lab), none
    return _ecmpd(lab, KINDS[variant])


def measure(bench: "Bench", rounds: int, seconds: float) -> FwCost:
    """`rounds` rounds of every variant (the order rotates over the rounds): start it, an
    idle window with it running, a window of traffic, stop it; a failing variant's
    window is noted and the others go on."""
    lab = bench.lab("2")
    _install_sink(lab)
    m = FwCost()
    try:
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for v in order:
                try:
                    stop, matched = start(lab, v)
                    try:
                        time.sleep(1.0)  # the router's start settles
                        quiet, quiet_soft = idle(seconds)
                        m.idle.append(quiet)
                        w = window(lab, seconds)
                        scale = w.seconds / seconds
                        m.windows.append(Window(
                            v, w.kernel_ticks, round(quiet * scale), w.sent, w.received,
                            w.seconds, w.sender_sys,
                            w.ksoftirqd - round(quiet_soft * scale), matched(), r))
                    finally:
                        stop()
                except Exception as exc:  # noqa: BLE001 - one variant's failure is a row
                    error = _error(exc).removeprefix("ERROR: ")
                    m.errors.setdefault(v, error)
                    bench.note(f"figure 13 {v} round {r}: {error}")
            bench.progress(f"figure 13 round {r + 1}/{rounds}")
    finally:
        lab.nft(lab.ns_inet, f"add table ip {SINK}\ndelete table ip {SINK}\n", check=False)
    for w in m.windows:
        bench.details.append(f"fig13 {w.variant}: sender sys {w.sender_sys:.2f} s, "
                             f"ksoftirqd {w.ksoftirqd} ticks, {w.sender_us:.3f} µs/packet; "
                             f"machine kernel {w.kernel_ticks} ticks (idle {w.idle_ticks}), "
                             f"{w.us_per_packet:.3f} µs/packet; sent {w.sent}, received "
                             f"{w.received}, {w.seconds:.2f} s"
                             + (f", matched {w.matched}" if w.matched is not None else ""))
    return m
