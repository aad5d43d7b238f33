"""Boot a real systemd as PID 1 of a throwaway systemd-nspawn container.

The container is the host's own OS, booted without a copy: ``systemd-nspawn
--directory=/ --volatile=yes`` gives it a tmpfs root with the host's /usr mounted
read-only and an empty /etc, so nothing is downloaded or built (no debootstrap) and the
systemd under test is the host's.  ``--private-network`` gives it a network namespace of
its own; everything a test configures lives there and dies with the container.

The host runs no systemd, so there is no machined to register with and no unit to put
the container in (``--register=no --keep-unit``).  Commands run inside through
``nsenter`` into the container's namespaces.  systemd-nspawn creates its ``payload`` and
``supervisor`` cgroups under the cgroup it runs in, so it is started inside a cgroup of
its own, created here and removed at teardown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from lab.wait import until

T = TypeVar("T")

INIT = Path("/usr/lib/systemd/systemd")
"""The systemd binary that becomes the container's PID 1."""
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "",
       "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
"""Environment of commands run inside (none of the caller's variables leak in)."""


def skip_reason() -> str | None:
    """Why a container cannot be booted here (None: it can)."""
    if os.geteuid() != 0:
        return "booting systemd in a container needs root"
    for tool in ("systemd-nspawn", "nsenter", "setpriv", "journalctl", "systemctl"):
        if shutil.which(tool) is None:
            pkg = "systemd-container" if tool == "systemd-nspawn" else "systemd/util-linux"
            return f"{tool} is not installed (Debian package {pkg})"
    if not INIT.exists():
        return f"{INIT} does not exist"
    if not Path("/bin").is_symlink():
        return "/ is not /usr-merged: --volatile=yes boots only /usr of the host"
    groups = cgroup_hierarchies()
    if not groups:
        return "no cgroup2 or name=systemd hierarchy is mounted"
    if not all(os.access(g, os.W_OK) for g in groups):
        return f"cannot create cgroups under {', '.join(map(str, groups))} (read-only?)"
    return None


