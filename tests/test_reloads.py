"""configparse.Reloads: a reload of the same text reuses the parsed config (a file of many
policies is not parsed again); any change is parsed and checked, a large text in a child
process (ecmpd.configparse), a small one or one whose child cannot run in this one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from ecmpd import configparse
from ecmpd.config import ConfigError
from ecmpd.configparse import Reloads

BASE = """\
lan:
  interfaces: [lan0]
wans:
  a:
    interface: eth1
    gateway: 192.0.2.1
policies:
  - {dst: 203.0.113.0/24, use: [a]}
"""


def test_the_same_text_is_parsed_once_and_any_change_again(tmp_path: Path, caplog) -> None:
    path = tmp_path / "ecmpd.yaml"
    path.write_text(BASE)
    reloads = Reloads()
    load = lambda **kw: asyncio.run(reloads.load(str(path), **kw))  # noqa: E731
    first = load()
    assert load() is first
    path.write_text(BASE.replace("0/24", "1/24"))
    with pytest.raises(ConfigError, match=r"ecmpd.yaml:8: policies\[0\].dst.*host bits"):
        load()
    path.write_text(BASE.replace("203.0.113.0/24", "198.51.100.0/24"))
    changed = load()
    assert changed.policies[0].dst == ("198.51.100.0/24",)
    path.write_text(BASE)
    again = load()
    assert again == first and again is not first      # one text kept: the last one
    assert load(sysctl_root=str(tmp_path)) is not again
    path.unlink()
    with pytest.raises(ConfigError, match="ecmpd.yaml"):
        load()
    assert "child failed" not in caplog.text


def test_a_small_text_is_parsed_here_and_a_large_one_in_a_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    children: list[str] = []
    real = configparse.parse_apart

    async def counted(text: str, source: str, sysctl_root: str | None = None):
        children.append(source)
        return await real(text, source, sysctl_root)

    monkeypatch.setattr(configparse, "parse_apart", counted)
    path = tmp_path / "ecmpd.yaml"
    path.write_text(BASE + "# a comment\n" * 1000)     # comments cost nothing
    assert asyncio.run(Reloads().load(str(path))).policies[0].dst == ("203.0.113.0/24",)
    assert children == []
    many = "".join(f"  - {{dst: 10.{i // 250}.{i % 250}.0/24, use: [a]}}\n"
                   for i in range(configparse.IN_PROCESS_LINES))
    path.write_text(BASE + many)
    assert configparse.content_lines(BASE + many) > configparse.IN_PROCESS_LINES
    assert len(asyncio.run(Reloads().load(str(path))).policies) == 1 + configparse.IN_PROCESS_LINES
    assert children == [str(path)]


def test_a_child_that_cannot_run_leaves_the_parse_to_this_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    path = tmp_path / "ecmpd.yaml"
    many = "".join(f"  - {{dst: 10.0.{i % 250}.0/24, use: [a]}}\n" for i in range(500))
    path.write_text(BASE + many)               # large enough for a child
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    cfg = asyncio.run(Reloads().load(str(path)))
    assert cfg.policies[0].dst == ("203.0.113.0/24",)
    assert "parsing the config in a child failed" in caplog.text
    monkeypatch.setattr(sys, "executable", "/bin/false")
    assert asyncio.run(configparse.parse_apart(BASE, "x.yaml")).wans[0].name == "a"
