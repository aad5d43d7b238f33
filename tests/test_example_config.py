"""config/ecmpd.example.yaml, the installed example for a real router: it passes `ecmpd
--check`, probes beyond the gateway the public hosts its comments name, and the probe
traffic its comments state follows from the prober's defaults (no root)."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

from ecmpd import icmpecho, prober
from ecmpd.config import load_config
from ecmpd.configmodel import GATEWAY_TARGET, ProbeSettings
from ecmpd.state import project

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ecmpd.example.yaml"
TEXT = EXAMPLE.read_text()
DEFAULTS = ProbeSettings()


def comments() -> str:
    """The comment text, one line each, '#' and indentation dropped, joined by spaces."""
    return " ".join(ln.split("#", 1)[1].strip() for ln in TEXT.splitlines() if "#" in ln)


def test_the_example_passes_check() -> None:
    r = subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(EXAMPLE),
                        "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "ok (2 WANs: cable, dsl)" in r.stdout


def test_the_readme_installs_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "install -D -m 0644 config/ecmpd.example.yaml /etc/ecmpd/ecmpd.yaml" in readme


def test_targets_beyond_the_gateway_of_two_operators_per_ip_version() -> None:
    cfg = load_config(str(EXAMPLE))
    targets = cfg.wans[0].probe.targets
    assert targets[0] == GATEWAY_TARGET
    for family, want in ((4, {"1.1.1.1", "9.9.9.9"}), (6, {"2606:4700:4700::1111",
                                                           "2620:fe::fe"})):
        beyond = {t for t in targets[1:] if ip_address(t).version == family}
        assert beyond == want and all(ip_address(t).is_global for t in beyond)
        assert all(t in comments() for t in want)
        # a majority of gateway + two: a dead upstream fails, one silent target does not
        one = project(cfg, family).wans[0].probe
        gateway = "192.0.2.1" if family == 4 else "fe80::1"
        assert len(one.resolved_targets(gateway)) == 3 and one.resolved_quorum(gateway) == 2
    assert all(w.probe == cfg.wans[0].probe for w in cfg.wans)
    assert "anycast DNS resolvers of two different operators" in comments()


def test_the_stated_probe_traffic_follows_from_the_defaults() -> None:
    """PROBE-TRAFFIC: the figures the comments state, from the prober's own numbers."""
    text = comments()
    assert "PROBE-TRAFFIC" in text
    cfg = load_config(str(EXAMPLE))
    assert all(w.probe == DEFAULTS.__class__(targets=w.probe.targets) for w in cfg.wans)
    rounds = 1 / DEFAULTS.interval
    fast, slow = rounds, rounds * DEFAULTS.count            # the 2nd request spared or not
    spacing_ms = round(prober.spacing(DEFAULTS) * 1000)
    followups = (DEFAULTS.down - 1) * prober.FOLLOWUP_COPIES
    assert f"{rounds:g} rounds a second (interval {DEFAULTS.interval * 1000:g}ms)" in text
    assert f"after {DEFAULTS.down} failed rounds" in text and f"after {DEFAULTS.up} good" in text
    assert f"{fast:g} echo requests/s (1 per round) while it answers within " \
        f"{spacing_ms} ms" in text
    assert f"{slow:g} echo requests/s (count: {DEFAULTS.count} per round, {spacing_ms} ms " \
        f"apart)" in text
    assert f"up to {followups} more right after a failed round ({DEFAULTS.down - 1} fast " \
        f"rounds of {prober.FOLLOWUP_COPIES})" in text
    rested = rounds / (prober.REST_ROUNDS + 1)         # an IPv6 prober resting on IPv4
    assert f"gets {rested:g} request/s while that WAN's IPv4 targets answer promptly " \
        f"({prober.REST_ROUNDS} rounds in {prober.REST_ROUNDS + 1} rest on them)" in text
    size = 20 + 8 + len(icmpecho.PAYLOAD)
    assert f"A request is {size} bytes (IPv6: {size + 20}): " \
        f"{size * 8 * fast / 1000:.1f} kbit/s at {fast:g}/s" in text
    wans = len(cfg.wans)
    assert f"1.1.1.1 receives {wans * fast:g} to {wans * slow:g} requests/s" in text
    six = [w for w in cfg.wans if 6 in w.families]
    assert f"2606:4700:4700::1111 ({', '.join(w.name for w in six)} only) " \
        f"{len(six) * rested:g} to {len(six) * slow:g}" in text
    v4 = sum(len(w.probe.family_targets(4)) for w in cfg.wans if 4 in w.families)
    v6 = sum(len(w.probe.family_targets(6)) for w in six)
    assert all(4 in w.families for w in six)           # every IPv6 stream may rest
    low, high = v4 * fast + v6 * rested, (v4 + v6) * slow
    assert f"all targets together: {v4} IPv4 streams (3 per WAN) x {fast:g} to {slow:g} and " \
        f"{v6} IPv6 ones x {rested:g} to {slow:g} = {low:g} to {high:g} requests/s" in text
