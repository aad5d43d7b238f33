#!/usr/bin/env python3
"""labtool: the ecmpd lab's traffic tools (standard library only; runs in the lab VMs).

    labtool serve [--bind 0.0.0.0] [--port 80]
        Answer every TCP connection with the address it came from, as a tiny HTTP/1.0
        reply (so `curl`, `wget` and `nc` work too).  Runs in the isp VM's "internet".
    labtool wans [-n 60] [--port 80] [--parallel 10] [--timeout 5] [--quiet] HOST...
        Open N new connections to each HOST and count the source addresses the server
        saw.  Behind the lab router each source address is one WAN (10.111.0.2 = wlan1),
        so this shows how ecmpd spreads new connections over the WANs.  Exit status 1
        when any connection failed.

Labels for addresses are read from /etc/ecmpd-lab/labels ("ADDRESS NAME" lines).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

LABELS = Path("/etc/ecmpd-lab/labels")
REQUEST_WAIT = 2.0
"""Seconds the server waits for a request before answering anyway."""


def reply(peer: str) -> bytes:
    """The server's answer to a connection from `peer`."""
    body = f"{peer}\n".encode()
    head = (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def parse_reply(data: bytes) -> str:
    """The address in a server answer (ValueError when `data` is not one)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.0 200"):
        raise ValueError(f"unexpected answer {data[:60]!r}")
    addr = body.decode("ascii", "replace").strip()
    if not addr:
        raise ValueError("empty answer")
    return addr


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one connection with its peer address."""
    peer = writer.get_extra_info("peername")
    try:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_WAIT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        writer.write(reply(peer[0] if peer else "?"))
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def start(bind: str, port: int) -> asyncio.AbstractServer:
    """The listening server (port 0: any free port)."""
    return await asyncio.start_server(handle, bind, port, reuse_address=True)


async def serve(bind: str, port: int) -> None:
    """Run the server until cancelled."""
    server = await start(bind, port)
    async with server:
        await server.serve_forever()


async def fetch(host: str, port: int, timeout: float) -> str:
    """One new connection to `host`: the source address the server saw."""
    async def once() -> str:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            return parse_reply(await reader.read(4096))
        finally:
            writer.close()
    return await asyncio.wait_for(once(), timeout)


async def count(host: str, n: int, port: int = 80, parallel: int = 10,
                timeout: float = 5.0) -> Counter[str]:
    """Source address (or "error: ...") -> number of `n` connections to `host`."""
    sem = asyncio.Semaphore(max(1, parallel))
    tally: Counter[str] = Counter()

    async def one() -> None:
        async with sem:
            try:
                tally[await fetch(host, port, timeout)] += 1
            except asyncio.TimeoutError:
                tally[f"error: no answer within {timeout:g}s"] += 1
            except (OSError, ValueError) as e:
                tally[f"error: {getattr(e, 'strerror', None) or e}"] += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return tally


def read_labels(path: Path = LABELS) -> dict[str, str]:
    """Address -> name from an "ADDRESS NAME" file (empty when there is none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            out[parts[0]] = parts[1]
    return out


def render(host: str, tally: Counter[str], labels: dict[str, str]) -> str:
    """The `labtool wans` table for one host."""
    total = sum(tally.values())
    lines = [f"{host}: {total} connections"]
    width = max([15] + [len(key) for key in tally])
    for key, k in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])):
        name = labels.get(key, "")
        lines.append(f"  {key:<{width}} {name:<8} {k:>5}  {100 * k / total:5.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="labtool", description="ecmpd lab traffic tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="answer connections with their source address")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=80)
    w = sub.add_parser("wans", help="count which source address (WAN) connections use")
    w.add_argument("hosts", nargs="+", metavar="HOST")
    w.add_argument("-n", type=int, default=60, help="connections per host (default 60)")
    w.add_argument("--port", type=int, default=80)
    w.add_argument("--parallel", type=int, default=10)
    w.add_argument("--timeout", type=float, default=5.0)
    w.add_argument("--quiet", action="store_true", help="only the exit status")
    args = p.parse_args(argv)
    if args.cmd == "serve":
        try:
            asyncio.run(serve(args.bind, args.port))
        except KeyboardInterrupt:
            pass
        return 0
    if args.n < 1:
        p.error("-n must be at least 1")
    labels = read_labels()

    async def run_all() -> list[Counter[str]]:
        return [await count(h, args.n, args.port, args.parallel, args.timeout) for h in args.hosts]

    failed = False
    for host, tally in zip(args.hosts, asyncio.run(run_all())):
        failed |= any(k.startswith("error:") for k in tally)
        if not args.quiet:
            print(render(host, tally, labels))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
