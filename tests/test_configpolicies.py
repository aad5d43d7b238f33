"""`policies:` validation (`ecmpd.configpolicies`): pure, no root."""

from __future__ import annotations

import pytest

from ecmpd.config import ConfigError, parse_config
from ecmpd.configmodel import Policy

HEAD = """\
lan: {interfaces: [lan0]}
wans:
  wlan1: {interface: eth1, gateway: 192.0.2.1, gateway6: fe80::1}
  wlan2: {interface: eth2, gateway: 198.51.100.1}
  lte: {interface: eth3, gateway: 203.0.113.1, tier: 2, id: 255}
policies:
"""
"""Policies start at line 7."""


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + body, "x")
    return [p.removeprefix("x:") for p in e.value.problems]


def test_the_issues_examples_parse_in_order_with_shared_routes() -> None:
    cfg = parse_config(HEAD + """\
  - name: voip
    dst: 198.18.0.0/15
    proto: udp
    dport: [5060, "10000-20000"]
    use: [wlan2]
  - src: 192.168.0.50
    use: lte
    fallback: drop
  - dst: [2001:db8:99::/48, 203.0.113.0/24]
    use: [wlan1, wlan2]
  - src: 10.9.0.0/16
    use: [wlan2]
  - proto: [TCP, 47]
    iif: lan0
    use: [wlan2, wlan1]
""", "x")
    a, b, c, d, e = cfg.policies
    assert a == Policy(1, ("wlan2",), 254, "voip", "balance", (), ("198.18.0.0/15",), (17,),
                       (), ((5060, 5060), (10000, 20000)))
    # lte has id 255: routes are the highest values no WAN id takes, downwards
    assert (b.route, b.src, b.fallback, b.label) == (253, ("192.168.0.50/32",), "drop",
                                                     "policy 2")
    assert (c.route, c.dst, c.families()) == (252, ("2001:db8:99::/48", "203.0.113.0/24"), (4, 6))
    assert d.route == a.route                # the same WANs and fallback share a route
    assert (e.route, e.proto, e.iif, e.families()) == (c.route, (6, 47), ("lan0",), (4, 6))
    assert set(cfg.policy_routes()) == {254, 253, 252}
    assert cfg.route_mark(254) == 254 << 16
    assert parse_config(HEAD.removesuffix("policies:\n"), "x").policies == ()
    # never a value whose table is one of the kernel's (253..255 with tables.base 0)
    based = parse_config(HEAD.replace("policies:", "tables: {base: 1}\npolicies:")
                         + "  - {use: wlan1}\n", "x")
    assert based.policies[0].route == 251
    assert parse_config(HEAD + "  []\n", "x").policies == ()


