"""Issue 3: the control protocol fuzzed with hypothesis (unit level: no root, no lab).

One in-process ControlServer with a stub handler, on a Unix socket in a temp dir, serves
every example.  Random byte streams, random JSON-ish requests and several clients at once
must never crash it; every connection gets exactly the answers a simple model of the
protocol predicts (one per non-blank line, an error for anything invalid, one error and
then the end for an oversized line) and is then closed; afterwards the server holds
nothing, and its memory stays bounded over many examples.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import tempfile
import tracemalloc
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecmpd.control_protocol import COMMANDS, STREAMING, validate_request
from ecmpd.control_server import ControlServer
from lab.wait import until_async

MAX_REQUEST = 512
"""The fuzzed server's line limit: small, so that the limit is often crossed."""

FUZZ = settings(max_examples=150, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class Stub:
    """The daemon's handler, stubbed: echoes every request it gets."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def __call__(self, req: dict) -> dict:
        self.seen.append(req)
        return {"echo": req}


class Harness:
    """A loop and a server that live as long as the test module."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ecmpd-fuzz-", dir="/tmp")
        self.path = os.path.join(self.dir, "ecmpd.sock")
        self.loop = asyncio.new_event_loop()
        self.stub = Stub()
        self.srv = ControlServer(self.path, self.stub, max_request=MAX_REQUEST,
                                 idle_timeout=5.0)
        self.loop.run_until_complete(self.srv.start())

    def run(self, coro) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    def close(self) -> None:
        self.loop.run_until_complete(self.srv.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def assert_idle(self) -> None:
        """The server keeps nothing of finished connections (they may need a few loop
        turns to notice the end)."""
        srv = self.srv
        settled = lambda: not (srv.clients or srv.waiting or srv._tasks)  # noqa: E731
        self.run(until_async(settled, 1.0, "the server to forget its connections", 0.005))
        assert (self.srv.clients, self.srv.waiting, len(self.srv._tasks)) == (0, 0, 0)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def expected(stream: bytes) -> tuple[list[dict | str], list[dict]]:
    """The answers a stream gets (a dict for an exact answer, "error" for any error
    answer) and the requests the handler sees, from a model of the protocol."""
    answers: list[dict | str] = []
    seen: list[dict] = []
    *lines, rest = stream.split(b"\n")
    for line in lines:
        if len(line) > MAX_REQUEST:
            answers.append("oversized")
            return answers, seen
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except (ValueError, RecursionError):
            answers.append("error")
            continue
        if validate_request(req) is not None:
            answers.append("error")
            continue
        if req["cmd"] == STREAMING:         # the rest of the stream is not requests
            answers.append({"ok": True, "monitor": True})
            return answers, seen
        seen.append(req)
        answers.append({"ok": True, "echo": req})
    if len(rest) > MAX_REQUEST:
        answers.append("oversized")
    return answers, seen


async def exchange(path: str, chunks: list[bytes]) -> list[dict]:
    """Send `chunks` (a pause between them), say EOF, and read every answer line until
    the server closes.  Asserts that every line is a well-formed answer."""
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass                                # the server may have hung up (oversized)
    answers = []
    try:
        while line := await reader.readline():
            assert line.endswith(b"\n"), line
            answer = json.loads(line)
            assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
            if answer["ok"] is False:
                assert isinstance(answer.get("error"), str) and answer["error"], answer
            answers.append(answer)
    except ConnectionResetError:
        pass
    writer.close()
    return answers


def check(answers: list[dict], stream: bytes) -> list[dict]:
    want, seen = expected(stream)
    assert len(answers) == len(want), (answers, want)
    for got, exp in zip(answers, want):
        if exp == "oversized":
            assert got == {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        elif exp == "error":
            assert got["ok"] is False
        else:
            assert got == exp
    return seen


# ---- strategies ----------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) \
    | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@st.composite
def requests(draw) -> Any:
    """Valid requests (often), request-shaped ones with a wrong, missing or extra part,
    or any JSON value at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)
    cmd = draw(st.sampled_from(sorted(COMMANDS)))
    req: dict[str, Any] = {"cmd": cmd}
    req.update({name: draw(st.text(min_size=1, max_size=12)) for name in COMMANDS[cmd]})
    if kind <= 4:
        return req                          # valid
    mutation = draw(st.sampled_from(["cmd", "arg", "drop", "extra"]))
    if mutation == "cmd":
        req["cmd"] = draw(st.text(max_size=10) | json_values)
    elif mutation == "arg":
        req["wan"] = draw(st.just("") | json_values)
    elif mutation == "drop":
        req.pop(draw(st.sampled_from(sorted(req))))
    else:
        req.update(draw(st.dictionaries(st.text(max_size=6), json_values, min_size=1,
                                        max_size=2)))
    return req


@st.composite
def request_lines(draw) -> bytes:
    req = draw(requests())
    text = json.dumps(req, ensure_ascii=draw(st.booleans()))
    pad = draw(st.sampled_from(["", " ", "\t", "  \r"]))
    line = (pad + text + pad).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 7)) == 0:           # now and then a corrupted one
        cut = draw(st.integers(0, len(line)))
        line = line[:cut] + draw(st.binary(max_size=8)).replace(b"\n", b"") + line[cut:]
    return line


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces, cut at the given (sorted, deduplicated) offsets."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        if p > last:
            pieces.append(data[last:p])
            last = p
    return pieces


byte_streams = st.lists(
    st.binary(max_size=200) | st.sampled_from([b"\n", b"\r\n", b"{", b"}", b'"', b"\\",
                                               b'{"cmd":"ping"}\n', b"[" * 600,
                                               b"x" * (MAX_REQUEST + 1), b"\xff\xfe\x00"]),
    max_size=25)


# ---- the fuzz tests ---------------------------------------------------------------------

@FUZZ
@given(parts=byte_streams)
def test_random_byte_streams(harness, parts):
    stream = b"".join(parts)
    before = len(harness.stub.seen)
    answers = harness.run(exchange(harness.path, parts))
    seen = check(answers, stream)
    assert harness.stub.seen[before:] == seen
    harness.assert_idle()


@FUZZ
@given(lines=st.lists(request_lines(), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 10_000), max_size=6),
       final_newline=st.booleans())
def test_random_json_requests(harness, lines, cuts, final_newline):
    stream = b"\n".join(lines) + (b"\n" if final_newline else b"")
    before = len(harness.stub.seen)
    answers = harness.run(exchange(harness.path, split(stream, cuts)))
    seen = check(answers, stream)
    assert harness.stub.seen[before:] == seen
    harness.assert_idle()


@settings(FUZZ, max_examples=60)
@given(streams=st.lists(st.lists(request_lines(), max_size=5).map(
    lambda ls: b"".join(l + b"\n" for l in ls)), min_size=2, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_several_clients_at_once(harness, streams, cuts):
    """Interleaved clients each get exactly their own answers."""
    async def all_at_once() -> list[list[dict]]:
        return await asyncio.gather(*(exchange(harness.path, split(s, cuts))
                                      for s in streams))

    results = harness.run(all_at_once())
    for answers, stream in zip(results, streams):
        check(answers, stream)
    harness.assert_idle()


def test_memory_stays_bounded_over_many_connections(harness):
    """400 connections of random streams (oversized, garbage, valid, cut anywhere):
    whatever the server allocated for them is gone afterwards, and its peak stays low."""
    import random
    rnd = random.Random(1234)
    pieces = [b"\n", b'{"cmd":"status"}\n', b'{"cmd":"disable","wan":"w"}\n', b"[" * 700,
              b"x" * 3000, b'{"cmd": "enable", "wan": 5}\n', b"\xff" * 50, b"  \n"]

    def stream() -> list[bytes]:
        return [rnd.choice(pieces) if rnd.random() < 0.7 else
                rnd.randbytes(rnd.randrange(300)) for _ in range(rnd.randrange(1, 20))]

    def batch(n: int) -> None:
        async def go() -> None:
            for _ in range(n // 4):
                await asyncio.gather(*(exchange(harness.path, stream()) for _ in range(4)))
        harness.run(go())
        harness.assert_idle()
        harness.stub.seen.clear()

    batch(40)                               # warm up: caches, first-use allocations
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        batch(400)
        gc.collect()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the server keeps nothing: what is left is noise (interned strings, free lists)
    assert now - base < 64 * 1024, (base, now)
    # 4 connections at a time, each buffering at most ~2 x MAX_REQUEST + a read chunk
    # on either side: the peak of the whole process (client included) stays small
    assert peak - base < 2 * 1024 * 1024, (base, peak)
    print(f"\ntraced memory: {base} -> {now} bytes after 400 connections, peak +{peak - base}")
