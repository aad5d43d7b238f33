"""Network-namespace primitives for the lab: create, run in, kill, delete, sweep.

Everything goes through the ``ip`` CLI (``ip netns add``, ``ip netns exec``, ``ip -n``).
Nothing here ever touches the caller's own network namespace: every command that
configures something runs inside a named namespace.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")
DEFAULT_PREFIX_STEM = "ecl"


class LabCommandError(subprocess.CalledProcessError):
    """A lab command failed; unlike its base class, `str()` shows stderr too."""

    def __str__(self) -> str:
        cmd = " ".join(self.cmd) if isinstance(self.cmd, (list, tuple)) else str(self.cmd)
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else self.stderr
        return f"command {cmd!r} exited {self.returncode}: {err}"


def random_prefix(stem: str = DEFAULT_PREFIX_STEM) -> str:
    """A fresh namespace-name prefix: `stem` + 6 random hex characters + ``-``."""
    return f"{stem}{secrets.token_hex(3)}-"


def exec_argv(ns: str, *cmd: str) -> list[str]:
    """The argv that runs `cmd` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *cmd]


def run(argv: list[str], *, check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` (text mode, output captured); raise LabCommandError if `check` and it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def run_in(ns: str, *cmd: str, check: bool = True, timeout: float = 30,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside namespace `ns` (see `run`)."""
    return run(exec_argv(ns, *cmd), check=check, timeout=timeout, input=input)


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n ns args...``."""
    return run(["ip", "-n", ns, *args], check=check)


def ip_batch(ns: str, lines: list[str]) -> None:
    """Run several ``ip`` commands in namespace `ns` with one process (``ip -batch``)."""
    if lines:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def nft(ns: str, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Load an nft script (``nft -f -``) inside namespace `ns`."""
    if not script.endswith("\n"):
        script += "\n"  # nft's parser wants the last statement terminated
    return run_in(ns, "nft", "-f", "-", input=script, check=check)


def sysctl(ns: str, settings: dict[str, str | int]) -> None:
    """Set sysctls inside namespace `ns` (one ``sysctl -w`` process)."""
    if settings:
        run_in(ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items()))


def exists(ns: str) -> bool:
    """Whether namespace `ns` exists (``/run/netns/<ns>``)."""
    return (NETNS_DIR / ns).exists()


def list_namespaces(prefix: str = "") -> list[str]:
    """Names of the named namespaces that start with `prefix`."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def create(ns: str) -> None:
    """Create namespace `ns` and bring its loopback up."""
    run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")


def pids(ns: str) -> list[int]:
    """Pids of the processes inside namespace `ns` (``ip netns pids``)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def terminate(proc: subprocess.Popen | None, timeout: float = 5.0,
              sig: int = signal.SIGTERM) -> None:
    """Send `sig` to `proc` (if running) and reap it; SIGKILL when it outlives `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_all(namespaces: list[str], deadline: float = 5.0) -> list[int]:
    """SIGKILL every process in `namespaces`; wait (until `deadline` s) for them to go.

    Returns the pids still alive at the deadline (normally none).
    """
    end = time.monotonic() + deadline
    victims: set[int] = set()
    while True:
        found = {p for ns in namespaces if exists(ns) for p in pids(ns)}
        found = {p for p in found if pid_alive(p) and p != os.getpid()}
        for p in found - victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        victims |= found
        alive = [p for p in victims if pid_alive(p)]
        if not found and not alive:
            return []
        if time.monotonic() >= end:
            return alive
        time.sleep(0.02)


def delete(ns: str) -> bool:
    """Delete namespace `ns` if it exists; True if it is gone afterwards. Never raises."""
    try:
        if exists(ns):
            run(["ip", "netns", "del", ns], check=False)
        return not exists(ns)
    except Exception:  # noqa: BLE001 - cleanup must not raise
        return False


def destroy(namespaces: list[str]) -> list[str]:
    """Kill every process in `namespaces` and delete them; return those left behind."""
    try:
        kill_all(namespaces)
    except Exception:  # noqa: BLE001 - cleanup must not raise
        pass
    return [ns for ns in namespaces if not delete(ns)]


def sweep(prefix: str) -> list[str]:
    """Destroy every namespace whose name starts with `prefix`; return their names."""
    if not prefix:
        raise ValueError("refusing to sweep with an empty prefix")
    found = list_namespaces(prefix)
    destroy(found)
    return found