@pytest.mark.parametrize("body, expected", [
    ("  - dst: 10.1.2.3/8\n    use: [wlan9]\n",
     ["7: policies[0].dst: 10.1.2.3/8 has host bits set (did you mean 10.0.0.0/8?)",
      "8: policies[0].use[0]: no WAN 'wlan9' (WANs: wlan1, wlan2, lte)"]),
    ("  - dport: 80\n    use: wlan1\n",
     ["7: policies[0].dport: ports need proto: tcp, udp, sctp, udplite"]),
    ("  - proto: icmp\n    dport: 80\n    use: wlan1\n",
     ["8: policies[0].dport: ports need proto: tcp, udp, sctp, udplite only "
      "(protocol 1 has no ports)"]),
    ("  - proto: tcp\n    dport: '20-10'\n    use: wlan1\n",
     ["8: policies[0].dport: must be a port 1..65535 or a range like \"10000-20000\" "
      "(low <= high), got '20-10'"]),
    ("  - proto: udp\n    sport: [1, 70000]\n    use: wlan1\n",
     ["8: policies[0].sport[1]: must be a port 1..65535 or a range like \"10000-20000\" "
      "(low <= high), got 70000"]),
    ("  - dst: [10.0.0.0/8, 2001:db8::/32]\n    use: wlan2\n",
     ["7: policies[0].dst[1]: 2001:db8::/32 is IPv6, but none of use (wlan2) carries IPv6"]),
    ("  - src: 10.0.0.0/8\n    dst: 2001:db8::/32\n    use: wlan1\n",
     ["8: policies[0].dst: src and dst are of different IP versions only: the policy "
      "could never match"]),
    ("  - iif: eth2\n    use: wlan1\n",
     ["7: policies[0].iif: 'eth2' is the interface of wans.wlan2: policies choose the WAN "
      "of connections from the LAN"]),
    ("  - use: [wlan1, wlan1]\n", ["7: policies[0].use[1]: repeats 'wlan1'"]),
    ("  - use: []\n", ["7: policies[0].use: must be a value or a non-empty list, got []"]),
    ("  - fallback: reject\n    use: wlan1\n",
     ["7: policies[0].fallback: must be balance or drop, got 'reject'"]),
    ("  - dst: 10.0.0.0/8\n", ["7: policies[0].use: required key is missing: the WANs this "
                               "policy's connections use"]),
    ("  - {use: wlan1, colour: red}\n",
     ["7: policies[0].colour: unknown key (expected one of: name, src, dst, proto, sport, "
      "dport, iif, use, fallback)"]),
    ("  - {name: x, use: wlan1}\n  - {name: x, use: wlan2}\n",
     ["8: policies[1].name: 'x' is already the name of policies[0]"]),
    ("  - 5\n", ["7: policies[0]: must be a mapping, got 5"]),
    ("  {use: wlan1}\n", ["7: policies: must be a list of policies, got a mapping"]),
])
def test_each_mistake_names_the_policy_key_and_line(body: str, expected: list[str]) -> None:
    assert problems(body) == expected


def test_too_many_combinations_or_route_sets_are_refused() -> None:
    many = "".join(f"  - {{src: 10.{i // 256}.{i % 256}.0/24, use: wlan1}}\n" for i in range(20))
    assert len(parse_config(HEAD + many, "x").policies) == 20
    lists = "  - {src: [%s], dst: [%s], use: wlan1}\n" % (
        ", ".join(f"10.1.{i}.0/24" for i in range(200)),
        ", ".join(f"10.2.{i}.0/24" for i in range(200)))
    assert problems(lists + lists + lists) == [
        "7: policies: the policies' value lists combine to 120000 matches; at most 100000"]
    # 250 WANs leave 5 route values: a sixth set of use and fallback is one too many
    wans = "".join(f"  w{i}: {{interface: e{i}, gateway: 10.{i // 200}.{i % 200}.1}}\n"
                   for i in range(250))
    head = "lan: {interfaces: [lan0]}\nwans:\n" + wans + "policies:\n"
    sets = "".join(f"  - {{use: [w{i}]}}\n" for i in range(6))
    with pytest.raises(ConfigError) as e:
        parse_config(head + sets, "x")
    assert e.value.problems[-1].endswith(
        "policies: at most 5 different sets of use and fallback (the mark values WAN ids "
        "leave free)")
    assert len(parse_config(head + sets.rsplit("  - ", 1)[0], "x").policies) == 5


def test_odd_values_only_ever_load_or_raise_config_error() -> None:
    import random
    rng = random.Random(19)
    odd = ["", "-", "a-b", "1-", "-1", "0", "65536", "10.0.0.0/33", "::/129", "fe80::/10",
           "10.0.0.1/8", "wlan1", "lan0", "tcp", "ICMP", "drop", "x" * 200, "1-2-3",
           0, 1, -1, 65535, 256, 1.5, True, None, [], {}, ["wlan1", 5], {"a": 1}]
    keys = ["name", "src", "dst", "proto", "sport", "dport", "iif", "use", "fallback"]
    for _ in range(400):
        entry = {k: rng.choice(odd) for k in rng.sample(keys, rng.randint(1, len(keys)))}
        text = HEAD + "  - " + repr(entry).replace("'", '"') + "\n"
        try:
            parse_config(text, "x")
        except ConfigError:
            pass
