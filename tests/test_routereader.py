"""routereader: kernel-filtered route dumps in a lab router namespace (strict checking)."""

from __future__ import annotations

import os

import pytest

from lab import Lab
from ecmpd.routereader import RouteReader, socket_in_netns

pytestmark = pytest.mark.lab


def test_dumps_are_filtered_by_table_and_proto_and_defaults_stop_at_the_first_leaf(
        lab: Lab) -> None:
    lab.run(lab.ns_router, "ip", "-batch", "-", input="\n".join([
        "route add default via 10.111.0.1 table 100 proto 236",
        "route add 198.51.100.0/24 via 10.111.0.1 table 100 proto 236",
        "route add default via 10.112.0.1 table 100 proto 16 metric 5",
        "route add default via 10.111.0.1 proto 16",               # main, a DHCP client's
        "route add 0.0.0.0/8 via 10.112.0.1",                      # same key, not default
        "route add 203.0.113.0/24 via 10.112.0.1",
    ]) + "\n")
    here = os.readlink("/proc/self/ns/net")
    reader = RouteReader(socket_in_netns(lab.ns_router))
    assert os.readlink("/proc/self/ns/net") == here      # a thread joined the namespace
    mine = reader.dump(100, 236)
    assert sorted((m["dst_len"], m["proto"]) for m in mine) == [(0, 236), (24, 236)]
    assert len(reader.dump(100)) == 3 and reader.dump(4242) == []   # no such table: none
    first = reader.defaults(254)
    assert sorted((m["dst_len"], m.get("gateway")) for m in first) == [
        (0, "10.111.0.1"), (8, "10.112.0.1")]
    assert reader.sock.fileno() == -1                   # the abandoned dump's socket closed
