"""Tests for ecmpd.config / ecmpd.yamlpos: loading, defaults, merging and every complaint."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import yaml

from ecmpd import schema
from ecmpd.config import ConfigError, load_config, parse_config, problems_for
from ecmpd.configmodel import Config, ProbeSettings, Wan
from ecmpd.configvalues import parse_duration, parse_percent
from ecmpd.yamlpos import describe

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "ecmpd.yaml"
SRC = "ecmpd.yaml"

# Nine lines; cases below append to it, so their first added line is line 10.
BASE = """\
lan:
  interfaces: [lan0]
wans:
  a:
    interface: eth1
    gateway: 192.0.2.1
  b:
    interface: eth2
    gateway: 198.51.100.1
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_example_config_loads_to_the_seed_topology() -> None:
    probe = ProbeSettings(targets=("gateway",), interval=0.2, timeout=0.25, max_timeout=4.0,
                          count=2, down=3, up=5, quorum=None, max_loss=None, max_rtt=None,
                          window=10)
    expected = Config(
        lan_interfaces=("Local",),
        wans=(Wan("wlan1", "wlan1", IPv4Address("10.111.0.1"), weight=1, id=1, probe=probe,
                  gateway6=IPv6Address("2001:db8:1::1"), families=(4, 6)),
              Wan("wlan2", "wlan2", IPv4Address("10.112.0.1"), weight=5, id=2, probe=probe,
                  gateway6=IPv6Address("2001:db8:2::1"), families=(4, 6))),
        hash="l4", mark_mask=0x00FF0000, table_base=1000, rule_priority=1000,
        route_proto=236, route_metric=0, nft_table="ecmpd", keep_on_exit=False,
        control_socket="/run/ecmpd/ecmpd.sock", control_group=None, source=str(EXAMPLE))
    assert load_config(str(EXAMPLE)) == expected


def test_minimal_config_gets_the_model_defaults() -> None:
    cfg = parse_config(BASE, SRC)
    assert cfg == Config(
        lan_interfaces=("lan0",),
        wans=(Wan("a", "eth1", IPv4Address("192.0.2.1"), id=1),
              Wan("b", "eth2", IPv4Address("198.51.100.1"), id=2)),
        source=SRC)
    assert cfg.wans[0].probe == ProbeSettings()


def test_every_key_set() -> None:
    text = BASE + """\
    weight: 7
    tier: 2
    failback: flush
    id: 9
    address: 198.51.100.2/24
hash: l3
marks: {mask: '0x0000ff00'}
tables: {base: 5000}
rules: {priority: 2000}
route: {proto: 201, metric: 50}
nft: {table: multiwan}
keep_on_exit: true
control: {socket: /run/x.sock, group: netadm}
"""
    cfg = parse_config(text, SRC)
    assert cfg.wan("b") == Wan("b", "eth2", IPv4Address("198.51.100.1"), weight=7, id=9,
                               tier=2, failback="flush")
    assert (cfg.hash, cfg.mark_mask, cfg.table_base, cfg.rule_priority, cfg.route_proto,
            cfg.route_metric, cfg.nft_table, cfg.keep_on_exit, cfg.control_socket,
            cfg.control_group) == ("l3", 0xFF00, 5000, 2000, 201, 50, "multiwan", True,
                                   "/run/x.sock", "netadm")
    assert cfg.mark_of(cfg.wan("b")) == 9 << 8


def test_probe_merge_defaults_global_then_wan_key_by_key() -> None:
    text = """\
lan: {interfaces: [lan0]}
wans:
  a:
    interface: eth1
    gateway: 192.0.2.1
    probe: {count: 5, max_loss: null}
  b:
    interface: eth2
    gateway: 198.51.100.1
    probe:
      targets: [gateway, 203.0.113.7]
      quorum: 2
      max_rtt: 400ms
probe:
  interval: 1s
  timeout: 500ms
  count: 3
  max_loss: 20%
"""
    cfg = parse_config(text, SRC)
    glob = replace(ProbeSettings(), interval=1.0, timeout=0.5, count=3, max_loss=20.0)
    assert cfg.wan("a").probe == replace(glob, count=5, max_loss=None)
    assert cfg.wan("b").probe == replace(glob, targets=("gateway", "203.0.113.7"),
                                         quorum=2, max_rtt=0.4)
    assert cfg.wan("b").probe.resolved_targets(IPv4Address("198.51.100.1")) == \
        ("198.51.100.1", "203.0.113.7")


GW = IPv4Address("192.0.2.1")


@pytest.mark.parametrize("targets, quorum, effective", [
    (("gateway",), None, 1),
    (("gateway", "203.0.113.7"), None, 2),                  # a dead upstream fails the WAN
    (("203.0.113.7", "203.0.113.8", "203.0.113.9"), None, 2),
    (("gateway", "203.0.113.7", "203.0.113.8", "203.0.113.9"), None, 3),
    (("gateway", "203.0.113.7", "203.0.113.8"), 1, 1),       # explicit values are kept
    (("gateway", "192.0.2.1"), 2, 1),                        # the gateway listed twice counts once
    (("gateway", "192.0.2.1"), None, 1),
])
def test_quorum_defaults_to_a_majority_of_the_resolved_targets(
        targets: tuple[str, ...], quorum: int | None, effective: int) -> None:
    assert ProbeSettings().quorum is None
    assert ProbeSettings(targets=targets, quorum=quorum).resolved_quorum(GW) == effective


