"""Lab traffic tool (asyncio): an echo server, new-flow bursts and long-lived flows.

Run as ``python -m lab.traffic {serve,flows,hold} ...`` (the Lab runs it inside a
namespace with ``ip netns exec``):

* ``serve --port P [--host H]``: TCP greets each connection with
  ``"<peer_ip> <peer_port>\\n"`` and then echoes every byte; UDP on the same port answers
  each datagram with that line (from the address the datagram was sent to).  Listens on
  both families (0.0.0.0 and an IPv6-only ``::`` socket, so an IPv4 peer is reported as
  ``a.b.c.d``, never ``::ffff:a.b.c.d``) unless `--host` names one address.  Prints
  ``listening P`` when ready.  The ``source`` of every result below is the peer address
  this server saw, so after NAT it names the WAN (or the modem) a flow left by.
* ``flows --server A --port P --count N --interval S --timeout T [--udp] [--bind a,b]``:
  starts flow i at i*S seconds (each flow its own task), reads the greeting, closes
  (the server address ``A`` may be IPv4 or IPv6, and so may the ``--bind`` addresses);
  prints one JSON list of ``{"t","ok","source","latency","error","bind","wall"}``.
* ``hold --server A --port P --count N --byte-interval S``: N long-lived TCP flows, one
  byte every S seconds, each echo due within ``--echo-timeout``; prints
  ``established K`` once every connection attempt finished (K = how many are up),
  ``broken I T`` when flow I breaks (T s after the start), and on SIGTERM/SIGINT one
  JSON list of ``{"index","source","broken","error","broken_at","broken_wall","bind"}``.

The pure helpers (`FlowResult`, `HeldResult`, `parse_flows`, `parse_held`, `outage`)
are what the Lab and the tests use on the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python lacks the constant
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)  # Linux values
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


@dataclass(frozen=True)
class FlowResult:
    """One new flow: when it started, whether the server greeted it, as whom."""

    t: float
    """Start offset (s) from the start of the run's schedule."""
    ok: bool
    source: str | None
    """Source address the server saw (after any NAT), or None."""
    latency: float | None
    """Seconds from start to greeting (None if it failed)."""
    error: str | None = None
    bind: str | None = None
    """Local address the flow was bound to, if any."""
    wall: float | None = None
    """Epoch time (time.time()) the flow started, to line flows up with faults."""
    wan: str | None = None
    """The WAN `source` belongs to (filled in by the Lab)."""


@dataclass(frozen=True)
class HeldResult:
    """One long-lived flow at the end of a hold run."""

    source: str | None
    broken: bool
    error: str | None = None
    broken_at: float | None = None
    """Seconds from the start of the hold run to the break."""
    broken_wall: float | None = None
    """Epoch time of the break."""
    bind: str | None = None
    wan: str | None = None
    """The WAN `source` belongs to (filled in by the Lab)."""


def _last_json_list(text: str) -> list[dict[str, Any]]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("["):
            data = json.loads(line)
            if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
                raise ValueError("traffic output is not a JSON list of objects")
            return data
    raise ValueError(f"no JSON result in traffic output: {text[-300:]!r}")


def parse_flows(text: str) -> list[FlowResult]:
    """The `FlowResult`s in the output of ``flows`` (its last JSON line)."""
    out = []
    for d in _last_json_list(text):
        out.append(FlowResult(
            t=float(d["t"]), ok=bool(d["ok"]), source=d.get("source"),
            latency=None if d.get("latency") is None else float(d["latency"]),
            error=d.get("error"), bind=d.get("bind"),
            wall=None if d.get("wall") is None else float(d["wall"])))
    return out


def parse_held(text: str) -> list[HeldResult]:
    """The `HeldResult`s in the output of ``hold`` (its last JSON line)."""
    out = []
    for d in _last_json_list(text):
        out.append(HeldResult(
            source=d.get("source"), broken=bool(d["broken"]), error=d.get("error"),
            broken_at=None if d.get("broken_at") is None else float(d["broken_at"]),
            broken_wall=None if d.get("broken_wall") is None else float(d["broken_wall"]),
            bind=d.get("bind")))
    return out


