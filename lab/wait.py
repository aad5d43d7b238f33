"""One way to wait, for the lab, the tests and the bench: poll with a deadline.

`until(predicate, timeout, message)` polls until `predicate()` returns something true
and returns it; `expect(view, want, timeout, message)` polls until `view()` equals
`want` and fails with the difference (like FRR topotests' ``run_and_expect``);
`until_async` is `until` for a coroutine on a running event loop (it yields to the loop
between polls).  A wait that runs out raises `WaitTimeout`, which is both a
`TimeoutError` and an `AssertionError` (a failed test, not an error in it).
`within` is the same poll that only says whether the condition came (the caller
asserts, measures or goes on), `during` repeats a check for a fixed time.
"""

from __future__ import annotations

import asyncio
import difflib
import pprint
import time
from typing import Any, Callable, Generator, TypeVar

T = TypeVar("T")
Message = str | Callable[[Any], str]
"""What was waited for, or a function of the last value giving the whole failure text."""


class WaitTimeout(TimeoutError, AssertionError):
    """A wait ran out before its condition held."""


def _failure(message: Message, timeout: float, last: Any) -> WaitTimeout:
    if callable(message):
        return WaitTimeout(message(last))
    return WaitTimeout(f"timed out after {timeout:g}s waiting for {message} (last: {last!r})")


def _polls(predicate: Callable[[], T], timeout: float, message: Message,
           clock: Callable[[], float]) -> Generator[None, None, T]:
    """The poll without its sleeps: yields whenever the caller is to sleep, returns the
    true value, raises `WaitTimeout` at the deadline."""
    end = clock() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if clock() >= end:
            raise _failure(message, timeout, last)
        yield


def until(predicate: Callable[[], T], timeout: float = 10.0, message: Message = "condition",
          interval: float = 0.05) -> T:
    """Call `predicate` until it returns something true (at least once, every `interval`
    s) and return that; `WaitTimeout` with `message` once `timeout` s have passed."""
    polls = _polls(predicate, timeout, message, time.monotonic)
    try:
        while True:
            next(polls)
            time.sleep(interval)
    except StopIteration as done:
        return done.value


def within(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """`until` that does not raise: whether `predicate()` became true within `timeout` s
    (it returns as soon as it is)."""
    try:
        until(predicate, timeout, "", interval)
    except WaitTimeout:
        return False
    return True


def during(seconds: float, check: Callable[[], object], interval: float = 0.0) -> int:
    """Call `check` (which asserts) again and again for `seconds`, `interval` s apart;
    how many times it ran."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        check()
        n += 1
        if interval:
            time.sleep(interval)
    return n


async def until_async(predicate: Callable[[], T], timeout: float = 10.0,
                      message: Message = "condition", interval: float = 0.001) -> T:
    """`until` on the running event loop: `asyncio.sleep(interval)` between the polls."""
    polls = _polls(predicate, timeout, message, asyncio.get_running_loop().time)
    try:
        while True:
            next(polls)
            await asyncio.sleep(interval)
    except StopIteration as done:
        return done.value


def diff(want: Any, got: Any) -> str:
    """`want` and `got` pretty-printed, line by line: ``-`` wanted, ``+`` got."""
    lines = difflib.ndiff(pprint.pformat(want, width=88).splitlines(),
                          pprint.pformat(got, width=88).splitlines())
    return "\n".join(x for x in lines if not x.startswith("?"))


def expect(view: Callable[[], T], want: Any, timeout: float = 10.0, message: str = "view",
           interval: float = 0.05) -> T:
    """Poll `view()` until it equals `want` and return it; after `timeout` s fail with the
    difference between what was wanted and what was seen last."""
    seen: list[Any] = []

    def same() -> bool:
        seen[:] = [view()]
        return seen[0] == want

    until(same, timeout, lambda _: f"{message} after {timeout:g}s is not what was "
                                   f"expected (- wanted, + got):\n{diff(want, seen[0])}",
          interval)
    return seen[0]
