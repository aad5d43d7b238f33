"""Lab fixtures: `make_lab` (factory), `lab` (a built seed lab), `lab3` (three WANs),
`make_netns` (bare namespaces), `lab_prefix`, `dhcp_tools`; a session sweep.

Every lab of this test run gets a namespace prefix starting with `RUN_STEM`, so the
session-end sweep deletes exactly this run's leftovers and nobody else's.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from typing import Callable, Iterator

import pytest

from lab import Lab, LabSpec, make_spec, netns, sweep

RUN_STEM = f"ecl{secrets.token_hex(2)}"
"""Namespace-name stem shared by every lab of this pytest process."""
_counter = itertools.count(1)


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    missing = [t for t in ("ip", "nft", "sysctl") if shutil.which(t) is None]
    if missing:
        return f"the lab needs {', '.join(missing)}"
    return None


def next_lab_prefix() -> str:
    """A fresh prefix for this run: RUN_STEM + a counter + ``-``."""
    return f"{RUN_STEM}{next(_counter):02x}-"


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory `make_lab(spec=None) -> built Lab`; every lab is torn down at test end."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    labs: list[Lab] = []

    def factory(spec: LabSpec | None = None) -> Lab:
        lab = Lab(spec, prefix=next_lab_prefix())
        labs.append(lab)
        return lab.build()

    try:
        yield factory
    finally:
        for lab in labs:
            lab.teardown()


@pytest.fixture
def lab_prefix() -> str:
    """A fresh namespace prefix of this run (for labs built by hand); skips when not root."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    return next_lab_prefix()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A built lab with the seed topology (wlan1, wlan2)."""
    return make_lab()


@pytest.fixture
def lab3_names() -> list[str] | None:
    """The WAN names of `lab3` (None: wan1, wan2, wan3); a test module overrides it."""
    return None


@pytest.fixture
def lab3(make_lab: Callable[..., Lab], lab3_names: list[str] | None) -> Lab:
    """A built lab with three WANs (`make_spec(3, names=lab3_names)`)."""
    return make_lab(make_spec(3, names=lab3_names))


@pytest.fixture
def make_netns(lab_prefix: str) -> Iterator[Callable[[str], str]]:
    """Factory `make_netns(name) -> str`: a bare namespace of this run (`lab_prefix` +
    `name`, loopback up); every one is destroyed, its processes killed, at test end.
    The only place besides the lab that adds a namespace."""
    made: list[str] = []

    def make(name: str) -> str:
        ns = lab_prefix + name
        made.append(ns)  # before it exists: a half-made one is deleted too
        netns.create(ns)
        return ns

    try:
        yield make
    finally:
        netns.destroy(made)


@pytest.fixture
def dhcp_tools() -> None:
    """Skip unless the DHCP ISP's tools are installed (dnsmasq, busybox udhcpc)."""
    for tool in ("dnsmasq", "udhcpc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian dnsmasq-base, udhcpc: ./dev setup)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete any namespace this run left behind (e.g. after a crash mid-test)."""
    if os.geteuid() == 0:
        sweep(RUN_STEM)


@pytest.fixture
def ecmpd_in(tmp_path):
    """Factory `ecmpd_in(lab, config=None, **config_for_kw) -> Ecmpd`: the real ecmpd in
    the lab's router namespace, started and all its WANs UP; always stopped at test end."""
    from lab.runner import Ecmpd, config_for

    started: list = []

    def start(lab: Lab, config: dict | None = None, **kw):
        config = config if config is not None else config_for(lab, **kw)
        d = Ecmpd(lab, config, workdir=str(tmp_path / f"ecmpd{len(started)}"))
        started.append(d)
        d.start()
        d.wait_states({name: "up" for name in config["wans"]})
        return d

    yield start
    for d in started:
        try:
            d.stop()
        except Exception:
            pass
