"""The grouped rules of ecmpd's policies: policies of one shape share one verdict map,
one lookup each, wherever the order that matters allows (pure).

A policy expands to the product of its values (one element per
combination), per IP version of its prefixes (an IPv4 prefix keys on ``ip saddr``, an
IPv6 one on ``ip6 saddr``; a policy without prefixes matches either, by ``meta
l4proto``, ``th sport``/``th dport``, ``iifname``).  The *shape* of an element is its IP
version (none without prefixes) and the fields it uses: the key of its map.  Elements
overlap when every field both use overlaps (a field one of them does not use matches
anything), and never across IP versions.

First match wins, but two policies need their order only when they overlap and *say
otherwise* (another `Policy.route`: other WANs or fallback); a packet that policies of
one route match goes the same way whichever matches first.  Walking the policies in
order, an element joins the newest group of its shape unless (a) it overlaps an element
of that group (an interval map cannot hold overlapping keys) or (b) it overlaps an
element of another route in a group after that one (which would then be looked up too
late); otherwise it starts a new group at the end.  So the invariant holds: two
overlapping elements of different routes in different groups belong to policies in the
order of their groups, and the first group whose map matches a packet names a policy
that sends it where the first policy that matches it would.  Which of two policies of one
route counts a packet both match is left open.  An element inside an element of a
policy as early or earlier can never be the first match and is left out.  The number of
rules grows with the changes of shape between overlapping policies of different routes
(and with overlap layers), not with the number of policies; IPv4 and IPv6 policies never
hold each other back.

Ports exist only for TCP, UDP, SCTP and UDP-Lite: a policy with ports keys on ``meta
l4proto`` too, with its port protocols (all four when it names none), so that ``th``
never reads another protocol's header as ports.
"""

from __future__ import annotations

import functools
import itertools
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, Iterator, NamedTuple

from .configmodel import PORT_PROTOCOLS, Policy, family_of


DIMS = ("src", "dst", "proto", "sport", "dport", "iif")
"""The fields a policy matches by, in the order of a map's key."""
_PORT_NUMBERS = tuple(PORT_PROTOCOLS.values())
_INDEXED = ("dst", "src", "iif", "dport", "sport", "proto")
"""The field a group looks its overlapping elements up by: the first one both use."""

Span = tuple[Any, Any]
"""A field's value as an inclusive interval: addresses and ports as ints, a protocol
(p, p), an interface name (name, name)."""


@dataclass(frozen=True)
class Shape:
    """The key of a group's map: the IP version of its prefixes (0: none) and the fields
    it uses, in `DIMS` order."""

    family: int
    dims: tuple[str, ...]

    def interval(self) -> bool:
        """Whether a field holds prefixes or port ranges (the map needs flags interval)."""
        return any(d in ("src", "dst", "sport", "dport") for d in self.dims)


class Element(NamedTuple):
    """One key of a policy: a value per field of its shape."""

    position: int
    route: int
    """What its policy says (`Policy.route`: its WANs and fallback)."""
    shape: Shape
    values: tuple[Any, ...]
    """Per `shape.dims`: the value a map key holds (see `_json`)."""
    spans: tuple[Span | None, ...]
    """Per `DIMS`: the value as an interval, None where the shape does not use the field
    (it matches anything there)."""


def _field(dim: str, value: Any) -> tuple[Span, Any]:
    """A policy's value of field `dim`: (its span, the value a map key holds: an address,
    port, protocol or interface name, or ``("prefix", address, length)`` or ``("range",
    low, high)``; immutable, for `plan` is cached)."""
    if dim in ("src", "dst"):
        net = ip_network(value, strict=False)
        span = int(net.network_address), int(net.broadcast_address)
        if net.prefixlen == net.max_prefixlen:
            return span, str(net.network_address)
        return span, ("prefix", str(net.network_address), net.prefixlen)
    if dim in ("sport", "dport"):
        lo, hi = value
        return (lo, hi), lo if lo == hi else ("range", lo, hi)
    return (value, value), value


def _json(value: Any) -> Any:
    """A key's value (`_field`) as libnftables JSON."""
    if isinstance(value, tuple):
        kind, a, b = value
        return {"prefix": {"addr": a, "len": b}} if kind == "prefix" else {"range": [a, b]}
    return value


def _compatible_shapes(a: Shape, b: Shape) -> bool:
    """Whether a packet can match both (not when they key on different IP versions)."""
    return not a.family or not b.family or a.family == b.family