def outage(results: Iterable[FlowResult], fault_time: float) -> float:
    """Seconds new flows were failing after a fault at `fault_time` (same scale as `t`).

    From the first failed flow at/after `fault_time` to the start of the first flow
    from which every later flow succeeded.  0.0 if no flow failed after the fault;
    ``math.inf`` if the flows never recovered (the last one failed).
    """
    flows = sorted(results, key=lambda r: r.t)
    first = next((i for i, r in enumerate(flows) if r.t >= fault_time and not r.ok), None)
    if first is None:
        return 0.0
    last_fail = max(i for i, r in enumerate(flows) if not r.ok)
    if last_fail == len(flows) - 1:
        return math.inf
    return flows[last_fail + 1].t - flows[first].t


def fault_offset(results: Sequence[FlowResult], fault_wall: float) -> float:
    """Convert an epoch time to the `t` scale of `results` (for `outage`)."""
    ref = next(r for r in results if r.wall is not None)
    return fault_wall - (ref.wall - ref.t)  # type: ignore[operator]


# ---------------------------------------------------------------- the tool


def _peer_line(addr: tuple[Any, ...]) -> bytes:
    return f"{addr[0]} {addr[1]}\n".encode()


def _error(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed"
    return f"{type(exc).__name__}: {exc}"


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(_peer_line(writer.get_extra_info("peername")))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def _udp_reader(sock: socket.socket) -> None:
    """Answer every queued datagram from the address it was sent to (IP_PKTINFO)."""
    while True:
        try:
            _, anc, _, addr = sock.recvmsg(2048, socket.CMSG_SPACE(20))  # in6_pktinfo: 20 bytes
        except OSError:  # BlockingIOError: queue drained
            return
        cmsg = []
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                dst = data[8:12]  # in_pktinfo.ipi_addr: the header destination
                cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, b"\0" * 4))]
            elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 16:
                # in6_pktinfo: the destination, then the ifindex (0: let routing choose)
                cmsg = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, struct.pack("16sI", data[:16], 0))]
        try:
            sock.sendmsg([_peer_line(addr)], cmsg, 0, addr)
        except OSError:
            pass


def _udp_socket(host: str, port: int) -> socket.socket:
    """A UDP socket on `host`:`port` that learns each datagram's destination address."""
    if ":" in host:
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        udp.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((host, port))
    udp.setblocking(False)
    return udp


async def serve(port: int, host: str | None = None) -> None:
    """Run the TCP+UDP greeting/echo server until SIGTERM/SIGINT, on `host` or (None) on
    0.0.0.0 and :: (IPv6-only sockets: each family its own)."""
    stop = _stop_event()
    hosts = [host] if host else ["0.0.0.0", "::"]
    # asyncio sets IPV6_V6ONLY on its IPv6 listening sockets.
    server = await asyncio.start_server(_tcp_echo, hosts, port, reuse_address=True, backlog=4096)
    udps = [_udp_socket(h, port) for h in hosts]
    loop = asyncio.get_running_loop()
    for udp in udps:
        loop.add_reader(udp.fileno(), _udp_reader, udp)
    print(f"listening {port}", flush=True)
    await stop.wait()
    for udp in udps:
        loop.remove_reader(udp.fileno())
        udp.close()
    server.close()


