"""`ecmpctl`: talk to a running ecmpd over its control socket.

    ecmpctl [--socket PATH] [--timeout S] status [-v] [--json] | history [WAN] [--json]
            | monitor [WAN] [--json] | reload | disable [--force] WAN | enable WAN
            | role master|backup|fault

Exit codes: 0 ok, 1 the daemon answered with an error (or no usable answer came),
2 usage error, 3 ecmpd is not running (no socket, or nobody listening on it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import sys
import time

from . import console
from . import control_protocol as proto
from .control_protocol import DEFAULT_SOCKET, RETRY_ERRORS, ROLES
from .history import human_duration
from .statusview import event_line, render_history, render_status

__all__ = ["main", "request", "human_duration", "render_status", "CtlError"]

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE = 16 * 1024 * 1024

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class CtlError(Exception):
    """A failure to report on stderr, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def request(path: str, req: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Send one request to the daemon at `path` and return its decoded answer.

    `timeout` bounds the whole exchange, retries included: when the daemon says its
    control socket is full (`RETRY_ERRORS`), the request is sent again after a short,
    growing pause.
    """
    return _request(path, req, timeout)[0]


def _request(path: str, req: dict, timeout: float,
             stream: bool = False) -> tuple[dict, socket.socket | None, bytes]:
    """`request`; `stream`: after an ok answer the connection stays open: (answer,
    its socket, what was read after the answer line)."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    got = _request_once(path, req, timeout, deadline, stream)
    while got[0].get("ok") is False and got[0].get("error") in RETRY_ERRORS:
        if deadline - time.monotonic() <= pause:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
        try:
            got = _request_once(path, req, timeout, deadline, stream)
        except CtlError as e:
            if e.code == EXIT_NOT_RUNNING:
                raise
            break               # out of time: report that the socket was full
    return got


def _request_once(path: str, req: dict, timeout: float, deadline: float,
                  stream: bool = False) -> tuple[dict, socket.socket | None, bytes]:
    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        return remaining

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            # A blocking connect that waits its turn in the kernel while the daemon's
            # backlog is full (a flood of connections), up to the deadline: SO_SNDTIMEO
            # bounds it.  (With settimeout() the connect would fail at once, EAGAIN.)
            wait = left()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(wait), int(wait % 1 * 1e6) or 1))
            sock.connect(path)
        except (BlockingIOError, socket.timeout):
            raise CtlError(f"ecmpd did not accept the connection on {path} within {timeout:g}s")
        except (FileNotFoundError, ConnectionRefusedError):
            raise CtlError(f"ecmpd is not running (no socket at {path})", EXIT_NOT_RUNNING)
        except PermissionError:
            raise CtlError(f"permission denied on {path} (run as root or as a member of "
                           "the socket's group)")
        except OSError as e:
            raise CtlError(f"cannot connect to {path}: {e.strerror or e}", EXIT_NOT_RUNNING)
        buf = bytearray()
        try:
            sock.settimeout(left())
            sock.sendall(json.dumps(req).encode() + b"\n")
            while b"\n" not in buf:
                sock.settimeout(left())
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_RESPONSE:
                    raise CtlError("answer from ecmpd is too long")
        except socket.timeout:
            raise CtlError(f"no answer from ecmpd within {timeout:g}s")
        except OSError as e:
            raise CtlError(f"lost the connection to ecmpd: {e.strerror or e}")
    except BaseException:
        sock.close()
        raise
    line, sep, rest = bytes(buf).partition(b"\n")
    try:
        if not sep:
            raise CtlError("ecmpd closed the connection without answering")
        resp = json.loads(line)
    except ValueError as e:
        raise CtlError(f"unreadable answer from ecmpd: {e}")
    finally:
        if not stream or not sep:
            sock.close()
    if not isinstance(resp, dict):
        sock.close()
        raise CtlError("unreadable answer from ecmpd: not a JSON object")
    if not stream or resp.get("ok") is not True:
        sock.close()
        return resp, None, b""
    return resp, sock, rest


MAX_TIMEOUT = 86400.0


def _timeout(text: str) -> float:
    """--timeout: seconds, more than 0 and at most a day (a finite number)."""
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not 0 < t <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, got {text!r}")
    return t


