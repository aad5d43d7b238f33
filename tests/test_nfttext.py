"""ecmpd's nft transaction in nft syntax (`ecmpd.nfttext`, what --dry-run prints): the
statements ecmpd uses, written as nft writes them; loaded with ``nft -f`` in a namespace
of our own it is the same table as the JSON the daemon applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecmpd import nftrules, nfttext
from ecmpd.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
POLICIES = """
policies:
  - name: voip
    dst: [198.51.100.0/24, 2001:db8:99::/48]
    proto: udp
    dport: [5060, "10000-20000"]
    use: [wlan2]
  - src: 192.168.0.50
    use: [wlan1]
    fallback: drop
  - iif: Local
    proto: tcp
    use: [wlan1]
"""


def example(policies: bool = True):
    return parse_config((ROOT / "config" / "ecmpd.yaml").read_text()
                        + (POLICIES if policies else ""), "ecmpd.yaml")


def text(cfg=None) -> list[str]:
    return nfttext.render(nftrules.replace_commands(cfg or example()))


def test_the_transaction_replaces_the_table_in_one_block():
    lines = text()
    assert lines[:5] == ["table inet ecmpd", "delete table inet ecmpd", "table ip ecmpd",
                         "delete table ip ecmpd", "table inet ecmpd"]
    assert lines[5] == "table inet ecmpd {" and lines[-1] == "}"
    assert sum(line.startswith("table inet ecmpd {") for line in lines) == 1


def test_statements_read_as_nft_lists_them():
    lines = [line.strip() for line in text()]
    assert "type filter hook prerouting priority -150; policy accept;" in lines
    assert 'meta oifname "wlan1" masquerade comment "masquerade wlan1"' in lines
    assert "meta mark set meta mark & 0xff00ffff | 0x00010000" in lines
    assert "ct mark set ct mark & 0xff00ffff | 0x00020000" in lines
    assert ("ct mark & 0x00ff0000 vmap { 0x00010000 : jump restore_1, 0x00020000 : jump "
            "restore_2 } comment \"restore the connection's WAN mark\"") in lines
    assert "ip saddr != 10.111.0.1 meta pkttype host counter name rx_1" in lines
    assert "ip6 saddr fe80::/10 return" in lines
    assert "ip daddr . meta l4proto . th dport vmap @polmap_1 comment \"policy 1\"" in lines
    assert "type ipv4_addr . inet_proto . inet_service : verdict;" in lines
    assert "elements = { 198.51.100.0/24 . 17 . 10000-20000 : goto pol_1," in lines
    assert "198.51.100.0/24 . 17 . 5060 : goto pol_1 }" in lines
    assert 'elements = { 6 . "Local" : goto pol_3 }' in lines
    assert not any('"' in line for line in lines if "icmpv6 type" in line)


def test_snat_reads_as_nft_lists_it():
    cfg = parse_config((ROOT / "config" / "ecmpd.yaml").read_text().replace(
        "    address6: 2001:db8:1::2/64\n", "    address6: 2001:db8:1::2/64\n    nat: "
        "{ipv4: {snat: 10.111.0.10}, ipv6: {snat: '2001:db8:1::10'}}\n", 1), "ecmpd.yaml")
    lines = [line.strip() for line in text(cfg)]
    assert ('meta oifname "wlan1" meta nfproto ipv4 fib saddr type != local snat ip to 10.111.0.10 comment '
            '"snat wlan1 IPv4 to 10.111.0.10"') in lines
    assert ('meta oifname "wlan1" meta nfproto ipv6 fib saddr type != local snat ip6 to 2001:db8:1::10 comment '
            '"snat wlan1 IPv6 to 2001:db8:1::10"') in lines


def test_a_statement_it_does_not_know_is_shown_not_dropped():
    odd = {"nftables": [{"add": {"rule": {"family": "inet", "table": "t", "chain": "c",
                                          "expr": [{"notrack": None}]}}},
                        {"flush": {"ruleset": None}}]}
    lines = nfttext.render(odd)
    assert '# not shown in nft syntax: {"flush": {"ruleset": null}}' in lines
    assert any('{"notrack": null}' in line for line in lines)


@pytest.mark.lab
@pytest.mark.parametrize("policies", [False, True])
def test_the_text_loads_as_the_same_table_as_the_json(make_netns, policies):
    from lab import netns
    cfg = example(policies)
    commands = nftrules.replace_commands(cfg)
    from_text, from_json = make_netns("txt"), make_netns("jsn")
    netns.nft(from_text, "\n".join(nfttext.render(commands)))
    netns.run_in(from_json, "nft", "-j", "-f", "-", input=json.dumps(commands))

    def listing(ns: str):
        out = netns.run_in(ns, "nft", "-j", "list", "table", "inet", "ecmpd").stdout
        return nftrules.normalize_listing(json.loads(out), "ecmpd")
    assert listing(from_text) == listing(from_json) != []
