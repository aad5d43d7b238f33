"""`--version` on both commands (from pyproject.toml) and no traceback when the reader of
their output has gone (``ecmpd --dry-run | head -1``, ``ecmpctl status | head -1``)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ecmpd import console

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ecmpd.yaml"


def pyproject_version() -> str:
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"',
                     (ROOT / "pyproject.toml").read_text()).group(1)


@pytest.mark.parametrize("command", ["ecmpd_command", "ecmpctl_command"])
def test_version_of_both_commands_is_pyprojects(command):
    p = subprocess.run([sys.executable, "-m", f"ecmpd.{command}", "--version"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    prog = command.split("_")[0]
    assert p.stdout == f"{prog} {pyproject_version()}\n"


def test_version_without_installed_metadata_reads_the_source_tree(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", missing)
    assert console.version() == pyproject_version()
    monkeypatch.setattr(console, "_PYPROJECT", ROOT / "no-such-file.toml")
    assert console.version() == "unknown"


def test_the_guard_turns_a_broken_pipe_into_exit_141_and_passes_the_rest():
    @console.quiet_on_closed_pipe
    def broken() -> int:
        raise BrokenPipeError(32, "Broken pipe")
    assert broken() == console.EXIT_CLOSED_PIPE == 141

    @console.quiet_on_closed_pipe
    def fine(code: int) -> int:
        return code
    assert fine(3) == 3

    @console.quiet_on_closed_pipe
    def other() -> int:
        raise ValueError("not a pipe")
    with pytest.raises(ValueError):
        other()


def closed_reader(*args: str) -> subprocess.Popen[str]:
    """The command started with its stdout's reading end already closed: its first
    write fails (EPIPE) whatever the size of its output."""
    p = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    return p


def test_dry_run_into_a_closed_pipe_ends_without_traceback():
    p = closed_reader("ecmpd.ecmpd_command", "--config", str(EXAMPLE), "--dry-run")
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (141, "")


def test_status_into_a_closed_pipe_ends_without_traceback(tmp_path):
    """A one-shot fake daemon on a socket of our own answers `status`."""
    path = str(tmp_path / "ecmpd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(30)
    p = closed_reader("ecmpd.ecmpctl_command", "--socket", path, "status")
    try:
        conn, _ = server.accept()
        conn.settimeout(30)
        with conn:
            request = conn.makefile("rb").readline()
            assert json.loads(request) == {"cmd": "status"}
            answer = {"ok": True, "pid": 1, "wans": {f"wan{i}": {"state": "up", "weight": 1}
                                                     for i in range(3)}}
            conn.sendall(json.dumps(answer).encode() + b"\n")
        _, err = p.communicate(timeout=60)
    finally:
        server.close()
        if p.poll() is None:
            p.kill()
    assert (p.returncode, err) == (141, "")
