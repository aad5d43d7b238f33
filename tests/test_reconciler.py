"""Status reuses the last reconcile's kernel read while it is still the kernel's state
(issue #16, item 7: `ecmpctl status` with 64 WANs): only after a pass that changed
nothing, with no pass due and no kernel event read since."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from ecmpd import routing
from ecmpd import kernel as kernel_mod
from ecmpd.reconciler import Reconciler
from ecmpd.routing import Actual
from ecmpd.state import initial
from lab.wait import until_async

from tests.test_status import ADDRS, CFG, LINKS


class Kernel:
    def __init__(self) -> None:
        self.reads = 0
        self.changes = 0

    async def read_actual(self, ipr: Any, cfg: Any, tables: Any = ()) -> Actual:
        self.reads += 1
        return Actual()

    async def apply(self, ipr: Any, cfg: Any, desired: Any, actual: Any = None,
                    refused: Any = None) -> int:
        return self.changes


class Firewall:
    def reconfigure(self, cfg: Any, gateways: Any = None, gateways6: Any = None) -> None: ...

    def ensure(self) -> bool:
        return False


class Sysctls:
    def apply(self, wanted: Any) -> int:
        return 0


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    k = Kernel()
    monkeypatch.setattr(routing, "read_actual", k.read_actual)
    monkeypatch.setattr(routing, "apply", k.apply)
    return k


def test_the_read_of_a_quiet_pass_is_reused_until_an_event_or_a_change(kernel) -> None:
    async def body() -> list:
        st = [initial(CFG, LINKS, ADDRS, (), 0.0)]
        events = [0]
        k = kernel_mod.Kernel(lambda: st[0], factory=object)  # type: ignore[arg-type]
        k.open()
        r = Reconciler(lambda: st[0], k, Firewall(), Sysctls(),  # type: ignore[arg-type]
                       asyncio.ensure_future, stamp=lambda: events[0])
        seen = [r.unchanged()]                      # no pass yet
        await r.settled()
        seen.append(r.unchanged())                  # a quiet pass: its read
        events[0] += 1
        seen.append(r.unchanged())                  # an event since
        await r.settled()
        r.kick()
        seen.append(r.unchanged())                  # a pass due
        await r.settled()
        st[0] = dataclasses.replace(st[0], cfg=dataclasses.replace(CFG, route_metric=7))
        seen.append(r.unchanged())                  # another config
        kernel.changes = 1
        await r.settled()
        seen.append(r.unchanged())                  # a pass that changed the kernel
        return seen

    seen = asyncio.run(body())
    assert [isinstance(x, Actual) for x in seen] == [False, True, False, False, False, False]


def test_while_a_nexthop_is_refused_a_pass_comes_again(kernel, monkeypatch) -> None:
    """A refusal can end without any event ecmpd hears of (a route to the gateway
    added): the reconciler tries again on its own, and stops once nothing is refused."""
    from ecmpd import reconciler as rec

    monkeypatch.setattr(rec, "RETRY_REFUSED", 0.05)
    refusing = [True]

    async def apply(ipr: Any, cfg: Any, desired: Any, actual: Any = None,
                    refused: Any = None) -> int:
        if refusing[0] and refused is not None:
            refused[("192.0.2.1", 11)] = "Network is unreachable"
        return 0

    monkeypatch.setattr(routing, "apply", apply)

    async def body() -> tuple[int, int, int]:
        st = initial(CFG, LINKS, ADDRS, (), 0.0)
        k = kernel_mod.Kernel(lambda: st, factory=object)  # type: ignore[arg-type]
        k.open()
        r = Reconciler(lambda: st, k, Firewall(), Sysctls(),  # type: ignore[arg-type]
                       asyncio.ensure_future)
        await r.settled()
        await until_async(lambda: r.passes >= 3, 2.0, "passes retrying the refusal")
        refusing[0] = False
        await until_async(lambda: r._retry is None and not r._again and r._task.done(), 2.0,
                          "retries ended")
        settled = r.passes
        await asyncio.sleep(0.2)                 # no retry is due: no pass comes
        await r.close()
        return settled, r.passes, int(r._retry is None)

    settled, later, idle = asyncio.run(body())
    assert later == settled and idle
