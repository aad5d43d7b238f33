"""The demo: the seed's two-WAN router in network namespaces, ecmpd running on
config/ecmpd.yaml, traffic over modem-like lines (rate-limited, 1 s buffers), both lines
saturated, a dead ISP and its recovery — then everything torn down.

    sudo ./dev demo                      # the seed topology and config/ecmpd.yaml
    python -m lab.demo --config FILE     # another config for the same lab interfaces

Only the lab's own namespaces are touched; all traffic goes to lab addresses.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

from lab import Lab, fault_offset, outage, seed_spec
from lab.lines import Line
from lab.runner import Ecmpd

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "ecmpd.yaml"
LINES = (Line(20, 5, buffer_s=1.0), Line(40, 10, buffer_s=1.0))
"""The seed's two lines as DSL/cable: Mbit/s down and up, 1 s of modem buffer."""
SATURATE_S = 12


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n[{n}] {text}")


def indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line if line else line for line in text.rstrip().splitlines())


def split(results, wans) -> str:
    count = Counter(r.wan for r in results)
    return ", ".join(f"{w} {count.get(w, 0)}" for w in wans)


def events_since(log: str, mark: int) -> list[str]:
    """ecmpd's log lines about state changes written after offset `mark`."""
    keep = re.compile(r"->|conntrack|keeping|disabled|enabled")
    return [line for line in log[mark:].splitlines() if keep.search(line)]


def run(config: Path) -> int:
    spec = seed_spec()
    wans = [w.name for w in spec.wans]
    say("ecmpd demo: the MikroTik two-WAN recipe (shared/seed) rebuilt on Linux, in network namespaces")
    say(f"  LAN client {spec.client_address} -- router [{spec.lan_interface} {spec.lan_address}"
        + "".join(f", {w.name} {w.address}" for w in spec.wans) + "]")
    say("  " + "; ".join(f"ISP of {w.name}: gateway {w.gateway}" for w in spec.wans)
        + f"; internet server {spec.server_addresses[0]}")
    say("  The ISPs drop packets whose source is not their customer's subnet (BCP38), so a wrong")
    say("  source address or a reply sent out the wrong WAN fails visibly.")
    with Lab(spec, prefix=None) as lab:
        say(f"  Lab namespaces: {', '.join(lab.namespaces)}")
        for w, line in zip(spec.wans, LINES):
            lab.shape(w.name, line)
        say("  Lines: " + "; ".join(f"{w.name} {line.down_mbit:g}/{line.up_mbit:g} Mbit/s with "
                                   f"{line.buffer_s:g} s of modem buffer"
                                   for w, line in zip(spec.wans, LINES)))
        d = Ecmpd(lab, config.read_text())
        try:
            return scenario(lab, d, config, wans)
        finally:
            d.stop()
            say("\nStopping ecmpd (it removes its routes, rules and nft table) and tearing the lab down.")