def test_one_dark_target_of_three_beyond_the_gateway_does_not_fail_the_wan() -> None:
    beyond = ("203.0.113.7", "203.0.113.8", "203.0.113.9")
    for targets in (beyond, ("gateway",) + beyond):
        q = ProbeSettings(targets=targets).resolved_quorum(GW)
        n = len(targets)
        assert n - 1 >= q                      # one silent target: still a good round
        if "gateway" in targets:
            assert 1 < q                       # only the gateway answers: a failed round


def test_quorum_null_and_max_timeout_in_yaml() -> None:
    text = BASE + """\
    probe: {quorum: null}
probe:
  targets: [gateway, 203.0.113.7, 203.0.113.8]
  quorum: 1
  timeout: 300ms
  max_timeout: 2.5s
"""
    cfg = parse_config(text, SRC)
    assert (cfg.wan("a").probe.quorum, cfg.wan("b").probe.quorum) == (1, None)
    assert cfg.wan("b").probe.resolved_quorum(IPv4Address("198.51.100.1")) == 2
    assert (cfg.wan("a").probe.timeout, cfg.wan("a").probe.max_timeout) == (0.3, 2.5)
    assert parse_config(BASE, SRC).wans[0].probe.max_timeout == 4.0


@pytest.mark.parametrize("text, mask", [("0x0000FF00", 0xFF00), ("'0x00ff0000'", 0xFF0000),
                                        ("16711680", 0xFF0000), ("' 0xff000000 '", 0xFF000000)])
def test_mark_mask_in_hex_or_decimal(text: str, mask: int) -> None:
    assert parse_config(BASE + f"marks: {{mask: {text}}}\n", SRC).mark_mask == mask


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
lan: {interfaces: [lan0]}
wans:
  a: &wan {interface: eth1, gateway: 192.0.2.1, probe: &p {count: 4}}
  b:
    <<: *wan
    interface: eth2
    gateway: 198.51.100.1
    probe: *p
