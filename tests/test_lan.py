"""lan: the LAN interfaces against the live system: `--check` (key, line, "did you
mean"), the log lines and the reconcile of the daemon's events, the sysctls left out
for an interface that does not exist (pure, no root)."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest

from ecmpd import events as ev, lan
from ecmpd.config import ConfigError, parse_config
from ecmpd.configmodel import Config, Wan
from ecmpd.decision import decide
from ecmpd.desired import present_sysctls
from ecmpd.ecmpd_command import main
from ecmpd.state import Link, State, initial

T0 = 1_700_000_000.0
UP, DOWN, DARK = Link(3, True, True), Link(3, False, False), Link(3, True, False)
WAN_LINKS = {"wlan1": Link(11, True, True), "wlan2": Link(12, True, True)}
TEXT = """\
lan:
  interfaces:
    - eth9
    - br-lan
wans:
  wlan1: {interface: wlan1, gateway: 192.0.2.1}
  wlan2: {interface: wlan2, gateway: 198.51.100.1}
"""
CFG = Config(lan_interfaces=("Local",),
             wans=(Wan("wlan1", "wlan1", IPv4Address("192.0.2.1"), 1, 1),
                   Wan("wlan2", "wlan2", IPv4Address("198.51.100.1"), 1, 2)))


def problems(text: str, links) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "f.yaml", links=links)
    return e.value.problems


def test_problem_of_a_lan_interface() -> None:
    links = {"a": UP, "b": DOWN, "c": DARK}
    assert [lan.problem(links, n) for n in "abcd"] == [
        None, "is down", "has no carrier", "does not exist"]


def test_check_names_the_key_its_line_and_what_was_meant() -> None:
    links = {"lo": UP, "Local": UP, "eth0": DOWN, **WAN_LINKS}
    assert problems(TEXT, links) == [
        "f.yaml:3: lan.interfaces[0]: 'eth9' does not exist on this machine (did you mean "
        "'eth0'?)",
        "f.yaml:4: lan.interfaces[1]: 'br-lan' does not exist on this machine (interfaces "
        "here: Local, eth0)"]
    # the only interface that is no WAN's is what was meant; lo is never suggested
    one = TEXT.replace("    - eth9\n", "")
    assert problems(one, {"lo": UP, "Local": UP, **WAN_LINKS}) == [
        "f.yaml:3: lan.interfaces[0]: 'br-lan' does not exist on this machine (did you "
        "mean 'Local'?)"]
    # down is refused too; no carrier (a bridge without ports yet) is not
    both = {"lo": UP, "eth9": DOWN, "br-lan": DARK, **WAN_LINKS}
    assert problems(TEXT, both) == [
        "f.yaml:3: lan.interfaces[0]: 'eth9' is down: nothing from it is forwarded "
        "(ip link set eth9 up)"]
    fine = {"eth9": UP, "br-lan": DARK, **WAN_LINKS}
    assert parse_config(TEXT, "f.yaml", links=fine).lan_interfaces == ("eth9", "br-lan")


def test_check_elsewhere_than_on_the_router_checks_nothing() -> None:
    """None of the config's interfaces here: a file checked on another machine."""
    assert parse_config(TEXT, "f.yaml", links={"lo": UP, "eth0": UP}).wans
    assert parse_config(TEXT, "f.yaml").wans                    # links unknown


def test_many_interfaces_are_listed_up_to_a_limit() -> None:
    links = {f"veth{i}": UP for i in range(20)} | WAN_LINKS | {"eth9": UP}
    (line,) = problems(TEXT, links)
    assert line.endswith("interfaces here: eth9, veth0, veth1, veth10, veth11, veth12, "
                         "veth13, veth14, and 13 more)"), line


