"""Tests for systemd/ecmpd.service: `systemd-analyze verify`, the offline exposure score,
and a run of ecmpd's privileged operations under an emulation of the unit's sandbox.

No systemd runs as PID 1 here, so the sandbox is rebuilt from the same kernel features
systemd uses: an anonymous network + mount + UTS namespace (deleted with its last
process), /proc/sys remounted read-only with /proc/sys/net bind-mounted writable
(ProtectKernelTunables= + ReadWritePaths=), the capability bounding set
(CapabilityBoundingSet=), and seccomp filters built with libseccomp like systemd
builds them (SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=).
"""

from __future__ import annotations

import ctypes.util
import grp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "ecmpd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_directives() -> dict[str, list[str]]:
    """Key -> values of the unit file (comments and sections dropped)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def runnable_copy(tmp: Path, text: str | None = None) -> Path:
    """The unit with ExecStart's binary replaced by one that exists (verify checks it)."""
    text = UNIT.read_text() if text is None else text
    text = re.sub(r"^(Exec(?:Start|Reload))=\S+", r"\1=/bin/true", text, flags=re.M)
    path = tmp / "ecmpd.service"
    path.write_text(text)
    return path


def verify_complaints(unit: Path) -> list[str]:
    """What `systemd-analyze verify` says about `unit` (complaints about other units dropped)."""
    r = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln]
    if r.returncode != 0:
        lines.append(f"exit status {r.returncode}")
    return lines


def exposure(unit: Path) -> float:
    r = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, f"no exposure level in: {r.stdout[-500:]} {r.stderr[-500:]}"
    return float(m.group(1))


def test_required_directives():
    d = unit_directives()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecReload": "/usr/local/bin/ecmpctl reload",
        "Restart": "on-failure", "WatchdogSec": "10s", "RuntimeDirectory": "ecmpd",
        "RuntimeDirectoryMode": "0755", "ConfigurationDirectory": "ecmpd",
        "ProtectSystem": "strict", "ProtectKernelTunables": "yes",
        "ReadWritePaths": "/proc/sys/net", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW",
        "AmbientCapabilities": "CAP_NET_ADMIN CAP_NET_RAW",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert d["ExecStart"] == ["/usr/local/bin/ecmpd --config /etc/ecmpd/ecmpd.yaml"]
    assert "IPAddressDeny" not in d and "ProcSubset" not in d and "PrivateNetwork" not in d


def test_start_timeout_is_extended_by_the_daemon_not_raised():
    """TimeoutStartSec bounds exec to the first EXTEND_TIMEOUT_USEC (ecmpd.sdnotify
    START_STEP per phase); the comment says so, and the step is as long as the bound."""
    from ecmpd.sdnotify import START_STEP
    d = unit_directives()
    assert d["TimeoutStartSec"] == [f"{START_STEP:.0f}s"]
    assert "EXTEND_TIMEOUT_USEC" in UNIT.read_text()


@needs_analyze
def test_verify_clean(tmp_path):
    assert verify_complaints(runnable_copy(tmp_path)) == []


@needs_analyze
def test_verify_catches_a_typo(tmp_path):
    """The check above can fail: a misspelt key only yields a warning, which we catch."""
    broken = UNIT.read_text().replace("ProtectClock=yes", "ProtectClocks=yes")
    assert any("ProtectClocks" in ln for ln in verify_complaints(runnable_copy(tmp_path, broken)))


@needs_analyze
def test_exposure_score(tmp_path):
    score = exposure(runnable_copy(tmp_path))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 3.0


# ---------------------------------------------------------------- sandbox emulation

LAUNCHER = r"""
import ctypes, errno, os, sys
lib = ctypes.CDLL(sys.argv[1], use_errno=True)

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, KILL, EQ, GE, MASKED_EQ = 0x7FFF0000, 0x80000000, 4, 5, 7
ERRNO = lambda e: 0x00050000 | e

def rule(ctx, action, name, *cmps):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a syscall on this architecture
    arr = (Cmp * max(1, len(cmps)))(*[Cmp(*c) for c in cmps])
    assert lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr) == 0, name

def load(ctx):
    assert lib.seccomp_load(ctx) == 0

# RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
ctx = lib.seccomp_init(ALLOW)
for fam in range(0, 46):
    if fam not in (1, 2, 10, 16):
        rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", (0, EQ, fam, 0))
rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", (0, GE, 46, 0))
load(ctx)
# MemoryDenyWriteExecute=yes: systemd <= 253 uses a seccomp filter (seccomp-util.c,
# seccomp_memory_deny_write_execute()), newer ones prctl(PR_SET_MDWE) where the kernel has it.
if sys.argv[2] == "prctl":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
else:
    ctx = lib.seccomp_init(ALLOW)
    rule(ctx, ERRNO(errno.EPERM), "mmap", (2, MASKED_EQ, 6, 6))
    rule(ctx, ERRNO(errno.EPERM), "mprotect", (2, MASKED_EQ, 4, 4))
    rule(ctx, ERRNO(errno.EPERM), "pkey_mprotect", (2, MASKED_EQ, 4, 4))
    rule(ctx, ERRNO(errno.EPERM), "shmat", (2, MASKED_EQ, 0o100000, 0o100000))
    load(ctx)
# SystemCallFilter=, loaded last as systemd does (it forbids seccomp() itself).
# Anything else kills: stricter than the unit's EPERM, and loud.
ctx = lib.seccomp_init(KILL)
for name in sys.argv[3].split(","):
    rule(ctx, ALLOW, name)
load(ctx)
os.execv(sys.executable, [sys.executable] + sys.argv[4:])
"""

