"""The router's own addresses as probe targets, without root: reading them from netlink
messages, the State and events that follow them (one WARNING when a target becomes
local), and `--check` refusing such a target with its file, line and key."""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from ecmpd import ownaddr
from ecmpd.ecmpd_command import main
from ecmpd.config import ConfigError, parse_config
from ecmpd.events import AddressesChanged, Log, ProbeRound, Resynced, step
from ecmpd.health import Verdict
from ecmpd.configmodel import Config, ProbeSettings, Wan
from ecmpd.state import Link, initial, own_targets

CFG = Config(
    lan_interfaces=("lan0",),
    wans=(Wan("wlan1", "eth1", IPv4Address("192.0.2.1"), id=1,
              probe=ProbeSettings(targets=("192.0.2.10",))),
          Wan("wlan2", "eth2", None, id=2,
              probe=ProbeSettings(targets=("gateway", "203.0.113.7")))),
)
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.10", 24),), 12: (("198.51.100.10", 24),)}


def warnings(effects) -> list[str]:
    return [e.message for e in effects if isinstance(e, Log) and e.level == logging.WARNING]


def test_local_addresses_are_read_from_both_families_and_normalized() -> None:
    msgs = [{"local": "192.0.2.10", "address": "192.0.2.10"},
            {"local": "10.9.0.1", "address": "10.9.0.2"},         # ptp: the peer is not ours
            {"address": "2001:DB8:0:0::1"}, {"address": "fe80::1%eth1"}, {}]
    assert ownaddr.of_messages(msgs) == {"192.0.2.10", "10.9.0.1", "2001:db8::1", "fe80::1"}
    assert ownaddr.own(frozenset({"192.0.2.10"}), ("192.0.2.9", "192.0.2.10")) == \
        ("192.0.2.10",)
    assert ownaddr.normal("not an address") is None


def ipv6_changed(local: frozenset[str]) -> AddressesChanged:
    """An IPv6 address of the LAN interface came or went: the router's own addresses
    re-read (`local`), no WAN's IPv6 addresses."""
    return AddressesChanged(3, False, {}, local, family=6)


def test_a_target_is_own_while_it_is_a_local_address_of_any_interface() -> None:
    st = initial(CFG, LINKS, ADDRS, (), 0.0, local=frozenset({"192.0.2.10", "10.0.0.1"}))
    assert own_targets(st, CFG.wan("wlan1")) == ("192.0.2.10",)
    assert own_targets(st, CFG.wan("wlan2")) == ()
    # the address of another interface (here the LAN's, an IPv4 one among IPv6 ones)
    st2, effects = step(st, ipv6_changed(frozenset({"2001:db8::1", "203.0.113.7"})), 1.0)
    assert own_targets(st2, CFG.wan("wlan2")) == ("203.0.113.7",)
    assert own_targets(st2, CFG.wan("wlan1")) == ()
    assert warnings(effects) == ["wlan2: target 203.0.113.7 is this router's own address: "
                                 "it counts as failed (the router answers it itself, "
                                 "whatever the WAN's ISP does)"]
    assert [e.message for e in effects if isinstance(e, Log) and e.level == logging.INFO] \
        == ["wlan1: target 192.0.2.10 is no longer this router's own address"]


def test_the_warning_is_logged_once_when_a_target_becomes_local() -> None:
    st = initial(CFG, LINKS, {12: ADDRS[12]}, (), 0.0, local=frozenset({"198.51.100.10"}))
    local = frozenset({"192.0.2.10", "198.51.100.10"})
    st, effects = step(st, AddressesChanged(11, False, ADDRS, local), 1.0)
    assert st.local == local
    assert len(warnings(effects)) == 1 and "192.0.2.10" in warnings(effects)[0]
    # the same addresses again, a resync, probe rounds: no second warning
    for ev in (AddressesChanged(11, False, ADDRS, local), Resynced(LINKS, ADDRS, None, local),
               ipv6_changed(local), ProbeRound("wlan1", Verdict.FAILED, "x")):
        st, effects = step(st, ev, 2.0)
        assert not warnings(effects), ev
    # a resync without the local dump keeps the last one
    st, _ = step(st, Resynced(LINKS, ADDRS), 3.0)
    assert st.local == local


def test_a_learned_gateway_that_is_a_local_address_is_an_own_target() -> None:
    st = initial(CFG, LINKS, ADDRS, (), 0.0, local=frozenset({"198.51.100.10"}))
    st = replace(st, wans={**st.wans, "wlan2": replace(st.wan("wlan2"),
                                                       learned="198.51.100.10")})
    assert own_targets(st, CFG.wan("wlan2")) == ("198.51.100.10",)


CONFIG = """\
lan:
  interfaces: [lan0]
wans:
  wlan1:
    interface: eth1
    gateway: auto
    probe:
      targets:
        - 192.0.2.1
        - 192.0.2.10
  wlan2:
    interface: eth2
    gateway: 198.51.100.1
"""


def test_check_refuses_a_target_that_is_one_of_this_machines_addresses() -> None:
    parse_config(CONFIG, "f.yaml")                  # without the machine's addresses: ok
    parse_config(CONFIG, "f.yaml", frozenset({"2001:db8::1"}))
    with pytest.raises(ConfigError) as e:
        parse_config(CONFIG, "f.yaml", frozenset({"192.0.2.10", "2001:db8::1"}))
    assert e.value.problems == [
        "f.yaml:10: wans.wlan1.probe.targets[1]: 192.0.2.10 is one of this router's own "
        "addresses (on this machine now): the router answers it, so the WAN would never "
        "fail over"]


def test_cli_check_reads_the_machines_addresses_and_skips_without_them(
        tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "ecmpd.yaml"
    path.write_text(CONFIG)
    monkeypatch.setattr(ownaddr, "read_now", lambda: frozenset({"192.0.2.10"}))
    assert main(["--config", str(path), "--check"]) == 2
    assert f"{path}:10: wans.wlan1.probe.targets[1]: 192.0.2.10 is one of this router's " \
        in capsys.readouterr().err
    monkeypatch.setattr(ownaddr, "read_now", lambda: None)  # no netlink: not checked
    assert main(["--config", str(path), "--check"]) == 0


def test_read_now_sees_this_namespaces_loopback_or_nothing() -> None:
    local = ownaddr.read_now()
    assert local is None or "127.0.0.1" in local
