"""ecmpd's nft transaction, written in nft syntax: what ``ecmpd --dry-run`` prints.

The daemon hands libnftables JSON (`nftrules.replace_commands`); an admin reads and
compares ``nft list ruleset`` text.  This renders that same JSON, object for object, as
an ``nft -f`` file: the same transaction, readable, and loadable by hand.  It covers the
expressions ecmpd's tables use (matches, payload/meta/ct keys, masks, sets, prefixes,
ranges, concatenations, verdict maps, named counters, mark mangling, masquerade, snat);
one it does not know is shown as its JSON, so nothing is silently left out.
"""

from __future__ import annotations

import json
from typing import Any

Json = Any

_IFNAMES = {"iifname", "oifname"}
_OBJECT_KEYS = ("counter", "map", "chain", "rule")
"""The order of a table's objects in the text: named counters and maps before the chains
that use them, each chain's rules inside its block."""


def _is_mark(key: Json) -> bool:
    """Whether `key` is a mark or a mark under a mask: its values read best in hex."""
    if isinstance(key, dict) and "&" in key:
        return True
    inner = key.get("meta") or key.get("ct") if isinstance(key, dict) else None
    return isinstance(inner, dict) and inner.get("key") == "mark"


def _is_ifname(key: Json) -> bool:
    return isinstance(key, dict) and isinstance(key.get("meta"), dict) and \
        key["meta"].get("key") in _IFNAMES


def _positions(key: Json) -> list[Json]:
    """The keys of a concatenation, or `key` alone."""
    return key["concat"] if isinstance(key, dict) and "concat" in key else [key]


