"""The namespace lab: topology model (pure) and the built lab (root, namespaces)."""

from __future__ import annotations

import re
from typing import Callable

import pytest

from lab import Lab, LabCommandError, LabSpec, LabWan, make_spec, netns, seed_spec
from lab import lab as lab_module
from lab.isp import loss_script
from lab.traffic import FlowResult
from lab.wait import until

MakeLab = Callable[..., Lab]


# ------------------------------------------------------------------ pure: topology


def test_seed_spec_matches_the_recipe() -> None:
    spec = seed_spec()
    assert [(w.name, w.address, w.gateway) for w in spec.wans] == [
        ("wlan1", "10.111.0.2/24", "10.111.0.1"), ("wlan2", "10.112.0.2/24", "10.112.0.1")]
    assert (spec.lan_interface, spec.lan_address) == ("Local", "192.168.0.1/24")


def test_make_spec_names_addresses_and_extras() -> None:
    spec = make_spec(3, names=["fiber", "dsl0", "lte-b"], client_extra=2)
    assert [w.address for w in spec.wans] == ["10.101.0.2/24", "10.102.0.2/24", "10.103.0.2/24"]
    assert spec.wan("dsl0").gateway == "10.102.0.1"
    assert spec.client_addresses == ("192.168.0.2/24", "192.168.0.3/24", "192.168.0.4/24")
    assert [w.name for w in make_spec(2).wans] == ["wan1", "wan2"]


@pytest.mark.parametrize("bad", [
    dict(wans=()),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.2.0.1"),)),                      # gw off-subnet
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"), LabWan("a", "10.3.0.2/24", "10.3.0.1"))),
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"), LabWan("b", "10.1.0.3/24", "10.1.0.4"))),
    dict(wans=(LabWan("much-too-long-name", "10.1.0.2/24", "10.1.0.1"),)),
    dict(wans=(LabWan("a", "192.168.0.9/24", "192.168.0.8"),)),               # overlaps LAN
    dict(wans=(LabWan("a", "10.1.0.2/24", "10.1.0.1"),), server_addresses=("10.1.0.9",)),
])
def test_bad_specs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        LabSpec(**bad)


def test_names_and_address_helpers_without_building() -> None:
    lab = Lab(prefix="eclx-")
    assert (lab.ns_lan, lab.ns_router, lab.ns_inet) == ("eclx-lan", "eclx-rtr", "eclx-inet")
    assert lab.ns_isp("wlan2") == "eclx-isp2"
    assert lab.upstream_address("wlan1") == "100.64.1.2"
    assert lab.wan_of_source("10.112.0.2") == "wlan2"
    assert lab.wan_of_source("192.168.0.2") is None and lab.wan_of_source(None) is None
    with pytest.raises(ValueError):
        lab.run("somewhere-else", "true")  # only the lab's own namespaces
    with pytest.raises(ValueError):
        Lab(prefix="bad prefix/")
    assert "< 2500 counter drop" in loss_script(25) and "lab_loss" in loss_script(0)


# ------------------------------------------------------------------ helpers (root)


def route_via(lab: Lab, wan: str, masquerade: bool = True) -> None:
    """Program the router by hand: forwarding, default via `wan`, masquerade on every WAN."""
    lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    lab.run(lab.ns_router, "ip", "route", "replace", "default", "via", lab.spec.wan(wan).gateway)
    if masquerade:
        names = ", ".join(f'"{w.name}"' for w in lab.spec.wans)
        lab.nft(lab.ns_router, "table ip labnat {\n chain post {\n"
                "  type nat hook postrouting priority 100;\n"
                f"  oifname {{ {names} }} masquerade\n }}\n}}\n")


