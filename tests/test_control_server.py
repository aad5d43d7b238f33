"""Tests for ecmpd.control_server: a real ControlServer on a Unix socket in a temp dir."""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from typing import Any, Awaitable, Callable

import pytest

from ecmpd import control_server
from ecmpd.control_protocol import EVICTED, TOO_MANY
from ecmpd.control_server import ControlError, ControlServer
from lab.wait import until_async


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="ecmpd-ctl-", dir="/tmp")  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


class FakeDaemon:
    """A handler that records requests and can be told to fail."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def __call__(self, req: dict) -> Any:
        self.requests.append(req)
        cmd = req["cmd"]
        if cmd == "status":
            return {"pid": 42, "wans": {}}
        if cmd == "disable" and req["wan"] == "boom":
            raise RuntimeError("kaboom")
        if cmd == "disable" and req["wan"] == "nope":
            raise ControlError("no WAN called 'nope'")
        if cmd == "enable" and req["wan"] == "notdict":
            return ["not", "a", "dict"]
        if cmd == "enable" and req["wan"] == "notjson":
            return {"x": object()}
        if cmd == "enable" and req["wan"] == "refuse":
            return {"ok": False, "error": "refused"}
        return {"message": f"{cmd} done"}


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
    return asyncio.run(coro_fn(*args, **kw))


async def with_server(path: str, body: Callable[[ControlServer, FakeDaemon], Awaitable[Any]],
                      daemon: FakeDaemon | None = None, **kw: Any) -> Any:
    daemon = daemon or FakeDaemon()
    srv = ControlServer(path, daemon, **kw)
    await srv.start()
    try:
        return await body(srv, daemon)
    finally:
        await srv.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: str) -> "Client":
        r, w = await asyncio.open_unix_connection(path, limit=1 << 22)
        return cls(r, w)

    async def send_raw(self, data: bytes) -> dict | None:
        self.writer.write(data)
        await self.writer.drain()
        return await self.read()

    async def read(self) -> dict | None:
        line = await asyncio.wait_for(self.reader.readline(), 20)
        return json.loads(line) if line else None

    async def ask(self, req: Any) -> dict | None:
        return await self.send_raw(json.dumps(req).encode() + b"\n")

    def close(self) -> None:
        self.writer.close()


async def ask_once(path: str, req: Any) -> dict | None:
    c = await Client.connect(path)
    try:
        return await c.ask(req)
    finally:
        c.close()


def test_valid_requests_several_per_connection(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        answers = [await c.ask({"cmd": "ping"}), await c.ask({"cmd": "status"}),
                   await c.ask({"cmd": "reload"}), await c.ask({"cmd": "disable", "wan": "wan1"}),
                   await c.ask({"cmd": "enable", "wan": "wan1"})]
        c.close()
        return answers, daemon.requests

    answers, reqs = run(with_server, path, body)
    assert answers == [
        {"ok": True, "message": "ping done"},
        {"ok": True, "pid": 42, "wans": {}},
        {"ok": True, "message": "reload done"},
        {"ok": True, "message": "disable done"},
        {"ok": True, "message": "enable done"},
    ]
    assert reqs[3] == {"cmd": "disable", "wan": "wan1"}


def test_socket_mode_parent_dir_and_cleanup(sockdir):
    path = os.path.join(sockdir, "sub", "dir", "ecmpd.sock")

    async def body(srv, daemon):
        st = os.stat(path)
        return stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), \
            stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)

    is_sock, mode, dmode = run(with_server, path, body)
    assert is_sock and mode == 0o660 and dmode == 0o755
    assert not os.path.exists(path)  # close() removed it


def test_socket_group(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")
    others = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
    if os.geteuid() != 0 or not others:
        pytest.skip("needs root and a second group")
    g = others[0]

    async def body(srv, daemon):
        return os.stat(path).st_gid

    assert run(with_server, path, body, group=g.gr_name) == g.gr_gid


def test_unknown_group_refused(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")
    srv = ControlServer(path, FakeDaemon(), group="no-such-group-ecmpd-test")
    with pytest.raises(ControlError, match="does not exist"):
        run(srv.start)
    assert not os.path.exists(path)


@pytest.mark.parametrize("raw, fragment", [
    (b"{not json\n", "malformed JSON"),
    (b"\xff\xfe\n", "malformed JSON"),
    (b"[1, 2]\n", "JSON object"),
    (b'"status"\n', "JSON object"),
    (b"null\n", "JSON object"),
    (b"{}\n", '"cmd"'),
    (b'{"cmd": 5}\n', '"cmd"'),
    (b'{"cmd": "shutdown"}\n', "unknown command"),
    (b'{"cmd": "disable"}\n', "missing argument 'wan'"),
    (b'{"cmd": "disable", "wan": 3}\n', "must be a str"),
    (b'{"cmd": "enable", "wan": null}\n', "must be a str"),
    (b'{"cmd": "enable", "wan": ""}\n', "must not be empty"),
    (b'{"cmd": "enable", "wan": ["a"]}\n', "must be a str"),
    (b'{"cmd": "status", "verbose": true}\n', "unexpected argument"),
    (b"[" * 100000 + b"\n", "malformed JSON"),
])
def test_malformed_requests_get_errors_and_connection_survives(sockdir, raw, fragment):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        bad = await c.send_raw(raw)
        good = await c.ask({"cmd": "ping"})
        c.close()
        return bad, good, daemon.requests

    bad, good, reqs = run(with_server, path, body, max_request=200000)
    assert bad["ok"] is False and fragment in bad["error"]
    assert good == {"ok": True, "message": "ping done"}
    assert reqs == [{"cmd": "ping"}]  # the handler never saw the bad one


def test_empty_lines_ignored(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        r = await c.send_raw(b"\n  \n" + b'{"cmd":"ping"}\n')
        c.close()
        return r

    assert run(with_server, path, body) == {"ok": True, "message": "ping done"}


def test_oversized_line_answered_then_closed(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        huge = b'{"cmd": "ping", "pad": "' + b"x" * 5000 + b'"}\n'
        r = await c.send_raw(huge)
        eof = await c.read()
        c.close()
        after = await ask_once(path, {"cmd": "ping"})
        return r, eof, after

    r, eof, after = run(with_server, path, body, max_request=1024)
    assert r["ok"] is False and "longer than 1024" in r["error"]
    assert eof is None  # server closed that connection
    assert after == {"ok": True, "message": "ping done"}


def test_line_at_the_limit_is_accepted(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")
    line = b'{"cmd":"ping"}' + b" " * (1024 - 14)
    assert len(line) == 1024

    async def body(srv, daemon):
        c = await Client.connect(path)
        r = await c.send_raw(line + b"\n")
        c.close()
        return r

    assert run(with_server, path, body, max_request=1024) == {"ok": True, "message": "ping done"}


def test_idle_client_is_closed_and_others_served(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        idle = await Client.connect(path)
        half = await Client.connect(path)
        half.writer.write(b'{"cmd": "pi')  # never finishes its line
        other = await ask_once(path, {"cmd": "ping"})  # served while those two hang
        eof_idle = await idle.read()  # returns once the server closes it
        eof_half = await half.read()
        idle.close()
        half.close()
        return other, eof_idle, eof_half

    other, e1, e2 = run(with_server, path, body, idle_timeout=0.3)
    assert other == {"ok": True, "message": "ping done"}
    assert e1 is None and e2 is None


def test_client_disconnects_mid_request(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        for partial in (b"", b'{"cmd": "sta', b'{"cmd": "status"}'):  # no newline: dropped
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(partial)
            s.close()
        # A client that sends a request and leaves before reading the answer.
        c = await Client.connect(path)
        c.writer.write(b'{"cmd": "status"}\n')
        await c.writer.drain()
        c.writer.transport.abort()
        return await ask_once(path, {"cmd": "ping"}), daemon.requests

    after, reqs = run(with_server, path, body)
    assert after == {"ok": True, "message": "ping done"}
    assert {"cmd": "ping"} in reqs


@pytest.mark.parametrize("wan, fragment", [
    ("boom", "internal error in disable: kaboom"),
    ("nope", "no WAN called 'nope'"),
])
def test_handler_errors(sockdir, wan, fragment):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        r = await c.ask({"cmd": "disable", "wan": wan})
        again = await c.ask({"cmd": "status"})
        c.close()
        return r, again

    r, again = run(with_server, path, body)
    assert r == {"ok": False, "error": fragment}
    assert again == {"ok": True, "pid": 42, "wans": {}}


@pytest.mark.parametrize("wan, expected", [
    ("notdict", {"ok": False, "error": "internal error in enable: bad response"}),
    ("notjson", {"ok": False, "error": "internal error in enable: response is not JSON"}),
    ("refuse", {"ok": False, "error": "refused"}),
])
def test_handler_bad_payloads(sockdir, wan, expected):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        return await ask_once(path, {"cmd": "enable", "wan": wan}), \
            await ask_once(path, {"cmd": "ping"})

    r, after = run(with_server, path, body)
    assert r == expected
    assert after["ok"] is True


def test_at_the_limit_the_longest_idle_connection_makes_room(sockdir):
    """Idle connections never lock a new client out: the one idle longest is closed
    (with an error line saying why) and the newcomer is served."""
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        old = await Client.connect(path)     # connected first, never asks anything
        await asyncio.sleep(0.05)
        active = await Client.connect(path)
        await active.ask({"cmd": "ping"})    # idle only since its answer
        await asyncio.sleep(0.05)
        old2 = await Client.connect(path)
        await asyncio.sleep(0.05)
        new = await Client.connect(path)     # the limit is 3: one must go
        served = await new.ask({"cmd": "status"})
        evicted = await old.read(), await old.read()
        still = await active.ask({"cmd": "ping"}), await old2.ask({"cmd": "ping"})
        counts = srv.clients, srv.evicted, srv.refused
        for c in (old, active, old2, new):
            c.close()
        return served, evicted, still, counts

    served, evicted, still, counts = run(with_server, path, body, max_clients=3)
    assert served == {"ok": True, "pid": 42, "wans": {}}
    assert evicted == ({"ok": False, "error": EVICTED}, None)   # the error, then EOF
    assert still == ({"ok": True, "message": "ping done"},) * 2
    assert counts == (3, 1, 0)


class BlockingDaemon(FakeDaemon):
    """`reload` waits until `release` is set (a handler busy for a long time)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, req: dict) -> Any:
        if req["cmd"] == "reload":
            self.waiting += 1
            await self.release.wait()
        return await super().__call__(req)


