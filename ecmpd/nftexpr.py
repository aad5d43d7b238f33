"""libnftables JSON expressions that ecmpd's table is built of (pure, no I/O).

Shared by `ecmpd.nftrules` (the WAN rules) and `ecmpd.policyrules` (the policies), so
that both read and write ecmpd's marks the same way: only ever under `mark_mask`.
"""

from __future__ import annotations

from typing import Any

FULL = 0xFFFFFFFF

Json = dict[str, Any]


def ct_mark() -> Json:
    return {"ct": {"key": "mark"}}


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def set_under_mask(key: Json, mask: int, value: int) -> Json:
    """`<key> set <key> & ~mask | value`: the other bits of the mark are kept."""
    return {"mangle": {"key": key, "value": {"|": [{"&": [key, FULL & ~mask]}, value]}}}


def under_mask(key: Json, mask: int) -> Json:
    """`<key> & mask`: the bits of a mark that ecmpd owns."""
    return {"&": [key, mask]}
