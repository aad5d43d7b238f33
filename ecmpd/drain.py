"""The WANs an administrator disabled (`ecmpctl disable`), remembered across restarts.

A small JSON list next to the control socket (in /run/ecmpd under systemd, kept across
restarts by ``RuntimeDirectoryPreserve=restart``), so a restart — by hand, by an
upgrade or by the watchdog — does not put a WAN under maintenance back into service.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("ecmpd")


class DisabledStore:
    """Load and save the set of disabled WAN names at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, known: set[str]) -> set[str]:
        """The remembered names that are still WANs of the config (none if no file)."""
        try:
            with open(self.path) as f:
                names = json.load(f)
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return set()
        if not isinstance(names, list):
            log.warning("ignoring %s: not a list of WAN names", self.path)
            return set()
        kept = {n for n in names if isinstance(n, str) and n in known}
        if kept:
            log.info("still disabled by the administrator: %s", ", ".join(sorted(kept)))
        return kept

    def save(self, names: set[str]) -> None:
        """Write `names` atomically; a failure is logged, never raised."""
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(sorted(names), f)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot remember disabled WANs in %s: %s", self.path, exc)
