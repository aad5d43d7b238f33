"""ICMP flood at a WAN address of the lab's router, from the inet namespace.

Run as ``python -m lab.flood --dst A --pps N --seconds S [--kind K] [--ident I]
[--source B] [--go]`` inside a namespace (`start_flood` does it through `Lab.popen`): a
raw socket, a ring of pre-built packets and a paced ``send`` loop.  Prints ``ready``
(with ``--go`` it then waits for a line on stdin before sending) and, at the end (or on
SIGTERM/SIGINT), one JSON line ``{"sent", "errors", "seconds", "pps",
"ident", "kind"}``.  Kinds: ``echo-reply`` (type 0) and ``unreachable`` (type 3 code 1
quoting an echo request from `dst` with identifier `ident`, as a router on the path would).

One process sends 500 000-790 000 echo replies/s here unpaced (by the machine's load),
far above the 150 000 asked for, and the router receives all of them.  The packets cross the WAN's ISP, so a shaped line limits them like any download:
they fill its tbf (RTT -> buffer) and the excess is dropped there.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from lab import driver

if TYPE_CHECKING:
    from lab.base import LabLike

KINDS = ("echo-reply", "unreachable")
RING = 64
"""Pre-built packets per process, cycled (sequence numbers 0..63)."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def _icmp(kind: int, code: int, rest: bytes, payload: bytes) -> bytes:
    body = struct.pack("!BBH", kind, code, 0) + rest + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def echo_reply(ident: int, seq: int, payload: bytes = b"\0" * 56) -> bytes:
    """An ICMP echo reply (type 0), checksum included."""
    return _icmp(0, 0, struct.pack("!HH", ident, seq), payload)


def unreachable(quoted_src: str, quoted_dst: str, ident: int, seq: int) -> bytes:
    """ICMP host unreachable (type 3 code 1) quoting an echo request `quoted_src` ->
    `quoted_dst` with `ident`/`seq` (its IP header and first 8 bytes, as RFC 792 says)."""
    request = _icmp(8, 0, struct.pack("!HH", ident, seq), b"\0" * 56)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(request), random.getrandbits(16), 0x4000,
                     64, socket.IPPROTO_ICMP, 0, socket.inet_aton(quoted_src),
                     socket.inet_aton(quoted_dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return _icmp(3, 1, b"\0" * 4, ip + request[:8])


def packets(kind: str, dst: str, ident: int, count: int = RING) -> list[bytes]:
    """The ring of `count` packets of `kind` for target `dst`."""
    if kind == "echo-reply":
        return [echo_reply(ident, seq) for seq in range(count)]
    if kind == "unreachable":
        far = "198.51.100.%d" % random.randint(1, 254)  # the "probe target" that failed
        return [unreachable(dst, far, ident, seq) for seq in range(count)]
    raise ValueError(f"flood kind must be one of {KINDS}, not {kind!r}")


def random_ident(avoid: Iterable[int] = ()) -> int:
    """A random 16-bit identifier not in `avoid` (e.g. the prober's)."""
    taken = set(avoid)
    while (ident := secrets.randbelow(0x10000)) in taken:
        pass
    return ident


def flood(dst: str, pps: float, seconds: float, kind: str, ident: int,
          source: str | None = None, go: bool = False) -> dict[str, object]:
    """Send `kind` packets to `dst` at `pps` for `seconds` (or until SIGTERM/SIGINT)."""
    ring = packets(kind, dst, ident)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if source:
        sock.bind((source, 0))
    sock.connect((dst, 0))
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    batch = [ring[i % RING] for i in range(max(1, round(pps / 1000)))]  # ~1 ms of packets
    send, sent, errors = sock.send, 0, 0
    print("ready", flush=True)
    if go:
        sys.stdin.readline()
    t0 = time.monotonic()
    end = t0 + seconds
    while not stop:
        for p in batch:
            try:
                send(p)
            except OSError:  # ENOBUFS and the like: count, keep going
                errors += 1
        sent += len(batch)
        now = time.monotonic()
        if now >= end:
            break
        due = t0 + sent / pps
        if due > now:
            time.sleep(min(due, end) - now)
    elapsed = time.monotonic() - t0
    ok = sent - errors
    return {"sent": ok, "errors": errors, "seconds": round(elapsed, 4),
            "pps": round(ok / elapsed if elapsed > 0 else 0.0), "ident": ident, "kind": kind}


# ------------------------------------------------------------ the Lab side

@dataclass(frozen=True)
class FloodResult:
    """What the flood sent and what reached the router's WAN interface."""

    sent: int
    seconds: float
    pps: float
    """Packets per second the sender got out."""
    errors: int
    ident: int
    kind: str
    router_rx: int
    """Packets the router's WAN interface received from just before the first packet to
    the end (the flood and anything else; a shaped line's queue drains on after it)."""
    router_icmp: int
    """ICMP messages the router's IP stack took in meanwhile (``IcmpInMsgs``)."""
    router_seconds: float
    """Time between the two readings of the router's counters."""

    @property
    def router_pps(self) -> float:
        """The rate at which packets reached the router's WAN interface."""
        return self.router_rx / self.router_seconds if self.router_seconds > 0 else 0.0


def parse_snmp(text: str) -> dict[str, int]:
    """``/proc/net/snmp`` -> ``{"IcmpInMsgs": ..., "IpInReceives": ...}``."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        proto, names = head.split(":", 1)
        for name, val in zip(names.split(), vals.split(":", 1)[1].split()):
            out[proto + name] = int(val)
    return out


def _router_counters(lab: LabLike, wan: str) -> tuple[int, int, float]:
    t = time.monotonic()
    link = json.loads(lab.run(lab.ns_router, "ip", "-j", "-s", "link", "show", "dev", wan).stdout)
    snmp = parse_snmp(lab.run(lab.ns_router, "cat", "/proc/net/snmp").stdout)
    return link[0]["stats64"]["rx"]["packets"], snmp.get("IcmpInMsgs", 0), t


class Flood:
    """A running flood (`start_flood`); `wait()` / `stop()` return a `FloodResult`."""

    def __init__(self, lab: LabLike, wan: str, proc: subprocess.Popen, seconds: float) -> None:
        self.lab, self.wan, self.proc, self.seconds = lab, wan, proc, seconds
        self._reader = driver.LineReader(proc)
        self._reader.wait_line("ready", 10)
        self._before = _router_counters(lab, wan)
        proc.stdin.write(b"go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        self._result: FloodResult | None = None

    def wait(self, timeout: float | None = None) -> FloodResult:
        """Wait for the flood to end (default deadline: `seconds` + 10 s)."""
        if self._result is None:
            out = self._reader.rest(timeout if timeout is not None else self.seconds + 10)
            line = next((x for x in reversed(out.splitlines()) if x.startswith("{")), None)
            if line is None:
                raise driver.TrafficError(f"flood gave no result (rc={self.proc.returncode}): "
                                          f"{driver.stderr_of(self.proc)}")
            r = json.loads(line)
            rx, icmp, t = _router_counters(self.lab, self.wan)
            self._result = FloodResult(r["sent"], r["seconds"], r["pps"], r["errors"],
                                       r["ident"], r["kind"], rx - self._before[0],
                                       icmp - self._before[1], t - self._before[2])
        return self._result

    def router_rate(self, window: float = 1.0) -> float:
        """Packets/s reaching the router's WAN interface now, sampled over `window` s."""
        rx0, _, t0 = _router_counters(self.lab, self.wan)
        time.sleep(window)
        rx1, _, t1 = _router_counters(self.lab, self.wan)
        return (rx1 - rx0) / (t1 - t0)

    def stop(self, timeout: float = 10) -> FloodResult:
        """End the flood now; what it did so far."""
        if self._result is None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)