async def occupy(path: str, daemon: "BlockingDaemon", n: int) -> list["Client"]:
    """`n` clients whose reloads block in `daemon`: every one of them holds a slot."""
    busy = [await Client.connect(path) for _ in range(n)]
    for c in busy:
        c.writer.write(b'{"cmd": "reload"}\n')
    while daemon.waiting < n:
        await asyncio.sleep(0.01)
    return busy


def test_refused_when_every_slot_is_busy_and_none_may_wait(sockdir, caplog):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        busy = await occupy(path, daemon, 2)
        refused = [await ask_once(path, {"cmd": "ping"}) for _ in range(20)]
        daemon.release.set()
        answers = [await c.read() for c in busy]
        after = await ask_once(path, {"cmd": "ping"})   # an idle slot again: served
        for c in busy:
            c.close()
        return refused, answers, after, srv.refused

    with caplog.at_level(logging.WARNING, logger="ecmpd.control_server"):
        refused, answers, after, count = run(with_server, path, body, BlockingDaemon(),
                                             max_clients=2, max_waiting=0)
    assert refused == [{"ok": False, "error": TOO_MANY}] * 20
    assert answers == [{"ok": True, "message": "reload done"}] * 2
    assert after == {"ok": True, "message": "ping done"}
    assert count == 20
    refusals = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "refusing a new" in r.getMessage()]
    # 20 refusals: one line at once, and the summary of the other 19 (here at close())
    assert len(refusals) == 2, refusals
    assert refusals[1].startswith("19 more like this in the last")


