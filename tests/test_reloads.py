"""config.Reloads: a reload of the same text reuses the parsed config (a file of many
policies is not parsed again on the daemon's loop); any change is parsed and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecmpd.config import ConfigError, Reloads

BASE = """\
lan:
  interfaces: [lan0]
wans:
  a:
    interface: eth1
    gateway: 192.0.2.1
policies:
  - {dst: 203.0.113.0/24, use: [a]}
"""


def test_the_same_text_is_parsed_once_and_any_change_again(tmp_path: Path) -> None:
    path = tmp_path / "ecmpd.yaml"
    path.write_text(BASE)
    reloads = Reloads()
    first = reloads.load(str(path))
    assert reloads.load(str(path)) is first
    path.write_text(BASE.replace("0/24", "1/24"))
    with pytest.raises(ConfigError, match="host bits"):
        reloads.load(str(path))
    path.write_text(BASE.replace("203.0.113.0/24", "198.51.100.0/24"))
    changed = reloads.load(str(path))
    assert changed.policies[0].dst == ("198.51.100.0/24",)
    path.write_text(BASE)
    again = reloads.load(str(path))
    assert again == first and again is not first      # one text kept: the last one
    assert reloads.load(str(path), sysctl_root=str(tmp_path)) is not again
    path.unlink()
    with pytest.raises(ConfigError, match="ecmpd.yaml"):
        reloads.load(str(path))