"""
    cfg = parse_config(text, SRC)
    assert [w.probe.count for w in cfg.wans] == [4, 4]
    assert cfg.wan("b").interface == "eth2"


@pytest.mark.parametrize("text, seconds", [
    ("200ms", 0.2), ("1s", 1.0), ("1.5s", 1.5), (1.5, 1.5), (2, 2.0), ("1.5", 1.5),
    ("200 ms", 0.2), (" 10ms ", 0.01), (".5s", 0.5), ("0.25s", 0.25), ("60", 60.0),
    ("1.5ms", 0.0015), (0, 0.0), (-1, -1.0),
    ("200us", None), ("-1s", None), ("1e3", None), ("", None), ("ms", None),
    ("1m", 60.0), ("1 m", 60.0), ("1.5m", 90.0), ("1m30s", 90.0), ("1m 30s", 90.0),
    ("1s 500ms", 1.5), ("1m1s1ms", 61.001),
    ("30s1m", None), ("1m1m", None), ("1s1s", None), ("1min", None), ("1mm", None),
    ("1m x", None), ("1h", None), ("-1m", None),
    ("1.2.3s", None), ("1S", None), (True, None), (None, None),
    ([1], None), (float("inf"), None), (float("nan"), None),
])
def test_parse_duration(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, percent", [
    (20, 20.0), ("20%", 20.0), ("20.5%", 20.5), ("20.5 %", 20.5), (20.5, 20.5),
    ("20", 20.0), ("0%", 0.0), (150, 150.0),
    ("20%%", None), ("%", None), ("-5%", None), ("twenty", None), (False, None),
    (None, None), ({}, None),
])
def test_parse_percent(text: object, percent: float | None) -> None:
    assert parse_percent(text) == percent


@pytest.mark.parametrize("ids, expected", [
    ((None, None, None), (1, 2, 3)),
    ((None, 1, None), (2, 1, 3)),
    ((3, None, None), (3, 2, 4)),
    ((None, None, 2), (1, 3, 2)),
    ((255, None, 254), (255, 2, 254)),
    ((7, 8, 9), (7, 8, 9)),
])
def test_ids_default_to_position_and_skip_explicit_ones(ids: tuple, expected: tuple) -> None:
    wans = "".join(f"  w{i}:\n    interface: eth{i}\n    gateway: 192.0.2.{i + 1}\n"
                   + (f"    id: {wid}\n" if wid is not None else "")
                   for i, wid in enumerate(ids))
    cfg = parse_config(f"lan:\n  interfaces: [lan0]\nwans:\n{wans}", SRC)
    assert tuple(w.id for w in cfg.wans) == expected


def test_source_is_printed_as_given() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "hash: l5\n", "/etc/ecmpd/ecmpd.yaml")
    assert info.value.problems == [
        "/etc/ecmpd/ecmpd.yaml:10: hash: must be l3, l4 or src, got 'l5'"]


def test_load_config_unreadable_and_not_utf8(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.problems == [f"{tmp_path}: not a regular file (a directory)"]
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"lan:\n  interfaces: [caf\xe9]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert info.value.problems == [f"{bad}:2: not UTF-8 text (byte 0xe9 at offset 23)"]
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert load_config(str(good)).source == str(good)


def test_yaml_syntax_error_is_one_clean_problem() -> None:
    assert problems("lan:\n  interfaces: [lan0\nwans:\n  a: 1\n") == [
        "ecmpd.yaml:3: YAML syntax error: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 2)"]
    assert problems("lan:\n  interfaces: [lan0]\n wans: {}\n") == [
        "ecmpd.yaml:3: YAML syntax error: did not find expected key "
        "(while parsing a block mapping at line 1); check the indentation"]
    assert problems("lan:\n\tinterfaces: [lan0]\n") == [
        "ecmpd.yaml:2: YAML syntax error: found character that cannot start any token "
        "(while scanning for the next token at line 2); indent with spaces, not tabs"]


def test_yaml_value_errors_are_problems() -> None:
    assert problems(BASE + "hash: 2024-13-01\n") == [
        "ecmpd.yaml:10: YAML error: invalid value '2024-13-01': month must be in 1..12"]
    assert problems(BASE + "hash: !!python/object:os.system x\n") == [
        "ecmpd.yaml:10: YAML error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'"]
    assert problems("[" * 5000) == ["ecmpd.yaml:1: YAML syntax error: exceeded maximum "
                                     "nesting depth (while increasing flow level at line 1)"]
    assert problems("a:\n" + "".join("  " * i + "- \n" for i in range(60))) == [
        "ecmpd.yaml:51: YAML nested more than 50 levels deep (a config needs 5)"]


def test_all_problems_are_collected_in_line_order() -> None:
    text = BASE.replace("192.0.2.1", "192.0.2.300") + "    weight: 0\nhash: l5\nwan: {}\n"
    assert problems(text) == [
        "ecmpd.yaml:6: wans.a.gateway: must be a unicast IPv4 address or 'auto', got '192.0.2.300'",
        "ecmpd.yaml:10: wans.b.weight: must be an integer from 1 to 256, got 0",
        "ecmpd.yaml:11: hash: must be l3, l4 or src, got 'l5'",
        "ecmpd.yaml:12: wan: unknown key (did you mean 'wans'?)",
    ]
    assert problems_for(text, SRC) == problems(text)
    assert problems_for(BASE, SRC) == []


TOP_KEYS = ", ".join(schema.keys(""))
DURATION = "must be a duration from 10ms to 60s in ms, s or m (like 200ms, 1.5s, 1m, 1m30s; a plain number is seconds)"
MASK = "must be one run of at least 8 contiguous bits within 32 bits (like 0x00ff0000)"
IFNAME = "must be an interface name (1 to 15 bytes, no '/', ':', '%', '*' or whitespace)"
TWO_WANS = "lan: {interfaces: [lan0]}\nwans:\n  a: {interface: %s, gateway: %s}\n" \
           "  b: {interface: %s, gateway: %s}\n"

BAD = [
    # (text, expected problem lines without the "ecmpd.yaml:" prefix)
    ("", ["1: the file is empty; expected a mapping with at least 'lan' and 'wans'"]),
    ("# nothing\n", ["1: the file is empty; expected a mapping with at least 'lan' and 'wans'"]),
    ("- lan\n- wans\n", ["1: the top level must be a mapping, got a list"]),
    ("just text\n", ["1: the top level must be a mapping, got 'just text'"]),
    ("wans:\n  a: {interface: eth1, gateway: 192.0.2.1}\n", ["1: lan: required key is missing"]),
    ("lan: {interfaces: [lan0]}\n", ["1: wans: required key is missing"]),
    ("lan:\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
     ["1: lan: must be a mapping, got null"]),
    ("lan: {}\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
     ["1: lan.interfaces: required key is missing"]),
    ("lan: {interfaces: []}\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
     ["1: lan.interfaces: must be a non-empty list of interface names, got an empty list"]),
    ("lan: {interfaces: lan0}\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
     ["1: lan.interfaces: must be a non-empty list of interface names, got 'lan0'"]),
    ("lan:\n  interfaces:\n  - lan0\n  - lan0\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
     ["4: lan.interfaces[1]: duplicate of lan.interfaces[0]"]),
    ("lan: {interfaces: [lan0]}\nwans: {}\n",
     ["2: wans: must be a non-empty mapping of WAN names to WANs, got an empty mapping"]),
    ("lan: {interfaces: [lan0]}\nwans:\n  - eth1\n",
     ["3: wans: must be a non-empty mapping of WAN names to WANs, got a list"]),
    ("lan: {interfaces: [lan0]}\nwans:\n  a:\n    gateway: 192.0.2.1\n",
     ["3: wans.a.interface: required key is missing"]),
    ("lan: {interfaces: [lan0]}\nwans:\n  a: eth1\n",
     ["3: wans.a: must be a mapping, got 'eth1'"]),
    ("lan: {interfaces: [lan0]}\nwans:\n  bad name:\n    interface: e\n    gateway: 192.0.2.1\n",
     ["3: wans.bad name: a WAN name must be 1 to 32 of A-Z a-z 0-9 _ . -, got 'bad name'"]),
    (BASE + "wan: {}\n", ["10: wan: unknown key (did you mean 'wans'?)"]),
    (BASE + "colour: blue\n", [f"10: colour: unknown key (expected one of: {TOP_KEYS})"]),
    (BASE + "lan:\n  interfaces: [lan1]\n", ["10: lan: duplicate key (first at line 1)"]),
    (BASE + "    wieght: 2\n", ["10: wans.b.wieght: unknown key (did you mean 'weight'?)"]),
    (BASE + "    gateway: 198.51.100.2\n",
     ["10: wans.b.gateway: duplicate key (first at line 9)"]),
    (BASE + "    weight: 0\n", ["10: wans.b.weight: must be an integer from 1 to 256, got 0"]),
    (BASE + "    weight: 257\n", ["10: wans.b.weight: must be an integer from 1 to 256, got 257"]),
    (BASE + "    weight: yes\n",
     ["10: wans.b.weight: must be an integer from 1 to 256, got true"]),
    (BASE + "    weight: '5'\n", ["10: wans.b.weight: must be an integer from 1 to 256, got '5'"]),
    (BASE + "    weight: 1.5\n", ["10: wans.b.weight: must be an integer from 1 to 256, got 1.5"]),
    (BASE + "    id: 0\n", ["10: wans.b.id: must be an integer from 1 to 255, got 0"]),
    (BASE + "    gateway6: 2001:db8:2::1\n    address6: 2001:db8:5::2/64\n",
     ["10: wans.b.gateway6: 2001:db8:2::1 is not inside wans.b.address6 2001:db8:5::2/64"]),
    (BASE + "    gateway6: 2001:db8:2::1\n    address6: 2001:db8:2::1/64\n",
     ["10: wans.b.gateway6: 2001:db8:2::1 is the router's own address (wans.b.address6)"]),
    (BASE + "    address6: 2001:db8:2::2/64\n",
     ["10: wans.b.address6: the WAN carries no IPv6 (no gateway6)"]),
    (BASE + "    gateway6: fe80::1\n    address6: fe80::2/64\n",
     ["11: wans.b.address6: must be an IPv6 address/prefix like 2001:db8:1::2/64, got "
      "'fe80::2/64' (link-local: give the WAN's global address)"]),
    (BASE + "    gateway6: fe80::1\n    address6: 2001:db8:2::2/128\n    probe: {targets: "
     "[gateway, 2001:db8:2::2]}\n",
     ["12: wans.b.probe.targets[1]: 2001:db8:2::2 is the router's own address "
      "(wans.b.address6): the router answers it, so the WAN would never fail over"]),
    (BASE + "    tier: 0\n", ["10: wans.b.tier: must be an integer from 1 to 9, got 0"]),
    (BASE + "    tier: 2\n    failback: drop\n",
     ["11: wans.b.failback: must be keep or flush, got 'drop'"]),
    (BASE + "    failback: flush\n", ["10: wans.b.failback: flush has no effect: no WAN is "
                                     "in a lower tier than this WAN's tier 1"]),
    (BASE + "    interface: eth2\n", ["10: wans.b.interface: duplicate key (first at line 8)"]),
    (BASE.replace("eth2", "a-very-long-name0"), [f"8: wans.b.interface: {IFNAME}, got "
                                                 "'a-very-long-name0'"]),
    (BASE.replace("eth2", "eth2:1"), [f"8: wans.b.interface: {IFNAME}, got 'eth2:1'"]),
    (BASE.replace("eth2", "all"), ["8: wans.b.interface: 'all' is not an interface: "
                                   "net.ipv4.conf.all holds the settings of every interface"]),
    (BASE.replace("lan0", "lo"), ["2: lan.interfaces[0]: 'lo' is the loopback interface, "
                                  "neither a LAN nor a WAN"]),
    (BASE + "    weight: 1:30\n", ["10: wans.b.weight: must be an integer from 1 to 256 in "
                                   "plain decimal, got 1:30 (YAML 1.1 would read it as 90)"]),
    (BASE + "    id: 010\n", ["10: wans.b.id: must be an integer from 1 to 255 in plain "
                              "decimal, got 010 (YAML 1.1 would read it as 8)"]),
    (BASE + "    address: 198.51.100.2/24\n    probe: {targets: [198.51.100.2]}\n",
     ["11: wans.b.probe.targets[0]: 198.51.100.2 is the router's own address "
      "(wans.b.address): the router answers it, so the WAN would never fail over"]),
    (BASE.replace("[lan0]", "[lan0]\n  addresses: [192.168.0.1/24]") +
     "probe: {targets: [gateway, 192.168.0.9]}\n",
     ["11: probe.targets[1]: 192.168.0.9 is inside the LAN 192.168.0.0/24 "
      "(lan.addresses[0]), not beyond a WAN"]),
    (BASE.replace("198.51.100.1", "224.0.0.1"),
     ["9: wans.b.gateway: must be a unicast IPv4 address, got 224.0.0.1 (multicast)"]),
    (BASE.replace("198.51.100.1", "255.255.255.255"),
     ["9: wans.b.gateway: must be a unicast IPv4 address, got 255.255.255.255 "
      "(broadcast/reserved)"]),
    (BASE.replace("198.51.100.1", "127.0.0.1"),
     ["9: wans.b.gateway: must be a unicast IPv4 address, got 127.0.0.1 (loopback)"]),
    (BASE.replace("198.51.100.1", "::1"),
     ["9: wans.b.gateway: must be a unicast IPv4 address or 'auto', got '::1'"]),
    (BASE + "    address: 10.0.0.2/24\n",
     ["9: wans.b.gateway: 198.51.100.1 is not inside wans.b.address 10.0.0.2/24"]),
    (BASE + "    address: 198.51.100.1/24\n",
     ["9: wans.b.gateway: 198.51.100.1 is the router's own address (wans.b.address)"]),
    (BASE.replace("198.51.100.1", "198.51.100.255") + "    address: 198.51.100.2/24\n",
     ["9: wans.b.gateway: 198.51.100.255 is the network or broadcast address of "
      "198.51.100.0/24"]),
    (BASE + "    address: 198.51.100.2\n", ["10: wans.b.address: must be an IPv4 address/prefix "
                                           "like 10.111.0.2/24, got '198.51.100.2'"]),
    (BASE + "    address: 198.51.100.2/32\n",
     ["10: wans.b.address: /32 leaves no room for the gateway, got 198.51.100.2/32"]),
    (BASE + "    address: 198.51.100.0/24\n",
     ["10: wans.b.address: 198.51.100.0 is the network or broadcast address of "
      "198.51.100.0/24"]),
    (TWO_WANS % ("eth1", "192.0.2.1", "eth1", "192.0.2.2"),
     ["4: wans.b.interface: 'eth1' is already the interface of wans.a"]),
    (BASE + "    id: 3\n" + "  c: {interface: eth3, gateway: 203.0.113.1, id: 3}\n",
     ["11: wans.c.id: 3 is already the id of wans.b"]),
    (BASE.replace("[lan0]", "[lan0, eth2]"),
     ["2: lan.interfaces[1]: 'eth2' is also the interface of wans.b"]),
    (BASE + "    probe:\n      cuont: 3\n",
     ["11: wans.b.probe.cuont: unknown key (did you mean 'count'?)"]),
    (BASE + "    probe: [count]\n", ["10: wans.b.probe: must be a mapping, got a list"]),
    (BASE + "probe:\n  targets: [gateway, 192.0.2.99]\n  quorum: 3\n",
     ["12: probe.quorum: must be at most the number of targets (2 in probe.targets), got 3"]),
    (BASE + "    probe:\n      targets: [gateway]\nprobe:\n  targets: [gateway, 192.0.2.99]\n"
            "  quorum: 2\n",
     ["14: probe.quorum: must be at most the number of targets (1 in wans.b.probe.targets), "
      "got 2"]),
    (BASE + "probe:\n  quorum: 2\n",
     ["11: probe.quorum: must be at most the number of targets (1 in the default), got 2"]),
    (BASE + "probe:\n  targets: [gateway, 192.0.2.99, 192.0.2.99]\n",
     ["11: probe.targets[2]: duplicate of probe.targets[1]"]),
    (BASE + "probe:\n  targets:\n  - gw\n  - 0.0.0.0\n",
     ["12: probe.targets[0]: must be 'gateway' or a unicast IPv4 or IPv6 address, got 'gw'",
      "13: probe.targets[1]: must be 'gateway' or a unicast IPv4 or IPv6 address, got '0.0.0.0' "
      "(unspecified)"]),
    (BASE + "probe:\n  targets: []\n", ["11: probe.targets: must be a non-empty list of targets "
                                        "('gateway' or IPv4/IPv6 addresses), got an empty list"]),
    (BASE + "probe:\n  interval: 200us\n", [f"11: probe.interval: {DURATION}, got '200us'"]),
    (BASE + "probe:\n  interval: 0\n", [f"11: probe.interval: {DURATION}, got 0"]),
    (BASE + "probe:\n  interval: -1s\n", [f"11: probe.interval: {DURATION}, got '-1s'"]),
    (BASE + "probe:\n  timeout: 61s\n", [f"11: probe.timeout: {DURATION}, got '61s'"]),
    (BASE + "probe:\n  timeout: null\n", [f"11: probe.timeout: {DURATION}, got null"]),
    (BASE + "probe:\n  interval: 100ms\n  timeout: 600ms\n",
     ["12: probe.timeout: must be at most 5 x interval (100ms in probe.interval), got 600ms"]),
    (BASE + "    probe: {interval: 20ms}\n",
     ["10: wans.b.probe.interval: must be at least timeout / 5 (250ms in the default), "
      "got 20ms"]),
    (BASE + "probe:\n  quorum: 0\n",
     ["11: probe.quorum: must be an integer from 1 to 255, got 0"]),
    (BASE + "probe:\n  max_timeout: 200ms\n",
     ["11: probe.max_timeout: must be at least timeout (250ms in the default), got 200ms"]),
    (BASE + "    probe: {timeout: 1s}\nprobe:\n  interval: 1s\n  max_timeout: 500ms\n",
     ["13: probe.max_timeout: must be at least timeout (1s in wans.b.probe.timeout), "
      "got 500ms"]),
    (BASE + "probe:\n  interval: 1s\n  timeout: 5s\n",
     ["12: probe.timeout: must be at most max_timeout (4s in the default), got 5s"]),
    (BASE + "probe:\n  max_timeout: 2m\n", [f"11: probe.max_timeout: {DURATION}, got '2m'"]),
    (BASE + "probe:\n  max_timeout: 1m1s\n", [f"11: probe.max_timeout: {DURATION}, got '1m1s'"]),
    (BASE + "probe:\n  max_rtt: 300ms\n",
     ["11: probe.max_rtt: must be at most timeout (250ms in the default), a slower reply "
      "counts as lost; got 300ms"]),
    (BASE + "probe:\n  max_loss: 120%\n", ["11: probe.max_loss: must be a percentage from 0 to "
                                           "100 (like 20, 20% or 20.5%), got '120%'"]),
    (BASE + "probe:\n  count: 11\n", ["11: probe.count: must be an integer from 1 to 10, got 11"]),
    (BASE + "probe:\n  down: 0\n", ["11: probe.down: must be an integer from 1 to 100, got 0"]),
    (BASE + "probe:\n  up: 101\n", ["11: probe.up: must be an integer from 1 to 100, got 101"]),
    (BASE + "probe:\n  window: 0\n",
     ["11: probe.window: must be an integer from 1 to 1000, got 0"]),
    (BASE + "hash: l5\n", ["10: hash: must be l3, l4 or src, got 'l5'"]),
    (BASE + "marks:\n  mask: 0x00f0f000\n", [f"11: marks.mask: {MASK}, got 0x00f0f000"]),
    (BASE + "marks:\n  mask: 0x0000f000\n", [f"11: marks.mask: {MASK}, got 0x0000f000"]),
    (BASE + "marks:\n  mask: '0xzz'\n", [f"11: marks.mask: {MASK}, got '0xzz'"]),
    (BASE + "marks:\n  mask: 0x1ff000000\n", [f"11: marks.mask: {MASK}, got 0x1ff000000"]),
    (BASE + "marks:\n  msk: 0xff\n", ["11: marks.msk: unknown key (did you mean 'mask'?)"]),
    (BASE + "tables:\n  base: 252\n",
     ["11: tables.base: wans.a (id 1) would use table 253, the kernel's 'default' table",
      "11: tables.base: wans.b (id 2) would use table 254, the kernel's 'main' table"]),
    (BASE + "tables:\n  base: 0\n",
     ["11: tables.base: must be an integer from 1 to 4294967039, got 0"]),
    (BASE + "tables: 1000\n", ["10: tables: must be a mapping, got 1000"]),
    (BASE + "rules:\n  priority: 32001\n",
     ["11: rules.priority: must be an integer from 1 to 32000, got 32001"]),
    (BASE + "route:\n  proto: 4\n", ["11: route.proto: must be an integer from 5 to 255, got 4"]),
    (BASE + "route:\n  proto: 16\n",
     ["11: route.proto: 16 is the 'dhcp' protocol of the kernel or another routing program: "
      "ecmpd would take its routes for its own; choose another from 5 to 255 (default 236)"]),
    (BASE + "route:\n  proto: 186\n", ["11: route.proto: 186 is the 'bgp' protocol of the "
                                       "kernel or another routing program: ecmpd would take "
                                       "its routes for its own; choose another from 5 to 255 "
                                       "(default 236)"]),
    (BASE + "route:\n  metric: -1\n",
     ["11: route.metric: must be an integer from 0 to 4294967295, got -1"]),
    (BASE + "nft:\n  table: in\n", ["11: nft.table: 'in' is an nft keyword, choose another name"]),
    (BASE + "nft:\n  table: 1abc\n", ["11: nft.table: must be 1 to 32 letters, digits or _ "
                                      "starting with a letter, got '1abc'"]),
    (BASE + "keep_on_exit: maybe\n", ["10: keep_on_exit: must be true or false, got 'maybe'"]),
    (BASE + "control:\n  socket: run/ecmpd.sock\n", ["11: control.socket: must be an absolute "
                                                     "file path of at most 107 bytes, got "
                                                     "'run/ecmpd.sock'"]),
    (BASE + "control:\n  group: 5\n", ["11: control.group: must be a group name or null, got 5"]),
    (BASE + "control:\n  socket: /x\n  grp: adm\n",
     ["12: control.grp: unknown key (did you mean 'group'?)"]),
    (BASE + "? [a, b]\n: 1\n", ["10: keys must be plain values, got a list"]),
]


@pytest.mark.parametrize("text, expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config(text: str, expected: list[str]) -> None:
    assert problems(text) == [f"{SRC}:{line}" for line in expected]


PROBLEM_LINE = re.compile(r"ecmpd\.yaml:[0-9]+: \S.*")
POOL = ["0", "-1", "null", "[]", "{}", "true", "'x'", "1.5", "0x", "1" * 30, "gateway", "~",
        "&a", "*a", "!!binary", ":", "- ", "\t", "[gateway, gateway]", "{a: 1}", ".inf",
        ".nan", "2024-13-45", "!!set {a}", '"\\ud800"', "<<: *a", "? [a]", "300ms", "0b101",
        "wlan1", "10.111.0.1", "256", "-", "#", "'", '"', "|", ">", "%", "@", "!foo x",
        "0x" + "f" * 2000, "9" * 5000, "\x00", "\ufeff", "&b [*b]"]


def _mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2 and ":" in lines[i]:
            lines[i] = lines[i].partition(":")[0] + ": " + rng.choice(POOL)
        elif op == 3:
            j = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:j] + rng.choice(POOL) + lines[i][j:]
        elif op == 4 and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + lines[i][j + 1:]
        elif op == 5:
            lines[i] = " " * rng.randrange(6) + lines[i].lstrip()
        else:
            lines[i] = lines[i].split("#")[0]
        if not lines:
            lines = [""]
    return "\n".join(lines)


def test_fuzzed_example_only_ever_loads_or_raises_config_error() -> None:
    text = "\n".join(line for line in EXAMPLE.read_text().split("\n")
                     if line.strip() and not line.lstrip().startswith("#"))
    outcomes = {"ok": 0, "error": 0}
    for seed in range(400):
        mutated = _mutate(random.Random(seed), text)
        try:
            parse_config(mutated, SRC)
            outcomes["ok"] += 1
        except ConfigError as e:
            outcomes["error"] += 1
            assert e.problems, mutated
            for line in e.problems:
                assert PROBLEM_LINE.fullmatch(line), (line, mutated)
                line.encode("utf-8")  # printable to any UTF-8 terminal: no lone surrogates
    # the mutations must exercise both paths, or the test proves nothing
    assert outcomes["ok"] > 20 and outcomes["error"] > 200, outcomes


def test_gateway_auto_and_the_forms_it_refuses() -> None:
    cfg = parse_config(BASE.replace("192.0.2.1", "auto\n    address: 203.0.113.2/24"), SRC)
    assert cfg.wans[0].gateway is None and cfg.wans[1].gateway == IPv4Address("198.51.100.1")
    two_auto = parse_config(BASE.replace("192.0.2.1", "auto").replace("198.51.100.1", "auto"),
                            SRC)
    assert [w.gateway for w in two_auto.wans] == [None, None]
    for form in ("dhcp", "AUTO", "ppp", "''", "[auto]"):
        assert problems(BASE.replace("192.0.2.1", form)) == [
            f"ecmpd.yaml:6: wans.a.gateway: must be a unicast IPv4 address or 'auto', got "
            f"{describe(yaml.safe_load(form))}"]
    # a fixed gateway outside the WAN's subnet stays an error
    assert problems(BASE + "    address: 203.0.113.2/24\n") == [
        "ecmpd.yaml:9: wans.b.gateway: 198.51.100.1 is not inside wans.b.address "
        "203.0.113.2/24"]


def test_tables_base_itself_must_not_be_a_kernel_table() -> None:
    assert problems(BASE + "tables:\n  base: 255\n") == [
        "ecmpd.yaml:11: tables.base: ecmpd's multipath route lives in table tables.base "
        "(255), the kernel's 'local' table"]


def proc_sys(root: Path, *families: int) -> str:
    """A fake /proc/sys with the custom multipath hash sysctls of `families` only."""
    for f in families:
        path = root / f"net/ipv{f}/fib_multipath_hash_fields"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("7\n")
    return str(root)


DUAL = BASE.replace("    gateway: 192.0.2.1\n", "    gateway: 192.0.2.1\n    gateway6: auto\n")
"""BASE with IPv6 on WAN a (line 7), so `hash:` appended is on line 11."""


def test_hash_src_needs_the_kernels_custom_hash_sysctls(tmp_path: Path) -> None:
    """The check of this machine's kernel (`--check`, start and reload pass its /proc/sys);
    without a root it is not made, and l3 / l4 need nothing."""
    none, v4, both = (proc_sys(tmp_path / n, *f) for n, f in (("none", ()), ("v4", (4,)),
                                                               ("both", (4, 6))))
    assert parse_config(BASE + "hash: src\n", SRC).hash == "src"   # not checked
    assert parse_config(BASE + "hash: src\n", SRC, sysctl_root=v4).hash == "src"
    assert parse_config(DUAL + "hash: src\n", SRC, sysctl_root=both).hash == "src"
    for mode in ("l3", "l4"):
        assert parse_config(DUAL + f"hash: {mode}\n", SRC, sysctl_root=none).hash == mode
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "hash: src\n", SRC, sysctl_root=none)
    assert info.value.problems == [
        "ecmpd.yaml:10: hash: src needs the kernel's custom multipath hash (Linux 5.14 or "
        "later): this machine has no sysctl net.ipv4.fib_multipath_hash_fields; use l3 or l4"]
    # IPv6 is checked when a WAN carries it
    with pytest.raises(ConfigError) as info:
        parse_config(DUAL + "hash: src\n", SRC, sysctl_root=v4)
    assert info.value.problems == [
        "ecmpd.yaml:11: hash: src needs the kernel's custom multipath hash (Linux 5.14 or "
        "later): this machine has no sysctl net.ipv6.fib_multipath_hash_fields; use l3 or l4"]
    assert problems_for(DUAL + "hash: src\n", SRC) == []


def test_check_start_and_reload_refuse_hash_src_on_a_kernel_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`ecmpd --check` and the daemon's start print the problem and stop; a reload logs
    it and changes nothing."""
    import asyncio

    from ecmpd import daemon, ecmpd_command
    from ecmpd.sdnotify import Notifier

    path = tmp_path / "ecmpd.yaml"
    path.write_text(BASE + "hash: src\n")
    want = (f"{path}:10: hash: src needs the kernel's custom multipath hash (Linux 5.14 or "
            f"later): this machine has no sysctl net.ipv4.fib_multipath_hash_fields; "
            f"use l3 or l4")
    root = proc_sys(tmp_path / "old-kernel")
    monkeypatch.setattr(ecmpd_command, "PROC_SYS", root)
    monkeypatch.setattr(daemon, "PROC_SYS", root)
    for extra in (["--check"], []):   # without --check: the daemon would start
        assert ecmpd_command.main(["--config", str(path), *extra]) == 2
        assert capsys.readouterr().err.splitlines() == [want]
    before = parse_config(BASE + "hash: l4\n", str(path))
    d = daemon.Daemon(before, str(path), Notifier({}))
    assert asyncio.run(d.reload()) == (False, f"config refused, nothing changed:\n{want}")
    assert d.cfg is before