def _overlap(a: Element, b: Element) -> bool:
    """Some packet matches both."""
    return _compatible_shapes(a.shape, b.shape) and all(
        x is None or y is None or (x[0] <= y[1] and y[0] <= x[1])
        for x, y in zip(a.spans, b.spans))


def _holds(a: Element, b: Element) -> bool:
    """Every packet that matches `b` matches `a`."""
    return (not a.shape.family or a.shape.family == b.shape.family) and all(
        x is None or (y is not None and x[0] <= y[0] and y[1] <= x[1])
        for x, y in zip(a.spans, b.spans))


@functools.lru_cache(maxsize=16384)
def elements(policy: Policy) -> tuple[Element, ...]:
    """The keys of `policy`: the product of its values, per IP version of its prefixes,
    wider ones first (cached: a reload that changes a few policies expands only those;
    never change the result)."""
    protos = policy.proto
    if policy.sport or policy.dport:
        protos = tuple(p for p in (policy.proto or _PORT_NUMBERS) if p in _PORT_NUMBERS)
        if not protos:
            return ()           # ports of no protocol that has any: matches nothing
    out: list[Element] = []
    for family in sorted({family_of(p) for p in policy.src + policy.dst}) or [0]:
        fields = {"src": tuple(p for p in policy.src if family_of(p) == family),
                  "dst": tuple(p for p in policy.dst if family_of(p) == family),
                  "proto": protos, "sport": policy.sport, "dport": policy.dport,
                  "iif": policy.iif}
        if (policy.src and not fields["src"]) or (policy.dst and not fields["dst"]):
            continue            # e.g. an IPv4 source and only IPv6 destinations
        shape = Shape(family, tuple(d for d in DIMS if fields[d]))
        where = [DIMS.index(d) for d in shape.dims]
        seen: set[tuple[Span | None, ...]] = set()
        for combo in itertools.product(*([_field(d, v) for v in fields[d]]
                                         for d in shape.dims)):
            spans: list[Span | None] = [None] * len(DIMS)
            for i, (span, _) in zip(where, combo):
                spans[i] = span
            if (key := tuple(spans)) not in seen:
                seen.add(key)
                out.append(Element(policy.position, policy.route, shape, tuple(v for _, v in combo), key))
    # a holder sorts before what it holds (it is wider in every field), so that `plan`
    # leaves the held out rather than put it into a group of its own
    out.sort(key=lambda e: (e.shape.family, *(x[0] - x[1] if isinstance(x[0], int) else 0
                                              for x in e.spans if x is not None)))
    return tuple(out)


Placed = tuple[Element, int]
"""An element and the number of its group (from 0, in rule order).  One shape's elements
are placed in groups of rising numbers (always its newest group, or a new one), so every
list of them below is in that order too: a search for the groups from `at` on reads a
list from its end and stops at the first older one."""


def _since(items: list[Placed], at: int) -> Iterator[Placed]:
    for item in reversed(items):
        if item[1] < at:
            return
        yield item


class _Exact:
    """Placed elements by one field's exact value (protocols, interface names)."""

    def __init__(self) -> None:
        self._by: defaultdict[Any, list[Placed]] = defaultdict(list)

    def add(self, span: Span, item: Placed) -> None:
        self._by[span[0]].append(item)

    def since(self, span: Span, at: int) -> Iterator[Placed]:
        return _since(self._by.get(span[0], []), at)


class _Prefixes:
    """Placed elements by one field's prefix: two prefixes overlap only when one holds
    the other, so the candidates are the holders (one lookup per prefix length present)
    and the held (their starts lie inside the prefix)."""

    def __init__(self) -> None:
        self._by: defaultdict[Span, list[Placed]] = defaultdict(list)
        self._sizes: set[int] = set()
        self._starts: list[int] = []
        self._held: list[Placed] = []

    def add(self, span: Span, item: Placed) -> None:
        self._by[span].append(item)
        self._sizes.add(span[1] - span[0] + 1)
        i = bisect_right(self._starts, span[0])
        self._starts.insert(i, span[0])
        self._held.insert(i, item)

    def since(self, span: Span, at: int) -> Iterator[Placed]:
        lo, hi = span
        for size in self._sizes:
            if size > hi - lo:
                start = lo - lo % size
                yield from _since(self._by.get((start, start + size - 1), []), at)
        held = self._held[bisect_left(self._starts, lo):bisect_right(self._starts, hi)]
        yield from (item for item in held if item[1] >= at)


