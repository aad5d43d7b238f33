"""Tests for ecmpd.logsetup: plain and journald-style output on a real stderr file."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys

import pytest

from ecmpd.logsetup import (RateLimitedLog, LEVELS, LOGGER, NOTICE, setup_logging, stream_is_journal,
                            syslog_priority)


@pytest.fixture
def stderr_file(tmp_path, monkeypatch):
    """A file to serve as stderr (see `use`); restores the "ecmpd" logger afterwards."""
    logger = logging.getLogger(LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    f = open(tmp_path / "stderr", "w+")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    yield f
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    f.close()


def use(f, monkeypatch) -> None:
    """Make `f` sys.stderr (inside the test: pytest's capture resets it between phases)."""
    monkeypatch.setattr(sys, "stderr", f)


def output(f) -> list[str]:
    f.flush()
    f.seek(0)
    return f.read().splitlines()


def as_journal(f, monkeypatch) -> None:
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def test_plain_format(stderr_file, monkeypatch):
    use(stderr_file, monkeypatch)
    setup_logging("info")
    log = logging.getLogger("ecmpd.prober")
    log.debug("hidden")
    log.info("wan1 is up")
    log.warning("wan2 is down")
    lines = output(stderr_file)
    assert len(lines) == 2
    pat = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ecmpd\[%d\] (INFO|WARNING) (.*)$" % os.getpid()
    assert [re.match(pat, ln).groups() for ln in lines] == [("INFO", "wan1 is up"),
                                                           ("WARNING", "wan2 is down")]


def test_journal_format(stderr_file, monkeypatch):
    as_journal(stderr_file, monkeypatch)
    use(stderr_file, monkeypatch)
    setup_logging("debug")
    log = logging.getLogger("ecmpd")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert output(stderr_file) == ["<7>d", "<6>i", "<4>w", "<3>e", "<2>c"]


def test_journal_traceback_lines_all_prefixed(stderr_file, monkeypatch):
    as_journal(stderr_file, monkeypatch)
    use(stderr_file, monkeypatch)
    setup_logging("info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("ecmpd.daemon").exception("reload failed")
    lines = output(stderr_file)
    assert lines[0] == "<3>reload failed"
    assert len(lines) > 2 and all(ln.startswith("<3>") for ln in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_of_another_file_is_ignored(stderr_file, monkeypatch, tmp_path):
    other = open(tmp_path / "other", "w")
    as_journal(other, monkeypatch)  # JOURNAL_STREAM names a different file
    other.close()
    use(stderr_file, monkeypatch)
    setup_logging("info")
    logging.getLogger("ecmpd").info("hello")
    assert re.match(r"^\d{4}-.* ecmpd\[\d+\] INFO hello$", output(stderr_file)[0])


@pytest.mark.parametrize("value", ["", "garbage", "1:x", ":"])
def test_bad_journal_stream(stderr_file, value):
    assert not stream_is_journal(stderr_file, {"JOURNAL_STREAM": value})


def test_setup_twice_replaces_handler_and_level(stderr_file, monkeypatch):
    use(stderr_file, monkeypatch)
    setup_logging("warning")
    setup_logging("DEBUG")
    logging.getLogger("ecmpd").debug("once")
    assert len(output(stderr_file)) == 1
    assert logging.getLogger(LOGGER).level == logging.DEBUG


def test_unknown_level(stderr_file):
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("loud")


def test_other_loggers_untouched(stderr_file, monkeypatch):
    use(stderr_file, monkeypatch)
    setup_logging("debug")
    logging.getLogger("pyroute2.test").warning("not ours")
    assert output(stderr_file) == []


def test_priorities():
    assert [syslog_priority(x) for x in (5, 10, 15, 20, 24, 25, 29, 30, 40, 50, 60)] == \
        [7, 7, 7, 6, 6, 5, 5, 4, 3, 2, 2]


def test_notice_level(stderr_file, monkeypatch):
    assert (NOTICE, LEVELS["notice"]) == (25, 25)
    assert logging.getLevelName(NOTICE) == "NOTICE"
    assert logging.INFO < NOTICE < logging.WARNING
    use(stderr_file, monkeypatch)
    setup_logging("notice")
    log = logging.getLogger("ecmpd.daemon")
    log.info("hidden")
    log.log(NOTICE, "wan1 back in the route")
    log.warning("wan2 left the route")
    pat = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ecmpd\[\d+\] (\w+) (.*)$"
    assert [re.match(pat, ln).groups() for ln in output(stderr_file)] == [
        ("NOTICE", "wan1 back in the route"), ("WARNING", "wan2 left the route")]


def test_notice_in_the_journal(stderr_file, monkeypatch):
    as_journal(stderr_file, monkeypatch)
    use(stderr_file, monkeypatch)
    setup_logging("NOTICE")
    log = logging.getLogger("ecmpd")
    log.info("i")
    log.log(NOTICE, "n")
    log.warning("w")
    assert output(stderr_file) == ["<5>n", "<4>w"]


def captured(name: str) -> tuple[logging.Logger, list[str]]:
    """Logger `name`, not propagating, and the list its messages are appended to."""
    records: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(Sink())
    return logger, records


def test_rate_limited_log_counts_and_summarises():
    now = [100.0]
    logger, records = captured("ecmpd.test.ratelimit")
    logger.setLevel(logging.DEBUG)
    lim = RateLimitedLog(logger, interval=10.0, clock=lambda: now[0])
    assert lim.warning("a", "refused %d", 1)
    for i in range(50):
        now[0] += 0.1
        assert not lim.warning("a", "refused %d", i + 2)
    assert lim.warning("b", "other")             # keys are independent
    assert lim.suppressed("a") == 50
    now[0] = 111.0
    assert lim.warning("a", "refused %d", 99)     # no loop: the count rides on the next
    assert records == ["refused 1", "other",
                       "refused 99 (and 50 more like this in the last 11s)"]
    assert lim.suppressed("a") == 0


def test_rate_limited_log_summary_on_the_loop():
    logger, records = captured("ecmpd.test.ratelimit2")

    async def main():
        lim = RateLimitedLog(logger, interval=0.2)
        for i in range(30):
            lim.warning("k", "x %d", i)
        await asyncio.sleep(0.35)                 # the summary is written by itself
        lim.warning("k", "y")                     # inside the summary's interval
        lim.flush()

    asyncio.run(main())
    assert records[0] == "x 0"
    assert records[1].startswith("29 more like this in the last 0s, the last one: x 29")
    assert records[2].startswith("1 more like this") and records[2].endswith("y")
    assert len(records) == 3
