"""Apply ecmpd's nftables table (``table inet <nft_table>``) through libnftables, only
when it differs.

The table is replaced whole in one transaction (see `nftrules.replace_commands`), so
packets never see a half-built ruleset.  A digest of the rendered table is kept in a
rule comment: a restarted daemon that finds its own table intact adopts it without
touching it; a reload that changes the table writes it without listing the old one.
After each apply the kernel's listing is remembered; a later check that
finds a different listing (someone deleted or edited the table) applies it again.  A
check lists the table only when the ruleset's generation moved since the last one (any
nft transaction on the host moves it): a listing costs tens of milliseconds with many
policies, the generation a few microseconds.  The counters are read the same cheap way
(`ecmpd.nftnetlink`), not through libnftables.
Counter values are not part of that comparison (see `nftrules.normalize_listing`), so
traffic never causes a rewrite; a rewrite does restart the counters at zero.  A
``table ip`` of the same name (an older ecmpd's, IPv4 only) is never adopted: while it
exists, `ensure` rewrites, and the rewrite's transaction deletes it.
"""

from __future__ import annotations

import logging
from typing import Any, Generator

import nftables

from . import nftapart, nftrules
from .configmodel import Config
from .nftnetlink import NftNetlink

log = logging.getLogger("ecmpd")
APART_POLICIES = 100
"""A rewrite after a reconfigure goes to a child (`ecmpd.nftapart`) from this many
policies on: a smaller table is written and listed in tens of milliseconds, less than a
child's start (0.1-0.8 s of the reload's answer)."""


class NftError(RuntimeError):
    """libnftables refused a command."""


