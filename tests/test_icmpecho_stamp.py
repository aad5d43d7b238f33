"""EchoSocket's RTT from the kernel's receive stamp (SO_TIMESTAMPNS, issue #16 item 7):
a reply that waited for a busy loop is not a slow reply.  On the fake raw socket of
tests/test_icmpecho.py, given a `recvmsg` that hands the stamp over."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from ecmpd.icmpecho import SO_TIMESTAMPNS, Answer, EchoSocket

from tests.test_icmpecho import A4, T4, FakeRaw, Fakes, fakes, reply_to, run  # noqa: F401


def test_the_rtt_is_the_kernels_and_the_age_the_loops(fakes: Fakes, monkeypatch) -> None:
    stamps: list[float] = []

    def recvmsg(self: FakeRaw, size: int, ancsize: int) -> tuple[Any, ...]:
        packet, peer = self.recvfrom(size)
        sec, frac = divmod(stamps.pop(0), 1)
        cmsg = (socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@qq", int(sec), int(frac * 1e9)))
        return packet, [cmsg], 0, peer

    monkeypatch.setattr(FakeRaw, "recvmsg", recvmsg, raising=False)
    made = fakes()

    async def main() -> list[Answer]:
        got: list[Answer] = []
        s = EchoSocket(A4, got.append)
        fake = made[-1]
        assert fake.options[(socket.SOL_SOCKET, SO_TIMESTAMPNS)] == 1
        s.send(T4)
        stamps.append(time.time() + 0.005)        # the kernel had it after 5 ms
        await asyncio.sleep(0.1)                  # the loop reads it 100 ms after the send
        fake.inject(*reply_to(fake))
        s.send(T4)
        stamps.append(time.time() - 3600)         # a wall-clock step back: no made-up RTT
        fake.inject(*reply_to(fake))
        await asyncio.sleep(0.01)
        s.close()
        return got

    first, second = run(main())
    assert 0.004 < first.rtt < 0.05 and first.age is not None and first.age >= 0.1
    assert second.rtt == 0.0 and second.age is not None


def test_without_recvmsg_the_rtt_is_the_loops(fakes: Fakes) -> None:
    made = fakes()

    async def main() -> Answer:
        got: list[Answer] = []
        s = EchoSocket(A4, got.append)
        assert (socket.SOL_SOCKET, SO_TIMESTAMPNS) not in made[-1].options
        s.send(T4)
        await asyncio.sleep(0.05)
        made[-1].inject(*reply_to(made[-1]))
        await asyncio.sleep(0.01)
        s.close()
        return got[0]

    a = run(main())
    assert a.rtt == a.age and a.rtt >= 0.05
