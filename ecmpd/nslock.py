"""One ecmpd per network namespace: a lock that belongs to the namespace, not to a file.

Two daemons in one network namespace fight over the same routes, rules and nft table
(with different configs they livelock), whatever ``--socket`` or ``--config`` each got.
So before it touches anything, ecmpd binds an *abstract* AF_UNIX socket with a fixed
name, `LOCK_NAME`, and keeps it for its whole life:

- abstract socket names belong to the network namespace of the socket (Linux scopes the
  abstract namespace by netns): a second bind of the name in the same namespace fails
  with EADDRINUSE, while the same name in another namespace is another name;
- the kernel releases the name when the socket's last descriptor closes, on any death
  (``kill -9`` included): there is no stale lock to detect or clean up;
- no file is involved, so mount namespaces (systemd's PrivateTmp/PrivateMounts, a
  container's own /run) and socket paths cannot split or fake it.

The holder only binds the name: no listening, no thread, nothing in the event loop.  A
refused daemon finds the holder's pid from /proc/net/unix and /proc/*/fd (the socket
bound to the name), and its config and control socket from its command line, logs who
holds the namespace and exits with `EXIT_LOCKED`.

Limit: abstract names have no permissions, so any process of the namespace could take
the name first and keep ecmpd from starting.  The refusal then names that process (pid,
uid, command), so the squatter is easy to find.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ecmpd")

LOCK_NAME = "ecmpd/netns-lock"
"""The abstract socket name (the leading NUL is added here); one per network namespace."""

EXIT_LOCKED = 1
"""ecmpd's exit code when another one holds the namespace: 1, like every other start-up
refusal (a second daemon on the same control socket always exited 1)."""


def _address(name: str) -> str:
    return "\0" + name


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as far as can be known."""

    pid: int | None = None
    uid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What its command line says ({"ecmpd": 1, "config", "socket", "started"}; {} when it
    is not an ecmpd)."""
    command: str | None = None
    """/proc/<pid>/cmdline (or comm), when readable."""

    @property
    def is_ecmpd(self) -> bool:
        return self.info.get("ecmpd") == 1

    def describe(self) -> str:
        """``pid 1234, config /etc/ecmpd/ecmpd.yaml, control socket /run/ecmpd/ecmpd.sock,
        running since 2026-11-27 07:40:01``, with only the parts that are known."""
        parts = [f"pid {self.pid}" if self.pid else "pid unknown"]
        if self.is_ecmpd:
            if isinstance(self.info.get("config"), str):
                parts.append(f"config {self.info['config']}")
            if isinstance(self.info.get("socket"), str):
                parts.append(f"control socket {self.info['socket']}")
            started = self.info.get("started")
            if isinstance(started, (int, float)) and not isinstance(started, bool):
                parts.append("running since " +
                             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
        else:
            if self.uid is not None:
                parts.append(f"uid {self.uid}")
            if self.command:
                parts.append(f"command {self.command!r}")
        return ", ".join(parts)


class NamespaceLockError(Exception):
    """The lock could not be taken for another reason than a holder (a message for people)."""


class AlreadyRunning(NamespaceLockError):
    """Another process holds this network namespace's lock."""

    def __init__(self, holder: Holder, socket_path: str | None = None) -> None:
        self.holder = holder
        mine = os.path.abspath(socket_path) if socket_path else None
        if holder.is_ecmpd and mine is not None and holder.info.get("socket") == mine:
            # same words as the control socket's own refusal (scripts grep for them)
            rest = Holder(holder.pid, holder.uid,
                          {k: v for k, v in holder.info.items() if k != "socket"},
                          holder.command)
            what = f"another ecmpd is already listening on {mine} ({rest.describe()})"
        elif holder.is_ecmpd or holder.pid is None:
            what = f"another ecmpd is already running ({holder.describe()})"
        else:
            what = ("the network namespace's ecmpd lock (abstract unix socket "
                    f"@{LOCK_NAME}) is held by another process ({holder.describe()})")
        super().__init__(
            f"{what} in this network namespace: not starting a second one (both would "
            "fight over the same routes; stop that one first, or run this one in another "
            "network namespace)")


