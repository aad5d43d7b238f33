"""The hostile-config corpus sent to a running ecmpd as reloads: nothing in the kernel moves.

The real daemon runs in a lab's router namespace.  Its config file is replaced by each
corpus file in turn (and by a FIFO, a directory, a device, a symlink loop, a 50 MB
file, nothing at all) and `ecmpctl reload` must fail with exactly the lines
`ecmpd --check` prints for that file; a few go by SIGHUP instead.  Afterwards the
router's routes (all tables), rules and nft ruleset are byte-identical to before, the
daemon still answers with every WAN up, and the good config reloads again.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from lab.runner import kernel_dump
from lab.wait import within
from .test_config_corpus import FILES, expected

pytestmark = pytest.mark.lab

REFUSED = "ecmpctl: config refused, nothing changed:\n"
"""What `ecmpctl reload` prints (on stderr, exit 1) before the problem lines."""
DUMP_EVERY = 40
"""Compare the kernel state after this many reloads (and once at the end)."""


def _clear(path: Path) -> None:
    """Remove whatever sits at `path` (file, FIFO, socket, symlink or directory)."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif os.path.lexists(path):
        path.unlink()


def _specials(path: Path) -> list[tuple[str, Callable[[], None], list[str]]]:
    """(name, put it at `path`, expected lines) for files that cannot be committed."""
    def sparse() -> None:
        with path.open("wb") as f:
            f.truncate(50_000_000)

    def unix_socket() -> None:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()

    p = str(path)
    return [
        ("fifo", lambda: os.mkfifo(path), [f"{p}: not a regular file (a FIFO)"]),
        ("directory", lambda: path.mkdir(), [f"{p}: not a regular file (a directory)"]),
        ("dev-zero", lambda: path.symlink_to("/dev/zero"),
         [f"{p}: not a regular file (a character device)"]),
        ("unix-socket", unix_socket, [f"{p}: not a regular file (a socket)"]),
        ("symlink-loop", lambda: path.symlink_to(path.name),
         [f"{p}: cannot read: Too many levels of symbolic links"]),
        ("50-MB", sparse, [f"{p}: larger than 1 MiB"]),
        ("missing", lambda: None, [f"{p}: cannot read: No such file or directory"]),
    ]


def test_hostile_configs_sent_as_reloads_change_nothing(make_lab, ecmpd_in) -> None:
    lab = make_lab()
    d = ecmpd_in(lab)
    path, good = d.config_path, d.config_path.read_bytes()
    before = kernel_dump(lab)
    cases = [(f.name, lambda f=f: path.write_bytes(f.read_bytes()), expected(f, str(path)))
             for f in FILES] + _specials(path)
    started = time.monotonic()
    for n, (name, install, want) in enumerate(cases, start=1):
        _clear(path)
        install()
        r = d.ctl("reload", check=False)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", REFUSED + "\n".join(want) + "\n"), \
            name
        if n % DUMP_EVERY == 0:
            assert kernel_dump(lab) == before, f"the kernel changed by {name}"
    # SIGHUP takes the same path: refused, logged line by line, nothing changes
    for f in FILES[::30]:
        _clear(path)
        path.write_bytes(f.read_bytes())
        d.signal(signal.SIGHUP)
        last = expected(f, str(path))[-1]
        within(lambda: f"reload refused: {last}" in d.log(), 5, interval=0.02)
        assert f"reload refused: {last}" in d.log(), f.name
    elapsed = time.monotonic() - started
    assert kernel_dump(lab) == before
    assert d.proc is not None and d.proc.poll() is None
    st = d.status()
    assert all(w["state"] == "up" and w["active"] for w in st["wans"].values()), st["wans"]
    assert "Traceback" not in d.log()
    # the good config is still accepted, and reloading it changes nothing either
    _clear(path)
    path.write_bytes(good)
    r = d.ctl("reload", check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "reloaded"), r.stderr
    assert kernel_dump(lab) == before
    print(f"{len(cases)} refused reloads in {elapsed:.1f} s")