def scenario(lab: Lab, d: Ecmpd, config: Path, wans: list[str]) -> int:
    step(1, f"Starting ecmpd on {config} in the router namespace")
    t0 = time.monotonic()
    d.start()
    d.wait_states({w: "up" for w in wans})
    weights = {name: w["weight"] for name, w in d.status()["wans"].items()}
    say(f"    all WANs UP and in the route {time.monotonic() - t0:.1f} s after start")
    say("    kernel route:\n" + indent(d.route(), "      "))

    step(2, "ecmpctl status")
    say(indent(d.ctl("status").stdout))

    lab.start_servers()
    step(3, "600 new TCP connections from the LAN client to the internet server, over "
            "IPv4 and over IPv6")
    total = sum(weights.values())
    for version, server in (("IPv4", None), ("IPv6", lab.server6)):
        res = lab.new_flows(600, timeout=3.0, server=server)
        count = Counter(r.wan for r in res)
        for w in wans:
            say(f"    {version} {w}: {100 * count.get(w, 0) / len(res):5.1f}% of connections"
                f"  (weight {weights[w]} of {total} = {100 * weights[w] / total:.1f}%)")
        say(f"    {version} failed: {sum(not r.ok for r in res)}")

    step(4, f"Both lines saturated for {SATURATE_S} s (iperf3 over IPv4 and IPv6, download "
            f"and upload at once)")
    mark = len(d.log())
    # a dual-stack LAN fills the lines with both versions
    loads = [lab.load(seconds=SATURATE_S, streams_per_wan=1),
             lab.load(seconds=SATURATE_S, streams_per_wan=1, family=6)]
    worst: dict[str, tuple[float, str]] = {}
    end = time.monotonic() + SATURATE_S
    while time.monotonic() < end:
        for name, w in d.status()["wans"].items():
            srtt = max((t["srtt_ms"] or 0) for t in w["targets"].values())
            if srtt >= worst.get(name, (0.0, ""))[0]:
                worst[name] = (srtt, w["last_round"] or "")
        time.sleep(0.5)
    streams = [r for load in loads for r in load.wait(timeout=60)]
    for name in wans:
        srtt, last = worst.get(name, (0.0, ""))
        say(f"    {name}: probe RTT up to {srtt:.0f} ms; the round then: {last}")
    left = [line for line in events_since(d.log(), mark) if "leaves the route" in line]
    say(f"    WANs that left the route: {len(left)}; transfers broken: "
        f"{sum(s.broken for s in streams)} of {len(streams)}"
        + ("" if not left else "\n" + indent("\n".join(left), "      ")))
    say("    (the reply timeout follows the RTT, late replies and traffic from beyond the gateway"
        " prove life:\n     a prober with a fixed 250 ms timeout takes a full line for a dead one)")

    step(5, "60 long-lived connections (one byte every 100 ms, echoed)")
    held = lab.hold_flows(60, byte_interval=0.1)
    held.wait_established()
    say("    established; pinned to their WAN by conntrack marks")

    victim = wans[0]
    step(6, f"ISP of {victim} dies (goes silent) while a new connection starts every 20 ms")
    mark = len(d.log())
    run_ = lab.start_flows(250, interval=0.02, timeout=1.0)
    run6 = lab.start_flows(250, interval=0.02, timeout=1.0, server=lab.server6)
    time.sleep(0.5)
    fault_at = time.time()
    lab.fault(victim, "dead")
    d.wait_states({victim: "down"}, timeout=15)
    d.wait_states({victim: "down"}, timeout=15, family=6)
    flows, flows6 = run_.result(), run6.result()
    say("    ecmpd's events:\n" + indent("\n".join(events_since(d.log(), mark)), "      "))
    for version, fl in (("IPv4", flows), ("IPv6", flows6)):
        out = outage(fl, fault_offset(fl, fault_at))
        failed = [r for r in fl if not r.ok]
        say(f"    {version} outage seen by new connections: {out:.2f} s "
            f"({len(failed)} of {len(fl)} failed; budget 1.0 s; the seed's check-gateway "
            f"needs ~20 s)")
    say(f"    new connections after the failover went to: {split([r for r in flows if r.ok and r.t > 1.5], wans)}")
    say(indent(d.ctl("status").stdout))

    step(7, f"ISP of {victim} comes back")
    mark = len(d.log())
    t0 = time.monotonic()
    lab.heal(victim)
    d.wait_states({victim: "up"}, timeout=15)
    d.wait_states({victim: "up"}, timeout=15, family=6)
    say(f"    {victim} back in the route {time.monotonic() - t0:.1f} s after the heal"
        " (it has to answer several probe rounds in a row first: no flapping)")
    say(indent("\n".join(events_since(d.log(), mark)), "      "))
    res = lab.new_flows(300, timeout=3.0)
    say(f"    300 new connections: {split(res, wans)}, failed {sum(not r.ok for r in res)}")

    step(8, "The long-lived connections")
    results = held.stop()
    for w in wans:
        mine = [r for r in results if r.wan == w]
        broken = sum(r.broken for r in mine)
        note = " (cut on purpose: its conntrack entries were flushed so clients reconnect at once)" \
            if w == victim and broken else ""
        say(f"    {w}: {len(mine) - broken} of {len(mine)} unbroken{note}")
    healthy_broken = sum(r.broken for r in results if r.wan != victim)
    say("\n" + ("Healthy WANs' connections: none broken." if healthy_broken == 0 else
                f"WARNING: {healthy_broken} connections on healthy WANs broke."))
    return 0 if healthy_broken == 0 and not any(not r.ok for r in res) and not left \
        and not any(s.broken for s in streams) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecmpd-demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="ecmpd config for the seed lab (interfaces Local, wlan1, wlan2)")
    args = p.parse_args(argv)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
