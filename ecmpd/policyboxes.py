"""Compile ecmpd's ordered policies (first match wins) into a few verdict maps whose
elements are disjoint boxes, so that a new connection pays about the same number of
lookups whatever the number and the order of the policies' shapes (pure, no I/O;
`ecmpd.policyrules` renders the result).

Every packet belongs to one *class*: its IP version and whether its protocol has ports
(TCP, UDP, SCTP, UDP-Lite: only those have a transport header that ``th sport``/``th
dport`` may read).  Within a class one key covers every field the policies use:
``saddr . daddr . l4proto`` (``. sport . dport`` for the port protocols).  A policy is a
union of boxes in that space, a field it does not use being the field's whole range.
Policies of the other class or IP version are left out of a class; a policy without
prefixes is in both versions.

Interfaces cannot be a range in nft (``iifname`` has no intervals, ``"*"`` is refused), so
a class with interface policies looks ``iifname`` up first and goes to a *part* of its
own per named interface (the policies without ``iif`` and those naming it); the packets
of other interfaces go on in the class's default part (the policies without ``iif``).

A part is a list of *layers*, each one map of disjoint boxes (nft refuses overlapping
interval elements) looked up in order.  Boxes are placed in policy order: a box joins
the newest layer minus what that layer's boxes already cover (a later policy never wins
where an earlier one matches), unless that cuts it into more than `CUT_MAX` pieces; then
it starts a new layer.  Invariant: where two boxes overlap, the earlier policy's is in an
earlier layer or the later one was cut around it; so the first layer whose map matches a
packet names the first policy that matches it.  The number of layers grows with the
overlap chains of the list that cuts cannot resolve cheaply, not with its length.

Element budget: a list whose boxes exceed `MAX_ELEMENTS` is compiled up to the policy
that would exceed it (the *head*); the rest (the *tail*) is left to the grouped rules of
`ecmpd.policyrules.plan`, looked up after the head matched nothing.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from ipaddress import ip_network

from .configmodel import PORT_PROTOCOLS, Policy, family_of

PORT_PROTOS = tuple(sorted(PORT_PROTOCOLS.values()))
"""Protocol numbers whose packets have ports (the ported class)."""
DIMS = ("src", "dst", "proto", "sport", "dport")
"""A ported class's key fields in order; a portless class uses the first three."""
ENABLED = False
"""Whether `ecmpd.policyrules` renders the layers (else the grouped rules alone, as
before them).  Off: measured in figure 13 (bench/results-fwcost-layers.md), the 1 000
interleaved policies' 169 layers cost more per new connection than their 1 000 grouped
lookups (4.0x the bare router against 3.2x): a concatenated interval map whose
elements are cut ranges expands them into many prefixes per field, and its lookup
walks bitmaps as wide as that, about 8 times a one-field lookup here."""
CUT_MAX = 8
"""Pieces a box may be cut into to join the newest layer of its part."""
MAX_ELEMENTS = 20_000
"""Boxes of all layers together; past this the rest of the list is the tail."""

Span = tuple[int, int]
"""An inclusive interval: addresses and ports as ints, a protocol (p, p)."""
Box = tuple[Span, ...]
"""A span per field of the class's key (`Klass.dims`)."""


@dataclass(frozen=True)
class Klass:
    """Packets of one IP version, of a port protocol or not."""

    family: int
    ported: bool

    @property
    def dims(self) -> tuple[str, ...]:
        return DIMS if self.ported else DIMS[:3]

    @property
    def name(self) -> str:
        return f"{self.family}{'p' if self.ported else 'n'}"

    def full(self, dim: str) -> Span:
        if dim in ("src", "dst"):
            return (0, (1 << (32 if self.family == 4 else 128)) - 1)
        return (0, 255) if dim == "proto" else (0, 65535)


KLASSES = (Klass(4, True), Klass(6, True), Klass(4, False), Klass(6, False))


@functools.lru_cache(maxsize=65536)
def boxes(policy: Policy, k: Klass) -> list[Box]:
    """`policy`'s boxes in class `k` (none when it cannot match a packet of `k`; cached:
    never change the result)."""
    ported = bool(policy.sport or policy.dport)
    if ported and not k.ported:
        return []
    if policy.proto:
        protos = [p for p in policy.proto if (p in PORT_PROTOS) == k.ported]
        if not protos:
            return []
        proto_spans = [(p, p) for p in sorted(set(protos))]
    else:
        proto_spans = [k.full("proto")]

    def prefixes(values: tuple[str, ...], dim: str) -> list[Span] | None:
        if not values:
            return [k.full(dim)]
        nets = [ip_network(v, strict=False) for v in values if family_of(v) == k.family]
        return [(int(n.network_address), int(n.broadcast_address)) for n in nets] or None

    src, dst = prefixes(policy.src, "src"), prefixes(policy.dst, "dst")
    if src is None or dst is None:
        return []
    fields = [src, dst, proto_spans]
    if k.ported:
        fields += [list(policy.sport) or [k.full("sport")],
                   list(policy.dport) or [k.full("dport")]]
    return list(dict.fromkeys(itertools.product(*fields)))


def overlap(a: Box, b: Box) -> bool:
    for (alo, ahi), (blo, bhi) in zip(a, b):
        if alo > bhi or blo > ahi:
            return False
    return True


