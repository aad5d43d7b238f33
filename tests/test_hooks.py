"""`ecmpd.hooks`: real hook processes (small shell scripts in tmp dirs, no root) fed
the daemon's `Transition`s: their environment, the order per WAN, WANs that do not wait
for each other, the timeout's SIGTERM then SIGKILL of the whole session, what is logged,
the bounded queue, the stop; and the `hooks:` / `hook_timeout:` config keys."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from ecmpd import events as ev
from ecmpd.config import ConfigError, parse_config
from ecmpd.configmodel import Config, Wan
from ecmpd.health import Verdict
from ecmpd.hooks import STDERR_TAIL, Hooks, run_hook
from ecmpd.state import State, initial
from lab.wait import until_async

from tests.test_state import ADDRS, AUTO_LINKS, CFG, LINKS, T0, dhcp_route

ROOT = Path(__file__).resolve().parent.parent


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """`coro` on a fresh loop, failing (not hanging) after `timeout` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def script(tmp: Path, name: str, body: str) -> str:
    """An executable /bin/sh script `name` in `tmp`; its path."""
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def change(name: str, state: str, previous: str = "up", family: int = 4,
           at: float = T0 + 1) -> ev.Transition:
    return ev.Transition(name, state, previous, f"to {state}", at, 2.5, state == "up", family)


def plain(hooks: tuple[str, ...], timeout: float = 10.0, cfg: Config = CFG) -> State:
    """wlan1 (eth1, 192.0.2.1) and wlan2 (eth2, 198.51.100.1) with `hooks`."""
    return initial(dataclasses.replace(cfg, hooks=hooks, hook_timeout=timeout), LINKS, ADDRS,
                   (), T0)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def settle(hooks: Hooks) -> None:
    """Until every queued change went through its hooks."""
    await until_async(lambda: not hooks._workers, 20, "the hooks to finish", 0.01)


# ---- environment ------------------------------------------------------------------------

RECORD = 'env | grep -E "^(ECMPD_|HOOKTEST_)" | sort > "$HOOKTEST_DIR/$ECMPD_WAN.$ECMPD_FAMILY"\n'


