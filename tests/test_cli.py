"""`ecmpd` command line: --check exit codes and messages, no tracebacks, --socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecmpd import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ecmpd.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecmpd.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_accepts_the_example():
    p = run("--config", str(EXAMPLE), "--check")
    assert p.returncode == 0, p.stderr
    assert "ok (2 WANs: wlan1, wlan2)" in p.stdout


def test_check_reports_every_problem_with_file_line_and_key(tmp_path):
    bad = tmp_path / "ecmpd.yaml"
    bad.write_text(EXAMPLE.read_text().replace("weight: 5", "weight: 0")
                   .replace("    weight: 1\n", "    wieght: 1\n"))
    p = run("--config", str(bad), "--check")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert any(":" in l and "wans.wlan2.weight: must be an integer from 1 to 256, got 0" in l
               for l in lines), lines
    assert any("wans.wlan1.wieght: unknown key (did you mean 'weight'?)" in l for l in lines), lines
    assert all(l.startswith(str(bad) + ":") for l in lines), lines
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("text", ["", "[1, 2", "wans: {}\n", "lan: 3\n", "\x00\x01"])
def test_no_traceback_for_any_config_mistake(tmp_path, text):
    bad = tmp_path / "x.yaml"
    bad.write_text(text)
    p = run("--config", str(bad), "--check")
    assert p.returncode == 2
    assert p.stderr.strip() and "Traceback" not in p.stderr


def test_missing_file_is_one_clean_line(tmp_path):
    p = run("--config", str(tmp_path / "nope.yaml"), "--check")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "cannot read" in p.stderr


def test_invalid_config_never_starts_the_daemon(tmp_path, monkeypatch):
    bad = tmp_path / "x.yaml"
    bad.write_text("wans: {}\n")
    started = []
    monkeypatch.setattr("ecmpd.daemon.Daemon.run", lambda self: started.append(1))
    assert cli.main(["--config", str(bad)]) == 2
    assert not started


def test_socket_option_overrides_the_config(tmp_path):
    args = cli.parser().parse_args(["--config", str(EXAMPLE), "--socket", str(tmp_path / "s")])
    cfg = cli.load(args)
    assert cfg is not None and cfg.control_socket == str(tmp_path / "s")
    args = cli.parser().parse_args(["--config", str(EXAMPLE)])
    assert cli.load(args).control_socket == "/run/ecmpd/ecmpd.sock"


def test_usage_errors_exit_2():
    p = run("--log-level", "loud")
    assert p.returncode == 2 and "usage:" in p.stderr


def test_log_level_notice_is_accepted():
    assert cli.parser().parse_args(["--log-level", "notice"]).log_level == "notice"
