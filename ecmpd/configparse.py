"""The daemon's reloads of its config file, off its event loop (`Reloads`): the same
text is not parsed again, and another is parsed in a child process: a file of many
policies takes a good fraction of a second to parse (YAML with line numbers, then
every check), which would stop the daemon's one event loop; a child parses it and
hands the `Config` back pickled, while the loop goes on.

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


class Reloads:
    """`load_config` for a daemon's reloads, off its loop: a file whose text is the
    last valid one's is not parsed again, its `Config` is returned as it was; another
    is parsed in a child (`parse_apart`)."""

    def __init__(self) -> None:
        self._last: tuple[tuple[str, str, str | None], Config] | None = None

    async def load(self, path: str, sysctl_root: str | None = None) -> Config:
        key = (read_config_text(path), path, sysctl_root)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
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
