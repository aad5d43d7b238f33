"""A misspelt LAN interface, end to end: the real ecmpd in a lab whose router's LAN side
is `Local`, configured with `br-lan`.  Before, `--check` passed, every WAN came UP and
no LAN connection got through, silently.  Now `--check` on the router fails naming the
key, its line and the interface meant; the daemon starts anyway (a bridge may be
created after it) and says so in its log and in `ecmpctl status` (JSON and text); when
an interface of that name appears, its forwarding sysctl is written at once."""

from __future__ import annotations

import pytest

from lab.runner import Ecmpd, config_for
from lab.wait import until

pytestmark = pytest.mark.lab

MISSING = "LAN interface br-lan (lan.interfaces[0]) does not exist"


def sysctl(lab, name: str) -> str | None:
    """A sysctl of the router namespace (None: it does not exist)."""
    r = lab.run(lab.ns_router, "sysctl", "-n", name, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def test_a_misspelt_lan_interface_is_reported_by_check_logs_and_status(make_lab, tmp_path):
    lab = make_lab()
    assert lab.spec.lan_interface == "Local"
    config = config_for(lab)
    config["lan"]["interfaces"] = ["br-lan"]
    lab.start_servers()
    d = Ecmpd(lab, config, workdir=str(tmp_path))
    line = d.config_path.read_text().splitlines().index("  - br-lan") + 1

    check = lab.run(lab.ns_router, *d.argv("--check"), check=False)
    assert check.returncode == 2, check
    assert check.stderr == (f"{d.config_path}:{line}: lan.interfaces[0]: 'br-lan' does not "
                            f"exist on this machine (did you mean 'Local'?)\n")

    d.start()
    try:
        st = d.wait_states({"wlan1": "up", "wlan2": "up"})      # the WANs are fine
        assert st["lan"] == [{"interface": "br-lan", "present": False, "up": False,
                              "carrier": False, "problem": "does not exist"}]
        assert f"{MISSING}: nothing from it is forwarded" in st["warnings"]
        assert MISSING in d.ctl("status").stdout
        warned = [ln for ln in d.log().splitlines() if MISSING in ln]
        assert len(warned) == 1 and "WARNING" in warned[0], d.log()
        # what the admin sees in status is real: Local forwards nothing
        assert sysctl(lab, "net.ipv4.conf.Local.forwarding") == "0"
        assert not any(r.ok for r in lab.new_flows(3, timeout=1.0))

        # an interface of that name appears later: it is set up at once, and reported
        assert sysctl(lab, "net.ipv4.conf.default.forwarding") == "0"  # not inherited
        # no IPv6 link-local address either: its address event would reconcile anyway
        lab.run(lab.ns_router, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        lab.run(lab.ns_router, "ip", "link", "add", "br-lan", "type", "bridge")
        lab.run(lab.ns_router, "ip", "link", "set", "br-lan", "up")
        until(lambda: sysctl(lab, "net.ipv4.conf.br-lan.forwarding") == "1", 5.0,
              lambda _: f"br-lan's forwarding not written:\n{d.log()[-2000:]}")
        st = d.wait_for(lambda s: s["lan"][0]["present"], what="br-lan in status")
        assert st["lan"][0]["up"] and st["lan"][0]["problem"] in (None, "has no carrier")
        assert not any(MISSING in w for w in st["warnings"])
        lab.run(lab.ns_router, "ip", "link", "del", "br-lan")
        d.wait_for(lambda s: s["lan"][0]["problem"] == "does not exist", what="br-lan gone")
        assert len([ln for ln in d.log().splitlines() if MISSING in ln]) == 2, d.log()
        assert "Traceback" not in d.log()
    finally:
        assert d.stop() == 0
