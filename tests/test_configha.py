"""`ha:` (ecmpd.configha): parsed, refused with key and line, and the floating
addresses the rest of ecmpd reads from it (no root)."""

from __future__ import annotations

import pytest

from ecmpd import configha
from ecmpd.config import ConfigError, parse_config
from ecmpd.configmodel import Ha
from ecmpd.state import Link, address, initial

BASE = ("lan: {interfaces: [lan0], addresses: [192.168.88.2/24, fd00:88::2/64]}\n"
        "wans:\n"
        "  a: {interface: e0, gateway: 192.0.2.1, gateway6: 2001:db8::1}\n"
        "  b: {interface: e1, gateway: 198.51.100.1, probe: {targets: [gateway, 9.9.9.9]}}\n")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t")
    return e.value.problems


def test_absent_or_empty_is_standalone() -> None:
    assert parse_config(BASE, "t").ha is None
    assert parse_config(BASE + "ha:\n", "t").ha is None


def test_vips_of_both_versions_normalized_and_the_interval() -> None:
    cfg = parse_config(BASE + 'ha: {vips: [192.168.88.1, "FD00:88::1", fe80::1], '
                              'detect_interval: 250ms}\n', "t")
    assert cfg.ha == Ha(vips=("192.168.88.1", "fd00:88::1", "fe80::1"), detect_interval=0.25)
    assert parse_config(BASE + "ha: {vips: [192.168.88.1]}\n", "t").ha.detect_interval == 1.0
    off = parse_config(BASE + "ha: {vips: [192.168.88.1], detect_interval: null}\n", "t")
    assert off.ha.detect_interval is None


@pytest.mark.parametrize("ha, expected", [
    ("ha: 3", "t:5: ha: must be a mapping, got 3"),
    ("ha: {detect_interval: 1s}", "t:5: ha.vips: required key is missing"),
    ("ha: {vips: []}", "t:5: ha.vips: must be a non-empty list of IPv4 or IPv6 addresses, "
                       "got an empty list"),
    ("ha: {vips: [224.0.0.1]}", "t:5: ha.vips[0]: must be a unicast IPv4 or IPv6 address, "
                                "got '224.0.0.1' (multicast)"),
    ("ha: {vips: [\"ff02::1\"]}", "t:5: ha.vips[0]: must be a unicast IPv4 or IPv6 address, "
                                  "got 'ff02::1' (multicast)"),
    ("ha: {vips: [10.0.0.1, 10.0.0.1]}", "t:5: ha.vips[1]: duplicate of ha.vips[0]"),
    ("ha: {vips: [10.0.0.1], detect_interval: 0}", "t:5: ha.detect_interval: must be a "
                                                   "duration from 10ms to 60s"),
    ("ha: {vipz: [10.0.0.1]}", "t:5: ha.vipz: unknown key (did you mean 'vips'?)"),
    ("ha: {vips: [192.168.88.2]}", "t:5: ha.vips[0]: 192.168.88.2 is this router's own "
                                   "address (lan.addresses[0])"),
    ("ha: {vips: [\"fd00:88::2\"]}", "t:5: ha.vips[0]: fd00:88::2 is this router's own "
                                     "address (lan.addresses[1])"),
    ("ha: {vips: [9.9.9.9]}", "t:5: ha.vips[0]: 9.9.9.9 is also a probe target "
                              "(wans.b.probe.targets[1])"),
])
def test_mistakes_name_the_key_and_the_line(ha: str, expected: str) -> None:
    got = problems(BASE + ha + "\n")
    assert any(p.startswith(expected) for p in got), got


def test_vips_float_on_every_lan_interface() -> None:
    cfg = parse_config(BASE.replace("[lan0]", "[lan0, lan1]")
                       + "ha: {vips: [192.168.88.1, fd00:88::1]}\n", "t")
    assert configha.floating(cfg) == {"lan0": ("192.168.88.1", "fd00:88::1"),
                                      "lan1": ("192.168.88.1", "fd00:88::1")}
    assert configha.floating_set(cfg) == {"192.168.88.1", "fd00:88::1"}
    assert configha.floating(parse_config(BASE, "t")) == {}


def test_a_wans_address_is_never_a_floating_one() -> None:
    """The master holds the VIPs (and SNAT addresses) as local addresses, added after its
    own: a WAN's address (its probes' source) stays the router's own, whatever the
    order the kernel lists them in."""
    cfg = parse_config(BASE + "ha: {vips: [192.0.2.100]}\n", "t")
    links = {"e0": Link(5, True, True)}
    st = initial(cfg, links, {5: (("192.0.2.100", 32), ("192.0.2.2", 24))}, (), 0.0)
    assert address(st, cfg.wan("a")) == "192.0.2.2"
    alone = initial(parse_config(BASE, "t"), links, {5: (("192.0.2.100", 32),)}, (), 0.0)
    assert address(alone, cfg.wan("a")) == "192.0.2.100"


def test_a_wans_snat_address_floats_on_its_interface() -> None:
    """`nat: {snat: ADDRESS}` (the HA pair's floating WAN address) read through the
    model: (version, "snat", address) entries of `Wan.nat`, or `Wan.snat_address`."""
    import dataclasses
    from ipaddress import IPv4Address, IPv6Address
    cfg = parse_config(BASE + "ha: {vips: [192.168.88.1]}\n", "t")
    a = dataclasses.replace(cfg.wan("a"), nat=((4, "snat", IPv4Address("192.0.2.10")),
                                               (6, "snat", IPv6Address("2001:db8::a"))))
    cfg = dataclasses.replace(cfg, wans=(a, cfg.wan("b")))
    assert configha.floating(cfg) == {"lan0": ("192.168.88.1",),
                                      "e0": ("192.0.2.10", "2001:db8::a")}
    assert configha.snat_address(cfg.wan("b"), 4) is None


def test_a_wan_called_ha_is_refused_in_a_pair() -> None:
    text = BASE.replace("  b: {", "  ha: {") + "ha: {vips: [192.168.88.1]}\n"
    assert problems(text) == ["t:4: wans.ha: 'ha' names the HA pair's own changes (history, "
                              "monitor, hooks) in a config with ha:; rename the WAN"]
    assert parse_config(BASE.replace("  b: {", "  ha: {"), "t").find("ha") is not None


def test_check_on_the_master_does_not_trip_on_the_vips_it_holds() -> None:
    """`ecmpd --check` on the router reads its addresses: the master holds the VIPs."""
    cfg = parse_config(BASE + "ha: {vips: [192.168.88.1, fd00:88::1]}\n", "t",
                       local=frozenset({"192.168.88.1", "fd00:88::1", "192.168.88.2"}))
    assert cfg.ha.vips == ("192.168.88.1", "fd00:88::1")