def test_when_every_slot_is_busy_newcomers_wait_their_turn(sockdir):
    """All slots busy: newcomers queue unread, first come first served; a full queue
    refuses; a finished request hands its slot to the head of the queue (and, others
    waiting, its connection makes way)."""
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        busy = await occupy(path, daemon, 2)
        queued = []
        for i in range(3):
            c = await Client.connect(path)
            c.writer.write(json.dumps({"cmd": "enable", "wan": f"w{i}"}).encode() + b"\n")
            queued.append(c)
            while srv.waiting < i + 1:
                await asyncio.sleep(0.01)
        full = await ask_once(path, {"cmd": "ping"})    # the queue is full
        counts = srv.clients, srv.waiting
        daemon.release.set()
        answers = [await c.read() for c in busy + queued]
        eofs = [await c.read() for c in busy]       # others waited: they made way
        order = [r["wan"] for r in daemon.requests if r["cmd"] == "enable"]
        for c in busy + queued:
            c.close()
        return full, counts, answers, eofs, order

    full, counts, answers, eofs, order = run(with_server, path, body, BlockingDaemon(),
                                             max_clients=2, max_waiting=3)
    assert full == {"ok": False, "error": TOO_MANY}
    assert counts == (2, 3)
    assert answers == [{"ok": True, "message": "reload done"}] * 2 + \
        [{"ok": True, "message": "enable done"}] * 3
    assert eofs == [None, None]
    assert order == ["w0", "w1", "w2"]


