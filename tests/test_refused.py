"""Learned nexthops the kernel must be told about (``onlink``) or refuses (pure: no root,
no loop besides asyncio.run): `ecmpd.refused`, the state and events that carry them, and
the reason a learned device route on an Ethernet WAN gives."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from ipaddress import IPv4Address

from ecmpd import events as ev
from ecmpd.desired import Nexthop, RouteSpec
from ecmpd.health import Health, Phase as H
from ecmpd.configmodel import Config, Wan
from ecmpd.netlinkimport import NetlinkError
from ecmpd.reconciler import refusals
from ecmpd.refused import by_wan, install_main, refused_single
from ecmpd.decision import decide
from ecmpd.state import (Default, Link, Refusal, State, full_hop, initial,
                         link_problem, no_target, onlink, usable)

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("dhcp", "eth1", None, weight=1, id=1),
          Wan("fixed", "eth2", IPv4Address("198.51.100.1"), weight=2, id=2),
          Wan("other", "eth3", IPv4Address("203.0.113.1"), weight=1, id=3)),
)
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True), "eth3": Link(13, True, True)}
ADDRS = {11: (("192.0.2.10", 32),), 12: (("198.51.100.10", 24),), 13: (("203.0.113.10", 24),)}
T0 = 1_700_000_000.0
UP = Health(H.UP, 0, "after 1 good round")


def learned(gw: str = "10.9.0.1", on: bool = True) -> State:
    """Every WAN UP; `dhcp` learned `default via gw dev eth1 [onlink]` from table main."""
    st = initial(CFG, LINKS, ADDRS, (), T0, defaults={254: (Default(0, 11, gw, on),)})
    return dataclasses.replace(st, wans={n: dataclasses.replace(w, health=UP)
                                         for n, w in st.wans.items()})


# ---- onlink ---------------------------------------------------------------------------

def test_an_onlink_gateway_reaches_the_routes_and_is_remembered() -> None:
    st = learned()
    dhcp = CFG.wan("dhcp")
    assert onlink(st, dhcp) and not onlink(st, CFG.wan("fixed"))
    desired = decide(st, None).desired
    assert Nexthop("10.9.0.1", 11, 1, True) in desired.main.nexthops
    assert RouteSpec(1001, (Nexthop("10.9.0.1", 11, 1, True),), 0) in desired.tables
    # the client deletes its route before adding the renewed one: gateway and flag stay
    st2, effects = ev.step(st, ev.DefaultsChanged(254, ()), T0 + 1)
    assert onlink(st2, dhcp) and st2.wan("dhcp").learned == "10.9.0.1" and effects == ()
    # a renewal without the flag is another route: it follows
    st3, _ = ev.step(st2, ev.DefaultsChanged(254, (Default(0, 11, "10.9.0.1"),)), T0 + 2)
    assert not onlink(st3, dhcp)
    assert Nexthop("10.9.0.1", 11, 1) in decide(st3, None).desired.main.nexthops


# ---- finding the nexthop the kernel refuses -------------------------------------------

A, B, C = Nexthop("10.9.0.1", 11, 1), Nexthop("198.51.100.1", 12, 2), Nexthop("203.0.113.1", 13)
MAIN = RouteSpec(1000, (A, B, C), 0)
UNREACH = NetlinkError(errno.ENETUNREACH, "Network is unreachable")


class Kernel:
    """A fake `put` refusing every route with a nexthop in `bad`; keeps what it took."""

    def __init__(self, *bad: Nexthop) -> None:
        self.bad, self.tries, self.route = set(bad), 0, None

    async def put(self, spec: RouteSpec) -> None:
        self.tries += 1
        if self.bad & set(spec.nexthops):
            raise UNREACH
        self.route = spec


def install(kernel: Kernel, refused: dict, have: RouteSpec | None = None) -> int:
    return asyncio.run(install_main(MAIN, have, refused, kernel.put))


def test_a_nexthop_refused_in_its_wan_table_stays_out_of_the_multipath_route() -> None:
    refused: dict = {}
    assert refused_single(RouteSpec(1001, (A,), 0), UNREACH, refused)
    assert refused == {("10.9.0.1", 11): "Network is unreachable"}
    kernel = Kernel(A)
    assert install(kernel, refused) == 1 and kernel.tries == 1
    assert kernel.route.nexthops == (B, C)
    # the same again changes nothing
    assert install(kernel, refused, have=kernel.route) == 0 and kernel.tries == 1
    # an error about no nexthop is no refusal
    assert not refused_single(RouteSpec(1001, (A,), 0), NetlinkError(errno.ENOMEM), {})


def test_an_error_of_the_moment_blames_no_nexthop() -> None:
    class Busy(Kernel):
        async def put(self, spec: RouteSpec) -> None:
            self.tries += 1
            if self.tries == 1:
                raise NetlinkError(errno.ENOMEM, "Cannot allocate memory")
            self.route = spec

    refused: dict = {}
    kernel = Busy()
    assert install(kernel, refused) == 0 and refused == {} and kernel.tries == 1
    assert install(kernel, refused) == 1 and kernel.route.nexthops == (A, B, C)


def test_a_multipath_refusal_is_narrowed_to_one_nexthop() -> None:
    refused: dict = {}
    kernel = Kernel(B)
    assert install(kernel, refused) == 1
    assert kernel.route.nexthops == (A, C) and list(refused) == [("198.51.100.1", 12)]
    # two bad nexthops: nothing lands, nothing is blamed on a good one
    refused, kernel = {}, Kernel(A, B)
    assert install(kernel, refused) == 0 and kernel.route is None and refused == {}
    # all refused: the kernel's route stays
    kernel = Kernel()
    assert install(kernel, {("10.9.0.1", 11): "x", ("198.51.100.1", 12): "x",
                            ("203.0.113.1", 13): "x"}) == 0 and kernel.tries == 0
    assert by_wan({("10.9.0.1", 11): "x"}, {"dhcp": ("10.9.0.1", 11),
                                            "fixed": ("198.51.100.1", 12)}) == {"dhcp": "x"}


# ---- a refused WAN in the state ------------------------------------------------------

def test_a_refused_nexthop_takes_only_its_wan_down_with_the_kernels_reason() -> None:
    st = learned("198.51.100.1", on=False)        # another WAN's gateway on eth1
    dhcp = CFG.wan("dhcp")
    event = refusals(st, {("198.51.100.1", 11): "Network is unreachable"})
    assert event == ev.NexthopsRefused({"dhcp": Refusal(("198.51.100.1", 11, False),
                                                        "Network is unreachable")})
    st2, effects = ev.step(st, event, T0 + 1)
    why = "the kernel refuses the route via 198.51.100.1 dev eth1: Network is unreachable"
    assert link_problem(st2, dhcp) == why
    assert st2.wan("dhcp").health == Health(H.DOWN, 0, why)
    assert not usable(st2, "dhcp") and usable(st2, "fixed") and usable(st2, "other")
    assert (logging.WARNING, f"dhcp: {why}: the other WANs' routes are installed without it") \
        in [(e.level, e.message) for e in effects if isinstance(e, ev.Log)]
    assert ev.Reconcile(urgent=True) in effects
    # the WAN table route is still tried (the next pass may find it taken); the
    # multipath route goes without it
    d = decide(st2, None).desired
    assert {h.oif for h in d.main.nexthops} == {12, 13}
    assert RouteSpec(1001, (Nexthop("198.51.100.1", 11),), 0) in d.tables
    # the same finding again changes nothing; probes cannot bring it back
    assert ev.step(st2, event, T0 + 2) == (st2, ())
    assert ev.step(st2, ev.ProbeRound("dhcp", ev.Verdict.GOOD), T0 + 2)[0] == st2
    # a pass that installs it: RISING with a fresh prober
    st3, effects = ev.step(st2, ev.NexthopsRefused({}), T0 + 3)
    assert st3.wan("dhcp").health.state is H.RISING and "ResetProber" in [
        type(e).__name__ for e in effects]


def test_a_refusal_holds_only_for_the_nexthop_it_was_about() -> None:
    st = learned("198.51.100.1", on=False)
    st2, _ = ev.step(st, refusals(st, {("198.51.100.1", 11): "Network is unreachable"}),
                     T0 + 1)
    # the client adds the route onlink: another nexthop, tried afresh
    st3, effects = ev.step(st2, ev.DefaultsChanged(254, (Default(0, 11, "198.51.100.1",
                                                                 True),)), T0 + 2)
    assert full_hop(st3, CFG.wan("dhcp")) == ("198.51.100.1", 11, True)
    assert link_problem(st3, CFG.wan("dhcp")) is None
    assert st3.wan("dhcp").health.state is H.RISING


def test_a_wan_already_down_shows_the_refusal_as_its_reason() -> None:
    st = learned("198.51.100.1", on=False)
    st = st.with_wan("dhcp", dataclasses.replace(st.wan("dhcp"),
                                                 health=Health(H.DOWN, 0, "3 rounds lost")))
    st2, _ = ev.step(st, refusals(st, {("198.51.100.1", 11): "Network is unreachable"}),
                     T0 + 1)
    assert st2.wan("dhcp").health.reason.startswith("the kernel refuses the route via")


# ---- 8a: a learned device route on an Ethernet WAN ------------------------------------

def test_a_device_route_on_ethernet_says_what_is_wrong() -> None:
    st = initial(CFG, LINKS, ADDRS, (), T0, defaults={254: (Default(0, 11, ""),)})
    assert no_target(st, CFG.wan("dhcp")) == (
        "no target to probe: the default route via eth1 names no gateway (default dev eth1)"
        " and eth1 is not point-to-point; give the WAN a gateway, or probe targets beyond it")
    ptp = dataclasses.replace(st, links={**LINKS, "eth1": Link(11, True, True, True)})
    assert "point-to-point without a peer address" in no_target(ptp, CFG.wan("dhcp"))
    none = initial(CFG, LINKS, ADDRS, (), T0)
    assert no_target(none, CFG.wan("dhcp")).endswith("the gateway is not known yet")