def test_the_environment_tells_the_change_with_the_learned_gateway_and_the_family(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKTEST_DIR", str(tmp_path))     # the daemon's own environment
    cfg = Config(lan_interfaces=("lan0",), hooks=(script(tmp_path, "record", RECORD),),
                 wans=(Wan("dhcp", "eth1", None, id=1),
                       Wan("wlan2", "eth2", IPv4Address("198.51.100.1"), id=2,
                           gateway6=IPv6Address("fe80::1"), families=(4, 6))))
    st = initial(cfg, AUTO_LINKS, ADDRS, (), T0, addresses6={12: (("2001:db8:2::2", 64),)})

    async def main() -> None:
        nonlocal st
        hooks = Hooks(lambda: st)
        # as the daemon does: the state replaced, then the listeners told
        for event, now in ((ev.DefaultsChanged(254, dhcp_route("192.0.2.1")), T0 + 7),
                           (ev.ProbeRound("wlan2", Verdict.GOOD, family=6), T0 + 9)):
            st, effects = ev.step(st, event, now)
            for t in effects:
                if isinstance(t, ev.Transition):
                    hooks(t)
        await settle(hooks)

    run(main())
    env = {p.name: dict(line.split("=", 1) for line in lines(p)) for p in tmp_path.glob("*.ipv*")}
    assert env == {
        "dhcp.ipv4": {
            "ECMPD_WAN": "dhcp", "ECMPD_STATE": "rising", "ECMPD_PREVIOUS": "down",
            "ECMPD_REASON": "gateway learned", "ECMPD_INTERFACE": "eth1",
            "ECMPD_GATEWAY": "192.0.2.1", "ECMPD_FAMILY": "ipv4", "ECMPD_ACTIVE": "0",
            "ECMPD_SINCE": f"{T0 + 7:.3f}", "ECMPD_LASTED": "7.000",
            "ECMPD_ROLE": "standalone", "HOOKTEST_DIR": str(tmp_path)},
        "wlan2.ipv6": {
            "ECMPD_WAN": "wlan2", "ECMPD_STATE": "up", "ECMPD_PREVIOUS": "init",
            "ECMPD_REASON": "after 1 good round", "ECMPD_INTERFACE": "eth2",
            "ECMPD_GATEWAY": "fe80::1", "ECMPD_FAMILY": "ipv6", "ECMPD_ACTIVE": "1",
            "ECMPD_SINCE": f"{T0 + 9:.3f}", "ECMPD_LASTED": "9.000",
            "ECMPD_ROLE": "standalone", "HOOKTEST_DIR": str(tmp_path)}}


# ---- order ------------------------------------------------------------------------------

def test_one_wans_changes_reach_the_hooks_in_order_each_hook_in_config_order(
        tmp_path: Path) -> None:
    log = tmp_path / "log"
    # the first hook is the slower: run side by side, the lines would interleave
    first = script(tmp_path, "first", f'sleep 0.05; echo "first $ECMPD_STATE" >> {log}\n')
    second = script(tmp_path, "second", f'echo "second $ECMPD_STATE" >> {log}\n')
    st = plain((first, second))
    states = ["down", "rising", "up", "falling", "down", "rising", "up", "disabled"]

    async def main() -> None:
        hooks = Hooks(lambda: st)
        for i, state in enumerate(states):             # faster than the hooks run
            hooks(change("wlan1", state, states[i - 1] if i else "init"))
        await settle(hooks)

    run(main())
    assert lines(log) == [f"{hook} {s}" for s in states for hook in ("first", "second")]


def test_wans_do_not_wait_for_each_other(tmp_path: Path) -> None:
    log, release = tmp_path / "log", tmp_path / "release"
    hook = script(tmp_path, "hook", f'i=0\nif [ "$ECMPD_WAN" = wlan1 ]; then\n'
                  f'  while [ ! -e {release} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n'
                  f'fi\necho "$ECMPD_WAN $ECMPD_STATE" >> {log}\n')
    st = plain((hook,), timeout=30)

    async def main() -> None:
        hooks = Hooks(lambda: st)
        hooks(change("wlan1", "down"))        # its hook waits for `release`
        hooks(change("wlan2", "down"))
        hooks(change("wlan2", "up", "down"))
        await until_async(lambda: len(lines(log)) == 2, 10, "wlan2's hooks", 0.01)
        assert lines(log) == ["wlan2 down", "wlan2 up"]    # wlan1's hook still waits
        release.touch()
        await settle(hooks)

    run(main())
    assert lines(log) == ["wlan2 down", "wlan2 up", "wlan1 down"]


# ---- timeout ----------------------------------------------------------------------------

def test_the_timeout_sends_sigterm_then_sigkill_to_every_process_of_the_hook(
        tmp_path: Path) -> None:
    got, child = tmp_path / "got", tmp_path / "child"
    # a child that ignores SIGTERM, and a hook that traps it and goes on
    hook = script(tmp_path, "stubborn",
                  f"(trap '' TERM; exec sleep 3600) &\necho $! > {child}\n"
                  f"trap 'echo term >> {got}' TERM\nwhile :; do sleep 0.05; done\n")
    out = run(run_hook(hook, dict(os.environ), timeout=1.0, grace=0.5))
    assert out.stopped == "SIGKILL" and out.returncode == -signal.SIGKILL
    assert lines(got) == ["term"]            # it was asked first
    pid = int(child.read_text())
    run(until_async(lambda: not alive(pid), 10, f"the hook's child {pid} to die", 0.01))


def test_a_hook_that_ends_on_sigterm_is_not_killed(tmp_path: Path) -> None:
    hook = script(tmp_path, "slow", "echo started >&2\nexec sleep 3600\n")
    out = run(run_hook(hook, dict(os.environ), timeout=0.5, grace=20))
    assert (out.stopped, out.returncode, out.stderr) == ("SIGTERM", -signal.SIGTERM, "started")


def test_a_hook_is_done_when_it_exits_even_if_its_child_holds_stderr(tmp_path: Path) -> None:
    child = tmp_path / "child"
    hook = script(tmp_path, "detach", f"sleep 3600 &\necho $! > {child}\necho bye >&2\n")
    out = run(run_hook(hook, dict(os.environ), timeout=20))
    assert (out.returncode, out.stopped, out.stderr) == (0, "", "bye")
    os.kill(int(child.read_text()), signal.SIGKILL)


# ---- what is logged -----------------------------------------------------------------------

def test_exit_status_and_stderr_are_logged_naming_the_hook_and_the_wan(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = script(tmp_path, "failing", "echo 'webhook: connection refused' >&2\nexit 3\n")
    chatty = script(tmp_path, "chatty", "echo 'posted' >&2\n")
    quiet = script(tmp_path, "quiet", "exit 0\n")
    missing = str(tmp_path / "missing")
    st = plain((failing, chatty, quiet, missing))
    caplog.set_level(logging.DEBUG, "ecmpd")

    async def main() -> None:
        hooks = Hooks(lambda: st)
        hooks(change("wlan2", "down"))
        await settle(hooks)

    run(main())
    got = [(r.levelname, r.getMessage()) for r in caplog.records if "for wlan2" in r.getMessage()]
    assert got == [
        ("WARNING", f"hook {failing} for wlan2 up -> down exited with status 3: "
                    f"webhook: connection refused"),
        ("INFO", f"hook {chatty} for wlan2 up -> down: posted"),
        ("DEBUG", f"hook {quiet} for wlan2 up -> down done"),
        ("WARNING", f"hook {missing} for wlan2 up -> down could not start: "
                    f"No such file or directory")]


def test_only_the_end_of_a_long_stderr_is_kept(tmp_path: Path) -> None:
    hook = script(tmp_path, "loud", "head -c 200000 /dev/zero | tr '\\0' x >&2\n"
                                    "echo >&2\necho END >&2\nexit 1\n")
    out = run(run_hook(hook, dict(os.environ), timeout=20))
    assert out.returncode == 1 and out.stderr.endswith("x | END")
    assert out.stderr.startswith("...x") and len(out.stderr) <= STDERR_TAIL + 10  # "...", " | "


def test_a_hook_flooding_stderr_does_not_stall_the_loop(tmp_path: Path) -> None:
    hook = script(tmp_path, "flood", "exec yes flood >&2\n")

    async def main() -> tuple[float, str]:
        loop = asyncio.get_running_loop()
        running = loop.create_task(run_hook(hook, dict(os.environ), timeout=1.0))
        gap, last = 0.0, loop.time()
        while not running.done():            # what the probers and the watcher need
            await asyncio.sleep(0.01)
            gap, last = max(gap, loop.time() - last), loop.time()
        return gap, running.result().stderr

    gap, said = run(main())
    assert said.endswith("flood | flood")
    # a generous bound: the loop keeps turning (10 ms ticks) while the hook floods
    assert gap < 0.5, f"the loop stalled {gap:.3f} s"


def test_a_timed_out_hook_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = script(tmp_path, "hang", "exec sleep 3600\n")
    st = plain((hook,), timeout=0.2)

    async def main() -> None:
        hooks = Hooks(lambda: st)
        hooks(change("wlan1", "down"))
        await settle(hooks)

    run(main())
    assert (f"hook {hook} for wlan1 up -> down still ran after 0.2s: stopped by SIGTERM"
            in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING])


# ---- bounds ------------------------------------------------------------------------------

def test_a_full_queue_drops_the_oldest_changes_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, release = tmp_path / "log", tmp_path / "release"
    hook = script(tmp_path, "hook", f'echo "$ECMPD_STATE" >> {log}\ni=0\n'
                  f'while [ ! -e {release} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n')
    st = plain((hook,), timeout=30)

    async def main() -> None:
        hooks = Hooks(lambda: st, limit=3)
        hooks(change("wlan1", "s0"))
        await until_async(lambda: lines(log) == ["s0"], 10, "the first hook", 0.01)
        for i in range(1, 10):                 # a flapping WAN, a hook that hangs
            hooks(change("wlan1", f"s{i}"))
            assert hooks.pending() <= 3
        release.touch()
        await settle(hooks)

    run(main())
    assert lines(log) == ["s0", "s7", "s8", "s9"]
    assert any("wlan1: 6 state changes dropped before the hooks saw them" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)


def test_the_stop_gives_hooks_their_timeout_then_kills_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pids = tmp_path / "pids"
    hook = script(tmp_path, "hang", f"echo $$ >> {pids}\ntrap '' TERM\nwhile :; do sleep 0.05; done\n")
    st = plain((hook,), timeout=0.5)

    async def main() -> None:
        hooks = Hooks(lambda: st, grace=0.2)
        for state in ("down", "rising", "up"):
            hooks(change("wlan1", state))
        await until_async(lambda: lines(pids), 10, "the hook to start", 0.01)
        await hooks.close()
        hooks(change("wlan1", "down"))          # stopping: no more hooks
        assert not hooks._workers

    run(main(), timeout=20)
    (pid,) = map(int, lines(pids))              # the first change's hook only
    run(until_async(lambda: not alive(pid), 10, f"hook {pid} to die", 0.01))
    assert "2 WAN state changes not handed to the hooks: ecmpd is stopping" in [
        r.getMessage() for r in caplog.records]


def test_without_hooks_a_change_costs_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        hooks = Hooks(lambda: plain(()))
        hooks(change("wlan1", "down"))
        assert not hooks._workers and not hooks.pending()
        await hooks.close()

    run(main())


def test_a_change_runs_the_hooks_configured_when_it_happened(tmp_path: Path) -> None:
    log = tmp_path / "log"
    old = script(tmp_path, "old", f'echo "old $ECMPD_STATE" >> {log}\n')
    new = script(tmp_path, "new", f'echo "new $ECMPD_STATE" >> {log}\n')
    st = plain((old,))

    async def main() -> None:
        nonlocal st
        hooks = Hooks(lambda: st)
        hooks(change("wlan1", "down"))
        st = plain((new,), timeout=5)             # a reload
        hooks.configure(st.cfg)
        hooks(change("wlan1", "up", "down"))
        await settle(hooks)

    run(main())
    assert lines(log) == ["old down", "new up"]


def test_hooks_that_cannot_run_are_warned_of_once_per_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = tmp_path / "text"
    text.write_text("echo\n")
    st = plain((str(tmp_path / "missing"), str(text)))
    hooks = Hooks(lambda: st)
    hooks.configure(st.cfg)                     # a reload of the same hooks
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"hook {tmp_path / 'missing'} does not exist: it will fail at every WAN state change",
        f"hook {text} is not executable (chmod +x): it will fail at every WAN state change"]


