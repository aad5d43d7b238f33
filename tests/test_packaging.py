"""The Debian packaging (debian/, tools/deb.sh) and the dev venv's setup in ./dev: one
version, every runtime dependency either Debian's or carried (pinned), nftables always
Debian's, and a venv that is remade when it cannot see Debian's python3-nftables.

Building the .deb is `./dev deb` (CI runs it before the tests), installing it in a clean
Debian 12 `./dev deb-check`: both take too long for the test suite."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "debian"

DEBIAN_PACKAGES = {"pyyaml": "python3-yaml", "prometheus-client": "python3-prometheus-client",
                   "nftables": "python3-nftables"}
"""Runtime dependency (PyPI name, normalized) -> the Debian package the .deb depends on."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> str:
    return (ROOT / "pyproject.toml").read_text()


def runtime_dependencies() -> list[str]:
    import tomllib
    return tomllib.loads(pyproject())["project"]["dependencies"]


def control_depends() -> set[str]:
    text = (DEBIAN / "control").read_text()
    binary = text.split("\nPackage: ecmpd\n", 1)[1]
    depends = re.search(r"^Depends:(.*?)(?=^\S)", binary, re.M | re.S)[1]
    return {d.strip().split()[0] for d in depends.split(",") if d.strip()}


def vendored() -> dict[str, str]:
    """Name -> pinned version of the wheels the package carries."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (DEBIAN / "vendor.txt").read_text(), re.M)
    return {normalize(n): v for n, v in pins}


def test_one_version_in_pyproject_and_the_debian_changelog():
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject())[1]
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert re.match(rf"ecmpd \({re.escape(version)}(-\d+)?\) ", first), first
    assert "__version__" not in (ROOT / "ecmpd" / "__init__.py").read_text()


def test_nftables_is_debians_in_the_package_and_the_venv():
    assert not any(normalize(re.split(r"[<>=!~ ]", d)[0]) == "pip-nftables"
                   for d in runtime_dependencies())
    assert "python3-nftables" in control_depends()
    dev = (ROOT / "dev").read_text()
    assert "python3-nftables" in dev and "--system-site-packages" in dev


def test_every_runtime_dependency_is_debians_or_carried_at_a_version_it_accepts():
    from packaging.requirements import Requirement
    carried = vendored()
    for dep in runtime_dependencies():
        req = Requirement(dep)
        name = normalize(req.name)
        if name in carried:
            assert req.specifier.contains(carried[name]), (dep, carried[name])
        else:
            assert DEBIAN_PACKAGES.get(name) in control_depends(), \
                f"{dep}: neither in debian/vendor.txt nor a Depends of debian/control"
    assert set(carried) <= {normalize(Requirement(d).name) for d in runtime_dependencies()}


def test_the_vendored_wheels_are_pinned_by_hash():
    lines = [l for l in (DEBIAN / "vendor.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines and all(re.search(r"==\S+ --hash=sha256:[0-9a-f]{64}$", l) for l in lines)


def test_the_package_ships_the_unit_config_man_pages_and_completion():
    rules = (DEBIAN / "rules").read_text()
    assert "tools/manpages.py" in rules and "tools/completion.py" in rules
    assert "systemd/ecmpd.service" in rules
    install = (DEBIAN / "ecmpd.install").read_text().split()
    assert install[install.index("debian/build/etc/ecmpd.yaml") + 1] == "etc/ecmpd/"
    assert "install -D -m 0644 config/ecmpd.example.yaml $(BUILD)/etc/ecmpd.yaml" in \
        (ROOT / "debian" / "rules").read_text()
    assert len((DEBIAN / "ecmpd.manpages").read_text().split()) == 3
    # the HA pair: the notify script where keepalived.conf's example calls it, the
    # example configs beside the other examples
    pairs = dict(zip(install[::2], install[1::2]))
    assert pairs["ha/ecmpd-ha-notify"] == "usr/lib/ecmpd/"
    assert pairs["ha/keepalived.conf"] == pairs["ha/conntrackd.conf"] == \
        pairs["ha/ecmpd-ha.nft"] == "usr/share/doc/ecmpd/examples/ha/"
    assert 'notify "/usr/lib/ecmpd/ecmpd-ha-notify"' in (ROOT / "ha" / "keepalived.conf").read_text()
    assert (ROOT / "ha" / "ecmpd-ha-notify").stat().st_mode & 0o111
    assert {"keepalived", "conntrackd"} <= set(re.findall(
        r"^Suggests:(.*)$", (DEBIAN / "control").read_text(), re.M)[0].replace(",", " ").split())
    for script in ("ecmpd", "ecmpctl"):
        text = (DEBIAN / "scripts" / script).read_text()
        assert text.startswith("#!/usr/bin/python3")
        assert f"from ecmpd.{script}_command import main" in text


VENV_OK = """
set -euo pipefail
eval "$(sed -n '/^venv_ok()/,/^}/p' DEV)"
VENV=THE_VENV; PYTHON=/usr/bin/python3
venv_ok && echo ok || echo remake
"""


@pytest.mark.parametrize("cfg, verdict", [
    ("home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n", "ok"),
    ("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n", "remake"),
    ("home = /root/.pyenv/versions/3.11.7/bin\ninclude-system-site-packages = true\n", "remake"),
    (None, "remake"),
])
def test_dev_remakes_a_venv_that_cannot_see_debians_packages(tmp_path, cfg, verdict):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    if cfg is not None:
        (venv / "pyvenv.cfg").write_text(cfg)
    p = subprocess.run(["bash", "-c", VENV_OK.replace("DEV", str(ROOT / "dev")).replace("THE_VENV", str(venv))],
                       capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == verdict, p.stderr


def test_ci_builds_the_deb_before_the_tests():
    lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines.index("./dev deb") < lines.index("exec ./dev test")
