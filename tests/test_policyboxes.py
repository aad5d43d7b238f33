"""policyboxes: the policies as boxes per class, cut into layers of disjoint boxes,
checked against the first-match model (tests/policymodel.py)."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd import policyboxes as pb
from ecmpd import policygroups
from ecmpd.configmodel import Policy
from tests.policymodel import GRE, PROBES, TCP, UDP, first_match, looked_up, policy_fields
from tests.test_policyrules import fwcost_like, pol

V4P, V6P, V4N, V6N = pb.KLASSES
ALL4 = (0, 2**32 - 1)
ANY_PROTO, ANY_PORT = (0, 255), (0, 65535)


def addr(text: str) -> int:
    return int(ip_address(text))


# ---- boxes ---------------------------------------------------------------------------
def test_a_policy_is_boxes_per_class_its_unused_fields_whole() -> None:
    voip = pol(1, dst=("198.51.100.0/24",), proto=(UDP,), dport=((5060, 5060), (10000, 20000)))
    net = (addr("198.51.100.0"), addr("198.51.100.255"))
    assert pb.boxes(voip, V4P) == [(ALL4, net, (UDP, UDP), ANY_PORT, (5060, 5060)),
                                   (ALL4, net, (UDP, UDP), ANY_PORT, (10000, 20000))]
    assert pb.boxes(voip, V4N) == pb.boxes(voip, V6P) == []   # ports; no IPv6 prefix
    host = pol(2, src=("192.168.0.50/32",))
    one = (addr("192.168.0.50"),) * 2
    assert pb.boxes(host, V4P) == [(one, ALL4, ANY_PROTO, ANY_PORT, ANY_PORT)]
    assert pb.boxes(host, V4N) == [(one, ALL4, ANY_PROTO)]
    # no prefix: both versions; a protocol list splits by class
    gre_or_tcp = pol(3, proto=(GRE, TCP))
    assert pb.boxes(gre_or_tcp, V6P) == [((0, 2**128 - 1), (0, 2**128 - 1), (TCP, TCP),
                                          ANY_PORT, ANY_PORT)]
    assert [b[2] for b in pb.boxes(gre_or_tcp, V4N)] == [(GRE, GRE)]
    # a source of one version and destinations of the other only: it matches nothing
    assert all(pb.boxes(pol(4, src=("10.0.0.0/8",), dst=("2001:db8::/32",)), k) == []
               for k in pb.KLASSES)


def test_subtract_leaves_disjoint_pieces_that_cover_the_rest() -> None:
    box = ((0, 9), (0, 9))
    cut = ((3, 5), (4, 20))
    pieces = pb.subtract(box, cut)
    assert len(pieces) == 3
    cells = {(x, y) for p in pieces for x in range(p[0][0], p[0][1] + 1)
             for y in range(p[1][0], p[1][1] + 1)}
    assert sum((p[0][1] - p[0][0] + 1) * (p[1][1] - p[1][0] + 1) for p in pieces) == len(cells)
    assert cells == {(x, y) for x in range(10) for y in range(10)
                     if not (3 <= x <= 5 and 4 <= y)}


# ---- layers --------------------------------------------------------------------------
def layers(compiled: pb.Compiled, k: pb.Klass, iif: str | None = None) -> list[list[int]]:
    (part,) = [p for p in compiled.parts[k] if p.iif == iif]
    return [[position for position, _ in layer.boxes] for layer in part.layers]


def test_a_later_policy_is_cut_around_earlier_ones_in_the_same_layer() -> None:
    c = pb.compile_policies((pol(1, dst=("203.0.113.0/24",)), pol(2, src=("192.168.1.23/32",)),
                             pol(3, dst=("198.51.100.0/24",))))
    # 2 in two pieces around 1's /24, 3 in two around 2's source
    assert layers(c, V4N) == [[1, 2, 2, 3, 3]]
    (layer,) = c.parts[V4N][0].layers
    assert [b for p, b in layer.boxes if p == 2] == [
        ((addr("192.168.1.23"),) * 2, (0, addr("203.0.112.255")), ANY_PROTO),
        ((addr("192.168.1.23"),) * 2, (addr("203.0.114.0"), 2**32 - 1), ANY_PROTO)]


def test_what_would_cut_a_box_into_too_many_pieces_starts_a_layer() -> None:
    dsts = [pol(i, dst=(f"203.0.{2 * i}.0/24",)) for i in range(1, 10)]
    c = pb.compile_policies((*dsts, pol(10, src=("192.168.1.23/32",))))
    assert layers(c, V4N) == [list(range(1, 10)), [10]]       # 10 pieces > CUT_MAX
    c = pb.compile_policies((*dsts[:3], pol(10, src=("192.168.1.23/32",))))
    assert layers(c, V4N) == [[1, 2, 3, 10, 10, 10, 10]]


def test_what_an_earlier_policy_covers_adds_nothing() -> None:
    c = pb.compile_policies((pol(1, dst=("10.0.0.0/8",)), pol(2, dst=("10.1.0.0/16",))))
    assert layers(c, V4N) == [[1]]


def test_interface_policies_get_a_part_each_with_the_others() -> None:
    c = pb.compile_policies((pol(1, iif=("lan2",), proto=(UDP,)), pol(2, dst=("203.0.113.0/24",)),
                             pol(3, iif=("lan2", "lan3"), dst=("198.51.100.0/24",))))
    assert [p.iif for p in c.parts[V4P]] == [None, "lan2", "lan3"]
    assert layers(c, V4P) == [[2]]
    assert layers(c, V4P, "lan2") == [[1, 2, 2, 3, 3]]     # 2 and 3 cut around UDP
    assert layers(c, V4P, "lan3") == [[2, 3]]
    assert [p.iif for p in c.parts[V4N]] == [None, "lan2", "lan3"]    # 1 is UDP only
    assert layers(c, V4N, "lan2") == [[2, 3]]


def test_figure_13s_interleaved_thousand_in_a_fraction_of_the_lookups() -> None:
    policies = tuple(fwcost_like(1000))
    c = pb.compile_policies(policies)
    assert not c.tail and c.elements() <= pb.MAX_ELEMENTS
    assert len(policygroups.plan(policies)) == 1000
    assert max(len(p.layers) for ps in c.parts.values() for p in ps) <= 200
    # one shape: one layer
    same = tuple(pol(i, dst=(f"10.{i // 256}.{i % 256}.0/24",)) for i in range(1, 1001))
    assert [len(p.layers) for ps in pb.compile_policies(same).parts.values() for p in ps] == [1, 1]


def test_past_the_element_budget_the_rest_is_the_tail() -> None:
    policies = tuple(pol(i, dst=(f"10.0.{i}.0/24",)) for i in range(1, 11))
    c = pb.compile_policies(policies, 12)    # each is one box in either class
    assert c.elements() == 12 and [p.position for p in c.tail] == list(range(7, 11))
    assert pb.compile_policies(policies, 0).parts == {}


# ---- against the model -----------------------------------------------------------------
def decide(compiled: pb.Compiled, packet: dict) -> int | None:
    """What the compiled policies do: the packet's class and part, its first layer that
    matches, else the tail's groups."""
    family, proto = packet["src"].version, packet["proto"]
    k = pb.Klass(family, proto in pb.PORT_PROTOS)
    values = {"src": int(packet["src"]), "dst": int(packet["dst"]), "proto": proto,
              "sport": packet["sport"], "dport": packet["dport"]}
    found = pb.first_layer_match(compiled.parts.get(k, []), values, packet["iif"])
    return found if found is not None else looked_up(policygroups.plan(compiled.tail), packet)


@settings(max_examples=150, deadline=None, database=None)
@given(fields=st.lists(policy_fields, min_size=1, max_size=14),
       budget=st.sampled_from([3, 10, 30, pb.MAX_ELEMENTS]))
def test_the_layers_do_what_first_match_wins_means(fields, budget):
    policies = tuple(Policy(i, ("isp_a",), 10, **f) for i, f in enumerate(fields, 1))
    compiled = pb.compile_policies(policies, budget)
    for parts in compiled.parts.values():
        for part in parts:
            for layer in part.layers:            # nft refuses overlapping elements
                boxes = [b for _, b in layer.boxes]
                assert not any(pb.overlap(a, b) for i, a in enumerate(boxes)
                               for b in boxes[i + 1:])
    for packet in PROBES:
        assert decide(compiled, packet) == first_match(policies, packet), packet
