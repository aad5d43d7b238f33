"""YAML loading that remembers line numbers and refuses hostile documents fast.

`load_yaml()` returns plain Python data in which every mapping is a `YMap` and every
sequence a `YList`; both record the 1-based line of the container and of each key,
value and item, and a `YMap` lists repeated keys instead of silently keeping the last.
Scalars stay plain (`int`, `str`, ...), so their line is looked up in the parent;
a number YAML 1.1 reads from a spelling other than plain decimal (`0x10`, `010`,
`1_000`, `1:30`, `1.5e+3`, `.inf`) stays a `Spelled`, never an `int` or `float`.
Every YAML problem comes back as one `YamlProblem` (line + one-line message).

Cost is bounded by the document's size, whatever it contains: libyaml scans and
parses (C, when PyYAML has it), the composer counts nodes (aliases included) and
depth, and merge keys (`<<`) may copy only so many keys in all.  Aliases share
nodes, so a "billion laughs" document is a small graph, and it is refused by the
node budget before anything is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml: the same rules, slower to parse
    CParser = None

MAX_NODES = 20_000
"""YAML nodes (scalars, lists, mappings, aliases) in one document.  A config with 255
WANs, each with its own probe section, has about 10,000."""
MAX_DEPTH = 50
"""Nesting levels of lists and mappings (a config needs 5)."""
MAX_MERGED = 20_000
"""Key/value pairs that merge keys (`<<`) may copy, over the whole document."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)")


class YamlProblem(Exception):
    """The text is not loadable YAML; `line` is 1-based, `message` a single line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


class YMap(dict):
    """A mapping with line information (all lines 1-based)."""

    line: int = 1
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]
    """(key, line of the repeated key, line of its first occurrence)."""
    bad_keys: list[tuple[str, int]]
    """(description, line) of keys that cannot be dictionary keys (lists, mappings)."""


class YList(list):
    """A sequence with line information (all lines 1-based)."""

    line: int = 1
    item_lines: list[int]


@dataclass(frozen=True)
class Spelled:
    """A number YAML 1.1 reads from a spelling other than plain decimal: `0x10` (16),
    `010` (octal 8), `0b11`, `1_000`, `1:30` (sexagesimal 90), `1.5e+3`, `.inf`.
    `value` is what YAML 1.1 makes of `text` (None when `text` is too long to bother);
    a value parser accepts it only where the schema documents that spelling (hex for
    `marks.mask`)."""

    text: str
    value: int | float | None


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _Composer(Composer):
    """The composer, counting nodes (aliases too) and depth against the budgets."""

    def compose_document(self) -> Node:
        self._nodes, self._depth = 0, 0
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._nodes += 1
        self._depth += 1
        if self._nodes > MAX_NODES or self._depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise YamlProblem(line, f"more than {MAX_NODES} YAML values (a config has a "
                                    f"few hundred)" if self._nodes > MAX_NODES else
                              f"YAML nested more than {MAX_DEPTH} levels deep (a config "
                              f"needs 5)")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Constructor(SafeConstructor):
    """SafeConstructor building YMap/YList/Spelled, turning value errors into marked
    errors and flattening merge keys within `MAX_MERGED`."""

    def construct_document(self, node: Node) -> Any:
        self._merged, self._flattening = 0, set()
        return super().construct_document(node)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as e:
            # e.g. an impossible date (2024-13-01) or an int beyond Python's digit limit
            why = "too many digits" if "digits" in str(e) else str(e)
            shown = describe(node.value) if isinstance(node, ScalarNode) else "value"
            raise ConstructorError(None, None, f"invalid value {shown}: {why}",
                                   node.start_mark) from None

    def flatten_mapping(self, node: MappingNode) -> None:
        """Merged pairs first (earlier sources win), then the node's own pairs."""
        if id(node) in self._flattening:
            raise ConstructorError(None, None, "a merge key (<<) includes the mapping it "
                                   "is in", node.start_mark)
        self._flattening.add(id(node))
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == "tag:yaml.org,2002:value":
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) \
                else [value_node]
            for sub in sources:
                if not isinstance(sub, MappingNode):
                    raise ConstructorError(None, None, f"a merge key (<<) takes a mapping "
                                           f"or a list of mappings, got a {sub.id}",
                                           sub.start_mark)
                self.flatten_mapping(sub)
                self._merged += len(sub.value)
                if self._merged > MAX_MERGED:
                    raise ConstructorError(None, None, f"merge keys (<<) copy more than "
                                           f"{MAX_MERGED} keys", key_node.start_mark)
                for pair in sub.value:
                    k = pair[0]
                    ident = (k.tag, k.value) if isinstance(k, ScalarNode) else id(k)
                    if ident not in seen:
                        seen.add(ident)
                        merged.append(pair)
        node.value = merged + own
        self._flattening.discard(id(node))


