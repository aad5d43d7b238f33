"""The schema table (`ecmpd.schema`) against the model, the validator and the commented
example config/ecmpd.yaml, whose comments must state each default and range the code has
(read as the man page reads them: `tools.manpages.key_comments`)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ecmpd import config, schema
from ecmpd.config import load_config, parse_config
from ecmpd.desired import _PARSERS, Owned
from ecmpd.configmodel import Config, Ha, ProbeSettings, Wan
from tools import manpages
from tools.manpages import key_comments

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "ecmpd.yaml"


def test_every_line_of_the_example_is_a_key_a_comment_or_blank() -> None:
    """`key_comments` (the man page's reader) skips any other line: there is none."""
    for line in EXAMPLE.read_text().splitlines():
        assert not line.strip() or manpages._COMMENT.fullmatch(line) \
            or manpages._KEY_LINE.fullmatch(line), f"not a key line: {line!r}"


DOCS = key_comments(EXAMPLE.read_text())
KEYS = [k for k in schema.SCHEMA]


@pytest.mark.parametrize("key", KEYS, ids=[k.path for k in KEYS])
def test_the_example_documents_every_key_with_its_default_and_range(key: schema.Key) -> None:
    assert key.path in DOCS, f"config/ecmpd.yaml does not show {key.path}"
    doc = " ".join(DOCS[key.path].lower().split())
    assert key.default_text().lower() in doc, (key.path, key.default_text(), doc)
    assert key.range.lower() in doc, (key.path, key.range, doc)
    # and states no other default
    for stated in re.findall(r"\(default ([^):;,]+)", doc):
        said = f"default {stated}".strip()
        assert re.match(re.escape(key.default_text().lower()) + r"(?![\w.])", said), (
            key.path, said)


def test_the_example_shows_no_key_the_schema_lacks() -> None:
    paths = {k.path for k in schema.SCHEMA}
    assert set(DOCS) - {"wans.*"} <= paths


def test_documentation_finds_comments_above_beside_and_commented_out() -> None:
    text = ("# header\n\nprobe:\n  # above\n  count: 2   # beside\n              # more\n"
            "  # max_rtt: 1s  # out\n  #   (default null)\n  window: 3\n")
    assert key_comments(text) == {
        "probe": "", "probe.count": "above beside more",
        "probe.max_rtt": "max_rtt: 1s # out (default null)", "probe.window": ""}


def test_defaults_are_the_models() -> None:
    for k in schema.SCHEMA:
        if k.model is ProbeSettings:
            assert k.default == getattr(ProbeSettings(), k.field)
        elif k.model is Config and k.field not in ("lan_interfaces", "wans"):
            assert k.default == getattr(Config, k.field)
    assert schema.key("wans.*.weight").default == Wan.weight
    assert schema.key("wans.*.interface").default is schema.REQUIRED
    assert schema.key("wans.*.id").default is None        # the WAN's position


def test_every_model_field_has_a_key() -> None:
    filled = {(k.model, k.field) for k in schema.SCHEMA if k.model is not None}
    for model, extra in ((Config, {"wans", "source", "policies", "ha"}),
                         (Wan, {"name", "probe", "families"}), (ProbeSettings, set()),
                         (Ha, set())):
        names = {f.name for f in dataclasses.fields(model)} - extra
        assert names == {f for m, f in filled if m is model}, model


def test_key_lists_and_parsers_come_from_the_table() -> None:
    assert config.TOP_KEYS == ("lan", "wans", "policies", "probe", "hash", "marks", "tables",
                               "rules", "route", "nft", "keep_on_exit", "control", "hooks",
                               "hook_timeout", "metrics", "ha")
    assert config.PROBE_KEYS == tuple(f.name for f in dataclasses.fields(ProbeSettings))
    assert set(_PARSERS) == {f.name for f in dataclasses.fields(Owned)} - {"ids"}
    assert _PARSERS["route_proto"] is schema.key("route.proto").parse


def test_the_example_loads_to_its_documented_values() -> None:
    cfg = load_config(str(EXAMPLE))
    bare = parse_config("lan: {interfaces: [l]}\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n",
                        "x")
    for k in schema.SCHEMA:
        if k.model is Config and k.section not in ("lan",) and k.field != "hash":
            assert getattr(cfg, k.field) == getattr(bare, k.field) == k.default, k.path