def build_parser() -> argparse.ArgumentParser:
    """The `ecmpctl` argument parser."""
    p = argparse.ArgumentParser(prog="ecmpctl", description="Control a running ecmpd.")
    console.add_version(p)
    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the daemon (default {DEFAULT_TIMEOUT:g})")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    st = sub.add_parser("status", help="show WAN states and the route (-v: every detail)")
    st.add_argument("-v", "--verbose", action="store_true",
                    help="targets, gateways, tiers, policies and the daemon's counters")
    st.add_argument("--json", action="store_true", help="print the raw status as JSON")
    for cmd, what in (("history", "list the WAN state changes kept (the last 1000)"),
                      ("monitor", "print WAN state changes as they happen, until Ctrl-C")):
        sp = sub.add_parser(cmd, help=what)
        sp.add_argument("wan", metavar="WAN", nargs="?", help="only this WAN's")
        sp.add_argument("--json", action="store_true",
                        help="JSON (monitor: one object per line)")
    sub.add_parser("reload", help="reread the configuration file")
    for cmd, what in (("disable", "take a WAN out of the route"),
                      ("enable", "give a disabled WAN back to the prober")):
        sp = sub.add_parser(cmd, help=what)
        sp.add_argument("wan", metavar="WAN", help="WAN name from the config")
        if cmd == "disable":
            sp.add_argument("--force", action="store_true",
                            help="also the last WAN in the route (the route then goes)")
    sp = sub.add_parser("role", help="set this router's HA role (keepalived's notify "
                                     "script runs it; needs ha: in the config)")
    sp.add_argument("role", choices=ROLES, metavar="ROLE",
                    help="master, backup or fault (keepalived's state)")
    return p


@console.quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    """Entry point of `ecmpctl`; returns the exit code."""
    args = build_parser().parse_args(argv)
    req = proto.request(args.cmd, getattr(args, "wan", None), getattr(args, "force", False),
                        getattr(args, "role", None))
    try:
        resp, sock, rest = _request(args.socket, req, args.timeout,
                                    stream=args.cmd == proto.STREAMING)
    except CtlError as e:
        print(f"ecmpctl: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:       # Ctrl-C while waiting for the daemon
        return 130
    if resp.get("ok") is not True:
        print(f"ecmpctl: {resp.get('error') or 'ecmpd reported an unspecified error'}",
              file=sys.stderr)
        return EXIT_ERROR
    payload = {k: v for k, v in resp.items() if k != "ok"}
    # a closed pipe (`ecmpctl status | head -1`) ends in console.quiet_on_closed_pipe
    if sock is not None:
        return _monitor(sock, rest, args.json)
    if args.cmd in ("status", "history") and args.json:
        print(json.dumps(payload, indent=2))
    elif args.cmd == "status":
        sys.stdout.write(render_status(payload, time.time(), args.verbose))
    elif args.cmd == "history":
        sys.stdout.write(render_history(payload, time.time()))
    elif isinstance(payload.get("message"), str):
        print(payload["message"])
    elif isinstance(payload.get("wan"), str) and isinstance(payload.get("disabled"), bool):
        print(f"{payload['wan']}: {'disabled' if payload['disabled'] else 'enabled'}")
    sys.stdout.flush()
    return EXIT_OK


def _monitor(sock: socket.socket, rest: bytes, as_json: bool) -> int:
    """Print the events that follow the monitor's answer until ecmpd closes the
    connection (exit 1: it stopped, or this client fell behind), Ctrl-C or a closed
    pipe (exit 0: the reader is done)."""
    sock.settimeout(None)
    buf = rest
    try:
        while True:
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                print(json.dumps(event) if as_json else event_line(event, time.time()),
                      flush=True)
            chunk = sock.recv(65536)
            if not chunk:
                print("ecmpctl: ecmpd closed the monitor connection (it stopped, or this "
                      "monitor did not read its events in time)", file=sys.stderr)
                return EXIT_ERROR
            buf += chunk
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except OSError as e:
        print(f"ecmpctl: lost the connection to ecmpd: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        sock.close()


def _quiet_stdout() -> None:
    """After a closed pipe: stdout goes nowhere, so the interpreter's last flush at exit
    cannot fail again (and print a traceback)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
