"""Write ecmpd's nft table in a child process, for the daemon's rewrites after a reload:
with many policies one libnftables transaction and the listing after it take tenths of
a second each, and in the daemon's process they would stop its one event loop.

The child: ``python -m ecmpd.nftapart TABLE`` reads a pickled libnftables JSON document
on stdin, runs it, lists ``table inet TABLE`` and writes one pickle to stdout:
``("ok", normalized listing)`` (`nftrules.normalize_listing`) or ``("refused",
message)``.  `write_apart` raises `firewall.NftError` for a refusal and returns None when
the child could not run or answered nothing readable (then the caller writes in its own
process).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from typing import Any

log = logging.getLogger("ecmpd")
TIMEOUT = 60.0
"""Seconds the child may take."""


class Refused(RuntimeError):
    """libnftables refused the document in the child (its message)."""


async def write_apart(doc: dict[str, Any], table: str) -> list[dict[str, Any]] | None:
    """Run `doc` and list `table` in a child; the normalized listing, or None when the
    child could not do it (nothing is known to be written then); `Refused` when
    libnftables refused `doc`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, table, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(pickle.dumps(doc)), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            log.warning("writing the nft table in a child failed (exit %s): %s",
                        proc.returncode, err.decode(errors="replace").strip()[-500:])
            return None
        kind, value = pickle.loads(out)
    except (OSError, asyncio.TimeoutError, pickle.UnpicklingError, EOFError,
            ValueError) as exc:
        log.warning("writing the nft table in a child failed: %s", exc)
        return None
    if kind == "refused":
        raise Refused(value)
    return value


def main(argv: list[str]) -> int:
    import nftables

    from . import nftrules
    table = argv[0]
    doc = pickle.loads(sys.stdin.buffer.read())
    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    rc, _out, err = nft.json_cmd(doc)
    if rc != 0:
        answer: tuple = ("refused", str(err).strip() or f"libnftables returned {rc}")
    else:
        rc, listing, _err = nft.json_cmd(nftrules.list_command(table))
        answer = ("ok", nftrules.normalize_listing(
            listing if rc == 0 and isinstance(listing, dict) else {}, table))
    sys.stdout.buffer.write(pickle.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
