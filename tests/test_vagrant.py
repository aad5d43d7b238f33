"""Tests for the Vagrant lab (vagrant/): `vagrant validate` of the Vagrantfile and its
guards, the lab's ecmpd config, the provisioning scripts' and box recipe's syntax (and
shellcheck when installed), the box's package list, the ISP namespaces (static, DHCP,
uplink cut and undo) and labtool, the lab's traffic tool, against a local server.

Booting the lab is not part of the test suite (minutes under emulation, and CI has no
Vagrant); vagrant/README.md says how to bring it up by hand.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "vagrant"
SCRIPTS = sorted((LAB / "provision").glob("*.sh")) + [LAB / "wheelhouse.sh", LAB / "box" / "build.sh",
                                                     LAB / "check"]
VAGRANT = shutil.which("vagrant")


def vagrant_skip_reason() -> str | None:
    """Why `vagrant validate` cannot run here (None: it can)."""
    if VAGRANT is None:
        return "vagrant is not installed (Debian: apt-get install vagrant vagrant-libvirt)"
    r = subprocess.run([VAGRANT, "plugin", "list"], capture_output=True, text=True,
                       timeout=60, env=vagrant_env())
    if "vagrant-libvirt" not in r.stdout:
        return "the vagrant-libvirt plugin is not installed (needed to validate provider settings)"
    return None


def vagrant_env(**extra: str) -> dict[str, str]:
    """Environment for vagrant: no update check over the network."""
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def vagrant() -> str:
    reason = vagrant_skip_reason()
    if reason:
        pytest.skip(reason)
    assert VAGRANT is not None
    return VAGRANT


def run_vagrant(vagrant: str, cwd: Path, dot: Path, *args: str,
                **env: str) -> subprocess.CompletedProcess:
    """`vagrant ARGS` in `cwd`, machine state kept in `dot` (never the real lab's)."""
    return subprocess.run([vagrant, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=vagrant_env(VAGRANT_DOTFILE_PATH=str(dot), **env))


def lab_copy(tmp: Path, config_text: str | None = None, static_text: str | None = None) -> Path:
    """A copy of vagrant/ (without wheelhouse, box or state) and config/ under `tmp`;
    `config_text` replaces the lab config vagrant/ecmpd.yaml, `static_text` the
    static example config/ecmpd.yaml."""
    shutil.copytree(LAB, tmp / "vagrant",
                    ignore=shutil.ignore_patterns(".wheelhouse", ".vagrant", ".box"))
    (tmp / "config").mkdir()
    text = (ROOT / "config" / "ecmpd.yaml").read_text() if static_text is None else static_text
    (tmp / "config" / "ecmpd.yaml").write_text(text)
    if config_text is not None:
        (tmp / "vagrant" / "ecmpd.yaml").write_text(config_text)
    return tmp / "vagrant"


LAB_CONFIG = (LAB / "ecmpd.yaml").read_text()


# --- Vagrantfile -------------------------------------------------------------------

def test_vagrantfile_validates(vagrant: str, tmp_path: Path) -> None:
    r = run_vagrant(vagrant, LAB, tmp_path / "dot", "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


def test_vagrantfile_takes_the_static_example_config(vagrant: str, tmp_path: Path) -> None:
    r = run_vagrant(vagrant, LAB, tmp_path / "dot", "validate", ECMPD_LAB_CONFIG="config/ecmpd.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_vagrantfile_rejects_static_wan_without_address(vagrant: str, tmp_path: Path) -> None:
    text = (ROOT / "config" / "ecmpd.yaml").read_text()
    assert "    address: 10.112.0.2/24\n" in text
    lab = lab_copy(tmp_path, static_text=text.replace("    address: 10.112.0.2/24\n", ""))
    r = run_vagrant(vagrant, lab, tmp_path / "dot", "validate", ECMPD_LAB_CONFIG="config/ecmpd.yaml")
    assert r.returncode != 0
    assert "wans.wlan2: the lab needs gateway: auto, or gateway and address" in r.stdout + r.stderr


def test_vagrantfile_rejects_gateway_outside_address(vagrant: str, tmp_path: Path) -> None:
    text = (ROOT / "config" / "ecmpd.yaml").read_text()
    lab = lab_copy(tmp_path, static_text=text.replace("gateway: 10.111.0.1", "gateway: 10.99.0.1"))
    r = run_vagrant(vagrant, lab, tmp_path / "dot", "validate", ECMPD_LAB_CONFIG="config/ecmpd.yaml")
    assert r.returncode != 0
    assert "wans.wlan1: gateway 10.99.0.1 is not in 10.111.0.2/24" in r.stdout + r.stderr


@pytest.mark.parametrize("old,new,message", [
    ("    gateway: auto             # point-to-point", "    gateway: 10.112.0.1  #",
     "wans.wlan2: ppp0 is a PPP session: the lab needs gateway: auto"),
    ("    gateway: auto             # learned", "    address: 10.111.0.2/24\n    gateway: auto  # learned",
     "wans.wlan1: no address with gateway: auto"),
    ("  wlan2:\n", "  ppp1:\n", "wans.ppp1: PPPoE runs over a NIC named like the WAN"),
    ("    interface: wlan1 ", "    interface: Local ", "NIC names used twice: Local"),
], ids=["ppp-fixed-gateway", "dhcp-with-address", "ppp-nic-name", "duplicate-nic"])
def test_vagrantfile_rejects_bad_lab_configs(vagrant: str, tmp_path: Path, old: str, new: str,
                                             message: str) -> None:
    assert old in LAB_CONFIG
    lab = lab_copy(tmp_path, LAB_CONFIG.replace(old, new, 1))
    r = run_vagrant(vagrant, lab, tmp_path / "dot", "validate")
    assert r.returncode != 0
    assert message in r.stdout + r.stderr


def test_vagrantfile_refuses_a_config_outside_the_project(vagrant: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(LAB_CONFIG)
    r = run_vagrant(vagrant, LAB, tmp_path / "dot", "validate", ECMPD_LAB_CONFIG=str(outside))
    assert r.returncode != 0
    assert "is not inside the project" in r.stdout + r.stderr


# --- the lab's ecmpd config -----------------------------------------------------------

def test_lab_config_is_the_seed_on_dhcp_and_pppoe() -> None:
    import yaml
    cfg = yaml.safe_load(LAB_CONFIG)
    assert cfg["lan"]["interfaces"] == ["Local"]
    assert cfg["wans"] == {
        "wlan1": {"interface": "wlan1", "gateway": "auto", "weight": 1, "id": 1},
        "wlan2": {"interface": "ppp0", "gateway": "auto", "weight": 5, "id": 2},
    }


def test_lab_config_passes_ecmpd_check() -> None:
    from ecmpd import configvalues
    if not hasattr(configvalues, "AUTO"):
        pytest.skip("this ecmpd has no `gateway: auto` yet")
    r = subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(LAB / "ecmpd.yaml"),
                        "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_provision_without_wheelhouse_stops_before_any_vm(vagrant: str, tmp_path: Path) -> None:
    lab = lab_copy(tmp_path)
    r = run_vagrant(vagrant, lab, tmp_path / "dot", "provision", "router")
    assert r.returncode != 0
    assert "Run ./wheelhouse.sh" in r.stdout + r.stderr
    # Machines not named router do not need the wheelhouse: no abort for them.
    r = run_vagrant(vagrant, lab, tmp_path / "dot", "provision", "isp")
    assert "wheelhouse" not in r.stdout + r.stderr


# --- provisioning scripts ----------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax(script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK) or script.name == "common.sh"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck() -> None:
    r = subprocess.run(["shellcheck", "-x", "-P", str(LAB / "provision"), *map(str, SCRIPTS)],
                       capture_output=True, text=True, cwd=LAB)
    assert r.returncode == 0, r.stdout + r.stderr


def test_wheelhouse_box_and_state_are_ignored() -> None:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "vagrant/.wheelhouse/" in lines and "vagrant/.vagrant/" in lines
    assert ".box/" in (LAB / ".gitignore").read_text().splitlines()


# --- the offline box ---------------------------------------------------------------

def box_packages() -> set[str]:
    lines = (LAB / "box" / "packages").read_text().splitlines()
    return {ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


def test_box_has_every_package_provisioning_needs() -> None:
    """Each `need CHECK PACKAGE` of the provisioning scripts names a package of the box:
    with the box the guests never need apt-get (they have no internet)."""
    needed: set[str] = set()
    for script in (LAB / "provision").glob("*.sh"):
        needed |= set(re.findall(r'"(?:command -v|python3 -c|ldconfig)[^"\n]*"\s+([a-z0-9][a-z0-9.+-]*)',
                                 script.read_text()))
    assert {"ppp", "pppoe", "dnsmasq-base", "isc-dhcp-client", "nftables"} <= needed
    assert needed <= box_packages(), needed - box_packages()


def test_box_kernel_has_ppp() -> None:
    pkgs = box_packages()
    # Debian 12's linux-image-cloud-amd64 is built without CONFIG_PPP: no PPPoE with it.
    assert "linux-image-amd64" in pkgs and "linux-image-cloud-amd64" not in pkgs
    assert "ppp_generic pppoe" in (LAB / "box" / "build.sh").read_text()


def test_box_recipe_refuses_non_root_and_bad_arguments() -> None:
    script = str(LAB / "box" / "build.sh")
    r = subprocess.run(["bash", script, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument --bogus" in r.stderr
    r = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "mmdebstrap" in r.stdout
    if os.geteuid() != 0:
        r = subprocess.run(["bash", script, "--no-add"], capture_output=True, text=True)
        assert r.returncode == 1 and "run as root" in r.stderr


def test_readme_stands_alone() -> None:
    """The user docs name nothing outside the project (no workplace tools or paths)."""
    text = (LAB / "README.md").read_text()
    assert "/work/" not in text and "vagrant-lab-env" not in text
    assert "box/build.sh" in text


# --- what a newcomer reads and runs (static) ---------------------------------------

README = (LAB / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    """The commands of the ```sh blocks of a markdown text, in order."""
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_sets_the_offline_box_before_the_first_vagrant_up() -> None:
    commands = "\n".join(shell_blocks(README))
    box = commands.find("ECMPD_LAB_BOX=ecmpd-lab/bookworm")
    up = re.search(r"^\s*(?:\S+=\S+ )*vagrant up\b", commands, re.M)
    assert box != -1 and up is not None
    assert box < up.start(), "the box variable must come before the vagrant up that needs it"
    assert "export ECMPD_LAB_BOX=ecmpd-lab/bookworm" in commands   # later commands see it too


def test_readme_status_commands_work_as_written() -> None:
    """`ip addr show` takes one device (`ip -4 -br addr show wlan1 ppp0` fails), and
    ecmpd's route is in its own table, not in main's `route show default`."""
    commands = "\n".join(shell_blocks(README))
    for m in re.finditer(r"addr show ([^;'\n]*)", commands):
        words = m.group(1).split()
        assert len(words) == 2 and words[0] == "dev", m.group(0)
    assert "route show default" not in commands
    table = re.search(r"^tables:\n  base: (\d+)", LAB_CONFIG, re.M)
    assert table and f"ip -4 route show table {table.group(1)}" in commands


def test_vms_have_the_labs_own_prefix() -> None:
    """Vagrant's default libvirt names (vagrant_router: the folder's name) collide with
    any other Vagrantfile in a folder named vagrant; a leftover one blocks `vagrant up`."""
    text = (LAB / "Vagrantfile").read_text()
    assert 'PREFIX = ENV.fetch("ECMPD_LAB_PREFIX", "ecmpd-lab-")' in text
    assert re.search(r"^\s+libvirt\.default_prefix = PREFIX$", text, re.M)
    for vm in re.findall(r'config\.vm\.define "(\w+)"', text):
        assert f"`ecmpd-lab-{vm}`" in README, vm
    assert "vagrant_router" not in README


def test_peer_file_names_match_what_provisioning_writes() -> None:
    """common.sh writes /etc/ppp/peers/<NIC>, the NIC named like the PPPoE WAN."""
    import yaml
    assert 'cat > "/etc/ppp/peers/$name"' in (LAB / "provision" / "common.sh").read_text()
    wans = yaml.safe_load(LAB_CONFIG)["wans"]
    nics = {name for name, w in wans.items() if re.fullmatch(r"ppp\d+", w["interface"])}
    assert nics == {"wlan2"}
    for path in (LAB / "ecmpd.yaml", LAB / "README.md", LAB / "provision" / "router.sh"):
        named = set(re.findall(r"/etc/ppp/peers/(\w+)", path.read_text()))
        assert named <= nics | {"NAME"}, (path.name, named)
    assert "/etc/ppp/peers/wlan2" in LAB_CONFIG


def test_check_is_the_labs_test_command() -> None:
    text = (LAB / "check").read_text()
    steps = re.findall(r"^step_(\w+)\(\)", text, re.M)
    assert steps == ["traffic", "dark", "pppoe", "boot"]
    usage = re.search(r"traffic\|dark\|pppoe\|boot\) \"step_\$s\"", text)
    assert usage, "every step is reachable from the command line"
    for step in steps:
        assert f"`{step}`" in README, step
    commands = "\n".join(shell_blocks(README))
    assert commands.index("./check") > commands.index("vagrant up")
    # the faults are undone on any exit, and the PPPoE step waits for the missing link
    assert "trap 'if [ -n \"$undo\" ]; then eval \"$undo\"; fi' EXIT" in text
    assert "wait_wan wlan2 down 10 missing" in text


# --- isp-net.sh in network namespaces ------------------------------------------------

# Runs inside `unshare --mount --net`: that new network namespace plays the isp VM (NICs
# with the lab MACs), /run/netns is a private tmpfs so the script's namespaces (isp1,
# isp2, inet) and the "rtr" namespace playing the router are invisible outside and die
# with this process, whatever happens; /sys is remounted to show this namespace.
# isp1 is a DHCP ISP (dnsmasq; the router asks with busybox udhcpc), isp2 a static one.
# (PPPoE needs pppd and a kernel with PPP: that part is exercised in the VMs only.)
ISP_NET_DRIVER = r"""
set -euo pipefail
mkdir -p /run/netns && mount -t tmpfs ecmpd-lab-test /run/netns
mount -t sysfs ecmpd-lab-test /sys          # /sys/class/net of this namespace
ip link set lo up
ip netns add rtr
ip -n rtr link set lo up
ip -n rtr addr add 192.168.0.1/32 dev lo
for i in 1 2; do
  ip link add nic$i address 52:54:00:ec:0$i:01 type veth peer name wlan$i netns rtr
  ip -n rtr link set wlan$i address 52:54:00:ec:0$i:02
  ip -n rtr link set wlan$i up
done
ip -n rtr addr add 10.112.0.2/24 dev wlan2
printf 'isp1,52:54:00:ec:01:01,10.111.0.1/24,dhcp,52:54:00:ec:01:02
isp2,52:54:00:ec:02:01,10.112.0.1/24
' > "$ISPS"
"$SCRIPT" up
printf '#!/bin/sh\necho "DHCP $1 $ip/$mask router $router lease $lease" >> "$RUNDIR/dhcp.out"\n' > "$RUNDIR/dhcp.sh"
chmod +x "$RUNDIR/dhcp.sh"
ip netns exec rtr udhcpc -i wlan1 -f -q -n -t 10 -T 1 -s "$RUNDIR/dhcp.sh" >/dev/null 2>&1 || true
cat "$RUNDIR/dhcp.out" 2>/dev/null || true
ip -n rtr addr add 10.111.0.2/24 dev wlan1
ip -n rtr route add 198.51.100.10 via 10.111.0.1
ip -n rtr route add 203.0.113.10 via 10.112.0.1
ip netns exec rtr ping -c1 -W5 -I 10.111.0.2 198.51.100.10 >/dev/null && echo "PASS wan1"
ip netns exec rtr ping -c1 -W5 -I 10.112.0.2 203.0.113.10 >/dev/null && echo "PASS wan2"
# A customer source outside the subnet (an un-NATed LAN address) must be dropped.
ip netns exec rtr ping -c1 -W1 -I 192.168.0.1 198.51.100.10 >/dev/null || echo "LOST bcp38"
ip netns exec isp1 nft list ruleset | grep -o 'counter packets [0-9]*' | head -1
# Upstream failure behind a live gateway, and its undo.
"$SCRIPT" uplink isp1 down
ip netns exec rtr ping -c1 -W1 10.111.0.1 >/dev/null && echo "GATEWAY alive"
ip netns exec rtr ping -c1 -W1 -I 10.111.0.2 198.51.100.10 >/dev/null || echo "LOST uplink down"
"$SCRIPT" uplink isp1 up
ip netns exec rtr ping -c1 -W5 -I 10.111.0.2 198.51.100.10 >/dev/null && echo "PASS uplink up"
dnsmasq_pid=$(cat "$RUNDIR/isp1.dnsmasq.pid")
"$SCRIPT" down
sleep 0.5   # ended, or a zombie waiting for a reaper that is not its parent
state=$(awk '/^State:/ {print $2}' "/proc/$dnsmasq_pid/status" 2>/dev/null || true)
case "$state" in ""|Z) echo "dnsmasq ended" ;; *) echo "dnsmasq still runs: $state" ;; esac
ip netns list | awk '{print $1}' | tr '\n' ' '; echo "<- left"
"""


@pytest.mark.lab
def test_isp_namespaces_route_and_enforce_bcp38(tmp_path: Path, dhcp_tools: None) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nft") is None:
        pytest.skip("needs root, unshare and nft")
    isps = tmp_path / "isps"
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o755)
    tmp_path.chmod(0o755)   # dnsmasq drops root before it writes its leases
    env = dict(os.environ, ISPS=str(isps), SCRIPT=str(LAB / "provision" / "isp-net.sh"),
               RUNDIR=str(run), ECMPD_LAB_ISPS=str(isps), ECMPD_LAB_RUN=str(run),
               ECMPD_LAB_LIB=str(LAB / "provision"))
    r = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                        "bash", "-c", ISP_NET_DRIVER], capture_output=True, text=True,
                       env=env, timeout=180)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    # dnsmasq gave the router's MAC its fixed address, the ISP as router, 2-minute leases.
    assert "DHCP bound 10.111.0.2/24 router 10.111.0.1 lease 120" in out, out + r.stderr
    assert "PASS wan1" in out and "PASS wan2" in out, out + r.stderr
    assert "LOST bcp38" in out and "counter packets 1" in out, out
    assert "GATEWAY alive" in out and "LOST uplink down" in out, out
    assert "PASS uplink up" in out, out + r.stderr      # the undo restores the routes
    assert "dnsmasq ended" in out, out
    assert "rtr <- left" in out      # isp1, isp2, inet deleted
    # (A veth end dies with its namespace, so rebuilding after `down`, where a VM's real
    # NICs come back, is only exercised in the VM: systemctl restart ecmpd-lab-isp.)


# --- labtool -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labtool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labtool", LAB / "provision" / "labtool.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_labtool_counts_source_addresses(labtool: ModuleType) -> None:
    async def scenario() -> Counter:
        server = await labtool.start("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await labtool.count("127.0.0.1", 25, port=port, parallel=5, timeout=10)
    assert asyncio.run(scenario()) == Counter({"127.0.0.1": 25})


def test_labtool_server_answers_without_request(labtool: ModuleType) -> None:
    async def scenario() -> bytes:
        server = await labtool.start("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write_eof()   # like `nc -N`: no request at all
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return data
    assert labtool.parse_reply(asyncio.run(scenario())) == "127.0.0.1"


def test_labtool_reports_failed_connections(labtool: ModuleType, capsys) -> None:
    with socket.socket() as s:   # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tally = asyncio.run(labtool.count("127.0.0.1", 3, port=port, timeout=10))
    assert sum(tally.values()) == 3
    assert all(k.startswith("error: ") for k in tally), tally
    assert labtool.main(["wans", "-n", "2", "--port", str(port), "127.0.0.1"]) == 1
    assert "127.0.0.1: 2 connections" in capsys.readouterr().out


def test_labtool_parse_reply_rejects_other_answers(labtool: ModuleType) -> None:
    assert labtool.parse_reply(labtool.reply("10.111.0.2")) == "10.111.0.2"
    for bad in (b"", b"10.111.0.2\n", b"HTTP/1.0 404 Not Found\r\n\r\nx", b"HTTP/1.0 200 OK\r\n\r\n"):
        with pytest.raises(ValueError):
            labtool.parse_reply(bad)


def test_labtool_render_and_labels(labtool: ModuleType, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("# address name\n10.111.0.2 wlan1\n10.112.0.2 wlan2\nbad\n")
    names = labtool.read_labels(labels)
    assert names == {"10.111.0.2": "wlan1", "10.112.0.2": "wlan2"}
    assert labtool.read_labels(tmp_path / "missing") == {}
    out = labtool.render("198.51.100.10", Counter({"10.111.0.2": 10, "10.112.0.2": 50}), names)
    lines = out.splitlines()
    assert lines[0] == "198.51.100.10: 60 connections"
    assert lines[1].split() == ["10.112.0.2", "wlan2", "50", "83.3%"]
    assert lines[2].split() == ["10.111.0.2", "wlan1", "10", "16.7%"]