def _construct_map(loader: _Constructor, node: MappingNode) -> Any:
    data = YMap()
    data.line = _line(node)
    data.key_lines, data.value_lines, data.duplicates, data.bad_keys = {}, {}, [], []
    yield data
    own = sum(1 for k, _ in node.value if k.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    n_merged = len(node.value) - own  # flatten_mapping puts merged pairs first
    own_keys: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            data.bad_keys.append((describe(key), _line(key_node)))
            continue
        if i >= n_merged:
            if key in own_keys:
                data.duplicates.append((key, _line(key_node), data.key_lines[key]))
                continue
            own_keys.add(key)
        data[key] = loader.construct_object(value_node, deep=False)
        data.key_lines[key] = _line(key_node)
        data.value_lines[key] = _line(value_node)


def _construct_seq(loader: _Constructor, node: SequenceNode) -> Any:
    data = YList()
    data.line = _line(node)
    data.item_lines = [_line(n) for n in node.value]
    yield data
    data.extend(loader.construct_object(n, deep=False) for n in node.value)


def _construct_number(loader: _Constructor, node: ScalarNode) -> Any:
    is_int = node.tag.endswith(":int")
    plain = (_DECIMAL_INT if is_int else _DECIMAL_FLOAT).fullmatch(node.value)
    if not plain and len(node.value) > 64:
        return Spelled(node.value, None)  # sexagesimal costs quadratic time in its length
    value = (loader.construct_yaml_int if is_int else loader.construct_yaml_float)(node)
    return value if plain else Spelled(node.value, value)


_Constructor.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Constructor.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_Constructor.add_constructor("tag:yaml.org,2002:int", _construct_number)
_Constructor.add_constructor("tag:yaml.org,2002:float", _construct_number)


class _PyLoader(_Composer, _Constructor, yaml.SafeLoader):
    """The pure-Python parser (when PyYAML lacks libyaml); reader offsets are characters."""

    byte_offsets = False


_Loader: type = _PyLoader
if CParser is not None:
    class _CLoader(_Composer, CParser, _Constructor, Resolver):  # type: ignore[misc]
        """libyaml's events (C, ten times faster), composed and constructed here;
        reader offsets are bytes."""

        byte_offsets = True

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _Composer.__init__(self)
            _Constructor.__init__(self)
            Resolver.__init__(self)

    _Loader = _CLoader


def load_yaml(text: str) -> Any:
    """Parse one YAML document (None when empty); raises only `YamlProblem`."""
    return load_document(text)[0]


def load_document(text: str) -> tuple[Any, int]:
    """`load_yaml`, and the line where the document's value starts (1 when empty)."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, 1
            return loader.construct_document(node), _line(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        problem = _marked_problem(e, text)
    except yaml.reader.ReaderError as e:
        before = text.encode("utf-8", "surrogatepass")[:max(e.position, 0)].decode(
            "utf-8", "replace") if _Loader.byte_offsets else text[:max(e.position, 0)]
        line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
        char = f" #x{e.character:04x}" if isinstance(e.character, int) else ""
        problem = YamlProblem(line, f"YAML syntax error: unacceptable character{char}: "
                                    f"{e.reason}")
    except yaml.YAMLError as e:
        problem = YamlProblem(1, f"YAML syntax error: {_one_line(str(e))}")
    except RecursionError:  # complex keys nest in the constructor; MAX_DEPTH bounds it
        problem = YamlProblem(1, "YAML syntax error: nesting too deep")
    raise problem


def _marked_problem(e: yaml.MarkedYAMLError, text: str) -> YamlProblem:
    """One line for a parser/composer/constructor error, with a hint where one helps."""
    mark = e.problem_mark or e.context_mark
    msg = e.problem or "cannot parse"
    at = f" at line {e.context_mark.line + 1}" if e.context_mark else ""
    if isinstance(e, ComposerError) and e.context:  # "expected X, but found Y"
        msg = f"{e.context}{at}, {msg}"
    elif e.context:
        msg += f" ({e.context}{at})"
    if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
        msg += "; indent with spaces, not tabs"
    elif any(s in msg for s in ("<block end>", "expected key", "expected '-'")):
        msg += "; check the indentation"
    kind = "YAML error" if isinstance(e, (ComposerError, ConstructorError)) \
        else "YAML syntax error"
    return YamlProblem(mark.line + 1 if mark else 1, f"{kind}: {_one_line(msg)}")


def _char_at(text: str, line: int, column: int) -> str:
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return ""
    return text[start + column:start + column + 1]


def _one_line(s: str) -> str:
    return " ".join(s.split())


def describe(value: Any) -> str:
    """A short YAML-flavoured rendering of a value for messages ('abc', 5, null, a list)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Spelled):
        return value.text if len(value.text) <= 40 else value.text[:37] + "..."
    if isinstance(value, int) and value.bit_length() > 128:
        return "a very large integer"  # repr() of > 4300 digits raises ValueError
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__} value"
