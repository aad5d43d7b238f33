"""Real lines in the lab: modem-like shaping (tbf); the load is `lab.load`.

A DSL/cable line is a token bucket before a deep modem buffer: when the line is full
the RTT climbs toward the buffer depth (~1 s).  `shape` puts a ``tbf`` (``latency`` =
`Line.buffer_s`) where a modem would: download on the ISP's ``cust`` egress, upload on
the router's WAN egress.  Measured here: TCP gets ~95.6 % of the rate (tbf counts
1514-byte frames, TCP carries 1448); tc takes any ``burst``, but below one frame every
full-size packet is dropped (0 bit/s, pings pass): see `burst_bytes`.  The namespaces
inherit the host's TCP congestion control (``bbr``: queue stays ~15 ms); ``cubic`` needs
~10 s to fill 1 s of buffer (HyStart), ``reno`` ~1 s, so `lab.load.Load` uses ``reno``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.base import LabLike

log = logging.getLogger(__name__)
FRAME = 1514
"""Largest frame on a lab veth (MTU 1500 + Ethernet header), as tbf counts it."""



@dataclass(frozen=True)
class Line:
    """A modem-like line: rates in Mbit/s, buffer depth in s, delay/jitter (needs netem)."""

    down_mbit: float
    up_mbit: float
    buffer_s: float = 1.0
    delay_ms: float = 0
    jitter_ms: float = 0

    def __post_init__(self) -> None:
        if min(self.down_mbit, self.up_mbit, self.buffer_s) <= 0:
            raise ValueError("line rates and buffer_s must be > 0")
        if min(self.delay_ms, self.jitter_ms) < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")


# ------------------------------------------------------------ tc (pure)

def burst_bytes(rate_mbit: float) -> int:
    """tbf burst: 4 ms of line, at least two full frames (below one frame, frames drop)."""
    return max(int(rate_mbit * 1e6 / 8 / 250), 2 * FRAME)


def tbf_argv(dev: str, rate_mbit: float, buffer_s: float, parent: str = "root",
             handle: str = "1:") -> list[str]:
    """``tc qdisc replace`` of a tbf of `rate_mbit` that queues up to `buffer_s` of line."""
    return ["tc", "qdisc", "replace", "dev", dev, *parent.split(), "handle", handle, "tbf",
            "rate", f"{round(rate_mbit * 1000)}kbit", "burst", str(burst_bytes(rate_mbit)),
            "latency", f"{round(buffer_s * 1000)}ms"]


def netem_argv(dev: str, delay_ms: float, jitter_ms: float = 0) -> list[str]:
    """``tc qdisc replace`` of a root netem delay (a tbf then goes under it, at 1:1)."""
    argv = ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem",
            "limit", "100000", "delay", f"{delay_ms:g}ms"]
    return argv + [f"{jitter_ms:g}ms"] if jitter_ms else argv


def shape_argvs(dev: str, rate_mbit: float, line: Line, netem: bool) -> list[list[str]]:
    """tc commands shaping one direction of `line` on `dev`: with netem and a delay, netem
    is the root and the tbf its child (``latency`` still bounds the queue)."""
    if netem and (line.delay_ms or line.jitter_ms):
        return [netem_argv(dev, line.delay_ms, line.jitter_ms),
                tbf_argv(dev, rate_mbit, line.buffer_s, parent="parent 1:1", handle="10:")]
    return [tbf_argv(dev, rate_mbit, line.buffer_s)]


def unshape_argv(dev: str) -> list[str]:
    """``tc qdisc del`` of `dev`'s root qdisc (back to the device default)."""
    return ["tc", "qdisc", "del", "dev", dev, "root"]


@dataclass(frozen=True)
class Qdisc:
    """One qdisc of ``tc -s -j qdisc show`` (rate in Mbit/s, latency in s)."""

    kind: str
    root: bool
    rate_mbit: float | None = None
    burst: int | None = None
    latency_s: float | None = None
    sent_bytes: int = 0
    drops: int = 0
    backlog: int = 0


def parse_qdiscs(text: str) -> list[Qdisc]:
    """Parse ``tc [-s] -j qdisc show dev X`` (tbf options: rate B/s, burst B, lat us)."""
    out = []
    for q in json.loads(text or "[]"):
        opt = q.get("options") or {}
        out.append(Qdisc(q.get("kind", ""), bool(q.get("root")),
                         opt["rate"] * 8 / 1e6 if "rate" in opt else None, opt.get("burst"),
                         opt["lat"] / 1e6 if "lat" in opt else None, q.get("bytes", 0),
                         q.get("drops", 0), q.get("backlog", 0)))
    return out


# ------------------------------------------------------------ shaping

_netem: bool | None = None


def has_netem(lab: LabLike) -> bool:
    """Whether the kernel has netem (a throw-away qdisc on the LAN's ``lo``; cached)."""
    global _netem
    if _netem is None:
        _netem = lab.run(lab.ns_lan, *netem_argv("lo", 1), check=False).returncode == 0
        if _netem:
            lab.run(lab.ns_lan, *unshape_argv("lo"), check=False)
    return _netem


def line_devices(lab: LabLike, wan: str) -> dict[str, tuple[str, str]]:
    """``{"down": (ISP namespace, "cust"), "up": (router namespace, wan)}``."""
    lab.spec.wan(wan)  # KeyError for an unknown WAN
    return {"down": (lab.ns_isp(wan), "cust"), "up": (lab.ns_router, wan)}


def qdiscs(lab: LabLike, wan: str) -> dict[str, list[Qdisc]]:
    """The qdiscs (with counters) of both directions of `wan`'s line."""
    return {d: parse_qdiscs(lab.run(ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev).stdout)
            for d, (ns, dev) in line_devices(lab, wan).items()}


def shape(lab: LabLike, wan: str, line: Line) -> None:
    """Make `wan` a real line (both directions); replaces any earlier shaping."""
    netem = has_netem(lab)
    if (line.delay_ms or line.jitter_ms) and not netem:
        log.warning("no netem in this kernel: delay %gms / jitter %gms on %s ignored",
                    line.delay_ms, line.jitter_ms, wan)
    for d, (ns, dev) in line_devices(lab, wan).items():
        first, *rest = shape_argvs(dev, line.down_mbit if d == "down" else line.up_mbit,
                                   line, netem)
        if lab.run(ns, *first, check=False).returncode != 0:
            lab.run(ns, *unshape_argv(dev), check=False)  # another layout: start afresh
            lab.run(ns, *first)
        for argv in rest:
            lab.run(ns, *argv)


def unshape(lab: LabLike, wan: str) -> None:
    """Remove `wan`'s shaping; idempotent (tc's "handle of zero" error means none)."""
    for ns, dev in line_devices(lab, wan).values():
        lab.run(ns, *unshape_argv(dev), check=False)
        left = parse_qdiscs(lab.run(ns, "tc", "-j", "qdisc", "show", "dev", dev).stdout)
        if any(q.root and q.kind in ("tbf", "netem") for q in left):
            raise RuntimeError(f"could not remove the shaping of {dev} in {ns}")


# ------------------------------------------------------------ ping

def parse_ping(text: str) -> list[float]:
    """RTTs (ms) of the answered requests in ping(8) output, in order."""
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", text)]


def ping_rtts(lab: LabLike, ns: str, target: str, count: int = 10,
              interval: float = 0.2) -> list[float]:
    """Ping `target` from lab namespace `ns`: the answered RTTs in ms."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "5", target]
    return parse_ping(lab.run(ns, *argv, check=False, timeout=count * interval + 15).stdout)
