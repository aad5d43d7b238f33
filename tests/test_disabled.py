"""drain.DisabledStore: the disabled WANs remembered across restarts (no root)."""

from __future__ import annotations

import json
import logging
import os

from ecmpd.disabled import DisabledStore

KNOWN = {"wlan1", "wlan2", "wlan3"}


def store(tmp_path, content: str | None = None) -> DisabledStore:
    path = tmp_path / "ecmpd.sock.disabled.json"
    if content is not None:
        path.write_text(content)
        os.chmod(path, 0o644)
    return DisabledStore(str(path))


def test_round_trip_keeps_only_wans_of_the_config(tmp_path) -> None:
    s = store(tmp_path)
    assert s.load(KNOWN) == set()
    s.save({"wlan2", "gone"})
    assert json.loads(open(s.path).read()) == ["gone", "wlan2"]
    assert s.load(KNOWN) == {"wlan2"}


def test_a_file_disabling_every_wan_is_ignored(tmp_path, caplog) -> None:
    s = store(tmp_path, '["wlan1", "wlan2", "wlan3", "old"]')
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        assert s.load(KNOWN) == set()
    assert "disables every WAN" in caplog.text and "without a route" in caplog.text
    assert s.load({"wlan1"}) == set()                       # a single WAN too
    assert s.load(KNOWN | {"wlan4"}) == {"wlan1", "wlan2", "wlan3"}


def test_wrong_shapes_and_hostile_files_count_as_none(tmp_path, caplog) -> None:
    for text in ("{}", '"wlan1"', "[1, null, {}]", "not json"):
        assert store(tmp_path, text).load(KNOWN) == set(), text
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert DisabledStore(str(fifo)).load(KNOWN) == set()


def test_save_failure_is_logged_not_raised(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ecmpd"):
        DisabledStore(str(tmp_path / "no" / "dir.json")).save({"wlan1"})
    assert "cannot remember disabled WANs" in caplog.text


def test_save_says_whether_it_wrote(tmp_path) -> None:
    assert store(tmp_path).save({"wlan1"}) is True
    assert DisabledStore(str(tmp_path / "no" / "dir.json")).save({"wlan1"}) is False