def test_a_wait_that_times_out_is_refused(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        busy, = await occupy(path, daemon, 1)
        r = await ask_once(path, {"cmd": "ping"})
        daemon.release.set()
        done = await busy.read()
        busy.close()
        return r, done, srv.waiting

    r, done, waiting = run(with_server, path, body, BlockingDaemon(), max_clients=1,
                           idle_timeout=0.3)
    assert r == {"ok": False, "error": TOO_MANY}
    assert done == {"ok": True, "message": "reload done"} and waiting == 0


def test_an_idle_slot_goes_to_a_waiting_connection(sockdir):
    """A connection that got its slot from the queue and asks nothing keeps it only
    until another newcomer queues up behind it and GRACE is over."""
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        busy, = await occupy(path, daemon, 1)
        hostile = await Client.connect(path)            # queues, will ask nothing
        while srv.waiting < 1:
            await asyncio.sleep(0.01)
        patient = await Client.connect(path)
        patient.writer.write(b'{"cmd": "ping"}\n')
        while srv.waiting < 2:
            await asyncio.sleep(0.01)
        daemon.release.set()
        done = await busy.read()                        # its slot goes to `hostile`
        await asyncio.sleep(control_server.GRACE + 0.1)
        assert srv.waiting == 1                         # `patient` still waits
        late = await Client.connect(path)               # queues: `hostile` must go
        late.writer.write(b'{"cmd": "status"}\n')
        gone = await hostile.read(), await hostile.read()
        answers = await patient.read(), await late.read()
        for c in (busy, hostile, patient, late):
            c.close()
        return done, gone, answers

    done, gone, answers = run(with_server, path, body, BlockingDaemon(), max_clients=1)
    assert done == {"ok": True, "message": "reload done"}
    assert gone == ({"ok": False, "error": EVICTED}, None)
    assert answers == ({"ok": True, "message": "ping done"}, {"ok": True, "pid": 42, "wans": {}})


def test_many_idle_connections_never_lock_out_and_logs_stay_bounded(sockdir, caplog):
    """200 idle connections against a limit of 32: every later request is served, at
    most 32 are open at once, and the evictions write one WARNING line (plus a summary)."""
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        idle = []
        peak = 0
        for _ in range(200):
            idle.append(await Client.connect(path))
            peak = max(peak, srv.clients)
        await asyncio.sleep(0.1)
        answers = [await ask_once(path, {"cmd": "status"}) for _ in range(10)]
        peak = max(peak, srv.clients)
        for c in idle:
            c.close()
        return answers, peak, srv.evicted

    with caplog.at_level(logging.WARNING, logger="ecmpd.control_server"):
        answers, peak, evicted = run(with_server, path, body)
    assert answers == [{"ok": True, "pid": 42, "wans": {}}] * 10
    assert peak <= 33 and evicted >= 168
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2 and "more like this" in lines[1], lines


def test_client_that_does_not_read_is_dropped(sockdir):
    """A client pipelining requests without reading the answers is dropped after the
    idle timeout, its unsent answers discarded (no memory or descriptor kept)."""
    path = os.path.join(sockdir, "ecmpd.sock")
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731

    async def body(srv, daemon):
        before = fds()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(path)
        s.setblocking(False)
        sent = 0
        try:
            for _ in range(5000):
                sent += s.send(b'{"cmd": "status"}\n' * 100)
        except BlockingIOError:
            pass
        await until_async(lambda: not srv.clients, 5, "the client dropped", interval=0.05)
        gone = srv.clients == 0
        s.close()
        await asyncio.sleep(0.1)
        return gone, fds() - before, sent

    gone, extra_fds, sent = run(with_server, path, body, idle_timeout=0.3)
    assert sent > 0 and gone and extra_fds <= 0


def test_stale_socket_file_replaced(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # bound, never listening: connect is refused
    dead.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    async def body(srv, daemon):
        return await ask_once(path, {"cmd": "ping"})

    assert run(with_server, path, body)["ok"] is True


def test_live_socket_refused(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        second = ControlServer(path, FakeDaemon())
        with pytest.raises(ControlError, match="already listening"):
            await second.start()
        await second.close()  # must not remove the first server's socket
        return await ask_once(path, {"cmd": "ping"})

    assert run(with_server, path, body)["ok"] is True


def test_regular_file_not_touched(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")
    with open(path, "w") as f:
        f.write("precious")
    srv = ControlServer(path, FakeDaemon())
    with pytest.raises(ControlError, match="not a socket"):
        run(srv.start)
    with open(path) as f:
        assert f.read() == "precious"


def test_close_drops_clients_and_restart(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def main():
        srv = ControlServer(path, FakeDaemon())
        await srv.start()
        c = await Client.connect(path)
        await c.ask({"cmd": "ping"})
        await srv.close()
        eof = await c.read()
        c.close()
        gone = not os.path.exists(path)
        await srv.start()  # can start again after close
        r = await ask_once(path, {"cmd": "ping"})
        await srv.close()
        return eof, gone, r

    eof, gone, r = run(main)
    assert eof is None and gone and r["ok"] is True
