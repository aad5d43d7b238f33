"""The policies' meaning, straight from the model (first match wins), with hypothesis
strategies for policy lists and probe packets over a small domain: the reference that
tests/test_policygroups.py and test_policyrules.py check against."""

from __future__ import annotations

import functools
import random
from ipaddress import ip_address, ip_network

from hypothesis import strategies as st

from ecmpd.configmodel import PORT_PROTOCOLS, Policy

UDP, TCP, GRE = 17, 6, 47

V4 = ip_network("10.0.0.0/29")
V6 = ip_network("fd00::/125")


def prefixes(net) -> list[str]:
    """Every prefix inside `net` (a /29 or /125: down to single addresses)."""
    return [str(sub) for n in range(net.prefixlen, net.max_prefixlen + 1)
            for sub in net.subnets(new_prefix=n)]


PREFIXES = st.sampled_from(prefixes(V4) + prefixes(V6))
port_ranges = st.tuples(st.integers(1, 6), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1]))
policy_fields = st.fixed_dictionaries({}, optional={
    "src": st.lists(PREFIXES, min_size=1, max_size=2).map(tuple),
    "dst": st.lists(PREFIXES, min_size=1, max_size=2).map(tuple),
    "proto": st.lists(st.sampled_from([TCP, UDP, 1]), min_size=1, max_size=2).map(tuple),
    "sport": st.lists(port_ranges, min_size=1, max_size=2).map(tuple),
    "dport": st.lists(port_ranges, min_size=1, max_size=2).map(tuple),
    "iif": st.lists(st.sampled_from(["lan1", "lan2"]), min_size=1, max_size=2).map(tuple),
})


network = functools.lru_cache(maxsize=None)(ip_network)


def first_match(policies: tuple[Policy, ...], packet: dict) -> int | None:
    """What the policies mean, straight from the model: the first one that matches."""
    def within(prefixes: tuple[str, ...], address) -> bool:
        return not prefixes or any(address.version == network(p).version
                                   and address in network(p) for p in prefixes)

    for p in policies:
        ported = bool(p.sport or p.dport)
        if (within(p.src, packet["src"]) and within(p.dst, packet["dst"])
                and (not p.proto or packet["proto"] in p.proto)
                and (not ported or packet["proto"] in PORT_PROTOCOLS.values())
                and (not p.sport or any(a <= packet["sport"] <= b for a, b in p.sport))
                and (not p.dport or any(a <= packet["dport"] <= b for a, b in p.dport))
                and (not p.iif or packet["iif"] in p.iif)):
            return p.position
    return None


def probes(count: int, seed: int = 19) -> list[dict]:
    """Packets of both families over the small domain the policies are drawn from."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        net = rnd.choice((V4, V6))
        src, dst = (ip_address(int(net.network_address) + rnd.randrange(8)) for _ in "sd")
        out.append({"src": src, "dst": dst, "proto": rnd.choice((TCP, UDP, 1, GRE, 132)),
                    "sport": rnd.randrange(1, 11), "dport": rnd.randrange(1, 11),
                    "iif": rnd.choice(("lan1", "lan2", "lan3"))})
    return out


PROBES = probes(200)


def looked_up(plan, packet: dict) -> int | None:
    """What `ecmpd.policygroups`' rendered chain does with `packet` (`plan`: its groups):
    the first group with an element that matches."""
    from ecmpd import policygroups
    value = {"src": int(packet["src"]), "dst": int(packet["dst"]), "proto": packet["proto"],
             "sport": packet["sport"], "dport": packet["dport"], "iif": packet["iif"]}
    for shape, elems in plan:
        if shape.family and shape.family != packet["src"].version:
            continue
        for e in elems:
            if all(span is None or span[0] <= value[d] <= span[1]
                   for d, span in zip(policygroups.DIMS, e.spans)):
                return e.position
    return None
