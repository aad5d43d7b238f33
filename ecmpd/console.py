"""What `ecmpd` and `ecmpctl` share at the console: ``--version`` and a quiet end when
the reader of their output goes away (``ecmpd --dry-run | head -1``).

The version has one source, pyproject.toml: the installed package's metadata, or, in a
source tree that was never installed, the file itself.  It is read only when asked for
(`importlib.metadata` costs start-up time the daemon does not need).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
TYPE_CHECKING = False  # `typing` stays unimported: ecmpctl's start (tests/test_startup_imports.py)
if TYPE_CHECKING:
    from typing import Any

PROJECT = "ecmpd"
_PYPROJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                          "pyproject.toml")
"""The source tree's pyproject.toml (os.path: pathlib would cost ecmpctl's start ~5 ms)."""


def version() -> str:
    """ecmpd's version: the installed distribution's, else the source tree's
    pyproject.toml, else ``unknown``."""
    from importlib import metadata
    try:
        return metadata.version(PROJECT)
    except metadata.PackageNotFoundError:
        pass
    try:
        with open(_PYPROJECT, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "unknown"
    found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    return found.group(1) if found else "unknown"


class _Version(argparse.Action):
    """``--version``: print ``PROG VERSION`` and exit 0 (the version read only now)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give `parser` a ``--version`` option."""
    parser.add_argument("--version", action=_Version, help="print the version and exit")


EXIT_CLOSED_PIPE = 141
"""What a shell reports for a command killed by SIGPIPE (128 + 13): the same status
as a C tool whose reader left."""


def quiet_on_closed_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """`main`, ending with `EXIT_CLOSED_PIPE` and no traceback when stdout's reader has
    gone.  Output is flushed inside the guard, so the interpreter's own flush at exit
    finds nothing to write; stdout then points at /dev/null for whatever still writes.
    (SIGPIPE stays ignored, Python's default: the daemon's sockets need EPIPE, not a
    signal that kills it.)"""

    @functools.wraps(main)
    def guarded(*args: Any, **kw: Any) -> int:
        try:
            code = main(*args, **kw)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):   # stdout without a descriptor (a test's capture)
                pass
            return EXIT_CLOSED_PIPE

    return guarded