def wait_flows_ok(lab: Lab, timeout: float = 10.0, **kw: object) -> list[FlowResult]:
    """Poll with new flows until every one succeeds; the successful batch."""
    res: list[FlowResult] = []

    def batch() -> list[FlowResult] | None:
        res[:] = lab.new_flows(3, timeout=0.5, **kw)  # type: ignore[arg-type]
        return list(res) if all(r.ok for r in res) else None

    return until(batch, timeout, lambda _: f"flows still failing: {res}", interval=0)


def pings(lab: Lab, ns: str, dst: str, *opts: str) -> bool:
    return lab.run(ns, "ping", "-n", "-c", "1", "-W", "0.5", *opts, dst, check=False).returncode == 0


# ------------------------------------------------------------------ the built lab


@pytest.mark.lab
def test_build_and_teardown_leave_nothing(make_lab: MakeLab) -> None:
    lab = make_lab()
    assert netns.list_namespaces(lab.prefix) == sorted(lab.namespaces)
    links = lab.run(lab.ns_router, "ip", "-o", "link").stdout
    assert all(f": {n}@" in links for n in ("Local", "wlan1", "wlan2"))
    assert lab.run(lab.ns_router, "ip", "route", "show", "default").stdout.strip() == ""
    assert lab.run(lab.ns_router, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert lab.run(lab.ns_router, "nft", "list", "ruleset").stdout.strip() == ""
    isp = lab.ns_isp("wlan1")
    assert lab.run(isp, "sysctl", "-n", "net.ipv4.conf.cust.rp_filter").stdout.strip() == "0"
    assert pings(lab, lab.ns_router, "10.111.0.1") and pings(lab, lab.ns_lan, "192.168.0.1")
    assert lab.build() is lab  # idempotent
    lab.start_servers()
    sleeper = lab.popen(lab.ns_router, "sleep", "1000")
    untracked = lab.run(lab.ns_isp("wlan2"), "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!")
    pids = netns.pids(lab.ns_inet) + [sleeper.pid, int(untracked.stdout)]
    lab.teardown()
    assert netns.list_namespaces(lab.prefix) == [] and lab.leftovers == []
    assert not any(netns.pid_alive(p) for p in pids)
    lab.teardown()  # safe twice


@pytest.mark.lab
def test_failed_build_tears_down(monkeypatch: pytest.MonkeyPatch, lab_prefix: str) -> None:
    monkeypatch.setattr(lab_module, "bcp38_script", lambda net: "this is not nft\n")
    lab = Lab(prefix=lab_prefix)
    with pytest.raises(LabCommandError, match="nft"):
        lab.build()
    assert netns.list_namespaces(lab.prefix) == [] and not lab.built


@pytest.mark.lab
def test_masqueraded_traffic_leaves_by_wlan1(lab: Lab) -> None:
    route_via(lab, "wlan1")
    lab.start_servers()
    for proto in ("tcp", "udp"):
        res = lab.new_flows(4, interval=0.01, proto=proto)
        assert [(r.ok, r.source, r.wan) for r in res] == [(True, "10.111.0.2", "wlan1")] * 4
    held = lab.hold_flows(3, byte_interval=0.02)
    assert held.wait_established() == 3
    wait_flows_ok(lab)  # some echoes happen meanwhile
    out = held.stop()
    assert [(h.broken, h.wan) for h in out] == [(False, "wlan1")] * 3


@pytest.mark.lab
def test_bcp38_drops_unnatted_and_spoofed_sources(lab: Lab) -> None:
    route_via(lab, "wlan1", masquerade=False)
    # Give the LAN a way back, so only BCP38 can stop it.
    lab.run(lab.ns_inet, "ip", "route", "add", "192.168.0.0/24", "via", "100.64.1.1")
    isp = lab.ns_isp("wlan1")
    lab.run(isp, "ip", "route", "add", "192.168.0.0/24", "via", "10.111.0.2")
    lab.start_servers()
    assert not any(r.ok for r in lab.new_flows(2, timeout=0.5))
    counter = lab.run(isp, "nft", "list", "table", "ip", "lab_bcp38").stdout
    assert int(re.search(r"packets (\d+)", counter).group(1)) > 0  # type: ignore[union-attr]
    # The router's own packets: its wlan1 address passes, wlan2's address on wlan1 does not.
    assert pings(lab, lab.ns_router, "10.111.0.1")
    assert not pings(lab, lab.ns_router, "10.111.0.1", "-I", "10.112.0.2")
    lab.run(isp, "nft", "delete", "table", "ip", "lab_bcp38")
    res = wait_flows_ok(lab)
    assert {r.source for r in res} == {"192.168.0.2"} and {r.wan for r in res} == {None}


@pytest.mark.lab
def test_three_wans_with_other_names(make_lab: MakeLab) -> None:
    lab = make_lab(make_spec(3, names=["fiber", "dsl0", "lte-b"], client_extra=2))
    lab.start_servers()
    for i, wan in enumerate(lab.spec.wans, start=1):
        assert lab.ns_isp(wan.name).endswith(f"isp{i}")
        route_via(lab, wan.name)
        assert pings(lab, lab.ns_router, lab.upstream_address(wan.name))
        res = lab.new_flows(3, sources=lab.clients)
        assert [r.bind for r in res] == lab.clients
        assert [(r.ok, r.source, r.wan) for r in res] == [
            (True, wan.interface.ip.compressed, wan.name)] * 3


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["dead", "upstream", "carrier"])
def test_fault_breaks_the_path_and_heal_restores_it(lab: Lab, mode: str) -> None:
    route_via(lab, "wlan1")
    lab.start_servers()
    wait_flows_ok(lab)
    lab.fault("wlan1", mode)
    assert lab.active_faults("wlan1") == {mode}
    assert not any(r.ok for r in lab.new_flows(3, timeout=0.5))
    assert not pings(lab, lab.ns_router, lab.upstream_address("wlan1"))
    assert pings(lab, lab.ns_router, "10.111.0.1") == (mode == "upstream")
    assert lab.link_up(lab.ns_router, "wlan1") == (mode != "carrier")
    assert pings(lab, lab.ns_router, "10.112.0.1")  # the other ISP is untouched
    lab.heal("wlan1")
    assert lab.active_faults("wlan1") == frozenset()
    assert {r.wan for r in wait_flows_ok(lab)} == {"wlan1"}
    assert pings(lab, lab.ns_router, lab.upstream_address("wlan1"))