DUAL = BASE.replace("    gateway: 192.0.2.1\n", "    gateway: 192.0.2.1\n    gateway6: fe80::1\n")
"""BASE with wans.a dual-stack (ten lines; wans.b, IPv4-only, ends at line 10)."""


@pytest.mark.parametrize("a, b, nat_a, nat_b", [
    ("", "", (), ()),
    ("nat: masquerade", "nat: masquerade", (), ()),
    ("nat: none", "nat: none", ((4, "none"), (6, "none")), ((4, "none"),)),
    ("nat: {ipv6: none}", "nat: {ipv4: none}", ((6, "none"),), ((4, "none"),)),
    ("nat: {ipv4: none, ipv6: masquerade}", "nat: {}", ((4, "none"),), ()),
    ("nat:\n      ipv4: masquerade\n      ipv6: none", "nat: {ipv4: masquerade}",
     ((6, "none"),), ()),
])
def test_nat_per_wan_and_ip_version(a: str, b: str, nat_a: tuple, nat_b: tuple) -> None:
    text = DUAL.replace("fe80::1\n", f"fe80::1\n    {a}\n") + f"    {b}\n"
    wa, wb = parse_config(text, SRC).wans
    assert (wa.nat, wb.nat) == (nat_a, nat_b)
    # a scalar is for every version the WAN carries; a version left out is masqueraded
    assert {f: (wa.nat_mode(f), wa.masquerades(f)) for f in (4, 6)} == {
        f: ("none", False) if (f, "none") in nat_a else ("masquerade", True) for f in (4, 6)}
    assert wb.masquerades(6) is False                       # IPv4-only: no IPv6 to NAT