def wait_until(check: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    return until(check, timeout, what, interval)


def cgroup_hierarchies() -> list[Path]:
    """The cgroup directories this process is in, in the hierarchies nspawn uses
    (cgroup2 and the named v1 ``name=systemd`` hierarchy)."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _source, options = (post.split() + ["", ""])[:3]
        mountpoint = Path(pre.split()[4])
        if fstype == "cgroup2":
            mounts.setdefault("", mountpoint)
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", mountpoint)
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in mounts:
            out.append(mounts[controllers] / path.lstrip("/"))
    return out


def sweep_stale_cgroups(prefix: str = "ecsd", min_age: float = 600.0) -> None:
    """Remove empty cgroup trees that a killed test run left (named `prefix`..., older
    than `min_age` seconds, so that a concurrent run's fresh tree is never touched)."""
    for parent in cgroup_hierarchies():
        for group in parent.glob(f"{prefix}*"):
            try:
                if time.time() - group.stat().st_mtime < min_age:
                    continue
                dirs = sorted((p for p in group.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True)
                if any((d / "cgroup.procs").read_text().strip() for d in [*dirs, group]):
                    continue
                for d in [*dirs, group]:
                    d.rmdir()
            except OSError:
                continue


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of `pid`, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[19]


class Machine:
    """One booted container; use as a context manager (teardown always runs)."""

    def __init__(self, workdir: Path, units: Path,
                 binds: Sequence[tuple[str, str, bool]] = (), name: str | None = None,
                 init_args: Sequence[str] = ()) -> None:
        """`units` is bound read-only as /etc/systemd/system.  Being read-only, it also
        keeps the first boot's ``preset-all`` from enabling Debian's default services
        (systemd-networkd-wait-online alone would hold the boot for two minutes).
        `binds`: (host path, container path, writable).  `workdir` gets the console log."""
        self.name = name or f"ecsd{secrets.token_hex(3)}"
        self.workdir = workdir
        self.binds = [(str(units), "/etc/systemd/system", False), *binds]
        self.init_args = ["systemd.mask=systemd-firstboot.service", *init_args]
        self.console = workdir / f"{self.name}.console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        """Host PID of the container's systemd."""
        self.boot_state = ""
        self._leader_start: str | None = None
        self._cgroups: list[Path] = []

    # ---- life -------------------------------------------------------------------
    def __enter__(self) -> "Machine":
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self) -> list[str]:
        """The systemd-nspawn command line."""
        cmd = ["systemd-nspawn", "--quiet", "--directory=/", "--volatile=yes",
               f"--machine={self.name}", "--private-network", "--register=no",
               "--keep-unit", "--settings=no", "--link-journal=no", "--resolv-conf=off",
               "--timezone=off", "--console=pipe"]
        for host, inside, writable in self.binds:
            cmd.append(f"--bind{'' if writable else '-ro'}={host}:{inside}")
        return [*cmd, "--boot", "--", *self.init_args]

    def boot(self, timeout: float = 90.0) -> None:
        """Start the container and wait until its systemd has finished booting."""
        sweep_stale_cgroups()
        for parent in cgroup_hierarchies():
            group = parent / self.name
            group.mkdir()
            self._cgroups.append(group)
        # The wrapper moves itself into the new cgroups, then becomes systemd-nspawn.
        script = ('for g in "$@"; do case "$g" in --) break;; esac; '
                  'echo $$ > "$g/cgroup.procs" || exit 97; shift; done; shift; exec "$@"')
        # --pdeathsig: if the test process dies, nspawn gets SIGTERM and halts the container.
        argv = ["setpriv", "--pdeathsig", "TERM", "--", "sh", "-c", script, "sh",
                *map(str, self._cgroups), "--", *self.command()]
        with open(self.console, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=ENV,
                                         start_new_session=True)
        self.leader = wait_until(self._find_leader, timeout, "the container's PID 1")
        own = os.readlink("/proc/self/ns/net")
        if os.readlink(f"/proc/{self.leader}/ns/net") == own:
            raise RuntimeError("the container shares the host's network namespace")
        self.boot_state = wait_until(self._booted, timeout, "the container's systemd to boot")
        """``running``, or ``degraded`` when some unit of the container failed."""

    def _find_leader(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}: "
                               f"{self.console_tail()}")
        own = os.readlink("/proc/self/ns/pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            st = _stat(int(entry.name))
            if st is None or st[0] != self.proc.pid:
                continue
            try:
                if (os.readlink(entry / "ns/pid") != own
                        and (entry / "comm").read_text().strip() == "systemd"):
                    self._leader_start = st[1]
                    return int(entry.name)
            except OSError:
                continue
        return None

    def _booted(self) -> str | None:
        r = self.run("systemctl", "is-system-running", check=False)
        state = r.stdout.strip()
        return state if state in ("running", "degraded") else None

    def close(self, timeout: float = 30.0) -> None:
        """Halt the container (killing it when it does not halt) and remove its cgroups."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks PID 1 to halt
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_leader()
                self.proc.kill()
                self.proc.wait(10)
        self._kill_leader()
        for group in reversed(self._cgroups):
            self._remove_cgroup(group)
        self._cgroups = []
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)

    def _kill_leader(self) -> None:
        """SIGKILL the container's PID 1 (and so all of it) if it still runs."""
        if self.leader is not None:
            st = _stat(self.leader)
            if st is not None and st[1] == self._leader_start:
                os.kill(self.leader, signal.SIGKILL)
                pid = self.leader
                wait_until(lambda: _stat(pid) is None, 10, "the container's PID 1 to die")

    @staticmethod
    def _remove_cgroup(group: Path) -> None:
        if not group.exists():
            return
        for sub in sorted((p for p in group.rglob("*") if p.is_dir()),
                          key=lambda p: len(p.parts), reverse=True):
            wait_until(lambda s=sub: not (s / "cgroup.procs").read_text().strip(), 10,
                       f"{sub} to empty")
            sub.rmdir()
        group.rmdir()

    def console_tail(self, chars: int = 2000) -> str:
        """The end of systemd-nspawn's own output."""
        try:
            return self.console.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ---- inside -----------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container (its mount, UTS, IPC, network and PID
        namespaces); with `check`, a non-zero exit raises with the output."""
        if self.leader is None:
            raise RuntimeError("the container is not running")
        cmd = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**ENV, **(env or {})}, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n"
                                 f"{r.stdout}{r.stderr}")
        return r

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside (``set -e``)."""
        return self.run("sh", "-ec", script, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of `unit` as a dict."""
        r = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def journal(self, unit: str) -> list[str]:
        """Messages of the manager about `unit` (and of processes journald attributes to
        it), oldest first.  (Slice the list to see what came after an earlier call:
        ``journalctl --after-cursor`` with matches proved unreliable here.)"""
        return self._journalctl(f"--unit={unit}")

    def output(self, pid: int, priority: str | None = None) -> list[str]:
        """What process `pid` wrote to its stdout/stderr journal stream.  Matched by PID:
        journald may file a service's stream under init.scope when the manager logs at
        debug level (the forked child logs before it joins the unit's cgroup, and
        journald caches that context for the PID)."""
        args = [f"_PID={pid}", "_TRANSPORT=stdout"]
        if priority:
            args.append(f"--priority={priority}")
        return self._journalctl(*args)

    def _journalctl(self, *args: str) -> list[str]:
        cmd = ["journalctl", "--no-pager", "--quiet", "--output=cat", *args]
        return self.run(*cmd).stdout.splitlines()
