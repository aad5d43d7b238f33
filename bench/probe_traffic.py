"""Probe traffic a target receives at the default probe settings, measured: echo
requests per second per target per WAN, on a line answering fast and on one whose RTT
exceeds the spacing of a round's requests (20 ms), and in the second after a failure.

    sudo PYTHONPATH=. .venv/bin/python -m bench.probe_traffic [--seconds 10]

Builds the seed lab (`lab.Lab`, prefix ``ept`` + random; always torn down), runs the
real ecmpd with `targets: [gateway]` (dual-stack WANs) and every other probe key at
its default, and reads the ISP namespace's `IcmpInEchos` and `Icmp6InEchos` (nstat)
over `--seconds`: that namespace holds wlan1's gateways, so each counts what one
target gets from one WAN.  The slow row
adds 30 ms of delay (netem) on the ISP's side of the line.  The failure row makes the
ISP drop every frame and counts the requests sent to the gateway until the WAN is
DOWN (the router's own OutEchos towards it: the ISP receives none).
config/ecmpd.example.yaml states these figures (PROBE-TRAFFIC).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import tempfile
import time

from lab import Lab, make_spec
from lab.runner import Ecmpd, config_for


def echoes(lab: Lab, ns: str, counter: str = "IcmpInEchos") -> int:
    """The namespace's ICMP counter (nstat's absolute value)."""
    out = lab.run(ns, "nstat", "-az", "--json", counter).stdout

    return int(next(iter(json.loads(out).values())).get(counter, 0))


def rate(lab: Lab, ns: str, seconds: float, counter: str = "IcmpInEchos") -> float:
    before, t0 = echoes(lab, ns, counter), time.monotonic()
    time.sleep(seconds)
    return (echoes(lab, ns, counter) - before) / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    prefix = "ept" + "".join(random.choices(string.ascii_lowercase, k=4))
    lab = Lab(make_spec(2, ["wlan1", "wlan2"]), prefix=prefix).build()
    try:
        d = Ecmpd(lab, config_for(lab, ipv6=True), workdir=tempfile.mkdtemp(prefix="ecmpd-pt-"))
        d.start()
        try:
            d.wait_states({"wlan1": "up", "wlan2": "up"})
            isp = lab.ns_isp("wlan1")
            fast = rate(lab, isp, args.seconds)
            fast6 = rate(lab, isp, args.seconds, "Icmp6InEchos")
            slow = None
            if lab.run(isp, "tc", "qdisc", "add", "dev", "cust", "root", "netem", "delay",
                       "30ms", check=False).returncode == 0:
                d.wait_for(lambda s: (s["wans"]["wlan1"]["targets"].popitem()[1]["srtt_ms"]
                                      or 0) > 25, what="srtt over 25 ms")
                slow = rate(lab, isp, args.seconds)
                lab.run(isp, "tc", "qdisc", "del", "dev", "cust", "root")
                time.sleep(2)
            out0 = echoes(lab, lab.ns_router, "IcmpOutEchos")
            t0 = time.monotonic()
            lab.fault("wlan1", "dead")
            d.wait_states({"wlan1": "down"})
            took = time.monotonic() - t0
            # wlan2's prober sends too: its one-second share is taken off
            sent = echoes(lab, lab.ns_router, "IcmpOutEchos") - out0
            print(f"# ecmpd probe traffic at the default probe settings ({args.seconds:g} s "
                  f"per row; one target, one WAN)")
            print(f"fast line (RTT < 1 ms):  {fast:.1f} echo requests/s (IPv4), "
                  f"{fast6:.1f} (IPv6, resting on the WAN's IPv4 probes)")
            print("slow line (RTT ~30 ms):  " + (f"{slow:.1f} echo requests/s" if slow is not None
                                                 else "not measured: no netem on this kernel"))
            print(f"failure: {sent} IPv4 requests by both WANs' probers in the {took:.2f} s "
                  f"until wlan1 was DOWN (wlan2's share at the fast rate: "
                  f"{fast * took:.1f})")
        finally:
            d.stop()
    finally:
        lab.teardown()


if __name__ == "__main__":
    main()
