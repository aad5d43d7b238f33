"""`ecmpd` command line: --check exit codes and messages, no tracebacks, --socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecmpd import ecmpd_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ecmpd.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_accepts_the_example():
    p = run("--config", str(EXAMPLE), "--check")
    assert p.returncode == 0, p.stderr
    assert "ok (2 WANs: wlan1, wlan2)" in p.stdout


def test_check_reports_every_problem_with_file_line_and_key(tmp_path):
    bad = tmp_path / "ecmpd.yaml"
    bad.write_text(EXAMPLE.read_text().replace("weight: 5", "weight: 0")
                   .replace("    weight: 1\n", "    wieght: 1\n"))
    p = run("--config", str(bad), "--check")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert any(":" in l and "wans.wlan2.weight: must be an integer from 1 to 256, got 0" in l
               for l in lines), lines
    assert any("wans.wlan1.wieght: unknown key (did you mean 'weight'?)" in l for l in lines), lines
    assert all(l.startswith(str(bad) + ":") for l in lines), lines
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("text", ["", "[1, 2", "wans: {}\n", "lan: 3\n", "\x00\x01"])
def test_no_traceback_for_any_config_mistake(tmp_path, text):
    bad = tmp_path / "x.yaml"
    bad.write_text(text)
    p = run("--config", str(bad), "--check")
    assert p.returncode == 2
    assert p.stderr.strip() and "Traceback" not in p.stderr


def test_missing_file_is_one_clean_line(tmp_path):
    p = run("--config", str(tmp_path / "nope.yaml"), "--check")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "cannot read" in p.stderr


def test_invalid_config_never_starts_the_daemon(tmp_path, monkeypatch):
    bad = tmp_path / "x.yaml"
    bad.write_text("wans: {}\n")
    started = []
    monkeypatch.setattr("ecmpd.daemon.Daemon.run", lambda self: started.append(1))
    assert ecmpd_command.main(["--config", str(bad)]) == 2
    assert not started


def test_socket_option_overrides_the_config(tmp_path):
    args = ecmpd_command.parser().parse_args(["--config", str(EXAMPLE), "--socket", str(tmp_path / "s")])
    cfg = ecmpd_command.load(args)
    assert cfg is not None and cfg.control_socket == str(tmp_path / "s")
    args = ecmpd_command.parser().parse_args(["--config", str(EXAMPLE)])
    assert ecmpd_command.load(args).control_socket == "/run/ecmpd/ecmpd.sock"


def test_usage_errors_exit_2():
    p = run("--log-level", "loud")
    assert p.returncode == 2 and "usage:" in p.stderr


def test_log_level_notice_is_accepted():
    assert ecmpd_command.parser().parse_args(["--log-level", "notice"]).log_level == "notice"


# ---- --dry-run: the plan from the daemon's own decision ------------------------------

from ecmpd.config import parse_config  # noqa: E402
from ecmpd.desired import Nexthop, RouteSpec, balance_table, metric_of  # noqa: E402
from ecmpd.state import Link  # noqa: E402

PLAN_CFG = parse_config("lan: {interfaces: [lan0]}\nwans:\n"
                        "  a: {interface: eth1, gateway: 192.0.2.1, weight: 1}\n"
                        "  b: {interface: eth2, gateway: 198.51.100.1, weight: 5}\n", "x")
LINKS = {"lan0": Link(3, True, True), "eth1": Link(11, True, True),
         "eth2": Link(12, True, True)}
ADDRS = {11: (("192.0.2.2", 24),), 12: (("198.51.100.2", 24),)}


def plan(links=LINKS, addrs=ADDRS, local=frozenset(), disabled=(), main=None, cfg=PLAN_CFG):
    return ecmpd_command.plan(cfg, links, addrs, {}, local, disabled, main)


def multipath(lines):
    return [line for line in lines if "nexthop" in line]


def test_plan_routes_every_wan_whose_first_rounds_pass():
    lines = plan()
    assert "# a: joins once its first probe round passes" in lines
    [route] = multipath(lines)
    assert "nexthop via 192.0.2.1 dev eth1 weight 1" in route
    assert "nexthop via 198.51.100.1 dev eth2 weight 5" in route


def test_plan_leaves_out_a_wan_the_daemon_would_not_route():
    # carrier but no address: the old plan (carrier = active) routed it
    [route] = multipath(plan(addrs={11: ADDRS[11]}))
    assert "192.0.2.1" in route and "198.51.100.1" not in route
    assert "# b: out: no IPv4 address" in plan(addrs={11: ADDRS[11]})
    # administratively down, disabled, or probing only the router's own address
    lines = plan(links={**LINKS, "eth2": Link(12, False, False)})
    assert "# b: out: no carrier" in lines and "198.51.100.1 dev" not in multipath(lines)[0]
    lines = plan(disabled={"b"})
    assert "# b: out: disabled by the administrator" in lines
    assert "198.51.100.1" not in multipath(lines)[0]
    lines = plan(local=frozenset({"198.51.100.1"}))
    assert ("# b: out: its probe targets 198.51.100.1 are this router's own addresses"
            in lines)


def test_plan_names_a_missing_lan_interface_and_wants_no_sysctl_for_it():
    assert not any("lan0" in line for line in plan() if line.startswith("#"))
    assert "sysctl net.ipv4.conf.lan0.forwarding = 1" in plan()
    lines = plan(links={k: v for k, v in LINKS.items() if k != "lan0"})
    assert lines[0] == ("# LAN interface lan0 (lan.interfaces[0]) does not exist: nothing "
                        "from it is forwarded")
    assert not any("conf.lan0." in line for line in lines)
    assert len(multipath(lines)) == 1                   # the WANs are planned as before


def test_plan_without_a_usable_wan_keeps_the_kernels_route_or_has_none():
    down = {**LINKS, "eth1": Link(11, True, False), "eth2": Link(12, True, False)}
    assert multipath(plan(links=down)) == []
    kept = RouteSpec(balance_table(PLAN_CFG), (Nexthop("192.0.2.1", 11, 1),
                                               Nexthop("198.51.100.1", 12, 5)), 0)
    lines = plan(links=down, main=kept)
    assert "# no WAN is usable: ecmpd's route in the kernel is kept" in lines
    assert not any("IPv6" in line for line in lines)          # an IPv4-only config
    assert len(multipath(lines)) == 1
    assert not any("is kept" in line for line in plan(links=down))   # nothing to keep


def test_plan_adopts_the_route_found_and_leaves_out_wans_missing_from_it():
    found = RouteSpec(balance_table(PLAN_CFG), (Nexthop("192.0.2.1", 11, 1),), 0)
    lines = plan(main=found)
    assert "# a: adopted from ecmpd's route in the kernel" in lines
    assert "# b: out: not in the route found at start" in lines
    [route] = multipath(lines)
    assert "198.51.100.1" not in route


def test_dry_run_reads_only_and_needs_no_privilege():
    """In this namespace (its links are only read), without any capability when run as
    root."""
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] \
        if os.geteuid() == 0 and shutil.which("setpriv") else []
    p = subprocess.run([*drop, sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(EXAMPLE),
                        "--dry-run"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "rule 1512: from all lookup 1000" in p.stdout
    assert "# nft table inet ecmpd (one atomic transaction, as `nft -f` takes it):" in p.stdout


DUAL_CFG = parse_config("lan: {interfaces: [lan0]}\nwans:\n"
                        "  a: {interface: eth1, gateway: 192.0.2.1, gateway6: 'fe80::1',"
                        " weight: 1}\n"
                        "  b: {interface: eth2, gateway: 198.51.100.1, weight: 5}\n", "x")
ADDRS6 = {11: (("2001:db8:1::2", 64),)}


def plan6(links=LINKS, addrs6=ADDRS6, main=None, main6=None):
    return ecmpd_command.plan(DUAL_CFG, links, ADDRS, {}, frozenset(), (), main, addrs6, {},
                              main6)


def test_plan_of_a_dual_stack_config_routes_each_version_apart():
    lines = plan6()
    assert "# a IPv4: joins once its first probe round passes" in lines
    assert "# a IPv6: joins once its first probe round passes" in lines
    assert not any(line.startswith("# b IPv6") for line in lines)     # b: IPv4 only
    v4, v6 = multipath(lines)
    assert "nexthop via 192.0.2.1 dev eth1 weight 1" in v4
    assert "nexthop via 198.51.100.1 dev eth2 weight 5" in v4 and not v4.startswith("-6")
    assert v6.startswith("-6 ") and "nexthop via fe80::1 dev eth1" in v6
    assert "198.51.100.1" not in v6 and "192.0.2.1" not in v6
    # no IPv6 address on eth1: a is out of the IPv6 route only
    lines = plan6(addrs6={})
    assert "# a IPv6: out: no IPv6 address" in lines
    [v4] = multipath(lines)
    assert "192.0.2.1" in v4 and not v4.startswith("-6")


def test_plan_lists_each_policy_sets_rule_and_table_of_each_version():
    from dataclasses import replace
    from ecmpd.configmodel import Policy
    cfg = replace(DUAL_CFG, policies=(Policy(1, ("a", "b"), 255, name="voip", fallback="drop"),
                                      Policy(2, ("b",), 254, name="bulk")))
    lines = ecmpd_command.plan(cfg, LINKS, ADDRS, {}, frozenset(), (), None, ADDRS6, {}, None)
    assert "# IPv4 policy set 255 (voip): use a, b, fallback drop; mark 0xff0000, table 1255: " \
           "its WANs" in lines
    # b carries no IPv6: bulk's IPv6 set is empty, voip's is a alone
    assert "# IPv6 policy set 254 (bulk): use b, fallback balance; mark 0xfe0000, table " \
           "1254: balanced like unmatched traffic: no usable WAN" in lines
    assert "route default table 1255 metric 0 nexthop via 192.0.2.1 dev eth1 weight 1 " \
           "nexthop via 198.51.100.1 dev eth2 weight 5" in lines
    assert "route default table 1254 via 198.51.100.1 dev eth2" in lines
    assert "-6 route default table 1255 via fe80::1 dev eth1" in lines
    assert "-6 route unreachable default table 1255 metric 4294967295" in lines
    assert not any(line.startswith("-6 route default table 1254") for line in lines)
    for v in ("", "-6 "):
        assert f"{v}rule 1255: from all fwmark 0xff0000/0xff0000 lookup 1255" in lines
        assert f"{v}rule 1254: from all fwmark 0xfe0000/0xff0000 lookup 1254" in lines


def test_plan_keeps_each_versions_kernel_route_apart():
    down = {**LINKS, "eth1": Link(11, True, False), "eth2": Link(12, True, False)}
    kept6 = RouteSpec(balance_table(DUAL_CFG), (Nexthop("fe80::1", 11, 1),
                                                Nexthop("fe80::2", 12, 1)), metric_of(0, 6))
    lines = plan6(links=down, main6=kept6)
    assert "# no IPv6 WAN is usable: ecmpd's route in the kernel is kept" in lines
    assert not any("no IPv4 WAN is usable" in line for line in lines)  # none to keep
    [v6] = multipath(lines)
    assert v6.startswith("-6 ") and "fe80::2" in v6


# ---- what stops the daemon before it starts: privilege, libnftables ------------------

def status_file(tmp_path, caps: int) -> str:
    f = tmp_path / "status"
    f.write_text(f"Name:\tecmpd\nCapInh:\t0000000000000000\nCapEff:\t{caps:016x}\n")
    return str(f)


def test_net_admin_is_read_from_the_effective_capabilities(tmp_path):
    assert ecmpd_command.has_net_admin(status_file(tmp_path, 1 << 12))
    assert ecmpd_command.has_net_admin(status_file(tmp_path, 0x1ffffffffff))
    assert not ecmpd_command.has_net_admin(status_file(tmp_path, 0x1ffffffffff & ~(1 << 12)))
    assert not ecmpd_command.has_net_admin(status_file(tmp_path, 0))


def test_without_net_admin_the_daemon_refuses_in_one_line(monkeypatch, capsys):
    started = []
    monkeypatch.setattr("ecmpd.daemon.Daemon.run", lambda self: started.append(1))
    monkeypatch.setattr(ecmpd_command, "has_net_admin", lambda: False)
    assert ecmpd_command.main(["--config", str(EXAMPLE)]) == 1
    assert capsys.readouterr().err == ecmpd_command.NOT_PRIVILEGED + "\n"
    assert not started
    # --check and --dry-run need no privilege
    assert ecmpd_command.main(["--config", str(EXAMPLE), "--check"]) == 0


@pytest.mark.parametrize("nftables", [None, "broken"])
def test_without_libnftables_the_daemon_names_the_debian_package(monkeypatch, capsys,
                                                                 nftables):
    """The module missing (ImportError) or present without libnftables.so.1 (OSError)."""
    if nftables == "broken":
        class Nftables:
            def __init__(self):
                raise OSError("libnftables.so.1: cannot open shared object file")
        nftables = type(sys)("nftables")
        nftables.Nftables = Nftables
    monkeypatch.setitem(sys.modules, "nftables", nftables)
    monkeypatch.setattr(ecmpd_command, "has_net_admin", lambda: True)
    started = []
    monkeypatch.setattr("ecmpd.daemon.Daemon.run", lambda self: started.append(1))
    assert ecmpd_command.main(["--config", str(EXAMPLE)]) == 1
    assert capsys.readouterr().err == (
        "ecmpd: libnftables not found: install the Debian package python3-nftables "
        "(libnftables1)\n")
    assert not started


def test_without_libnftables_the_command_prints_one_line_and_no_traceback(tmp_path):
    """The real command, with an `nftables` module that finds no library first on its
    path; as root (or with CAP_NET_ADMIN) it gets as far as that check."""
    if not ecmpd_command.has_net_admin():
        pytest.skip("needs CAP_NET_ADMIN to get past the privilege check")
    (tmp_path / "nftables.py").write_text(
        "class Nftables:\n    def __init__(self):\n"
        "        raise OSError('libnftables.so.1: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    p = subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(EXAMPLE)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == ecmpd_command.NO_LIBNFTABLES + "\n"


def test_plan_names_interfaces_where_the_kernel_has_indexes():
    assert ecmpd_command.with_names(["route default table 1001 via 192.0.2.1 oif 11",
                                     "nexthop via 192.0.2.1 oif 99 weight 1"], LINKS) == [
        "route default table 1001 via 192.0.2.1 dev eth1",
        "nexthop via 192.0.2.1 oif 99 weight 1"]          # an index no link has: kept
    assert not any(" oif " in line for line in plan())