# ---- config -------------------------------------------------------------------------------

BASE = "lan: {interfaces: [l]}\nwans: {a: {interface: e, gateway: 192.0.2.1}}\n"


def problems(text: str, check_hooks: bool = False) -> list[str]:
    try:
        parse_config(BASE + text, "f", check_hooks=check_hooks)
    except ConfigError as exc:
        return exc.problems
    return []


def test_hooks_default_to_none_and_take_absolute_paths() -> None:
    cfg = parse_config(BASE, "f")
    assert (cfg.hooks, cfg.hook_timeout) == ((), 10.0)
    cfg = parse_config(BASE + "hooks: [/usr/local/bin/a, /b]\nhook_timeout: 1500ms\n", "f")
    assert (cfg.hooks, cfg.hook_timeout) == (("/usr/local/bin/a", "/b"), 1.5)
    assert parse_config(BASE + "hooks: []\n", "f").hooks == ()
    assert parse_config(BASE + "hooks:\n", "f").hooks == ()


@pytest.mark.parametrize("text, want", [
    ("hooks: [notify.sh]\n", ["f:3: hooks[0]: must be the absolute path of an executable "
                              "(like /etc/ecmpd/hooks/notify), got 'notify.sh'"]),
    ("hooks:\n  - /a\n  - /a\n", ["f:5: hooks[1]: duplicate of hooks[0]"]),
    ("hooks: /a\n", ["f:3: hooks: must be a list of absolute paths of executables, got '/a'"]),
    ("hooks: [/etc/]\n", ["f:3: hooks[0]: must be the absolute path of an executable "
                          "(like /etc/ecmpd/hooks/notify), got '/etc/'"]),
    ("hook_timeout: 0\n", ["f:3: hook_timeout: must be a duration from 10ms to 60s in ms, "
                           "s or m (like 200ms, 1.5s, 1m, 1m30s; a plain number is "
                           "seconds), got 0"]),
    ("hook_timeot: 1s\n", ["f:3: hook_timeot: unknown key (did you mean 'hook_timeout'?)"]),
])
def test_hook_mistakes_name_the_line_and_key(text: str, want: list[str]) -> None:
    assert problems(text) == want


def test_check_refuses_a_hook_that_is_missing_or_not_executable(tmp_path: Path) -> None:
    ok = script(tmp_path, "ok", "exit 0\n")
    text = tmp_path / "text"
    text.write_text("echo\n")
    body = f"hooks:\n  - {ok}\n  - {tmp_path / 'missing'}\n  - {text}\n  - {tmp_path}\n"
    assert problems(body) == []             # the daemon only warns (a reload must not fail)
    assert problems(body, check_hooks=True) == [
        f"f:5: hooks[1]: {tmp_path / 'missing'} does not exist",
        f"f:6: hooks[2]: {text} is not executable (chmod +x)",
        f"f:7: hooks[3]: {tmp_path} is not a regular file"]
    conf = tmp_path / "ecmpd.yaml"
    conf.write_text(BASE + body)
    p = subprocess.run([sys.executable, "-m", "ecmpd.ecmpd_command", "--config", str(conf),
                        "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [f"{conf}:5: hooks[1]: {tmp_path / 'missing'} does not exist",
                                     f"{conf}:6: hooks[2]: {text} is not executable (chmod +x)",
                                     f"{conf}:7: hooks[3]: {tmp_path} is not a regular file"]