def test_the_command_line_check_on_the_router_and_elsewhere(tmp_path, monkeypatch, capsys):
    path = tmp_path / "ecmpd.yaml"
    path.write_text(TEXT)
    monkeypatch.setattr(lan, "read_links_now", lambda: {"Local": UP, **WAN_LINKS})
    assert main(["--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: lan.interfaces[1]: 'br-lan' does not exist on this machine " in err
    monkeypatch.setattr(lan, "read_links_now", lambda: {"eth9": UP, "br-lan": UP, **WAN_LINKS})
    assert main(["--config", str(path), "--check"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == \
        "  LAN interfaces present and up: eth9, br-lan"
    monkeypatch.setattr(lan, "read_links_now", lambda: {"eth0": UP})
    assert main(["--config", str(path), "--check"]) == 0
    assert "interfaces not checked: none of eth9, br-lan, wlan1, wlan2 exists on this " \
        "machine (not the router)" in capsys.readouterr().out
    monkeypatch.setattr(lan, "read_links_now", lambda: None)
    assert main(["--config", str(path), "--check"]) == 0


def test_read_links_now_sees_this_namespaces_loopback_or_nothing() -> None:
    links = lan.read_links_now()
    assert links is None or links["lo"].up


# ---- the daemon: logs, reconcile, status lines ------------------------------------------

def start(links) -> State:
    return initial(CFG, links, {11: (("192.0.2.2", 24),), 12: (("198.51.100.2", 24),)},
                   (), T0)


def logs(effects) -> list[tuple[int, str]]:
    return [(e.level, e.message) for e in effects if isinstance(e, ev.Log)]


def test_logged_at_start_when_it_goes_wrong_and_when_it_is_right_again() -> None:
    st = start(WAN_LINKS)
    assert lan.changes(None, st) == [(logging.WARNING, (
        "LAN interface Local (lan.interfaces[0]) does not exist: nothing from it is "
        "forwarded until it appears (ecmpd sets it up then)"))]
    st2, effects = ev.step(st, ev.LinkChanged("Local", DARK), T0 + 1)
    assert logs(effects) == [(logging.WARNING, "LAN interface Local (lan.interfaces[0]) "
                                               "has no carrier: nothing from it is forwarded")]
    assert ev.Reconcile() in effects                # it appeared: its sysctls now
    st3, effects = ev.step(st2, ev.LinkChanged("Local", UP), T0 + 2)
    assert logs(effects) == [(logging.INFO, "LAN interface Local (lan.interfaces[0]) is up: "
                                            "forwarding from it")]
    assert ev.Reconcile() not in effects            # same interface: nothing to write
    st4, effects = ev.step(st3, ev.LinkChanged("Local", UP), T0 + 3)
    assert effects == ()                            # no change, no line
    st5, effects = ev.step(st4, ev.LinkChanged("Local", DOWN), T0 + 4)
    assert logs(effects) == [(logging.WARNING, "LAN interface Local (lan.interfaces[0]) "
                                               "is down: nothing from it is forwarded")]
    # recreated (a new index): its sysctls are written again
    st6, effects = ev.step(st5, ev.LinkChanged("Local", Link(33, True, True)), T0 + 5)
    assert ev.Reconcile() in effects
    assert lan.changes(None, st6) == [] and lan.warnings(st6) == []
    # the WANs are not touched by any of it
    assert st6.wans == ev.step(st, ev.LinkChanged("veth0", UP), T0 + 6)[0].wans


def test_no_sysctl_for_an_interface_that_does_not_exist() -> None:
    st = start(WAN_LINKS)
    paths = [p for p, _ in decide(st, None).desired.sysctls]
    assert "net/ipv4/conf/Local/forwarding" not in paths
    assert "net/ipv4/conf/wlan1/rp_filter" in paths
    st2, _ = ev.step(st, ev.LinkChanged("Local", UP), T0 + 1)
    assert ("net/ipv4/conf/Local/forwarding", "1") in decide(st2, None).desired.sysctls
    gone, _ = ev.step(st2, ev.LinkChanged("wlan2", None), T0 + 2)
    paths = [p for p, _ in decide(gone, None).desired.sysctls]
    assert not any("/wlan2/" in p for p in paths) and "net/ipv4/conf/wlan1/forwarding" in paths


def test_present_sysctls_keeps_the_global_ones() -> None:
    wanted = (("net/ipv4/fib_multipath_hash_policy", "1"), ("net/ipv6/conf/all/forwarding", "1"),
              ("net/ipv4/conf/default/rp_filter", "2"), ("net/ipv4/conf/x/forwarding", "1"),
              ("net/ipv4/conf/y/forwarding", "1"))
    assert present_sysctls(wanted, {"y"}) == wanted[:3] + wanted[4:]
    assert present_sysctls(wanted, None) == wanted
