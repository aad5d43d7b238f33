"""`ecmpctl`: talk to a running ecmpd over its control socket.

    ecmpctl [--socket PATH] [--timeout S] status [--json] | reload | disable WAN | enable WAN

Exit codes: 0 ok, 1 the daemon answered with an error (or no usable answer came),
2 usage error, 3 ecmpd is not running (no socket, or nobody listening on it).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import struct
import sys
import time
from typing import Any

from . import control_protocol as proto
from .control_protocol import DEFAULT_SOCKET, RETRY_ERRORS

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
    deadline = time.monotonic() + timeout
    pause = 0.02
    resp = _request_once(path, req, timeout, deadline)
    while resp.get("ok") is False and resp.get("error") in RETRY_ERRORS:
        if deadline - time.monotonic() <= pause:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
        try:
            resp = _request_once(path, req, timeout, deadline)
        except CtlError as e:
            if e.code == EXIT_NOT_RUNNING:
                raise
            break               # out of time: report that the socket was full
    return resp


def _request_once(path: str, req: dict, timeout: float, deadline: float) -> dict:
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
    finally:
        sock.close()
    line, sep, _ = bytes(buf).partition(b"\n")
    if not sep:
        raise CtlError("ecmpd closed the connection without answering")
    try:
        resp = json.loads(line)
    except ValueError as e:
        raise CtlError(f"unreadable answer from ecmpd: {e}")
    if not isinstance(resp, dict):
        raise CtlError("unreadable answer from ecmpd: not a JSON object")
    return resp


def _num(v: Any) -> float | None:
    """`v` as a float, or None when it is not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def human_duration(seconds: float, coarse: bool = False) -> str:
    """A short duration: 12s, 3m05s, 2h04m, 3d01h (`coarse`: 12s, 3m, 2h, 3d)."""
    s = int(max(0.0, seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if s >= size:
            if coarse:
                return f"{s // size}{unit}"
            return f"{s // size}{unit}{s % size // subsize:02d}{sub}"
    return f"{s}s"


def _ago(since: Any, now: float) -> str:
    t = _num(since)
    if t is None or t <= 0:
        return "?"
    return f"{human_duration(now - t, coarse=True)} ago"


def _yesno(v: Any) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _ms(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.2f}ms"


def _target_line(addr: str, t: Any) -> str:
    t = t if isinstance(t, dict) else {}
    loss = _num(t.get("loss_pct"))
    loss_s = "-" if loss is None else f"{loss:.3g}%"
    line = (f"    {addr}  rtt {_ms(t.get('rtt_ms'))}  srtt {_ms(t.get('srtt_ms'))}  "
            f"loss {loss_s}")
    return line + (f"  ({t['reason']}: counts as failed)" if t.get("reason") else "")


def _wan_block(name: str, w: Any, now: float, tiered: bool = False) -> list[str]:
    w = w if isinstance(w, dict) else {}
    state = str(w.get("health") or w.get("state") or "unknown").upper()
    if w.get("disabled"):
        state = f"DISABLED (probes say {state})"
    head = f"  state: {state}, since {_ago(w.get('since'), now)}"
    if w.get("reason"):
        head += f" ({w['reason']})"
    out = [f"wan: {name}", head]
    if w.get("last_round"):
        verdict = f" ({w['verdict']})" if w.get("verdict") else ""
        out.append(f"  last round{verdict}: {w['last_round']}")
    if w.get("timeout_ms") is not None:
        out.append(f"  reply timeout: {_ms(w['timeout_ms'])}")
    iface = f"  interface: {w.get('interface', '?')}"
    if w.get("link") == "missing":          # not "carrier no": there is no such link
        iface += " (no such interface)"
    elif "carrier" in w:
        iface += f", carrier {_yesno(w['carrier'])}"
    out.append(iface)
    gw = f"  gateway: {w.get('gateway', '?')}"
    if w.get("gateway_source") == "learned":
        gw = f"  gateway: {w.get('gateway') or 'none yet'} (learned)"
        if (w.get("nexthop") or "").startswith("dev "):
            gw = (f"  gateway: none needed (point-to-point: {w['nexthop']})"
                  if w.get("point_to_point", True) else
                  f"  gateway: none (learned: default {w['nexthop']}, not point-to-point)")
    if w.get("address"):
        gw += f", address {w['address']}"
    out.append(gw)
    tier = ""
    if tiered:
        tier = f", tier {w.get('tier', '?')}"
        if w.get("failback") == "flush":
            tier += " (failback: flush)"
    standby = " (standby)" if w.get("standby") else ""
    out.append(f"  weight: {w.get('weight', '?')}{tier}, active: {_yesno(w.get('active'))}"
               f"{standby}, connections: {w.get('connections', '?')}")
    nat = w.get("nat") if isinstance(w.get("nat"), dict) else {}
    unmasked = [f"{v} {m}" for v, m in nat.items() if m != "masquerade"]
    if unmasked:                                # masquerade, the default, goes unsaid
        out.append(f"  nat: {', '.join(unmasked)}")
    if "mark" in w or "table" in w:
        out.append(f"  mark: {w.get('mark', '?')}, table: {w.get('table', '?')}")
    targets = w.get("targets")
    if isinstance(targets, dict) and targets:
        out.append("  targets (rtt and loss over the window, srtt now):")
        out.extend(_target_line(str(a), t) for a, t in targets.items())
    six = w.get("ipv6")
    if isinstance(six, dict) and w.get("ipv4"):     # dual-stack: IPv6 judged on its own
        state6 = str(six.get("state") or "unknown").upper()
        line = f"  ipv6: state {state6}, since {_ago(six.get('since'), now)}"
        if six.get("reason"):
            line += f" ({six['reason']})"
        out.append(line)
        learned = " (learned)" if six.get("gateway_source") == "learned" else ""
        standby6 = " (standby)" if six.get("standby") else ""
        out.append(f"    gateway: {six.get('gateway') or 'none yet'}{learned}, address "
                   f"{six.get('address') or 'none'}, active: {_yesno(six.get('active'))}"
                   f"{standby6}")
        t6 = six.get("targets")
        if isinstance(t6, dict) and t6:
            out.extend("  " + _target_line(str(a), t) for a, t in t6.items())
    return out


def _route_block(route: Any, name: str = "route") -> list[str]:
    if not isinstance(route, dict):
        return [f"{name}: unknown"]
    if not route.get("present", True):
        return [f"{name}: none (ecmpd has no default route installed)"]
    head = f"{name}: default proto ecmpd"
    if route.get("kept_last"):
        head += " (kept: the last route while all WANs are down)"
    out = [head]
    hops = route.get("nexthops")
    for nh in hops if isinstance(hops, list) else []:
        nh = nh if isinstance(nh, dict) else {}
        weight = f" weight {nh['weight']}" if nh.get("weight") is not None else ""
        via = f"via {nh['gateway']} " if nh.get("gateway") else ""
        onlink = " onlink" if nh.get("onlink") else ""
        out.append(f"  {via}dev {nh.get('interface', '?')}{weight}{onlink}")
    return out


def _policy_block(policies: Any) -> list[str]:
    if not isinstance(policies, list) or not policies:
        return []
    out = ["", "policies (first match wins):"]
    for p in policies:
        p = p if isinstance(p, dict) else {}
        via = p.get("via") if isinstance(p.get("via"), dict) else {}
        now = "; ".join(f"{v.replace('ipv', 'IPv')} via {', '.join(w) or 'none usable'}"
                        for v, w in via.items() if isinstance(w, list))
        out.append(f"  {p.get('position', '?')}. {p.get('name', '?')}: {p.get('match', '?')}"
                   f" -> use {', '.join(map(str, p.get('use') or []))}"
                   f" (fallback {p.get('fallback', '?')}), {p.get('packets', '?')} packets")
        if now:
            out.append(f"     now: {now}")
    return out


def render_status(payload: dict, now: float) -> str:
    """The `ecmpctl status` text for a daemon status payload (`now`: epoch seconds)."""
    head = [f"pid {payload.get('pid', '?')}", f"config {payload.get('config', '?')}"]
    uptime = _num(payload.get("uptime"))
    head.append(f"up {'?' if uptime is None else human_duration(uptime)}")
    head.append(f"hash {payload.get('hash', '?')}")
    lines = ["ecmpd: " + ", ".join(head)]
    wans = payload.get("wans")
    tiered = isinstance(wans, dict) and len({w.get("tier") for w in wans.values()
                                             if isinstance(w, dict)}) > 1
    carrying = payload.get("new_flows_tier")
    if tiered and isinstance(carrying, dict) and carrying:
        def tier(version: str, t: Any) -> str:
            shown = "no WAN usable" if t is None else f"tier {t}"
            return f"{shown} ({version.replace('ipv', 'IPv')})" if len(carrying) > 1 else shown
        lines.append("new flows: " + ", ".join(tier(v, t) for v, t in carrying.items()))
    if isinstance(wans, dict):
        for name, w in wans.items():
            lines.append("")
            lines.extend(_wan_block(str(name), w, now, tiered))
    lines.append("")
    lines.extend(_route_block(payload.get("route")))
    if isinstance(wans, dict) and any(isinstance(w, dict) and w.get("ipv6")
                                      for w in wans.values()):
        lines.extend(_route_block(payload.get("route6"), "route6"))
    lines.extend(_policy_block(payload.get("policies")))
    stats = payload.get("stats")
    if isinstance(stats, dict) and stats:
        lines.append("")
        lines.append("stats: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    warnings = payload.get("warnings")
    if isinstance(warnings, list) and warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in warnings)
    return "\n".join(lines) + "\n"


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
    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the daemon (default {DEFAULT_TIMEOUT:g})")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    st = sub.add_parser("status", help="show WAN states, probes and the route")
    st.add_argument("--json", action="store_true", help="print the raw status as JSON")
    sub.add_parser("reload", help="reread the configuration file")
    for cmd, what in (("disable", "take a WAN out of the route"),
                      ("enable", "give a disabled WAN back to the prober")):
        sp = sub.add_parser(cmd, help=what)
        sp.add_argument("wan", metavar="WAN", help="WAN name from the config")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ecmpctl`; returns the exit code."""
    args = build_parser().parse_args(argv)
    req = proto.request(args.cmd, getattr(args, "wan", None))
    try:
        resp = request(args.socket, req, args.timeout)
    except CtlError as e:
        print(f"ecmpctl: {e}", file=sys.stderr)
        return e.code
    if resp.get("ok") is not True:
        print(f"ecmpctl: {resp.get('error') or 'ecmpd reported an unspecified error'}",
              file=sys.stderr)
        return EXIT_ERROR
    payload = {k: v for k, v in resp.items() if k != "ok"}
    if args.cmd == "status":
        if args.json:
            print(json.dumps(payload, indent=2))
        else:
            sys.stdout.write(render_status(payload, time.time()))
    elif isinstance(payload.get("message"), str):
        print(payload["message"])
    elif isinstance(payload.get("wan"), str) and isinstance(payload.get("disabled"), bool):
        print(f"{payload['wan']}: {'disabled' if payload['disabled'] else 'enabled'}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
