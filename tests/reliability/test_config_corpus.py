"""A corpus of hostile configs: each refused by `ecmpd --check` with exactly its lines.

`data/configs/NNN-slug.yaml` holds one hostile config; its first line says what is
hostile, the `# expect:` lines are the exact problem lines with the file's path written
`FILE` (or, when there are more than three, `NNN-slug.expect` holds them).  Cases that
cannot be committed as files (a FIFO, a device, a socket, a symlink loop, a file too
large or unreadable) are made here in `special_cases`.  Every case must exit 2, print
nothing on stdout and only its problem lines on stderr: no traceback, no hang.
`test_config_corpus_lab.py` sends the same corpus to a running daemon as reloads.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from ecmpd import ecmpd_command
from ecmpd.configfile import MAX_BYTES
from ecmpd.yamlpos import MAX_NODES

CORPUS = Path(__file__).resolve().parent / "data" / "configs"
FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = "# expect: "
NOBODY_CAN_READ = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-all", "--"]
"""Run a command as root without the capabilities that bypass file permissions."""


def expected(path: Path, shown: str | None = None) -> list[str]:
    """The problem lines `path` must produce, naming it as `shown` (default: the path)."""
    side = path.with_suffix(".expect")
    if side.exists():
        lines = side.read_text().splitlines()
    else:
        with path.open("rb") as f:  # the header is UTF-8, whatever follows it
            head = [f.readline().decode("utf-8", "replace").rstrip("\n") for _ in range(4)]
        lines = [h[len(EXPECT):] for h in head if h.startswith(EXPECT)]
    assert lines and all(line.startswith("FILE") for line in lines), path
    return [line.replace("FILE", shown or str(path), 1) for line in lines]


def check(path: str) -> subprocess.CompletedProcess[str]:
    """`ecmpd --config PATH --check` as a process (a hang fails after 10 s)."""
    return subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", "--config", path, "--check"],
                          capture_output=True, text=True, timeout=10)


def test_the_corpus_is_large_and_every_file_has_an_expectation() -> None:
    assert len(FILES) + len(SPECIAL) >= 100
    slugs = [f.name.split("-", 1)[1] for f in FILES]
    assert len(set(slugs)) == len(slugs)
    for f in FILES:
        assert f.read_bytes().startswith(b"# "), f  # says what is hostile about it
        expected(f)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_hostile_config_is_refused_with_its_lines(path: Path, capsys) -> None:
    assert ecmpd_command.main(["--config", str(path), "--check"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == expected(path)


def test_the_cli_process_prints_the_same_lines_and_no_traceback() -> None:
    for path in FILES[::15]:
        p = check(str(path))
        assert (p.returncode, p.stdout) == (2, ""), p.stderr
        assert p.stderr.splitlines() == expected(path)


# ---- cases made on the spot: (name, make(tmp) -> path, expected lines after "path:") ----

def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo.yaml")  # nobody ever writes: reading it would block forever
    return tmp / "fifo.yaml"


def _socket(tmp: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp / "sock.yaml"))
    s.close()
    return tmp / "sock.yaml"


def _symlink(tmp: Path, target: str, name: str = "link.yaml") -> Path:
    os.symlink(target, tmp / name)
    return tmp / name


def _sized(tmp: Path, size: int, sparse: bool = False) -> Path:
    p = tmp / f"size{size}.yaml"
    with p.open("wb") as f:
        if sparse:
            f.truncate(size)  # a 50 MB hole: stat says 50 MB, nothing is read
        else:
            f.write(b"#" * (size - 1) + b"\n")
    return p


def _text(tmp: Path, text: str) -> Path:
    (tmp / "gen.yaml").write_text(text)
    return tmp / "gen.yaml"


SPECIAL: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", lambda t: t / "nope.yaml", " cannot read: No such file or directory"),
    ("directory", lambda t: t, " not a regular file (a directory)"),
    ("fifo", _fifo, " not a regular file (a FIFO)"),
    ("dev-zero", lambda t: Path("/dev/zero"), " not a regular file (a character device)"),
    ("dev-null", lambda t: Path("/dev/null"), " not a regular file (a character device)"),
    ("symlink-to-dev-zero", lambda t: _symlink(t, "/dev/zero"),
     " not a regular file (a character device)"),
    ("unix-socket", _socket, " not a regular file (a socket)"),
    ("symlink-loop", lambda t: _symlink(t, "link.yaml"),
     " cannot read: Too many levels of symbolic links"),
    ("dangling-symlink", lambda t: _symlink(t, "gone.yaml"),
     " cannot read: No such file or directory"),
    ("path-through-a-file", lambda t: _text(t, "x: 1\n") / "x.yaml",
     " cannot read: Not a directory"),
    ("one-byte-over-1-MiB", lambda t: _sized(t, MAX_BYTES + 1), " larger than 1 MiB"),
    ("50-MB-sparse", lambda t: _sized(t, 50_000_000, sparse=True), " larger than 1 MiB"),
    ("exactly-1-MiB-of-comments", lambda t: _sized(t, MAX_BYTES),
     "1: the file is empty; expected a mapping with at least 'lan' and 'wans'"),
    ("node-budget", lambda t: _text(t, "lan: {interfaces: [" + "a," * MAX_NODES + "a]}\n"),
     f"1: more than {MAX_NODES} YAML values (a config has a few hundred)"),
]


@pytest.mark.parametrize("name, make, rest", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_unusable_file_is_one_line(name: str, make: Callable[[Path], Path], rest: str,
                                   tmp_path: Path) -> None:
    path = str(make(tmp_path))
    p = check(path)
    assert (p.returncode, p.stdout, p.stderr) == (2, "", f"{path}:{rest}\n")


def test_permission_denied_is_one_line(tmp_path: Path) -> None:
    path = _text(tmp_path, "lan: {}\n")
    path.chmod(0)
    argv = [sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(path), "--check"]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to read as root without CAP_DAC_OVERRIDE")
        argv = NOBODY_CAN_READ + argv
    p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert (p.returncode, p.stdout, p.stderr) == \
        (2, "", f"{path}: cannot read: Permission denied\n")