def _command(pid: int, argv: list[str]) -> str | None:
    """The holder's command line (`argv`), or its comm when that is empty."""
    if argv:
        return " ".join(argv)[:200]
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _binder_pid(name: str) -> int | None:
    """The pid of a process with a socket bound to abstract `name` in this namespace
    (from /proc/net/unix and /proc/*/fd).  None when it cannot be found (no permission
    to look, or it went away)."""
    inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == "@" + name:
                    inodes.add(f"socket:[{fields[6]}]")
    except OSError:
        return None
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read(65536).split(b"\0") if a]
    except OSError:
        return []


def _info(pid: int, argv: list[str]) -> dict[str, Any]:
    """What the holder's command line says about it: is it ecmpd, its config and socket."""
    # `ecmpd …`, `python …/ecmpd …` (console scripts) or `python -m ecmpd.ecmpd_command …`
    # (`ecmpd.cli` before 0.3: the one being upgraded still holds the lock)
    named = [os.path.basename(a) for a in argv[:2]] + argv[2:3] * (argv[1:2] == ["-m"])
    if not {"ecmpd", "ecmpd.ecmpd_command", "ecmpd.cli"} & set(named):
        return {}
    info: dict[str, Any] = {"ecmpd": 1, "pid": pid}
    for opt, key in (("--config", "config"), ("--socket", "socket")):
        for k, a in enumerate(argv):
            if a == opt and k + 1 < len(argv):
                info[key] = argv[k + 1]
            elif a.startswith(opt + "="):
                info[key] = a.split("=", 1)[1]
    try:  # start time: boot time + the process's start in clock ticks after boot
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(x.split()[1]) for x in f if x.startswith("btime "))
        info["started"] = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:  # relative paths are the holder's: resolve them against its working directory
        cwd = os.readlink(f"/proc/{pid}/cwd")
        for key in ("config", "socket"):
            if key in info:
                info[key] = os.path.normpath(os.path.join(cwd, info[key]))
    except OSError:
        pass
    return info


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("Uid:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def query(name: str = LOCK_NAME) -> Holder | None:
    """Who holds the lock `name` in this network namespace; None when nobody does."""
    pid = _binder_pid(name)
    if not pid:
        return None
    argv = _argv(pid)  # /proc/<pid>/cmdline, read once
    return Holder(pid, _uid(pid), _info(pid, argv), _command(pid, argv))


class NamespaceLock:
    """The lock of the current network namespace."""

    def __init__(self, name: str = LOCK_NAME) -> None:
        self.name = name
        self._sock: socket.socket | None = None

    @property
    def held(self) -> bool:
        return self._sock is not None

    def acquire(self, socket_path: str | None = None, wait: float = 1.0) -> "NamespaceLock":
        """Take the lock or raise AlreadyRunning (naming the holder) / NamespaceLockError.

        `wait`: how long to keep trying while the name is taken but its holder cannot be
        found (it is going away).
        """
        if self._sock is not None:
            return self
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # not inherited
            try:
                sock.bind(_address(self.name))
            except OSError as e:
                sock.close()
                if e.errno != errno.EADDRINUSE:
                    raise NamespaceLockError(
                        f"cannot take the network namespace's ecmpd lock "
                        f"(abstract unix socket @{self.name}): {e.strerror or e}") from e
                holder = query(self.name)
                if (holder is None or not holder.is_ecmpd) and time.monotonic() < deadline:
                    time.sleep(0.05)    # released meanwhile
                    continue
                raise AlreadyRunning(holder or Holder(), socket_path) from None
            break
        self._sock = sock
        return self

    def release(self) -> None:
        """Give the lock back (only tests need this: the kernel does it at exit)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()


_held: NamespaceLock | None = None
"""The daemon's lock, referenced for the life of the process."""


def hold_namespace(socket_path: str) -> NamespaceLock:
    """Take this network namespace's lock for the rest of the process's life, or log who
    holds it and exit with `EXIT_LOCKED` (SystemExit).  Call it before touching anything.
    """
    global _held
    if _held is not None and _held.held:
        return _held
    lock = NamespaceLock()  # the holder is named from its command line (config, socket)
    try:
        lock.acquire(socket_path)
    except NamespaceLockError as e:
        log.error("%s", e)
        raise SystemExit(EXIT_LOCKED) from None
    _held = lock
    return lock
