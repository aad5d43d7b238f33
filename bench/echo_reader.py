"""EchoSocket's readers measured against each other: CPU per 10 000 replies, the RTT the
loop adds, and a flood of foreign ICMP that the kernel filter must keep out of Python.

    sudo PYTHONPATH=. .venv/bin/python -m bench.echo_reader [--reps 3] [--replies 10000]

Builds a one-WAN lab (`lab.Lab`, prefix ``eer`` + random; always torn down): the router
``rtr`` (wan1 10.101.0.2, fd00:254::1, fe80::1) and its ISP ``isp1`` (cust 10.101.0.1,
fd00:254::2, fe80::2) on a veth pair; the ISP's kernel answers the echo requests.
Then it runs itself inside ``rtr`` (``--inside``) and interleaves, per repetition and
family, three readers on the same workloads:

* ``74519b9``: the reader before this change, read from git (`BASELINE_REV`):
  ``loop.add_reader`` + ``recvmsg`` (kernel stamp) + icmplib's private ``_parse_reply``;
  requests built with the private ``_create_packet`` and sent with ``sendto``.
* ``AsyncSocket``: icmplib's documented asyncio path, one reader task per socket doing
  ``await AsyncSocket(sock).receive(None, 1.0)`` (TimeoutExceeded ignored); requests by
  icmplib's public ``send``; everything else as ``ecmpd.icmpecho`` (its replies carry no
  source address, so this variant cannot check who answered).
* ``receive``: ``ecmpd.icmpecho.EchoSocket`` as shipped: ``loop.add_reader`` + icmplib's
  public blocking ``receive(None, READ_TIMEOUT)``, public ``send``.

Workloads: ``burst`` sends 64 requests back to back and waits for their answers, until
`--replies` answers: CPU seconds (process time) per 10 000 replies, in all and without
the time spent inside ``send`` (the reader's share).  ``single`` sends one request at a
time (2 000): the RTT the loop adds, the loop's read time minus the kernel's receipt
stamp (age - rtt), median and p99.  ``flood``: 20 probes/s for 3 s while the target
floods the WAN address with echo replies and unreachables of a foreign identifier (what
the BPF filter drops): share of a core, answers, flood rate; the control row is the
shipped reader with the filter detached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icmplib

from ecmpd import icmpecho

REPO = Path(__file__).resolve().parent.parent
WAN6, TGT6 = "fd00:254::1", "fd00:254::2"
DEVICE = "wan1"
LL6 = f"fe80::2%{DEVICE}"
BURST = 64
SINGLE = 2000
FLOOD_SECONDS = 3.0


# --- (a) the baseline: ecmpd/icmpecho.py at commit 74519b9, read from git ---------------

BASELINE_REV = "74519b9"



def baseline() -> types.ModuleType:
    """ecmpd/icmpecho.py at `BASELINE_REV`, from the repository's history, as a module
    (it uses icmplib's private _parse_reply and _create_packet: icmplib 3 only)."""
    source = subprocess.run(["git", "-C", str(REPO), "show",
                             f"{BASELINE_REV}:ecmpd/icmpecho.py"],
                            capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(f"icmpecho_{BASELINE_REV}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(source, f"icmpecho@{BASELINE_REV}", "exec"), mod.__dict__)  # noqa: S102
    return mod


# --- (b) icmplib's AsyncSocket reader ----------------------------------------------------


class AsyncSocketEcho(icmpecho.EchoSocket):
    """ecmpd.icmpecho.EchoSocket with icmplib's AsyncSocket reader task instead of the
    loop's reader.  AsyncSocket's replies have no source (None), so echo replies are not
    checked against the address the request went to."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._loop.remove_reader(self._fd)
        self._async = icmplib.AsyncSocket(self._icmp)
        self._task = self._loop.create_task(self._reader())

    async def _reader(self) -> None:
        while True:
            try:
                reply = await self._async.receive(None, 1.0)
            except icmplib.TimeoutExceeded:
                continue
            except icmplib.SocketUnavailableError:
                return
            except icmplib.ICMPLibError:
                continue
            try:
                self._handle(reply, self._loop.time())
            except Exception:  # noqa: BLE001
                pass

    def _from(self, source: str | None, key: bytes) -> bool:
        return True  # AsyncSocket does not say

    def close(self) -> None:
        """The socket may close only once the task has ended: receive()'s `finally`
        removes the reader of icmplib's socket, which must still be there."""
        if self._icmp.is_closed or self._task.done() and self._task.cancelled():
            return
        self._pending.clear()
        self._task.cancel()
        self._task.add_done_callback(lambda _: self._icmp.close())

    async def aclose(self) -> None:
        self.close()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


# --- the workloads -----------------------------------------------------------------------


def cpu() -> float:
    return time.process_time()


class Collector:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.want = 0
        self.done = asyncio.Event()

    def __call__(self, a: Any) -> None:
        self.answers.append(a)
        if len(self.answers) >= self.want:
            self.done.set()

    async def wait(self, want: int, timeout: float = 2.0) -> None:
        self.want = want
        if len(self.answers) < want:
            self.done.clear()
            try:
                await asyncio.wait_for(self.done.wait(), timeout)
            except TimeoutError:
                pass


Factory = Callable[[str, Callable[[Any], None]], Any]


async def close(s: Any) -> None:
    if isinstance(s, AsyncSocketEcho):
        await s.aclose()
    else:
        s.close()


async def burst(make: Factory, source: str, target: str, replies: int) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    await asyncio.sleep(0.05)
    sent = lost = 0
    in_send = 0.0
    c0 = cpu()
    while len(got.answers) < replies:
        t0 = cpu()
        for _ in range(BURST):
            sent += s.send(target) is not None
        in_send += cpu() - t0
        await got.wait(sent)
        lost += sent - len(got.answers)
        sent = len(got.answers)
    total = cpu() - c0
    n = len(got.answers)
    await close(s)
    return {"cpu": total / n * 10000, "reader": (total - in_send) / n * 10000,
            "send_us": in_send / (n + lost) * 1e6, "lost": lost}


async def single(make: Factory, source: str, target: str) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    await asyncio.sleep(0.05)
    for i in range(SINGLE):
        s.send(target)
        await got.wait(i + 1)
    await close(s)
    added = sorted((a.age - a.rtt) * 1e6 for a in got.answers)
    return {"added_p50": statistics.median(added),
            "added_p99": added[int(len(added) * 0.99) - 1], "answers": len(got.answers)}


FLOODER = r"""
import socket, struct, sys, time

def checksum(data):
    data += b"\0" * (len(data) & 1)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF

def icmp(kind, code, rest, v6=False):  # the kernel sums ICMPv6
    head = struct.pack("!BBH", kind, code, 0)
    return struct.pack("!BBH", kind, code, 0 if v6 else checksum(head + rest)) + rest

def echo(kind, ident, seq, v6=False):
    return icmp(kind, 0, struct.pack("!HH", ident, seq) + bytes(56), v6)

def ip4(src, dst, payload):
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 1, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload

def ip6(src, dst, payload):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 58, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload

ident, seconds, v6 = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "6"
wan, me = sys.argv[4], sys.argv[5]  # the router's address, ours
other, packets = ident ^ 0x8000, []
for seq in range(1, 257):  # a foreign identifier; the sequences are the ones we use
    if v6:
        packets.append(echo(129, other, seq, v6=True))
        quoted = ip6(wan, "fd00:254::9", echo(128, other, seq, v6=True))
        packets.append(icmp(1, 3, b"\0" * 4 + quoted, True))
    else:
        packets.append(ip4(me, wan, echo(0, other, seq)))
        quoted = ip4(wan, "192.0.2.9", echo(8, other, seq)[:8])
        packets.append(ip4(me, wan, icmp(3, 1, b"\0" * 4 + quoted)))
if v6:
    tx, to = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6), (wan, 0)
else:
    tx, to = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW), (wan, 0)
print("ready", flush=True)
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    for p in packets:
        try:
            tx.sendto(p, to)
        except OSError:
            pass
    sent += len(packets)
print(sent / (time.monotonic() - start), flush=True)
"""


async def flood(make: Factory, source: str, target: str, target_ns: str,
                detach: bool = False) -> dict[str, float]:
    got = Collector()
    s = make(source, got)
    if detach:
        s._sock.setsockopt(1, 27, 0)  # SO_DETACH_FILTER: the control
    v = "6" if ":" in source else "4"
    flooder = subprocess.Popen(
        ["ip", "netns", "exec", target_ns, sys.executable, "-c", FLOODER, str(s.ident),
         str(FLOOD_SECONDS + 0.5), v, source, target], stdout=subprocess.PIPE, text=True)
    assert flooder.stdout is not None and flooder.stdout.readline().strip() == "ready"
    await asyncio.sleep(0.25)
    sent, c0, w0 = 0, cpu(), time.monotonic()
    while time.monotonic() - w0 < FLOOD_SECONDS:
        sent += (s.send(target) is not None) + (s.send(target) is not None)
        await asyncio.sleep(0.1)
    core = (cpu() - c0) / (time.monotonic() - w0)
    await got.wait(sent, 1.0)
    rate = float(flooder.communicate()[0])
    await close(s)
    rtts = sorted(a.rtt for a in got.answers)
    return {"core": core, "sent": sent, "answered": len(got.answers), "flood_pps": rate,
            "max_rtt_ms": rtts[-1] * 1e3 if rtts else float("nan")}


async def inside(args: argparse.Namespace) -> dict[str, Any]:
    old = baseline()
    readers: dict[str, Factory] = {
        "74519b9": lambda src, cb: old.EchoSocket(src, cb, device=DEVICE),
        "AsyncSocket": lambda src, cb: AsyncSocketEcho(src, cb, device=DEVICE),
        "receive": lambda src, cb: icmpecho.EchoSocket(src, cb, device=DEVICE),
    }
    families = {"IPv4": (args.wan4, args.gw4), "IPv6": (WAN6, TGT6)}
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.reps):  # interleaved: every reader in every repetition
        for fam, (src, dst) in families.items():
            for name, make in readers.items():
                r = await burst(make, src, dst, args.replies)
                r.update(await single(make, src, dst))
                rows.setdefault(f"{fam} {name}", []).append(r)
    # link-local with scope, the shipped reader only (a check that it works)
    ll = await single(readers["receive"], WAN6, LL6)
    floods: dict[str, dict[str, float]] = {}
    for fam, (src, dst) in families.items():
        for name, make in readers.items():
            floods[f"{fam} {name}"] = await flood(make, src, dst, args.target_ns)
        floods[f"{fam} receive, no filter"] = await flood(readers["receive"], src, dst,
                                                          args.target_ns, detach=True)
    return {"rows": {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
                     for k, v in rows.items()}, "link_local": ll, "floods": floods}


# --- the namespaces, and the table ---------------------------------------------------------


def build(lab: Any) -> tuple[str, str, str, str]:
    """The lab's router and ISP with IPv6 on the WAN: (router ns, ISP ns, router's IPv4
    address on the WAN, the ISP's)."""
    from lab import netns
    from lab.wait import until
    wan = lab.spec.wans[0]
    assert wan.name == DEVICE
    rtr, isp = lab.ns_router, lab.ns_isp(wan.name)
    netns.ip_batch(rtr, [f"addr add {WAN6}/64 dev {DEVICE} nodad",
                         f"addr add fe80::1/64 dev {DEVICE} nodad"])
    netns.ip_batch(isp, [f"addr add {TGT6}/64 dev cust nodad", "addr add fe80::2/64 dev cust nodad"])
    netns.sysctl(isp, {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0})
    until(lambda: netns.run_in(rtr, "ping", "-c1", "-W0.2", TGT6, check=False).returncode == 0,
          15, "IPv6 on the WAN", interval=0.1)
    return rtr, isp, str(wan.interface.ip), wan.gateway


def table(out: dict[str, Any]) -> str:
    lines = ["| reader | CPU s / 10k replies | of which reader | send us/request | "
             "RTT added p50 us | p99 us |", "|---|---|---|---|---|---|"]
    rows = out["rows"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['cpu']:.3f} | {r['reader']:.3f} | {r['send_us']:.1f} | "
                     f"{r['added_p50']:.0f} | {r['added_p99']:.0f} |")
    lines.append("")
    lines.append("Ratios to 74519b9 (CPU per reply in all / reader only / RTT added p50):")
    for fam in ("IPv4", "IPv6"):
        base = rows[f"{fam} 74519b9"]
        for name in ("AsyncSocket", "receive"):
            r = rows[f"{fam} {name}"]
            lines.append(f"  {fam} {name}: {r['cpu'] / base['cpu']:.2f}x / "
                         f"{r['reader'] / base['reader']:.2f}x / "
                         f"{r['added_p50'] / base['added_p50']:.2f}x")
    ll = out["link_local"]
    lines += ["", f"link-local {LL6} (receive): {ll['answers']}/{SINGLE} answered, "
                  f"RTT added p50 {ll['added_p50']:.0f} us", "",
              "| flood (20 probes/s, 3 s) | share of a core | answered/sent | flood pps | "
              "max RTT ms |", "|---|---|---|---|---|"]
    for k, f in out["floods"].items():
        lines.append(f"| {k} | {f['core']:.3f} | {f['answered']}/{f['sent']} | "
                     f"{f['flood_pps']:.0f} | {f['max_rtt_ms']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--replies", type=int, default=10000)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target-ns", help=argparse.SUPPRESS)
    ap.add_argument("--wan4", help=argparse.SUPPRESS)
    ap.add_argument("--gw4", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        print(json.dumps(asyncio.run(inside(args))))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, raw sockets)")
    from lab import Lab, make_spec, netns
    with Lab(make_spec(1), prefix=netns.random_prefix("eer")) as lab:
        p, t, wan4, gw4 = build(lab)
        r = subprocess.run(netns.exec_argv(p, sys.executable, "-m", "bench.echo_reader",
                                           "--inside", "--target-ns", t, "--wan4", wan4,
                                           "--gw4", gw4, "--reps", str(args.reps),
                                           "--replies", str(args.replies)),
                           cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode:
        sys.exit(r.stderr)
    print(table(json.loads(r.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
