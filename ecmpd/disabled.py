"""The WANs an administrator disabled (`ecmpctl disable`), remembered across restarts.

A small JSON list next to the control socket (in /run/ecmpd under systemd, kept across
restarts by ``RuntimeDirectoryPreserve=restart``), so a restart — by hand, by an
upgrade or by the watchdog — does not put a WAN under maintenance back into service.
"""

from __future__ import annotations

import json
import logging

from . import statefile

log = logging.getLogger("ecmpd")


class DisabledStore:
    """Load and save the set of disabled WAN names at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, known: set[str]) -> set[str]:
        """The remembered names that are still WANs of the config (none if no file, or
        the file is refused: `statefile.read_json`).  Never every WAN of the config:
        a router with all its WANs disabled by a file would start without a route."""
        names = statefile.read_json(self.path)
        if names is None:
            return set()
        if not isinstance(names, list):
            log.warning("ignoring %s: not a list of WAN names", self.path)
            return set()
        kept = {n for n in names if isinstance(n, str) and n in known}
        if kept and kept == known:
            log.warning("ignoring %s: it disables every WAN (%s), which would leave the "
                        "router without a route", self.path, ", ".join(sorted(kept)))
            return set()
        if kept:
            log.info("still disabled by the administrator: %s", ", ".join(sorted(kept)))
        return kept

    def save(self, names: set[str]) -> bool:
        """Write `names` atomically (`statefile.write`); False when it could not be (the
        failure is logged, never raised)."""
        try:
            statefile.write(self.path, json.dumps(sorted(names)))
            return True
        except OSError as exc:
            log.warning("cannot remember disabled WANs in %s: %s", self.path, exc)
            return False