def subtract(box: Box, cut: Box) -> list[Box]:
    """`box` minus `cut` (which overlaps it) as disjoint boxes, at most 2 per field."""
    out: list[Box] = []
    rest = list(box)
    for i, ((lo, hi), (clo, chi)) in enumerate(zip(box, cut)):
        if lo < clo:
            out.append((*rest[:i], (lo, clo - 1), *rest[i + 1:]))
        if hi > chi:
            out.append((*rest[:i], (chi + 1, hi), *rest[i + 1:]))
        rest[i] = (max(lo, clo), min(hi, chi))
    return out


_SHIFTS = {4: (8, 8, 0, 4, 4), 6: (80, 80, 0, 4, 4)}
"""Per field, the bits below a bucket of `Layer`'s index (a /24, a /48, 16 ports)."""


@dataclass
class Layer:
    """One map: disjoint boxes, each with its policy's position, and an index by field
    (a box is in the bucket of each field whose span fits one, else in its wide list)."""

    shifts: tuple[int, ...]
    boxes: list[tuple[int, Box]] = field(default_factory=list)
    _buckets: list[defaultdict[int, list[int]]] = field(default_factory=list)
    _wide: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._buckets = [defaultdict(list) for _ in self.shifts]
        self._wide = [[] for _ in self.shifts]

    def add(self, position: int, box: Box) -> None:
        i = len(self.boxes)
        self.boxes.append((position, box))
        for d, ((lo, hi), s) in enumerate(zip(box, self.shifts)):
            (self._buckets[d][lo >> s] if lo >> s == hi >> s else self._wide[d]).append(i)

    def overlapping(self, box: Box) -> list[Box]:
        """The boxes of this layer that overlap `box`."""
        best: list[int] | None = None
        for d, ((lo, hi), s) in enumerate(zip(box, self.shifts)):
            if lo >> s == hi >> s:
                near = self._buckets[d].get(lo >> s, [])
                if best is None or len(near) + len(self._wide[d]) < len(best):
                    best = near + self._wide[d]
        found = (self.boxes[i][1] for i in best) if best is not None else \
            (b for _, b in self.boxes)
        return [b for b in found if overlap(b, box)]


@dataclass
class Part:
    """The layers of one class for one interface (None: the other interfaces)."""

    klass: Klass
    iif: str | None
    layers: list[Layer] = field(default_factory=list)

    def place(self, position: int, box: Box) -> int:
        """Add `box` (see the module's doc); the number of elements it added."""
        if self.layers:
            last = self.layers[-1]
            pieces = [box]
            for cut in last.overlapping(box):
                pieces = [q for p in pieces
                          for q in (subtract(p, cut) if overlap(p, cut) else [p])]
                if len(pieces) > CUT_MAX:
                    break
            else:
                for p in pieces:
                    last.add(position, p)
                return len(pieces)
        layer = Layer(_SHIFTS[self.klass.family])
        layer.add(position, box)
        self.layers.append(layer)
        return 1

    def elements(self) -> int:
        return sum(len(layer.boxes) for layer in self.layers)


@dataclass
class Compiled:
    """The head's parts per class (default part first, then one per interface in name
    order) and the tail: the policies left to the grouped rules."""

    parts: dict[Klass, list[Part]]
    tail: tuple[Policy, ...]

    def elements(self) -> int:
        return sum(p.elements() for ps in self.parts.values() for p in ps)


def _build(policies: tuple[Policy, ...], budget: int | None
           ) -> tuple[dict[Klass, list[Part]], int]:
    """Parts of `policies` in order: (parts, policies placed).  With a `budget`, it stops
    at the first policy that takes the elements past it (the parts then hold it in part:
    build again without it)."""
    parts: dict[Klass, dict[str | None, Part]] = {}
    iifs = {k: sorted({n for p in policies if boxes(p, k) for n in p.iif}) for k in KLASSES}
    for k in KLASSES:
        if any(boxes(p, k) for p in policies):
            parts[k] = {None: Part(k, None), **{n: Part(k, n) for n in iifs[k]}}
    total = 0
    for taken, policy in enumerate(policies):
        for k, by_iif in parts.items():
            bs = boxes(policy, k)
            if not bs:
                continue
            for part in ([by_iif[n] for n in policy.iif] if policy.iif else by_iif.values()):
                for b in bs:
                    total += part.place(policy.position, b)
        if budget is not None and total > budget:
            return {k: list(ps.values()) for k, ps in parts.items()}, taken
    return {k: list(ps.values()) for k, ps in parts.items()}, len(policies)


@functools.lru_cache(maxsize=8)
def compile_policies(policies: tuple[Policy, ...],
                     max_elements: int = MAX_ELEMENTS) -> Compiled:
    """The head's layers and the tail (see the module's doc)."""
    parts, taken = _build(policies, max_elements)
    if taken < len(policies):
        parts, _ = _build(policies[:taken], None)
    return Compiled({k: [p for p in ps if p.layers] for k, ps in parts.items()
                     if any(p.layers for p in ps)}, policies[taken:])


def first_layer_match(parts: list[Part], values: dict[str, int], iif: str) -> int | None:
    """What the rendered chains do for one packet of a class (a reference for tests):
    the interface's part if it has one, else the default part; the first layer with a
    box that holds the packet names the policy."""
    by = {p.iif: p for p in parts}
    part = by.get(iif) or by.get(None)
    if part is None:
        return None
    for layer in part.layers:
        for position, box in layer.boxes:
            if all(lo <= values[d] <= hi for d, (lo, hi) in zip(part.klass.dims, box)):
                return position
    return None
