"""ecmpd.monitor through a real ControlServer on a Unix socket: the `monitor` stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile

import pytest

from ecmpd import monitor
from lab.wait import until_async
from tests.test_control_server import Client, run, with_server


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="ecmpd-mon-", dir="/tmp")  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def event(wan: str, state: str, n: int = 0) -> dict:
    return {"wan": wan, "state": state, "n": n}


def test_a_monitor_gets_every_event_in_order_until_it_closes(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        assert await c.ask({"cmd": "monitor"}) == {"ok": True, "monitor": True}
        await until_async(lambda: len(srv.monitors) == 1, 5)
        srv.publish("wlan1", event("wlan1", "down"))
        srv.publish("wlan2", event("wlan2", "falling"))
        srv.publish("wlan1", event("wlan1", "rising"))
        assert [await c.read() for _ in range(3)] == [
            event("wlan1", "down"), event("wlan2", "falling"), event("wlan1", "rising")]
        c.close()
        await until_async(lambda: len(srv.monitors) == 0, 5)
        srv.publish("wlan1", event("wlan1", "up"))     # nobody listens: nothing happens

    run(with_server, path, body)


def test_a_wan_filter_streams_that_wans_events_only(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        c = await Client.connect(path)
        assert (await c.ask({"cmd": "monitor", "wan": "wlan2"}))["ok"] is True
        await until_async(lambda: len(srv.monitors) == 1, 5)
        for i, wan in enumerate(["wlan1", "wlan2", "wlan1", "wlan2"]):
            srv.publish(wan, event(wan, "down", i))
        assert [await c.read() for _ in range(2)] == [event("wlan2", "down", 1),
                                                      event("wlan2", "down", 3)]
        c.close()

    run(with_server, path, body)


def test_a_monitor_holds_no_request_slot(sockdir):
    """With one slot, a monitor open does not lock `ecmpctl status` out, nor is it
    evicted as the idle connection when a request comes."""
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        m = await Client.connect(path)
        assert (await m.ask({"cmd": "monitor"}))["ok"] is True
        for _ in range(3):
            c = await Client.connect(path)
            assert (await c.ask({"cmd": "status"}))["pid"] == 42
            c.close()
        assert srv.evicted == 0 and len(srv.monitors) == 1
        srv.publish("wlan1", event("wlan1", "up"))
        assert await m.read() == event("wlan1", "up")
        m.close()

    run(with_server, path, body, max_clients=1, idle_timeout=0.5)


def test_a_monitor_outlives_the_idle_timeout(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        m = await Client.connect(path)
        assert (await m.ask({"cmd": "monitor"}))["ok"] is True
        await asyncio.sleep(0.6)            # longer than the idle timeout of requests
        srv.publish("wlan1", event("wlan1", "down"))
        assert await m.read() == event("wlan1", "down")
        m.close()

    run(with_server, path, body, idle_timeout=0.2)


def test_a_client_that_does_not_read_is_dropped_and_never_stalls_publish(sockdir, caplog):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(path)
        slow.sendall(b'{"cmd": "monitor"}\n')        # and never reads
        fast = await Client.connect(path)
        assert (await fast.ask({"cmd": "monitor"}))["ok"] is True
        await until_async(lambda: len(srv.monitors) == 2, 5)
        loop = asyncio.get_running_loop()
        big = "x" * 2000
        sent = 0
        while srv.monitors.dropped == 0:
            assert sent < 10 * monitor.QUEUE + 1000, "the slow client was never dropped"
            started = loop.time()
            srv.publish("wlan1", {"wan": "wlan1", "n": sent, "pad": big})
            assert loop.time() - started < 0.05         # publishing never waits
            # the fast one keeps up: it gets each event, in order
            assert (await fast.read())["n"] == sent
            sent += 1
        assert len(srv.monitors) == 1 and srv.monitors.dropped == 1
        assert sent > monitor.QUEUE
        assert "fell 256 events behind" in caplog.text
        srv.publish("wlan1", {"wan": "wlan1", "n": "after"})
        assert (await fast.read())["n"] == "after"
        fast.close()
        slow.close()

    with caplog.at_level("WARNING", "ecmpd.control_server"):
        run(with_server, path, body)


def test_monitors_beyond_the_limit_are_refused(sockdir, monkeypatch):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        srv.monitors.limit = 2
        held = [await Client.connect(path) for _ in range(2)]
        for c in held:
            assert (await c.ask({"cmd": "monitor"}))["ok"] is True
        extra = await Client.connect(path)
        assert await extra.ask({"cmd": "monitor"}) == {"ok": False,
                                                      "error": monitor.TOO_MANY_MONITORS}
        assert await extra.read() is None                   # and closed
        for c in held:
            c.close()
        await until_async(lambda: len(srv.monitors) == 0, 5)

    run(with_server, path, body)


def test_closing_the_server_ends_the_monitors(sockdir):
    path = os.path.join(sockdir, "ecmpd.sock")

    async def body(srv, daemon):
        m = await Client.connect(path)
        assert (await m.ask({"cmd": "monitor"}))["ok"] is True
        await until_async(lambda: len(srv.monitors) == 1, 5)
        await srv.close()
        assert await m.read() is None

    run(with_server, path, body)