class _UdpOnce(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _greeting(server: str, port: int, udp: bool, bind: str | None) -> bytes:
    local = (bind, 0) if bind else None
    loop = asyncio.get_running_loop()
    if udp:
        transport, proto = await loop.create_datagram_endpoint(
            _UdpOnce, remote_addr=(server, port), local_addr=local)
        try:
            transport.sendto(b"?\n")
            return await proto.reply
        finally:
            transport.close()
    reader, writer = await asyncio.open_connection(server, port, local_addr=local)
    try:
        return await reader.readline()
    finally:
        writer.close()


async def _one_flow(start: float, server: str, port: int, timeout: float, udp: bool,
                    bind: str | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res: dict[str, Any] = {"t": round(t0 - start, 6), "ok": False, "source": None,
                           "latency": None, "error": None, "bind": bind, "wall": time.time()}
    try:
        async with asyncio.timeout(timeout):
            line = await _greeting(server, port, udp, bind)
        parts = line.decode(errors="replace").split()
        if not parts:
            res["error"] = "closed without greeting"
        else:
            res.update(ok=True, source=parts[0], latency=round(loop.time() - t0, 6))
    except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
        res["error"] = _error(exc)
    return res


async def flows(server: str, port: int, count: int, interval: float, timeout: float,
                udp: bool = False, bind: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Start `count` flows on a fixed schedule (one every `interval` s); their results.
    Prints ``started EPOCH`` as the schedule starts (`driver.FlowRun.wait_started`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    print(f"started {time.time():.6f}", flush=True)
    tasks = []
    for i in range(count):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        b = bind[i % len(bind)] if bind else None
        tasks.append(asyncio.create_task(_one_flow(start, server, port, timeout, udp, b)))
    return list(await asyncio.gather(*tasks))


async def _held_flow(res: dict[str, Any], start: float, server: str, port: int,
                     interval: float, echo_timeout: float, connect_timeout: float,
                     up: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    writer = None

    def broke(error: str) -> None:
        res.update(broken=True, error=error, broken_at=round(loop.time() - start, 6),
                   broken_wall=time.time())
        print(f"broken {res['index']} {res['broken_at']}", flush=True)
    try:
        try:
            async with asyncio.timeout(connect_timeout):
                local = (res["bind"], 0) if res["bind"] else None
                reader, writer = await asyncio.open_connection(server, port, local_addr=local)
                line = (await reader.readline()).split()
            if not line:
                raise ConnectionError("closed without greeting")
            res["source"] = line[0].decode()
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            broke("connect: " + _error(exc))
            return
        finally:
            up.set()
        n = 0
        while True:
            await asyncio.sleep(interval)
            n = (n + 1) % 256
            try:
                async with asyncio.timeout(echo_timeout):
                    writer.write(bytes([n]))
                    await writer.drain()
                    echo = await reader.readexactly(1)
            except (OSError, TimeoutError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                broke(_error(exc))
                return
            if echo != bytes([n]):
                broke(f"bad echo {echo!r}")
                return
    finally:
        if writer is not None:
            writer.close()


async def hold(server: str, port: int, count: int, byte_interval: float,
               echo_timeout: float = 2.0, connect_timeout: float = 5.0,
               bind: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Keep `count` flows alive until SIGTERM/SIGINT; print ``established K`` once up."""
    stop = _stop_event()
    loop = asyncio.get_running_loop()
    start = loop.time()
    results: list[dict[str, Any]] = []
    tasks = []
    ups = []
    for i in range(count):
        res = {"index": i, "source": None, "broken": False, "error": None, "broken_at": None,
               "broken_wall": None, "bind": bind[i % len(bind)] if bind else None}
        up = asyncio.Event()
        results.append(res)
        ups.append(up)
        tasks.append(asyncio.create_task(_held_flow(
            res, start, server, port, byte_interval, echo_timeout, connect_timeout, up)))
    all_up = asyncio.gather(*(u.wait() for u in ups))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([all_up, stopper], return_when=asyncio.FIRST_COMPLETED)
    if all_up.done():
        ok = sum(1 for r in results if r["source"] is not None and not r["broken"])
        print(f"established {ok}", flush=True)
    else:
        all_up.cancel()
    await stopper
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.traffic", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="TCP+UDP greeting/echo server")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--host", default=None, help="one address (default: 0.0.0.0 and ::)")
    for name in ("flows", "hold"):
        c = sub.add_parser(name)
        c.add_argument("--server", required=True)
        c.add_argument("--port", type=int, default=5000)
        c.add_argument("--count", type=int, default=1)
        c.add_argument("--bind", default="", help="comma-separated source addresses, cycled")
    f = sub.choices["flows"]
    f.add_argument("--interval", type=float, default=0.0)
    f.add_argument("--timeout", type=float, default=1.0)
    f.add_argument("--udp", action="store_true")
    h = sub.choices["hold"]
    h.add_argument("--byte-interval", type=float, default=0.1)
    h.add_argument("--echo-timeout", type=float, default=2.0)
    h.add_argument("--connect-timeout", type=float, default=5.0)
    return p


def _raise_nofile() -> None:
    """Thousands of concurrent flows need more than the usual 1024 descriptors."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    _raise_nofile()
    if args.cmd == "serve":
        asyncio.run(serve(args.port, args.host))
        return 0
    bind = [b for b in args.bind.split(",") if b]
    if args.cmd == "flows":
        out = asyncio.run(flows(args.server, args.port, args.count, args.interval,
                                args.timeout, args.udp, bind))
    else:
        out = asyncio.run(hold(args.server, args.port, args.count, args.byte_interval,
                               args.echo_timeout, args.connect_timeout, bind))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