def value(v: Json, quote: bool = False, hexa: bool = False) -> str:
    """A right-hand value: a literal, set, prefix, range or concatenation."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:#010x}" if hexa else str(v)
    if isinstance(v, str):
        return json.dumps(v) if quote else v
    if isinstance(v, list):                       # a concatenation's parts, typed alike
        return " . ".join(value(x, quote, hexa) for x in v)
    if isinstance(v, dict) and len(v) == 1:
        (kind, body), = v.items()
        if kind == "set":
            return "{ " + ", ".join(value(x, quote, hexa) for x in body) + " }"
        if kind == "prefix":
            return f"{body['addr']}/{body['len']}"
        if kind == "range":
            return f"{value(body[0], quote, hexa)}-{value(body[1], quote, hexa)}"
        if kind == "concat":
            return " . ".join(value(x, quote, hexa) for x in body)
        if kind in ("jump", "goto"):
            return f"{kind} {body['target']}"
        return expr(v)
    return json.dumps(v)


def _typed(values: list[Json], quotes: list[bool], hexes: list[bool]) -> str:
    """The parts of a concatenated element, each formatted for its own key."""
    return " . ".join(value(x, q, h) for x, q, h in zip(values, quotes, hexes))


def _element(elem: Json, quotes: list[bool], hexes: list[bool]) -> str:
    if isinstance(elem, dict) and "concat" in elem:
        return _typed(elem["concat"], quotes, hexes)
    return value(elem, quotes[0], hexes[0])


def key(k: Json) -> str:
    """A left-hand side: payload, meta, ct, fib, a mask, a concatenation."""
    if isinstance(k, dict) and len(k) == 1:
        (kind, body), = k.items()
        if kind == "payload":
            return f"{body['protocol']} {body['field']}"
        if kind == "meta":
            return f"meta {body['key']}"
        if kind == "ct":
            return f"ct {body['key']}"
        if kind == "fib":
            return f"fib {' . '.join(body['flags'])} {body['result']}"
        if kind in ("&", "|"):
            left, right = body
            text = f"{key(left)} {kind} {value(right, hexa=True)}"
            return f"({text})" if isinstance(left, dict) and "|" in left else text
        if kind == "concat":
            return " . ".join(key(x) for x in body)
    return json.dumps(k)


def expr(e: Json) -> str:
    """One statement of a rule."""
    (kind, body), = e.items()
    if kind == "match":
        left, right, op = body["left"], body["right"], body["op"]
        quote, hexa = _is_ifname(left), _is_mark(left)
        shown = value(right, quote, hexa)
        implicit = op in ("==", "in") and not (isinstance(left, dict) and "&" in left)
        return f"{key(left)} {shown}" if implicit else f"{key(left)} {op} {shown}"
    if kind == "vmap":
        k, data = body["key"], body["data"]
        if isinstance(data, str):
            return f"{key(k)} vmap {data}"
        parts = _positions(k)
        quotes, hexes = [_is_ifname(p) for p in parts], [_is_mark(p) for p in parts]
        items = ", ".join(f"{_element(e, quotes, hexes)} : {value(v)}"
                          for e, v in data["set"])
        return f"{key(k)} vmap {{ {items} }}"
    if kind == "mangle":
        v = body["value"]
        shown = key(v) if isinstance(v, dict) and ("&" in v or "|" in v) else \
            value(v, hexa=_is_mark(body["key"]))
        return f"{key(body['key'])} set {shown}"
    if kind == "counter":
        return f"counter name {body}" if isinstance(body, str) else "counter"
    if kind in ("jump", "goto"):
        return f"{kind} {body['target']}"
    if kind in ("return", "accept", "drop", "masquerade"):
        return kind
    if kind == "snat":
        return f"snat {body['family']} to {body['addr']}"
    return json.dumps(e)


def _chain_head(c: Json) -> list[str]:
    if "hook" not in c:
        return []
    return [f"type {c['type']} hook {c['hook']} priority {c['prio']}; "
            f"policy {c.get('policy', 'accept')};"]


def _rule(r: Json) -> str:
    text = " ".join(expr(e) for e in r["expr"])
    return text + (f" comment {json.dumps(r['comment'])}" if r.get("comment") else "")


def _map(m: Json) -> list[str]:
    types = m["type"] if isinstance(m["type"], list) else [m["type"]]
    head = [f"type {' . '.join(types)} : {m['map']};"]
    if m.get("flags"):
        head.append(f"flags {', '.join(m['flags'])};")
    quotes, hexes = [t == "ifname" for t in types], [t == "mark" for t in types]
    elems = [f"{_element(e, quotes, hexes)} : {value(v)}" for e, v in m.get("elem", [])]
    for n, elem in enumerate(elems):        # one element a line, as nft lists them
        lead = "elements = { " if n == 0 else " " * len("elements = { ")
        head.append(lead + elem + ("," if n < len(elems) - 1 else " }"))
    return head


def render(commands: Json) -> list[str]:
    """The ``nft -f`` text of a transaction (`nftrules.replace_commands`): its table
    additions and deletions in order, then each table built in it as one block."""
    out: list[str] = []
    tables: dict[tuple[str, str], dict[str, list[Json]]] = {}
    for cmd in commands["nftables"]:
        (verb, obj), = cmd.items()
        (kind, body), = obj.items()
        if kind == "table":
            out.append(f"{'delete ' if verb == 'delete' else ''}table {body['family']} "
                       f"{body['name']}")
            if verb == "delete":
                tables.pop((body["family"], body["name"]), None)
            continue
        if verb != "add" or kind not in _OBJECT_KEYS:
            out.append(f"# not shown in nft syntax: {json.dumps(cmd)}")
            continue
        objs = tables.setdefault((body["family"], body["table"]), {k: [] for k in _OBJECT_KEYS})
        objs[kind].append(body)
    for (family, name), objs in tables.items():
        out.append(f"table {family} {name} {{")
        for c in objs["counter"]:
            out += [f"\tcounter {c['name']} {{", "\t}"]
        for m in objs["map"]:
            out += [f"\tmap {m['name']} {{"] + [f"\t\t{line}" for line in _map(m)] + ["\t}"]
        for c in objs["chain"]:
            rules = [r for r in objs["rule"] if r["chain"] == c["name"]]
            out += [f"\tchain {c['name']} {{"] + [f"\t\t{line}" for line in _chain_head(c)]
            out += [f"\t\t{_rule(r)}" for r in rules] + ["\t}"]
        out.append("}")
        chains = {c["name"] for c in objs["chain"]}
        out += [f"add rule {family} {name} {r['chain']} {_rule(r)}"
                for r in objs["rule"] if r["chain"] not in chains]
    return out
