"""Status reuses the last reconcile's kernel read while it is still the kernel's state
(issue #16, item 7: `ecmpctl status` with 64 WANs): only after a pass that changed
nothing, with no pass due and no kernel event read since.  A pass reads, applies and
reports each IP version apart."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import IPv6Address
from typing import Any, Iterator

import pytest

from ecmpd import routing
from ecmpd import kernel as kernel_mod
from ecmpd.events import NexthopsRefused
from ecmpd.reconciler import Reconciler
from ecmpd.routing import Actual
from ecmpd.state import Refusal, initial
from lab.wait import until_async

from tests.test_status import ADDRS, CFG, LINKS

DUAL = dataclasses.replace(CFG, wans=(
    dataclasses.replace(CFG.wans[0], gateway6=IPv6Address("fe80::1"), families=(4, 6)),
    CFG.wans[1]))
"""wlan1 carries IPv4 and IPv6 (gateway6 fe80::1 on eth1), wlan2 IPv4 only."""
ADDRS6 = {11: (("2001:db8:1::10", 64),)}


class Kernel:
    def __init__(self) -> None:
        self.reads: list[int] = []
        """The IP version of every read."""
        self.applied: list[tuple[int, int]] = []
        """(desired's IP version, actual's) of every apply."""
        self.changes = 0

    async def read_actual(self, ipr: Any, cfg: Any, tables: Any = (),
                          family: int = 4) -> Actual:
        self.reads.append(family)
        return Actual(family=family)

    async def apply(self, ipr: Any, cfg: Any, desired: Any, actual: Any = None,
                    refused: Any = None) -> int:
        self.applied.append((desired.family, actual.family))
        return self.changes


class Firewall:
    def __init__(self) -> None:
        self.gateways: list[tuple[Any, Any]] = []

    def reconfigure(self, cfg: Any, gateways: Any = None, gateways6: Any = None) -> None:
        self.gateways.append((gateways, gateways6))

    def steps(self, apart: bool = False) -> Iterator[None]:
        return False
        yield


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
    both = {4: Actual(family=4), 6: Actual(family=6)}     # the quiet pass's reads
    assert seen == [None, both, None, None, None, None]
    # every pass read both versions and applied each one's desired state to its read
    passes = len(kernel.reads) // 2
    assert passes >= 4 and kernel.reads == [4, 6] * passes
    assert kernel.applied == [(4, 4), (6, 6)] * passes


def dual_reconciler(fw: Any, **kw: Any) -> Reconciler:
    """A Reconciler (in the running loop) over the dual-stack state at start, on a
    Kernel whose socket is a placeholder (the tests replace what would use it)."""
    st = initial(DUAL, LINKS, ADDRS, (), 0.0, addresses6=ADDRS6)
    k = kernel_mod.Kernel(lambda: st, factory=object)  # type: ignore[arg-type]
    k.open()
    return Reconciler(lambda: st, k, fw, Sysctls(),  # type: ignore[arg-type]
                      asyncio.ensure_future, **kw)


class SlowFirewall(Firewall):
    """A firewall whose write takes three steps; it notes the loop's ticks at each."""

    def __init__(self, ticks: list[int]) -> None:
        super().__init__()
        self.ticks, self.seen = ticks, []

    def steps(self, apart: bool = False) -> Iterator[None]:
        for _ in range(3):
            self.seen.append(self.ticks[0])
            yield
        self.seen.append(self.ticks[0])
        return True


def test_the_firewalls_steps_let_the_loop_run_in_between(kernel) -> None:
    async def body() -> tuple[SlowFirewall, int]:
        ticks = [0]

        async def tick() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)
        ticker = asyncio.ensure_future(tick())
        fw = SlowFirewall(ticks)
        r = dual_reconciler(fw)
        await r.settled()
        await r.close()
        ticker.cancel()
        return fw, r.changes

    fw, changes = asyncio.run(body())
    assert len(fw.seen) >= 4 and all(b > a for a, b in zip(fw.seen, fw.seen[1:4])), fw.seen
    assert changes >= 1                       # the write counted as a change


def test_a_pass_applies_and_reports_each_version_apart(kernel, monkeypatch) -> None:
    applied: list[tuple[int, Any]] = []

    async def apply(ipr: Any, cfg: Any, desired: Any, actual: Any = None,
                    refused: Any = None) -> int:
        applied.append((desired.family, actual))
        refused[("192.0.2.1", 11) if desired.family == 4 else ("fe80::1", 11)] = "refused"
        return 0

    monkeypatch.setattr(routing, "apply", apply)

    async def body() -> tuple[Any, list, Firewall]:
        reports: list = []
        fw = Firewall()
        r = dual_reconciler(fw, report=reports.append)
        decision = await r.settled()
        await r.close()
        return decision, reports, fw

    decision, reports, fw = asyncio.run(body())
    assert [(f, a.family) for f, a in applied] == [(4, 4), (6, 6)]
    assert decision.desired.family == 4 and decision.desired6.family == 6
    assert reports == [
        NexthopsRefused({"wlan1": Refusal(("192.0.2.1", 11, False), "refused")}, 4),
        NexthopsRefused({"wlan1": Refusal(("fe80::1", 11, False), "refused")}, 6)]
    assert fw.gateways == [({"wlan1": "192.0.2.1", "wlan2": "198.51.100.1"},
                            {"wlan1": "fe80::1"})]


@pytest.mark.parametrize("family", [4, 6])
def test_while_a_nexthop_is_refused_a_pass_comes_again(kernel, monkeypatch, family) -> None:
    """A refusal can end without any event ecmpd hears of (a route to the gateway
    added): the reconciler tries again on its own, and stops once nothing is refused;
    a refusal in either IP version does."""
    from ecmpd import reconciler as rec

    monkeypatch.setattr(rec, "RETRY_REFUSED", 0.05)
    refusing = [True]

    async def apply(ipr: Any, cfg: Any, desired: Any, actual: Any = None,
                    refused: Any = None) -> int:
        if refusing[0] and refused is not None and desired.family == family:
            hop = ("192.0.2.1", 11) if family == 4 else ("fe80::1", 11)
            refused[hop] = "Network is unreachable"
        return 0

    monkeypatch.setattr(routing, "apply", apply)

    async def body() -> tuple[int, int, int]:
        r = dual_reconciler(Firewall())
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
