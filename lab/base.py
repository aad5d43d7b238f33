"""`LabLike`: the part of `lab.lab.Lab` that the lab's tools use (typing only).

`lab.lines`, `lab.load`, `lab.flood`, `lab.dhcp`, `lab.ptp` and `lab.ra` are driven by a
`Lab` and `Lab` offers them as methods (`Lab.shape`, `Lab.load`, ...): they name this protocol
rather than `Lab`, so that no module of the lab imports one that imports it back.
"""

from __future__ import annotations

import subprocess
from typing import Any, Protocol, Sequence

from lab.topology import LabSpec


class LabLike(Protocol):
    """Names and process helpers of a built lab (see `lab.lab.Lab` for each)."""

    spec: LabSpec
    ns_lan: str
    ns_router: str
    ns_inet: str

    def ns_isp(self, wan: str) -> str: ...

    @property
    def clients(self) -> list[str]: ...

    def wan_of_source(self, addr: str | None) -> str | None: ...

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]: ...

    def popen(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen: ...

    def wait_carrier(self, ifnames: Sequence[str], up: bool, timeout: float = 5.0) -> None: ...

    def set_isp_link_local(self, wan: str, address: str) -> None: ...
