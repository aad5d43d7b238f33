"""The benchmark's baseline: the seed's MikroTik export, translated line by line to Linux,
plus an emulation of RouterOS ``check-gateway=ping``.

Run INSIDE the router's network namespace (``ip netns exec <rtr> python baseline.py
--wan wlan1,10.111.0.1,1 --wan wlan2,10.112.0.1,1``).  It programs the router with
``ip``/``sysctl``/``nft``, prints ``ready <epoch>``, then loops the check-gateway emulation
until SIGTERM/SIGINT, when it removes everything it installed.  Standard library only.

The seed, line by line (WAN i = the i-th ``--wan``; ids 1..n):

``/ ip address add address=... interface=...``
    The lab gives the router these addresses already: not repeated here.
``/ ip route add dst-address=0.0.0.0/0 gateway=10.111.0.1,10.112.0.1 check-gateway=ping``
    ``ip route replace default proto static nexthop via GW1 dev wlan1 weight W1 nexthop
    via GW2 dev wlan2 weight W2`` (the seed's 1:5 trick of repeating a gateway is a
    weight); ``net.ipv4.fib_multipath_hash_policy=0`` (L3: src, dst, the kernel's
    default), like RouterOS's per-src-dst-address ECMP.  A router forwards:
    ``net.ipv4.ip_forward=1``.
    ``check-gateway=ping``: see `GatewayCheck` (every 10 s one ping per gateway; out after
    2 misses, back after 1 answer; 'out' = the multipath route replaced without it).
``/ ip firewall nat add chain=srcnat out-interface=wlanX action=masquerade``
    ``oifname "wlanX" masquerade`` in a nat postrouting chain (priority srcnat).
``/ ip firewall mangle add chain=input in-interface=wlanX action=mark-connection
new-connection-mark=wlanX_conn``
    ``iifname "wlanX" ct mark set X`` in a filter input chain (priority mangle).  Only
    connections TO the router are marked: LAN flows are not pinned to a WAN.
``add chain=output connection-mark=wlanX_conn action=mark-routing new-routing-mark=to_wlanX``
    ``ct mark X meta mark set X`` in a route-type output chain (re-routes on a mark).
``/ ip route add dst-address=0.0.0.0/0 gateway=GWX routing-mark=to_wlanX``
    ``ip rule add fwmark X lookup 100+X`` and ``ip route replace default via GWX dev wlanX
    table 100+X``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

TABLE = "seed"
"""The baseline's nft table (family ip)."""
TABLE_BASE = 100
RULE_BASE = 100
PROTO = "static"


@dataclass(frozen=True)
class SeedWan:
    """One WAN of the seed: interface, gateway, weight; `id` gives its marks and table."""

    interface: str
    gateway: str
    weight: int
    id: int


def parse_wan(text: str, wan_id: int) -> SeedWan:
    """``IFACE,GATEWAY[,WEIGHT]`` -> SeedWan."""
    parts = text.split(",")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"--wan wants IFACE,GATEWAY[,WEIGHT], not {text!r}")
    weight = int(parts[2]) if len(parts) == 3 else 1
    if not 1 <= weight <= 256:
        raise ValueError(f"weight {weight} out of 1..256")
    return SeedWan(parts[0], parts[1], weight, wan_id)


@dataclass
class GatewayCheck:
    """RouterOS check-gateway=ping for one gateway: `misses` consecutive unanswered pings
    take it out, `answers` consecutive answered pings bring it back.  Starts reachable."""

    misses: int = 2
    answers: int = 1
    up: bool = True
    streak: int = 0
    """Consecutive pings counting toward the next change."""

    def observe(self, answered: bool) -> bool:
        """Feed one ping; True when this ping changed `up`."""
        if answered == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.answers if answered else self.misses):
            self.up = answered
            self.streak = 0
            return True
        return False


def nft_script(wans: list[SeedWan]) -> str:
    """The seed's NAT and mangle sections as one nft table (replaced atomically)."""
    nat = "".join(f'    oifname "{w.interface}" masquerade\n' for w in wans)
    mark_in = "".join(f'    iifname "{w.interface}" ct mark set {w.id}\n' for w in wans)
    route_out = "".join(f"    ct mark {w.id} meta mark set {w.id}\n" for w in wans)
    return (f"add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n"
            "  chain srcnat {\n    type nat hook postrouting priority srcnat; policy accept;\n"
            f"{nat}  }}\n"
            "  chain mark_input {\n    type filter hook input priority mangle; policy accept;\n"
            f"{mark_in}  }}\n"
            "  chain mark_output {\n    type route hook output priority mangle; policy accept;\n"
            f"{route_out}  }}\n}}\n")


def main_route(wans: list[SeedWan], active: list[SeedWan]) -> list[str]:
    """The ``ip`` argv for table main's default route over `active` (delete when empty)."""
    if not active:
        return ["ip", "route", "del", "default", "proto", PROTO]
    argv = ["ip", "route", "replace", "default", "proto", PROTO]
    if len(active) == 1:
        return argv + ["via", active[0].gateway, "dev", active[0].interface]
    for w in active:
        argv += ["nexthop", "via", w.gateway, "dev", w.interface, "weight", str(w.weight)]
    return argv


