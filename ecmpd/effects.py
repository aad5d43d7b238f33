"""The effects of an event: what the daemon must carry out after `ecmpd.events.step`.

Data only (frozen dataclasses): `ecmpd.events` (the WANs) and `ecmpd.hastep` (the HA
role) make them, `ecmpd.daemon` carries them out, the listeners of a `Transition`
(history, journal, monitor, metrics, hooks) read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .state import State


@dataclass(frozen=True)
class Log:
    level: int
    message: str
    key: str | None = None
    """Lines of one key are rate-limited (None: always written)."""


@dataclass(frozen=True)
class Reconcile:
    """Make the kernel match the new state; `urgent`: a WAN joined or left the route
    (or went DOWN), timed from the decision to the kernel's ack."""

    urgent: bool = False


@dataclass(frozen=True)
class Flush:
    """Delete the conntrack entries under `mark`/`mask` once the reconcile is done;
    `name`: the WAN that went DOWN (None: a mark that no longer means that WAN)."""

    mark: int
    mask: int
    name: str | None = None
    family: int | None = None
    """The IP version whose connections go (None: both)."""


@dataclass(frozen=True)
class ResetProber:
    """WAN `name`'s link is back: new probe socket, and the conntrack entries of its old
    probes from `source` deleted."""

    name: str
    source: str | None
    family: int = 4


@dataclass(frozen=True)
class ForgetAddress:
    """WAN `name`'s address `address` is gone: delete the connections NATed to it."""

    name: str
    address: str


@dataclass(frozen=True)
class Transition:
    """WAN `name`'s state changed: what hooks, the history, `ecmpctl monitor` and the
    metrics are told.  States are lower case: a health phase's value, or "disabled"."""

    name: str
    state: str
    previous: str
    reason: str
    at: float
    """Epoch seconds of the change."""
    lasted: float | None
    """Seconds the previous state lasted (None: unknown)."""
    active: bool
    """In the route (takes new flows) after the change."""
    family: int = 4
    """The IP version; 0: not a WAN's but the HA pair's (`name` is ``ha``, the states
    are roles or ``split-brain``: `ecmpd.hastep`)."""


Effect = Union[Log, Reconcile, Flush, ResetProber, ForgetAddress, Transition]
Result = tuple[State, tuple[Effect, ...]]
