"""Tests for ecmpd.control: a real ControlServer on a Unix socket in a temp dir."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import socket
import stat
import tempfile
from typing import Any, Awaitable, Callable

import pytest

from ecmpd.control import COMMANDS, ControlError, ControlServer, validate_request


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
                      **kw: Any) -> Any:
    daemon = FakeDaemon()
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


def test_validate_request_table():
    assert set(COMMANDS) == {"ping", "status", "reload", "disable", "enable"}
    assert validate_request({"cmd": "disable", "wan": "a"}) is None
    assert validate_request({"cmd": "disable", "wan": True}) is not None


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


def test_too_many_clients(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        held = [await Client.connect(path) for _ in range(2)]
        await held[0].ask({"cmd": "ping"})
        await held[1].ask({"cmd": "ping"})  # both are registered now
        third = await Client.connect(path)
        refused = await third.read()
        third.close()
        held[0].close()
        # A slot frees up once the server notices the close: poll with a deadline.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            r = await ask_once(path, {"cmd": "ping"})
            if r and r.get("ok") or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        held[1].close()
        return refused, r

    refused, r = run(with_server, path, body, max_clients=2)
    assert refused == {"ok": False, "error": "too many clients"}
    assert r == {"ok": True, "message": "ping done"}


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