@pytest.mark.parametrize("nat, expected", [
    ("nat: nat", ["11: wans.b.nat: must be masquerade or none, {snat: ADDRESS}, or per "
                  "IP version like {ipv4: masquerade, ipv6: none}, got 'nat'"]),
    ("nat: no", ["11: wans.b.nat: must be masquerade or none, {snat: ADDRESS}, or per "
                 "IP version like {ipv4: masquerade, ipv6: none}, got false (YAML reads no and off as false: "
                 "write none)"]),
    ("nat: [none]", ["11: wans.b.nat: must be masquerade or none, {snat: ADDRESS}, or per "
                     "IP version like {ipv4: masquerade, ipv6: none}, got a list"]),
    ("nat: {ipv6: none}", ["11: wans.b.nat.ipv6: wans.b carries no IPv6 (no gateway6)"]),
    ("nat:\n      ipv4: none\n      ipv6: masquerade",
     ["13: wans.b.nat.ipv6: wans.b carries no IPv6 (no gateway6)"]),
    ("nat:\n      ipv4: drop\n      ipv5: none",
     ["12: wans.b.nat.ipv4: must be masquerade or none, got 'drop'",
      "13: wans.b.nat.ipv5: unknown key (did you mean 'ipv6'?)"]),
    ("nat: {ipv4: none, ipv4: none}",
     ["11: wans.b.nat.ipv4: duplicate key (first at line 11)"]),
])
def test_nat_mistakes_name_the_key_and_line(nat: str, expected: list[str]) -> None:
    assert problems(DUAL + f"    {nat}\n") == [f"{SRC}:{line}" for line in expected]