class _Ranges:
    """Placed elements by one field's port range, in buckets of 1024 ports."""

    BITS = 10

    def __init__(self) -> None:
        self._by: defaultdict[int, list[Placed]] = defaultdict(list)

    def add(self, span: Span, item: Placed) -> None:
        for b in range(span[0] >> self.BITS, (span[1] >> self.BITS) + 1):
            self._by[b].append(item)

    def since(self, span: Span, at: int) -> Iterator[Placed]:
        for b in range(span[0] >> self.BITS, (span[1] >> self.BITS) + 1):
            yield from _since(self._by.get(b, []), at)


_INDEX = {"src": _Prefixes, "dst": _Prefixes, "sport": _Ranges, "dport": _Ranges,
          "proto": _Exact, "iif": _Exact}


class _Shaped:
    """The placed elements of one shape, whatever their group, indexed by field."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.newest = -1
        """The number of its newest group."""
        self._newest_by_route: dict[int, int] = {}
        """Route -> the number of the newest group holding an element of it."""
        self._index = {d: _INDEX[d]() for d in shape.dims}

    def add(self, e: Element, group: int) -> None:
        self.newest = group
        self._newest_by_route[e.route] = group
        for d, index in self._index.items():
            index.add(e.spans[DIMS.index(d)], (e, group))  # type: ignore[arg-type]

    def overlapping_since(self, e: Element, at: int) -> Iterator[Element] | None:
        """Its elements in groups `at` and later that overlap `e` (of a compatible IP
        version); None when the shapes share no field (then every one overlaps)."""
        by = next((d for d in _INDEXED if d in self._index and d in e.shape.dims), None)
        if by is None:
            return None
        return self._overlapping(e, self._index[by].since(e.spans[DIMS.index(by)], at))

    def says_otherwise_since(self, route: int, at: int) -> bool:
        """Whether groups `at` and later hold an element of another route than `route`."""
        return any(g >= at for r, g in self._newest_by_route.items() if r != route)

    @staticmethod
    def _overlapping(e: Element, near: Iterator[Placed]) -> Iterator[Element]:
        seen: set[int] = set()
        for f, _ in near:
            if id(f) not in seen:
                seen.add(id(f))
                if _overlap(f, e):
                    yield f


class _Plan:
    """Groups being built, policy by policy (see the module's doc)."""

    def __init__(self) -> None:
        self.groups: list[tuple[Shape, list[Element]]] = []
        self._shaped: dict[Shape, _Shaped] = {}

    def place(self, e: Element) -> None:
        """Add `e` to the newest group of its shape, or to a new group at the end, or
        leave it out when it lies inside an element of an earlier (or its own) policy
        found on the way.

        Only the newest group of `e`'s shape and the groups after it matter, and they
        are searched (their own shape first) until one rules the newest group out: an
        element of its own group that overlaps `e` (one map cannot hold both), or one
        of a later group that overlaps `e` and says otherwise (another route).  An
        element of the same route may come after `e` whatever their order in the list:
        a packet both match goes the same way."""
        own = self._shaped.get(e.shape)
        at = own.newest if own is not None else -1
        fits = own is not None
        for shaped in ([own] if own else []) + [s for s in self._shaped.values() if s is not own]:
            if not fits:
                break
            if shaped.newest < at or not _compatible_shapes(shaped.shape, e.shape):
                continue
            mine = shaped is own
            may_hold = set(shaped.shape.dims) <= set(e.shape.dims)
            found = shaped.overlapping_since(e, at)
            if found is None:                   # all of them overlap e
                if may_hold:
                    return                      # a policy that matches everything
                fits = not shaped.says_otherwise_since(e.route, at)
                continue
            for f in found:
                if may_hold and _holds(f, e):
                    return                      # f's policy is as early: it always wins
                if mine or f.route != e.route:
                    fits = False
                    if not may_hold:
                        break
        if not fits:
            at = len(self.groups)
            self.groups.append((e.shape, []))
        self.groups[at][1].append(e)
        self._shaped.setdefault(e.shape, _Shaped(e.shape)).add(e, at)


@functools.lru_cache(maxsize=8)
def plan(policies: tuple[Policy, ...]) -> tuple[tuple[Shape, tuple[Element, ...]], ...]:
    """The groups of `policies`, in rule order: (shape, elements) each."""
    built = _Plan()
    for policy in policies:
        for e in elements(policy):
            built.place(e)
    return tuple((shape, tuple(elems)) for shape, elems in built.groups)
