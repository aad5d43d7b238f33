"""The man pages (tools/manpages.py): every config key of the schema in ecmpd.yaml(5),
every option and subcommand in ecmpd(8) and ecmpctl(8), and man renders them without a
warning."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecmpd import schema
from ecmpd.ecmpctl_command import build_parser
from ecmpd.ecmpd_command import parser
from tools import manpages

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("man")
    return {p.name: p for p in manpages.write(out)}


def render(path: Path) -> subprocess.CompletedProcess[str]:
    """`man -l` as a user would run it, at 80 columns, warnings on."""
    return subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                           text=True, timeout=60,
                           env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "",
                                "MANPAGER": "cat", "PAGER": "cat"})


def plain(path: Path) -> str:
    text = render(path).stdout
    return re.sub(r".\x08", "", text)          # overstrike bold/underline, if any


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed")
@pytest.mark.parametrize("name", list(manpages.PAGES))
def test_man_renders_each_page_without_warnings(pages, name):
    p = render(pages[name])
    assert p.returncode == 0
    assert p.stderr == ""
    assert p.stdout.count("\n") > 20


def test_the_config_page_names_every_key_of_the_schema_with_its_facts(pages):
    text = pages["ecmpd.yaml.5"].read_text()
    for key in schema.SCHEMA:
        tag = manpages.bold(key.path)
        assert tag in text, key.path
        if not key.is_section:
            line = next(line for line in text.splitlines() if line.startswith(tag))
            assert manpages.esc(key.default_text()) in line, key.path
            assert manpages.esc(key.range) in line, key.path


def test_a_key_added_to_the_schema_appears_with_no_change(monkeypatch):
    new = schema.Key("", "hook_timeout", schema.Config, "keep_on_exit",
                     lambda v: v, "1s..1h")
    monkeypatch.setattr(schema, "SCHEMA", schema.SCHEMA + (new,))
    text = manpages.config_page()
    assert manpages.bold("hook_timeout") + " (default false; range 1s..1h)" in text


def test_the_config_page_takes_each_keys_prose_from_the_example(pages):
    text = " ".join(plain(pages["ecmpd.yaml.5"]).split()) if shutil.which("man") else \
        pages["ecmpd.yaml.5"].read_text()
    assert "the Linux interface of this uplink" in text
    docs = manpages.key_comments((ROOT / "config" / "ecmpd.yaml").read_text())
    assert {k.path for k in schema.SCHEMA if not k.is_section} <= set(docs)


def test_the_command_pages_list_every_option_and_subcommand(pages):
    for page, p in (("ecmpd.8", parser()), ("ecmpctl.8", build_parser())):
        text = pages[page].read_text()
        for action in p._actions:
            for option in action.option_strings:
                assert manpages.bold(option) in text, (page, option)
    text = pages["ecmpctl.8"].read_text()
    for name, _, _ in manpages.subcommands(build_parser()):
        assert f".TP\n{manpages.bold(name)}" in text, name
    assert {"status", "reload", "disable", "enable"} <= {
        n for n, _, _ in manpages.subcommands(build_parser())}


def test_roff_escapes_what_would_be_read_as_a_request():
    assert manpages.esc(".x -y \\z") == "\\&.x \\-y \\ez"
    assert manpages.esc("'quoted") == "\\&'quoted"


def test_the_tool_writes_the_three_pages(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "manpages.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(manpages.PAGES)
