"""sysctl: write only what differs, remember originals, restore them (pure: a temp dir as root)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ecmpd.sysctl import Sysctls

FWD = "net/ipv4/conf/wan0/forwarding"
RPF = "net/ipv4/conf/wan0/rp_filter"
HASH = "net/ipv4/fib_multipath_hash_policy"
MISSING = "net/ipv4/conf/wan9/forwarding"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fake /proc/sys: wan0 forwarding 0, rp_filter 2 (already right), hash policy 0."""
    for rel, value in ((FWD, "0"), (RPF, "2"), (HASH, "0")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(value + "\n")
    return tmp_path


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Path.write_text call (the file's path), to prove which files were written."""
    calls: list[str] = []
    real = Path.write_text

    def spy(self: Path, data: str, *a: object, **kw: object) -> int:
        calls.append(str(self))
        return real(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_text", spy)
    return calls


def value(root: Path, rel: str) -> str:
    return (root / rel).read_text()


WANTED = ((FWD, "1"), (RPF, "2"), (HASH, "1"))


def test_writes_only_the_values_that_differ(root: Path, writes: list[str]) -> None:
    s = Sysctls(root=str(root))
    assert s.apply(WANTED) == 2
    assert sorted(writes) == sorted([str(root / FWD), str(root / HASH)])
    assert value(root, FWD) == "1\n" and value(root, HASH) == "1\n"
    assert value(root, RPF) == "2\n"


def test_records_the_values_found_before(root: Path) -> None:
    s = Sysctls(root=str(root))
    s.apply(WANTED)
    assert s.original == {FWD: "0", HASH: "0"}  # the unchanged rp_filter is not recorded
    assert s.read(FWD) == "1"


def test_repeated_apply_writes_nothing(root: Path, writes: list[str]) -> None:
    s = Sysctls(root=str(root))
    s.apply(WANTED)
    writes.clear()
    assert s.apply(WANTED) == 0
    assert writes == []
    assert s.original == {FWD: "0", HASH: "0"}


def test_restore_puts_the_originals_back(root: Path, writes: list[str]) -> None:
    s = Sysctls(root=str(root))
    s.apply(WANTED)
    writes.clear()
    s.restore()
    assert (value(root, FWD), value(root, RPF), value(root, HASH)) == ("0\n", "2\n", "0\n")
    assert sorted(writes) == sorted([str(root / FWD), str(root / HASH)])
    assert s.original == {}
    writes.clear()
    s.restore()  # nothing left to restore
    assert writes == []


def test_the_first_original_wins_when_a_value_is_changed_behind_our_back(root: Path) -> None:
    s = Sysctls(root=str(root))
    s.apply(WANTED)
    (root / FWD).write_text("5\n")       # someone else changed it
    assert s.apply(WANTED) == 1          # set again ...
    assert s.original[FWD] == "0"        # ... but the value to restore is still the first one
    s.restore()
    assert value(root, FWD) == "0\n"


def test_missing_paths_are_skipped_and_picked_up_later(root: Path, writes: list[str]) -> None:
    s = Sysctls(root=str(root))
    assert s.read(MISSING) is None
    assert s.apply(((MISSING, "1"),)) == 0
    assert writes == []
    assert not (root / MISSING).exists()          # never created
    assert MISSING not in s.original
    (root / MISSING).parent.mkdir(parents=True)  # the interface appears
    (root / MISSING).write_text("0\n")
    assert s.apply(((MISSING, "1"),)) == 1
    assert s.original[MISSING] == "0" and value(root, MISSING) == "1\n"


def test_trailing_whitespace_does_not_count_as_a_difference(root: Path, writes: list[str]) -> None:
    (root / FWD).write_text("1 \n\n")
    writes.clear()
    assert Sysctls(root=str(root)).apply(((FWD, "1"),)) == 0
    assert writes == []


def test_a_failed_write_is_logged_not_counted_not_recorded(
        root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = Path.write_text

    def refuse(self: Path, data: str, *a: object, **kw: object) -> int:
        if self.name == "forwarding":
            raise PermissionError(13, "Permission denied")
        return real(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_text", refuse)
    s = Sysctls(root=str(root))
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert s.apply(WANTED) == 1  # only the hash policy
    assert "net.ipv4.conf.wan0.forwarding" in caplog.text
    assert s.original == {HASH: "0"}
    assert value(root, FWD) == "0\n"


def test_hash_src_fields_are_restored_even_after_a_reload_to_l4(root: Path) -> None:
    """`hash: src` writes the fields sysctl besides the policy: both go back on stop,
    also when a reload to l4 left the fields alone since."""
    from ecmpd.desired import hash_sysctls

    fields = "net/ipv4/fib_multipath_hash_fields"
    (root / fields).write_text("7\n")                    # the kernel's default
    s = Sysctls(root=str(root))
    assert s.apply(tuple(hash_sysctls("src", 4))) == 2
    assert (value(root, fields), value(root, HASH)) == ("1\n", "3\n")
    assert s.apply(tuple(hash_sysctls("l4", 4))) == 1    # reloaded: the policy only
    s.restore()
    assert (value(root, fields), value(root, HASH)) == ("7\n", "0\n")
