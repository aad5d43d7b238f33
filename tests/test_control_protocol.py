"""control_protocol: the requests and answers both sides share (no root)."""

from __future__ import annotations

import json

from ecmpd import control_protocol as proto
from ecmpd.configmodel import Config
from ecmpd.control_protocol import COMMANDS, validate_request
from ecmpd.ecmpctl_command import build_parser


def test_validate_request_table():
    assert set(COMMANDS) == {"ping", "status", "reload", "disable", "enable", "history",
                             "monitor", "role"}
    assert proto.request("role", role="master") == {"cmd": "role", "role": "master"}
    assert validate_request({"cmd": "role", "role": "master"}) is None
    assert "missing argument" in validate_request({"cmd": "role"})
    assert "must be a str" in validate_request({"cmd": "role", "role": 1})
    assert validate_request({"cmd": "disable", "wan": "a"}) is None
    assert validate_request({"cmd": "disable", "wan": True}) is not None
    assert validate_request({"cmd": "disable", "wan": ""}) is not None
    assert validate_request({"cmd": "status", "wan": "a"}) is not None
    assert validate_request({"cmd": "disable", "wan": "a", "force": True}) is None
    assert validate_request({"cmd": "disable", "wan": "a", "force": 1}) is not None
    assert validate_request({"cmd": "enable", "wan": "a", "force": True}) is not None
    assert proto.request("disable", "a") == {"cmd": "disable", "wan": "a"}
    assert proto.request("disable", "a", True) == {"cmd": "disable", "wan": "a", "force": True}
    assert validate_request(["status"]) is not None
    # history and monitor: a WAN filter or none
    for cmd in ("history", "monitor"):
        assert validate_request({"cmd": cmd}) is None
        assert validate_request({"cmd": cmd, "wan": "a"}) is None
        assert "must be a str" in validate_request({"cmd": cmd, "wan": 5})
        assert "unexpected" in validate_request({"cmd": cmd, "since": 5})
    assert "missing argument" in validate_request({"cmd": "disable"})


def test_every_request_ecmpctl_makes_is_one_the_daemon_takes():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == set(COMMANDS) - {"ping"}          # ping: liveness only
    for cmd in sub.choices:
        req = proto.request(cmd, "wlan1" if "wan" in COMMANDS[cmd] else None,
                            role="backup" if "role" in COMMANDS[cmd] else None)
        assert validate_request(req) is None, req
        assert len(json.dumps(req)) < proto.MAX_REQUEST


def test_answer_lines_and_the_default_socket():
    assert json.loads(proto.encode({"ok": True, "x": 1})) == {"ok": True, "x": 1}
    assert proto.encode({}).endswith(b"\n") and proto.error("no").count(b"\n") == 1
    assert json.loads(proto.error("no")) == {"ok": False, "error": "no"}
    assert Config(lan_interfaces=(), wans=()).control_socket == proto.DEFAULT_SOCKET
    assert proto.RETRY_ERRORS == (proto.TOO_MANY, proto.EVICTED)
