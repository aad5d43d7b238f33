"""bash completion for ecmpctl (tools/completion.py): subcommands and options from
ecmpctl's parser, WAN names from the config, run in a real bash."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tools import completion

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ecmpd.yaml"

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="no bash")


def complete(script: Path, config: Path, *words: str) -> list[str]:
    """What bash completes for the command line `words` (the last one being typed)."""
    line = " ".join(shlex.quote(w) for w in words)
    prog = (f"source {shlex.quote(str(script))}\n"
            f"export ECMPD_CONFIG={shlex.quote(str(config))}\n"
            f"COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMPREPLY=()\n"
            "_ecmpctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return [w for w in p.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "ecmpctl"
    assert completion.main([str(path)]) == 0
    return path


def test_subcommands_and_options_come_from_the_parser(script):
    commands = list(completion._subparsers(completion_parser()))
    assert {"status", "reload", "disable", "enable"} <= set(commands)
    assert complete(script, EXAMPLE, "ecmpctl", "") == commands
    assert complete(script, EXAMPLE, "ecmpctl", "di") == ["disable"]
    assert complete(script, EXAMPLE, "ecmpctl", "--") == ["--help", "--version", "--socket",
                                                         "--timeout"]
    assert "--json" in complete(script, EXAMPLE, "ecmpctl", "status", "--")


def test_wan_names_come_from_the_config(script, tmp_path):
    assert complete(script, EXAMPLE, "ecmpctl", "disable", "") == ["wlan1", "wlan2"]
    assert complete(script, EXAMPLE, "ecmpctl", "--socket", "/x", "enable", "wlan2"[:4]) == \
        ["wlan1", "wlan2"]
    assert complete(script, EXAMPLE, "ecmpctl", "disable", "wlan1", "") == []   # one WAN
    assert complete(script, EXAMPLE, "ecmpctl", "reload", "") == []
    other = tmp_path / "c.yaml"
    other.write_text("lan: {interfaces: [br0]}\nwans:\n  # a comment\n  dsl:\n"
                     "    interface: ppp0\n    probe:\n      targets: [gateway]\n"
                     "  lte:  # backup\n    interface: wwan0\npolicies: []\n")
    assert complete(script, other, "ecmpctl", "enable", "") == ["dsl", "lte"]
    assert complete(script, tmp_path / "missing.yaml", "ecmpctl", "enable", "") == []


def completion_parser():
    from ecmpd.ecmpctl_command import build_parser
    return build_parser()


def test_the_roles_come_from_the_parser(script):
    assert complete(script, EXAMPLE, "ecmpctl", "role", "") == ["master", "backup", "fault"]
    assert complete(script, EXAMPLE, "ecmpctl", "role", "ma") == ["master"]
    assert complete(script, EXAMPLE, "ecmpctl", "role", "master", "") == []
