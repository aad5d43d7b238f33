"""The daemon's reloads of its config file, off its event loop (`Reloads`): the same
text is not parsed again, and a large other one is parsed in a child process: a file of
many policies takes up to a good fraction of a second to parse on a slow router (YAML
with line numbers, then every check), which would stop the daemon's one event loop; a
child parses it and hands the `Config` back pickled, while the loop goes on.  A small
file is parsed at once, in the daemon (milliseconds, less than the child's start).

The child: ``python -m ecmpd.configparse SOURCE [SYSCTL_ROOT]`` with the text on stdin
writes one pickle, ``("ok", Config)`` or ``("refused", [problem lines])``, to stdout.
The daemon side (`parse_apart`) parses in its own process when the child cannot run
or answers nothing readable (a config must never fail to load for want of a child).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys

from .config import ConfigError, parse_config, read_config_text
from .configmodel import Config

log = logging.getLogger("ecmpd")
IN_PROCESS_LINES = 400
"""A text of at most this many lines that are not blank or comments is parsed in the
daemon's own process: measured, 300 policies (346 such lines) parse in 35 ms and 1000 in
92 ms on a quiet 2-core machine, a child costs 0.1-0.8 s more of waiting (its start and
its imports)."""
TIMEOUT = 60.0
"""Seconds the child may take (1000 policies: about one on a slow router)."""


async def parse_apart(text: str, source: str, sysctl_root: str | None = None) -> Config:
    """`parse_config(text, source, sysctl_root=sysctl_root)`, run in a child process;
    raises `ConfigError` as it does."""
    answer = None
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, source, *([sysctl_root] if sysctl_root else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(text.encode()), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode == 0:
            answer = pickle.loads(out)
        else:
            log.warning("parsing the config in a child failed (exit %s): %s",
                        proc.returncode, err.decode(errors="replace").strip()[-500:])
    except (OSError, asyncio.TimeoutError, pickle.UnpicklingError, EOFError) as exc:
        log.warning("parsing the config in a child failed: %s", exc)
    if answer is None:
        return parse_config(text, source, sysctl_root=sysctl_root)
    kind, value = answer
    if kind == "refused":
        raise ConfigError(value)
    return value


def content_lines(text: str) -> int:
    """Lines of `text` that are neither blank nor comments: what parsing costs grows with."""
    return sum(1 for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


class Reloads:
    """`load_config` for a daemon's reloads, off its loop: a file whose text is the
    last valid one's is not parsed again, its `Config` is returned as it was; another
    is parsed in a child (`parse_apart`) when it is large (`IN_PROCESS_LINES`), else
    here."""

    def __init__(self) -> None:
        self._last: tuple[tuple[str, str, str | None], Config] | None = None

    async def load(self, path: str, sysctl_root: str | None = None) -> Config:
        key = (read_config_text(path), path, sysctl_root)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if content_lines(key[0]) <= IN_PROCESS_LINES:
            cfg = parse_config(key[0], path, sysctl_root=sysctl_root)
        else:
            cfg = await parse_apart(key[0], path, sysctl_root)
        self._last = (key, cfg)
        return cfg


def main(argv: list[str]) -> int:
    source, sysctl_root = argv[0], (argv[1] if len(argv) > 1 else None)
    text = sys.stdin.buffer.read().decode()
    try:
        answer: tuple = ("ok", parse_config(text, source, sysctl_root=sysctl_root))
    except ConfigError as exc:
        answer = ("refused", exc.problems)
    sys.stdout.buffer.write(pickle.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
