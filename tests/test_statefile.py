"""statefile: state files read as untrusted input, written through a fresh temporary file.

Every hostile thing that can sit at a state path is refused quickly (no hang, no
unbounded read) and counts as no file; a write never follows a planted symlink.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

import pytest

from ecmpd import statefile


def refused(path: str, caplog, why: str) -> None:
    """`path` reads as absent, quickly, with one warning naming `why`."""
    caplog.clear()
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert statefile.read(path) is None
        assert statefile.read_json(path) is None
    assert time.monotonic() - t < 1.0
    assert why in caplog.text and path in caplog.text, caplog.text


def test_a_regular_file_of_ours_reads(tmp_path) -> None:
    p = tmp_path / "s.json"
    p.write_text('["wlan1"]')
    os.chmod(p, 0o644)
    assert statefile.read_json(str(p)) == ["wlan1"]


def test_a_missing_file_is_silent(tmp_path, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="ecmpd"):
        assert statefile.read_json(str(tmp_path / "none.json")) is None
    assert caplog.text == ""


def test_a_fifo_never_blocks(tmp_path, caplog) -> None:
    p = tmp_path / "fifo.json"
    os.mkfifo(p)
    refused(str(p), caplog, "a FIFO")


def test_a_symlink_is_never_followed(tmp_path, caplog) -> None:
    target = tmp_path / "real.json"
    target.write_text("[]")
    for name, to in (("zero.json", "/dev/zero"), ("link.json", str(target)),
                     ("dangling.json", str(tmp_path / "nothing"))):
        os.symlink(to, tmp_path / name)
        refused(str(tmp_path / name), caplog, "symbolic link")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_is_not_read(tmp_path, caplog) -> None:
    p = tmp_path / "zero.json"
    try:
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except OSError as exc:
        pytest.skip(f"no device nodes here: {exc}")
    refused(str(p), caplog, "character device")


def test_a_directory_or_socket_is_not_read(tmp_path, caplog) -> None:
    (tmp_path / "dir.json").mkdir()
    refused(str(tmp_path / "dir.json"), caplog, "a directory")


def test_a_huge_file_is_not_read(tmp_path, caplog) -> None:
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(100 << 20)                  # 100 MB, sparse: nothing is read
    refused(str(p), caplog, "larger than 64 KiB")


def test_a_file_others_may_write_is_not_trusted(tmp_path, caplog) -> None:
    p = tmp_path / "open.json"
    p.write_text("[]")
    for mode in (0o666, 0o664):
        os.chmod(p, mode)
        refused(str(p), caplog, "writable by others")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_user_is_not_trusted(tmp_path, caplog) -> None:
    p = tmp_path / "theirs.json"
    p.write_text("[]")
    os.chown(p, 65534, 65534)
    refused(str(p), caplog, "owned by uid 65534")


def test_json_that_is_not_json_or_nested_too_deep(tmp_path, caplog) -> None:
    for name, data in (("nul.json", b"\x00\xff"), ("deep.json", b"[" * 60000)):
        p = tmp_path / name
        p.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ecmpd"):
            assert statefile.read_json(str(p)) is None
        assert "ignoring" in caplog.text


def test_write_replaces_a_planted_symlink_not_its_target(tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "state.json"
    os.symlink(victim, path)
    # the old fixed temporary names, planted too
    for tmp in (f"{path}.tmp", f"{path}.{os.getpid()}.tmp"):
        os.symlink(victim, tmp)
    statefile.write(str(path), '["x"]')
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and path.read_text() == '["x"]'
    assert stat.S_IMODE(path.stat().st_mode) == statefile.MODE
    assert statefile.read_json(str(path)) == ["x"]


def test_write_leaves_no_temporary_file_and_is_atomic(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    statefile.write(path, "[1]")
    seen: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(statefile.read_json(path))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(200):
            statefile.write(path, f"[{i % 2 + 1}]")
    finally:
        stop.set()
        t.join()
    assert set(map(str, seen)) <= {"[1]", "[2]"}          # never torn, never missing
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_write_failure_raises_and_leaves_nothing(tmp_path) -> None:
    with pytest.raises(OSError):
        statefile.write(str(tmp_path / "no" / "dir" / "state.json"), "[]")
    assert os.listdir(tmp_path) == []


def test_write_leaves_a_file_that_already_holds_the_text(tmp_path) -> None:
    """Each start records the same ledger again: no write, no fsync, same inode."""
    path = tmp_path / "state.json"
    assert statefile.write(str(path), '["x"]') is True
    inode = path.stat().st_ino
    assert statefile.write(str(path), '["x"]') is False
    assert path.stat().st_ino == inode
    assert statefile.write(str(path), '["y"]') is True
    assert path.stat().st_ino != inode and path.read_text() == '["y"]'


def test_write_replaces_same_text_it_would_not_trust(tmp_path) -> None:
    """Identical bytes behind a symlink or in a file others may write are replaced."""
    target = tmp_path / "elsewhere"
    target.write_text('["x"]')
    link = tmp_path / "state.json"
    link.symlink_to(target)
    assert statefile.write(str(link), '["x"]') is True
    assert not link.is_symlink()
    os.chmod(link, 0o666)
    assert statefile.write(str(link), '["x"]') is True
    assert stat.S_IMODE(link.stat().st_mode) == statefile.MODE