@pytest.mark.lab
def test_set_loss_drops_about_the_asked_fraction(lab: Lab) -> None:
    def loss() -> float:
        out = lab.run(lab.ns_router, "ping", "-n", "-q", "-c", "300", "-i", "0.002", "-W", "0.5",
                      "10.111.0.1", check=False).stdout
        return float(re.search(r"([\d.]+)% packet loss", out).group(1))  # type: ignore[union-attr]

    assert loss() == 0.0
    lab.set_loss("wlan1", 20)  # each way: a round trip survives with p = 0.8 * 0.8
    assert 20.0 <= loss() <= 55.0
    lab.set_loss("wlan1", 0)
    assert loss() == 0.0


@pytest.mark.lab
def test_internet_reaches_the_router_wan_address(lab: Lab) -> None:
    route_via(lab, "wlan1", masquerade=False)
    lab.start_servers(lab.ns_router)
    server = lab.spec.server_addresses[0]
    res = lab.new_flows(2, server="10.111.0.2", from_ns=lab.ns_inet, sources=[server])
    assert [(r.ok, r.source) for r in res] == [(True, server)] * 2
    # Replies for wlan2's address leave by the default (wlan1): BCP38 drops them.
    # (This is the seed's "replies use the wrong WAN" problem, for ecmpd to solve.)
    res = lab.new_flows(1, timeout=0.5, server="10.112.0.2", from_ns=lab.ns_inet)
    assert not res[0].ok