def test_snat_to_a_fixed_address_per_version_or_short() -> None:
    """`{snat: ADDRESS}` alone is for the address's version (the other masqueraded);
    under ipv4:/ipv6: it sits beside the other modes."""
    a4, a6 = IPv4Address("198.51.100.10"), IPv6Address("2001:db8:a::10")
    cases = {
        "nat: {snat: 198.51.100.10}": ((4, "snat", a4),),
        "nat: {snat: '2001:db8:a::10'}": ((6, "snat", a6),),
        "nat: {ipv4: {snat: 198.51.100.10}, ipv6: {snat: '2001:db8:a::10'}}":
            ((4, "snat", a4), (6, "snat", a6)),
        "nat:\n      ipv4:\n        snat: 198.51.100.10\n      ipv6: none":
            ((4, "snat", a4), (6, "none")),
    }
    for nat, want in cases.items():
        wan = parse_config(DUAL.replace("fe80::1\n", f"fe80::1\n    {nat}\n"), SRC).wans[0]
        assert wan.nat == want, nat
        got = {f: (wan.nat_mode(f), wan.snat_address(f), wan.masquerades(f)) for f in (4, 6)}
        assert got == {f: (dict((e[0], e[1]) for e in want).get(f, "masquerade"),
                           dict((e[0], e[2]) for e in want if len(e) == 3).get(f),
                           f not in dict((e[0], e[1]) for e in want)) for f in (4, 6)}, nat
    assert parse_config(BASE, SRC).wans[0].snat_address(4) is None


