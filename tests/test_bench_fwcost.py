"""Figure 13's pure parts (bench/fwcost.py): /proc/stat and nft counter parsing, the
generated policies (valid for ecmpd's config, the mixed set's shapes and its one matching
policy), the rows (ratios to the bare router of the same round, ERROR rows)."""

from __future__ import annotations

import yaml

from bench import fwcost, fwcostrows
from bench.fwcost import FwCost, Window
from ecmpd.config import parse_config

STAT = ("cpu  100 5 200 9000 10 30 70 0 0 0\n"
        "cpu0 50 2 100 4500 5 15 35 0 0 0\n")
NFT = ("table ip fwsink {\n\tchain pre {\n\t\ttype filter hook prerouting priority raw; "
       "policy accept;\n\t\tip daddr 203.0.113.10 udp dport 9000-60000 counter packets "
       "160012 bytes 7360552 drop\n\t}\n}\n")
CLIENTS = [f"192.168.0.{i}" for i in range(2, 60)]


def test_kernel_ticks_and_sink_packets() -> None:
    assert fwcost.kernel_ticks(STAT) == 200 + 30 + 70
    assert fwcost.sink_packets(NFT) == 160012


def config_text(kind: str) -> str:
    cfg = {"lan": {"interfaces": ["Local"]},
           "wans": {"wlan1": {"interface": "wlan1", "gateway": "10.111.0.1"},
                    "wlan2": {"interface": "wlan2", "gateway": "10.112.0.1"}},
           "policies": fwcost.policies(kind, CLIENTS, "Local", ["wlan1", "wlan2"])}
    return yaml.safe_dump(cfg)


def test_generated_policies_are_a_valid_config() -> None:
    for kind in ("nomatch", "mixed", "sorted", "mixed1"):
        cfg = parse_config(config_text(kind), "fw.yaml")
        assert len(cfg.policies) == fwcost.POLICIES


def test_mixed_policies_have_six_shapes_and_one_matching_last() -> None:
    pols = fwcost.policies("mixed", CLIENTS, "Local", ["wlan1", "wlan2"])
    shapes = {tuple(sorted(set(p) - {"name", "use"})) for p in pols[:-1]}
    assert len(shapes) == 6
    assert pols[-1]["src"] == [f"{c}/32" for c in CLIENTS[:fwcost.MATCHING]]
    blocks = fwcost.policies("sorted", CLIENTS, "Local", ["wlan1", "wlan2"])
    assert sorted(p["name"] for p in blocks) == sorted(p["name"] for p in pols)
    assert blocks[-1]["name"] == "matching"
    changes = sum(set(a) != set(b) for a, b in zip(blocks, blocks[1:]))
    assert changes == 6  # five between the blocks, one to the matching policy
    one = fwcost.policies("mixed1", CLIENTS, "Local", ["wlan1", "wlan2"])
    assert [{k: v for k, v in p.items() if k != "use"} for p in one] == \
        [{k: v for k, v in p.items() if k != "use"} for p in pols]
    assert {tuple(p["use"]) for p in one[:-1]} == {("wlan1",)} and one[-1] == pols[-1]
    assert {tuple(p["use"]) for p in pols[:-1]} == {("wlan1",), ("wlan2",)}
    nomatch = fwcost.policies("nomatch", CLIENTS, "Local", ["wlan1", "wlan2"])
    assert {tuple(sorted(p)) for p in nomatch} == {("dst", "name", "use")}
    assert len({p["dst"] for p in nomatch}) == fwcost.POLICIES


def win(variant: str, ticks: int, received: int = 100_000, rnd: int = 0,
        sys_s: float = 1.0) -> Window:
    return Window(variant, ticks, 10, received, received, 5.0, sys_s, 10, None, rnd)


def test_costs_per_packet() -> None:
    assert win("bare", 110).us_per_packet == (110 - 10) / 100 * 1e6 / 100_000
    assert win("bare", 110).sender_us == (1.0 + 0.1) * 1e6 / 100_000
    nan = win("bare", 110, received=0).sender_us
    assert nan != nan


def test_task_ticks() -> None:
    line = "15 (ksoftirqd/1) S 2 0 0 0 -1 69238848 0 0 0 0 7 1234 0 0 20 0 1 0 12 0 0"
    assert fwcost.task_ticks(line) == 7 + 1234


def test_rows_pair_each_window_with_its_rounds_bare_router_and_show_errors() -> None:
    m = FwCost(windows=[win("bare", 110, sys_s=1.0), win("ecmpd 0", 115, sys_s=1.0),
                        win("seed", 130, sys_s=1.2),
                        win("ecmpd 0", 210, rnd=1, sys_s=1.6), win("bare", 210, rnd=1, sys_s=1.4)],
               idle=[50, 50, 50], errors={"ecmpd 1000 interleaved": "RuntimeError: boom"})
    rows = {r.figure.split(": ", 1)[1]: r for r in fwcostrows.rows(m, 5.0)}
    assert rows["ecmpd 0"].baseline.startswith(
        "ratio to the same round's bare router: sender 1.000 / 1.067 / 1.133 (n=2) "
        "(0 / 1000 / 2000 ns/packet (n=2) more)")
    assert rows["ecmpd 0"].result == "pass"
    assert rows["seed"].result == "info"
    assert rows["ecmpd 1000 interleaved"].result == "**ERROR**"
    assert "boom" in rows["ecmpd 1000 interleaved"].ecmpd
    assert rows["ecmpd 1000 nomatch"].result == "**ERROR**"
    assert "10.0 / 10.0 / 10.0% of one CPU" in rows["idle"].ecmpd


RULESET = """table inet ecmpd {
\tchain prerouting {
\t\tmeta mark vmap @x
\t}
\tchain policies {
\t\tip daddr vmap @polmap_1
\t\tmeta l4proto . th dport vmap @polmap_2
\t}
\tchain pol_1 {
\t\tcounter name "pol_1" meta mark set 0x1
\t}
}
"""


def test_policy_rules_counts_the_lookups_of_chain_policies() -> None:
    assert fwcost.policy_rules(RULESET) == 2
    assert fwcost.policy_rules("") == 0