def _shape(objs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, name or chain, comment) of every counter, map, chain and rule, sorted: a
    deleted or added one shows."""
    out: list[tuple[str, str, str]] = []
    for obj in objs:
        (kind, body), = obj.items()
        if kind in ("chain", "counter", "map"):
            out.append((kind, str(body["name"]), ""))
        elif kind == "rule":
            out.append((kind, str(body["chain"]), str(body.get("comment", ""))))
    return sorted(out)


class Firewall:
    """ecmpd's one nftables table in the current network namespace."""

    def __init__(self, cfg: Config, gateways: dict[str, str] | None = None,
                 gateways6: dict[str, str] | None = None) -> None:
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)
        self.cfg = cfg
        self.gateways = gateways
        """WAN name → IPv4 gateway the arrival counters leave out; None: the config's."""
        self.gateways6 = gateways6
        """WAN name → IPv6 gateway (no scope) the IPv6 counters leave out; None: the
        config's."""
        self._baseline: list[dict[str, Any]] | None = None
        self._checked: int | None = None
        """The ruleset's generation when the listing last matched `_baseline`."""
        self._netlink: NftNetlink | None = None
        self._retired: set[str] = set()
        """Tables of earlier names, removed once the current one is in place."""
        self.applies = 0
        """How many times the table was (re)written by this process."""
        self._rewrite = False
        """A reconfigure changed what the table must hold: write it without listing the
        kernel's first (a listing takes a second with thousands of map elements)."""

    def _cmd(self, doc: dict[str, Any]) -> dict[str, Any]:
        rc, out, err = self._nft.json_cmd(doc)
        if rc != 0:
            raise NftError(str(err).strip() or f"libnftables returned {rc}")
        return out if isinstance(out, dict) else {}

    def listing(self) -> dict[str, Any] | None:
        """The kernel's listing of ecmpd's table, or None when it does not exist."""
        rc, out, _err = self._nft.json_cmd(nftrules.list_command(self.cfg.nft_table))
        if rc != 0 or not isinstance(out, dict):
            return None
        return out

    def _families(self) -> set[str] | None:
        """The families of the tables named like ecmpd's (None: cannot tell)."""
        rc, out, _err = self._nft.json_cmd(nftrules.tables_command())
        if rc != 0 or not isinstance(out, dict):
            return None
        return nftrules.families_of(out, self.cfg.nft_table)

    def ensure(self) -> bool:
        """Make the kernel's table match the config; True when it had to be written.
        Tables of earlier names go once it is in place (make before break)."""
        steps = self.steps()
        try:
            while True:
                next(steps)
        except StopIteration as done:
            return bool(done.value)

    def steps(self, apart: bool = False) -> Generator[Any, Any, bool]:
        """`ensure` in steps: it yields between its libnftables calls (each can take a
        tenth of a second or more with thousands of map elements), so that an event
        loop can run in between; returns what `ensure` returns.  With `apart`, a rewrite
        after a reconfigure is done in a child (`ecmpd.nftapart`): that step yields a
        coroutine, which the caller awaits and whose result it sends back."""
        written = yield from self._ensure(apart)
        for name in sorted(self._retired):
            self._cmd(nftrules.delete_commands(name))
            self._retired.discard(name)
        return written

    def _nl(self) -> NftNetlink:
        if self._netlink is None:
            self._netlink = NftNetlink()
        return self._netlink

    def _generation(self) -> int | None:
        """The ruleset's generation (None: cannot tell; then the table is listed)."""
        try:
            return self._nl().generation()
        except OSError as exc:
            log.debug("cannot read the nft generation: %s", exc)
            return None

    def _ensure(self, apart: bool = False) -> Generator[Any, Any, bool]:
        if self._rewrite:
            yield from self._apply(apart)
            return True
        generation = self._generation()
        if self._baseline is not None and generation is not None \
                and generation == self._checked:
            return False                # nothing in any table changed since it matched
        self._checked = None
        families = self._families()
        listing = (self.listing() if families is None or nftrules.FAMILY in families
                   else None)
        if families is not None and nftrules.LEGACY_FAMILY in families:
            log.info("nft table %s %s of an older ecmpd: replacing it by table %s %s",
                     nftrules.LEGACY_FAMILY, self.cfg.nft_table, nftrules.FAMILY,
                     self.cfg.nft_table)
        elif listing is not None:
            current = nftrules.normalize_listing(listing, self.cfg.nft_table)
            if (self._baseline is None
                    and nftrules.listing_digest(listing) == self._digest()
                    and _shape(current) == _shape(nftrules.render_table(
                        self.cfg, self.gateways, self.gateways6))):
                self._baseline = current      # adopt the intact table a previous ecmpd left
                self._checked = generation
                return False
            if current == self._baseline:
                self._checked = generation
                return False
            if self._baseline is not None:       # not our own new config or gateways
                log.info("nft table %s differs from ecmpd's: rewriting it", self.cfg.nft_table)
        yield
        yield from self._apply()
        return True

    def apply(self) -> None:
        """Replace the table atomically and remember what the kernel then shows."""
        for _ in self._apply():
            pass

    def _apply(self, apart: bool = False) -> Generator[Any, Any, None]:
        self._checked = None
        doc = nftrules.replace_commands(self.cfg, self.gateways, self.gateways6)
        yield
        apart = apart and len(self.cfg.policies) >= APART_POLICIES
        baseline = (yield nftapart.write_apart(doc, self.cfg.nft_table)) if apart else None
        if baseline is None:                # in this process (the child could not)
            self._cmd(doc)
            yield
            listing = self.listing()
            yield
            baseline = nftrules.normalize_listing(listing or {}, self.cfg.nft_table)
        self._rewrite = False
        self.applies += 1
        self._baseline = baseline

    def _digest(self) -> str:
        return nftrules.digest(self.cfg, self.gateways, self.gateways6)

    def reconfigure(self, cfg: Config, gateways: dict[str, str] | None = None,
                    gateways6: dict[str, str] | None = None) -> None:
        """Use a new config (and gateways of each family; None: the config's); the rest
        is left to ensure(), which removes the table of the old name once the new one is
        written."""
        if cfg is self.cfg and gateways == self.gateways and gateways6 == self.gateways6:
            return                      # every reconcile calls this: mostly nothing new
        known = self._baseline is not None     # the kernel holds what this process wrote
        if cfg.nft_table != self.cfg.nft_table:
            self._retired.add(self.cfg.nft_table)
            self._retired.discard(cfg.nft_table)
            self._baseline = None
        before = self._digest()
        self.cfg, self.gateways, self.gateways6 = cfg, gateways, gateways6
        if self._digest() != before:
            self._baseline = None
        # a table written for the old config (not one to adopt) is rewritten unlisted
        self._rewrite = self._rewrite or (known and self._baseline is None)

    def read_counters(self, policies: bool = True) -> dict[nftrules.CounterKey, int]:
        """(family, WAN id) → packets of that IP version (4 or 6) that arrived on the WAN
        from a source other than its gateway of that family (IPv6: nor link-local; see
        `nftrules`).  Every WAN has both keys.  With `policies`, also (``"policy"``,
        position) → the connections policy `position` steered (their first packets; see
        `ecmpd.policyrules`), one key per policy: a dump of all the table's counters,
        where the WANs' alone are one request each (what a prober reads every round).
        {} when the table does not exist.  The counts restart at zero whenever the table
        is rewritten."""
        names = None if policies else [nftrules.counter_name(f, w.id)
                                       for w in self.cfg.wans for f in (4, 6)]
        found = self._nl().counters(self.cfg.nft_table, names)
        return {key: n for name, n in found.items()
                if (key := nftrules.counter_key(name)) is not None}

    def remove(self) -> None:
        """Delete ecmpd's table, and any of an earlier name, of both families (an older
        ecmpd's ``table ip`` too; no error when gone)."""
        for name in sorted(self._retired | {self.cfg.nft_table}):
            self._cmd(nftrules.delete_commands(name))
        self._retired.clear()
        self._baseline = None
        self._checked = None
        self._rewrite = False