def mark_routing(w: SeedWan) -> list[list[str]]:
    """The routing-mark route of `w` and the rule selecting it."""
    table = str(TABLE_BASE + w.id)
    return [["ip", "route", "replace", "default", "via", w.gateway, "dev", w.interface,
             "table", table],
            ["ip", "rule", "add", "priority", str(RULE_BASE + w.id), "fwmark", str(w.id),
             "lookup", table]]


def cleanup_commands(wans: list[SeedWan]) -> list[list[str]]:
    """Everything `program` installs, removed (each may fail harmlessly)."""
    cmds = [["ip", "route", "del", "default", "proto", PROTO],
            ["nft", f"add table ip {TABLE}; delete table ip {TABLE}"]]
    for w in wans:
        cmds.append(["ip", "rule", "del", "priority", str(RULE_BASE + w.id)])
        cmds.append(["ip", "route", "flush", "table", str(TABLE_BASE + w.id)])
    return cmds


# ------------------------------------------------------------------ doing it


def say(*words: object) -> None:
    print(*words, flush=True)


def sh(argv: list[str], check: bool = True, input: str | None = None) -> bool:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.returncode == 0


SYSCTLS = {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": "0"}
"""A router forwards; RouterOS's ECMP hashes (src, dst) like Linux's policy 0 (L3)."""


def _sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def program(wans: list[SeedWan], hash_policy: int = 0) -> dict[str, str]:
    """Install the seed (`hash_policy`: ``fib_multipath_hash_policy``, 0 = the seed's L3);
    returns the sysctl values it replaced."""
    before = {}
    sysctls = dict(SYSCTLS, **{"net.ipv4.fib_multipath_hash_policy": str(hash_policy)})
    for name, value in sysctls.items():
        with open(_sysctl_path(name)) as f:
            before[name] = f.read().strip()
        sh(["sysctl", "-q", "-w", f"{name}={value}"])
    sh(["nft", "-f", "-"], input=nft_script(wans))
    for w in wans:
        for argv in mark_routing(w):
            sh(argv)
    sh(main_route(wans, wans))
    return before


def ping_all(wans: list[SeedWan], timeout: int) -> dict[str, bool]:
    """One ``ping -c1 -W<timeout>`` per gateway, all at once; interface -> answered."""
    procs = {w.interface: subprocess.Popen(
        ["ping", "-n", "-q", "-c1", f"-W{timeout}", w.gateway],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in wans}
    return {name: p.wait() == 0 for name, p in procs.items()}


class Stop(Exception):
    """SIGTERM/SIGINT arrived."""


def _stop(signum: int, frame: object) -> None:
    raise Stop()


def check_loop(wans: list[SeedWan], interval: float, first_delay: float, timeout: int,
               misses: int, answers: int) -> None:
    """Ping every gateway every `interval` s (first after `first_delay` s) forever."""
    checks = {w.interface: GatewayCheck(misses, answers) for w in wans}
    start = time.time() + first_delay
    say(f"schedule {start:.6f} {interval}")
    k = 0
    while True:
        at = start + k * interval
        if at > time.time():
            time.sleep(at - time.time())
        answered = ping_all(wans, timeout)
        changed = [name for name, ok in answered.items() if checks[name].observe(ok)]
        now = time.time()
        say("ping", f"{at:.6f}", " ".join(f"{n}={'ok' if ok else 'miss'}"
                                          for n, ok in answered.items()))
        if changed:
            active = [w for w in wans if checks[w.interface].up]
            sh(main_route(wans, active), check=False)
            for name in changed:
                say("in" if checks[name].up else "out", name, f"{now:.6f}")
        k = max(k + 1, int((time.time() - start) // interval) + 1)  # never two per slot


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wan", action="append", required=True, help="IFACE,GATEWAY[,WEIGHT]")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between pings")
    p.add_argument("--first-delay", type=float, default=0.0,
                   help="seconds from ready to the first ping (the check's phase)")
    p.add_argument("--timeout", type=int, default=1, help="ping -W seconds")
    p.add_argument("--misses", type=int, default=2)
    p.add_argument("--answers", type=int, default=1)
    p.add_argument("--hash-policy", type=int, choices=(0, 1), default=0,
                   help="fib_multipath_hash_policy: 0 = L3, the seed's (default); 1 = L4, "
                        "for the bench's load, which places one TCP stream per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    wans = [parse_wan(text, i) for i, text in enumerate(args.wan, start=1)]
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    before: dict[str, str] = {}
    try:
        before = program(wans, args.hash_policy)
        say(f"ready {time.time():.6f}")
        check_loop(wans, args.interval, args.first_delay, args.timeout, args.misses,
                   args.answers)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for cmd in cleanup_commands(wans):
            sh(cmd, check=False)
        for name, value in before.items():
            sh(["sysctl", "-q", "-w", f"{name}={value}"], check=False)
        say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