@pytest.mark.parametrize("nat, expected", [
    ("nat: {snat: 192.0.2.300}", ["11: wans.b.nat.snat: must be an IPv4 or IPv6 unicast "
                                  "address, got '192.0.2.300'"]),
    ("nat: {snat: '2001:db8::1'}", ["11: wans.b.nat.snat: wans.b carries no IPv6 (no gateway6)"]),
    ("nat: {snat: 224.0.0.1}", ["11: wans.b.nat.snat: must be an IPv4 or IPv6 unicast address, "
                                "got '224.0.0.1' (multicast)"]),
    ("nat: {ipv4: {snat: '2001:db8::1'}}", ["11: wans.b.nat.ipv4.snat: must be an IPv4 "
                                            "address (under ipv4:), got 2001:db8::1"]),
    ("nat: {ipv4: {snat: 'fe80::1'}}", ["11: wans.b.nat.ipv4.snat: must be an IPv4 unicast "
                                        "address, got 'fe80::1' (link-local)"]),
    ("nat: {ipv4: {sant: 198.51.100.10}}", [
        "11: wans.b.nat.ipv4.sant: unknown key (did you mean 'snat'?)",
        "11: wans.b.nat.ipv4.snat: required key is missing"]),
    ("nat: {snat: 198.51.100.10, ipv6: none}", [
        "11: wans.b.nat: give snat: alone (for its address's IP version), or per version: "
        "{ipv4: {snat: ADDRESS}, ipv6: none}"]),
    ("nat: snat", ["11: wans.b.nat: must be masquerade or none, {snat: ADDRESS}, or per IP "
                   "version like {ipv4: masquerade, ipv6: none}, got 'snat'"]),
])
def test_snat_mistakes_name_the_key_and_line(nat: str, expected: list[str]) -> None:
    assert problems(DUAL + f"    {nat}\n") == [f"{SRC}:{line}" for line in expected]


def test_nat_for_ipv4_on_an_ipv6_only_wan_is_a_mistake() -> None:
    six_only = DUAL.replace("    gateway: 192.0.2.1\n", "")
    assert problems(six_only.replace("fe80::1\n", "fe80::1\n    nat: {ipv4: none}\n")) == [
        f"{SRC}:7: wans.a.nat.ipv4: wans.a carries no IPv4 (no gateway)"]
    wan = parse_config(six_only.replace("fe80::1\n", "fe80::1\n    nat: none\n"), SRC).wans[0]
    assert (wan.nat, wan.masquerades(4), wan.masquerades(6)) == (((6, "none"),), False, False)


def test_durations_in_minutes() -> None:
    cfg = parse_config(BASE + "probe:\n  timeout: 1m\n  max_timeout: 1m\n  interval: 30s\n", SRC)
    assert (cfg.wans[0].probe.timeout, cfg.wans[0].probe.max_timeout) == (60.0, 60.0)