def start_flood(lab: LabLike, wan: str, pps: float = 150_000, seconds: float = 5,
                kind: str = "echo-reply", ident: int | None = None,
                source: str | None = None) -> Flood:
    """Flood the router's address on `wan` from the inet namespace; returns once sending.

    `ident` defaults to a random identifier; `source` (an inet address, e.g. a server's)
    defaults to the kernel's choice, the inet side of `wan`'s transit (`Lab.upstream_address`).
    """
    if kind not in KINDS:
        raise ValueError(f"flood kind must be one of {KINDS}, not {kind!r}")
    if pps <= 0 or seconds <= 0:
        raise ValueError("pps and seconds must be > 0")
    dst = str(lab.spec.wan(wan).interface.ip)
    args = ["--dst", dst, "--pps", str(pps), "--seconds", str(seconds), "--kind", kind,
            "--ident", str(ident if ident is not None else random_ident()), "--go"]
    args += ["--source", source] if source else []
    err = tempfile.TemporaryFile()
    proc = lab.popen(lab.ns_inet, sys.executable, "-m", "lab.flood", *args,
                     stdout=subprocess.PIPE, stderr=err, stdin=subprocess.PIPE,
                     env=driver.tool_env())
    proc._lab_stderr = err  # type: ignore[attr-defined]
    return Flood(lab, wan, proc, seconds)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (inside a namespace)."""
    p = argparse.ArgumentParser(prog="python -m lab.flood",
                                description=__doc__.split("\n")[0])
    p.add_argument("--dst", required=True)
    p.add_argument("--pps", type=float, default=150_000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--kind", choices=KINDS, default="echo-reply")
    p.add_argument("--ident", type=int, default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--go", action="store_true", help="after 'ready', wait for a stdin line")
    a = p.parse_args(argv)
    ident = a.ident if a.ident is not None else random_ident()
    print(json.dumps(flood(a.dst, a.pps, a.seconds, a.kind, ident, a.source, a.go)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