DAEMON_STANDIN = r"""
import asyncio, errno, mmap, os, socket, sys
sockdir, member_gid, other_gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def expect_error(codes, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except OSError as e:
        assert e.errno in codes, (fn, e)
    else:
        raise AssertionError(f"{fn} {a} did not fail")

# The sandbox is really there.
expect_error((errno.EPERM, errno.EACCES), mmap.mmap, -1, 4096,  # seccomp / PR_SET_MDWE
             prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
expect_error((errno.EAFNOSUPPORT,), socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
expect_error((errno.EROFS,), open, "/proc/sys/kernel/hostname", "w")
expect_error((errno.EPERM,), os.chown, sockdir, -1, other_gid)  # no CAP_CHOWN

# ecmpd's sysctls (in this throwaway network namespace).
for key, value in (("ipv4/ip_forward", "1"), ("ipv4/fib_multipath_hash_policy", "1"),
                   ("ipv4/conf/all/rp_filter", "2"),
                   ("ipv4/conf/lo/ignore_routes_with_linkdown", "1")):
    with open(f"/proc/sys/net/{key}", "w") as f:
        f.write(value)

import nftables
nft = nftables.Nftables()
rc, out, err = nft.json_cmd({"nftables": [{"add": {"table": {"family": "ip", "name": "t"}}},
                                          {"list": {"tables": {}}}]})
assert rc == 0 and out["nftables"][1]["table"]["name"] == "t", (rc, err)

from pyroute2 import IPRoute, NFCTSocket
with IPRoute() as ipr:
    ipr.link("set", index=1, state="up")
    ipr.route("replace", dst="0.0.0.0/0", table=1001, oif=1)
    ipr.rule("add", table=1001, priority=1001, fwmark=0x10000, fwmask=0xFF0000)
with NFCTSocket() as ct:
    ct.flush(mark=0x10000, mark_mask=0xFF0000)

from ecmpd.control_server import ControlError, ControlServer
from ecmpd.icmpecho import EchoSocket

async def main():
    # the probe socket as the daemon opens it: raw, BPF filter, bound to a device
    got = asyncio.get_running_loop().create_future()
    echo = EchoSocket("127.0.0.1", lambda a: got.done() or got.set_result(a), device="lo")
    assert echo.send("127.0.0.1") is not None
    answer = await asyncio.wait_for(got, 5)
    assert answer.error is None and answer.address == "127.0.0.1", answer
    echo.close()
    async def handler(req):
        return {}
    srv = ControlServer(os.path.join(sockdir, "ecmpd.sock"), handler, group=str(member_gid))
    await srv.start()
    assert os.stat(os.path.join(sockdir, "ecmpd.sock")).st_gid == member_gid
    await srv.close()
    try:
        await ControlServer(os.path.join(sockdir, "x.sock"), handler,
                            group=str(other_gid)).start()
    except ControlError as e:
        assert "SupplementaryGroups" in str(e), e
        assert not os.path.exists(os.path.join(sockdir, "x.sock"))  # cleaned up
    else:
        raise AssertionError("chown to a foreign group worked without CAP_CHOWN")

asyncio.run(main())
print("SANDBOX-OK")
"""


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter` as group -> members."""
    out = subprocess.run([ANALYZE, "syscall-filter", "--no-pager"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= expand(groups[n], groups) if n.startswith("@") else {n}
    return out


def allowed_syscalls() -> set[str]:
    """The unit's SystemCallFilter= lines applied in order, as systemd does."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in unit_directives()["SystemCallFilter"]:
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        allowed = allowed - names if deny else allowed | names
    return allowed


@needs_analyze
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")
@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("setpriv")),
                    reason="needs util-linux unshare and setpriv")
@pytest.mark.skipif(not ctypes.util.find_library("seccomp"), reason="needs libseccomp2")
@pytest.mark.skipif(not ctypes.util.find_library("nftables"), reason="needs libnftables1")
@pytest.mark.parametrize("mdwe", ["seccomp", "prctl"])
def test_privileged_operations_work_inside_the_sandbox(mdwe):
    d = unit_directives()
    assert d["ReadWritePaths"] == ["/proc/sys/net"] and d["ProtectKernelTunables"] == ["yes"]
    caps = ",".join("+" + c.lower().removeprefix("cap_")
                    for c in d["CapabilityBoundingSet"][0].split())
    gids = [g.gr_gid for g in grp.getgrall() if g.gr_gid != 0]
    if len(gids) < 2:
        pytest.skip("needs two non-root groups")
    member_gid, other_gid = gids[0], gids[1]
    libseccomp = ctypes.util.find_library("seccomp")
    sockdir = tempfile.mkdtemp(prefix="ecmpd-sbx-", dir="/tmp")
    os.chmod(sockdir, 0o755)
    # ProtectKernelTunables= + ReadWritePaths=/proc/sys/net: systemd bind-mounts both
    # paths onto themselves, then remounts /proc/sys read-only without its submounts.
    script = ("set -e; mount --bind /proc/sys /proc/sys; "
              "mount --bind /proc/sys/net /proc/sys/net; "
              "mount -o remount,bind,ro /proc/sys; exec \"$@\"")
    cmd = ["unshare", "--net", "--mount", "--uts", "--fork", "--kill-child", "--",
           "sh", "-c", script, "sh",
           "setpriv", f"--bounding-set=-all,{caps}", f"--groups={member_gid}", "--",
           sys.executable, "-c", LAUNCHER, libseccomp, mdwe, ",".join(sorted(allowed_syscalls())),
           "-c", DAEMON_STANDIN, sockdir, str(member_gid), str(other_gid)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(UNIT.parent.parent))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    if r.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert r.returncode == 0 and r.stdout.strip() == "SANDBOX-OK", \
        f"rc={r.returncode}\nstdout={r.stdout[-2000:]}\nstderr={r.stderr[-3000:]}"


# ---------------------------------------------------------------- install paths

ROOT = UNIT.parent.parent


def readme_install() -> str:
    """The sh block of the README's "Install and run" section that installs by hand
    (the one with the venv; the package's block installs /usr/bin)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install and run", 1)[1]
    blocks = [b.split("```", 1)[0] for b in section.split("```sh\n")[1:]]
    return next(b for b in blocks if "python3 -m venv" in b)


def test_install_paths_agree_across_readme_unit_and_vagrant():
    """The unit runs what the README's commands and the Vagrant router's provisioning
    install, where they install it: one venv, its commands linked into one directory,
    one config path."""
    d = unit_directives()
    exe, _, args = d["ExecStart"][0].partition(" ")
    reload_exe = d["ExecReload"][0].split()[0]
    config = args.split("--config ", 1)[1].split()[0]
    bindir = os.path.dirname(exe)
    assert os.path.dirname(reload_exe) == bindir and reload_exe.endswith("/ecmpctl")

    readme = readme_install()
    venv = re.search(r"python3 -m venv (?:--\S+ )*(\S+)", readme).group(1)
    link = re.search(r"^ln -s (.+)$", readme, re.M).group(1).split()
    assert link == [f"{venv}/bin/ecmpd", f"{venv}/bin/ecmpctl", bindir + "/"]
    assert re.search(rf"^install .* {re.escape(config)}\b", readme, re.M)
    assert f"ecmpd --config {config} --check" in readme

    router = (ROOT / "vagrant" / "provision" / "router.sh").read_text()
    assert re.search(r"^VENV=(\S+)$", router, re.M).group(1) == venv
    assert re.search(r"^CONF=(\S+)$", router, re.M).group(1) == config
    links = re.findall(r'^ln -sfn "\$VENV/bin/(\w+)" (\S+)$', router, re.M)
    assert sorted(links) == [("ecmpctl", f"{bindir}/ecmpctl"), ("ecmpd", exe)]

    comment = "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.startswith("#"))
    assert venv in comment and bindir in comment and config in comment


def test_unit_comments_name_real_config_keys():
    """Config keys the unit's comments name (`a.b`, or `a: {b: ...}`) are schema keys."""
    from ecmpd import schema
    comment = "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.startswith("#"))
    paths = set(re.findall(r"\b(control\.[a-z_]+)\b", comment))
    paths |= {f"{a}.{b}" for a, b in re.findall(r"`(\w+): \{(\w+):", comment)}
    paths |= {m for m in re.findall(r"`(\w+):", comment)}
    assert "control.group" in paths
    known = {k.path for k in schema.SCHEMA}
    assert paths <= known, paths - known
