#!/usr/bin/env python3
"""Hunt the daemon's memory growth: the real ecmpd under tracemalloc in a 3-WAN lab.

    sudo .venv/bin/python bench/leakhunt.py [--warmup 30] [--cycles 60] [--rounds 3]
                                            [--status 10] [--out DIR]

The daemon is started through this file's wrapper mode (``--wrap DIR -- ecmpd-args``),
which starts tracemalloc before importing ecmpd and, on SIGUSR2, collects garbage and
writes into DIR: a tracemalloc snapshot (``snapN.pickle``) and ``snapN.json`` with the
traced bytes, VmRSS, pymalloc's allocated blocks, glibc's mallinfo2 (heap in use / free),
the RSS after ``malloc_trim(0)`` (``--trim``), gc object counts by type, asyncio task
count and the containers (dict/list/set/deque) holding more than 100 entries.  ecmpd
itself is not changed: the wrapper calls ``ecmpd.ecmpd_command.main``.

The driver runs `--warmup` cycles, takes snapshot 0, then `--rounds` times `--cycles`
cycles and a snapshot after each.  A cycle breaks one WAN (dead, upstream, carrier in
rotation over the WANs), waits until ecmpd has taken it out, heals it, waits until it is
back, and sends `--status` status requests (through ecmpctl's `request`).  The report
compares every snapshot with snapshot 0: traced total per cycle, the lines that grew
(statistics by lineno, and by traceback for the top ones) and the growing containers.
Real growth shows as traced bytes that keep climbing by the same amount each round;
warm-up and allocator effects show as RSS moving while the traced total stays flat.
Touches only the namespaces it creates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAULTS = ("dead", "upstream", "carrier")


# ----------------------------------------------------------------------- wrapper mode
def _rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))


def _mallinfo() -> dict[str, int]:
    """glibc mallinfo2: arena (heap from brk), hblkhd (mmapped), uordblks (in use),
    fordblks (free in the heap), keepcost (top chunk that trim could return)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    try:
        f = libc.mallinfo2
    except AttributeError:
        return {}
    f.restype = MallInfo2
    m = f()
    return {n: int(getattr(m, n)) for n, _ in MallInfo2._fields_}


def _pymalloc() -> dict[str, int]:
    """The totals of sys._debugmallocstats() (written by C to fd 2: captured): arenas
    allocated now and at most, bytes in used / free pymalloc blocks, and so on."""
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("#") and "=" in line:
            k, _, v = line[1:].partition("=")
            try:
                out[k.strip()] = int(v.strip().replace(",", ""))
            except ValueError:
                pass
    return out


def _experiments(names: str) -> None:
    """Run-time changes for one experiment (ecmpd's files stay as they are):

    ``mallopt``: mallopt(M_MMAP_THRESHOLD, 128 KiB) before ecmpd starts: glibc's
    threshold stays fixed (no dynamic raise after a large mmapped chunk is freed), so
    every allocation from 128 KiB up is mmapped and unmapped again.
    ``smallrecv``: 64 KiB instead of 256 KiB receive buffers for the netlink reads
    (ecmpd.routing's route dumps and asyncio's datagram transport used by pyroute2);
    rtnetlink datagrams are at most 32 KiB."""
    for name in filter(None, names.split(",")):
        if name == "mallopt":
            import ctypes
            ok = ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
            print(f"leakhunt: mallopt(M_MMAP_THRESHOLD, 128 KiB) -> {ok}", file=sys.stderr)
        elif name == "smallrecv":
            import asyncio.selector_events as se

            import ecmpd.routereader
            se._SelectorDatagramTransport.max_size = 1 << 16
            ecmpd.routereader._RECV = 1 << 16
            print("leakhunt: 64 KiB netlink receive buffers", file=sys.stderr)
        else:
            raise SystemExit(f"leakhunt: unknown experiment {name!r}")


def wrap(dumpdir: str, frames: int, trim: bool, args: list[str]) -> int:
    import gc
    import tracemalloc
    from collections import Counter, deque

    if frames > 0:
        tracemalloc.start(frames)
    out = Path(dumpdir)
    out.mkdir(parents=True, exist_ok=True)
    count = [0]

    def dump(_signum, _frame) -> None:
        t0 = time.monotonic()
        n = count[0]
        count[0] += 1
        gc.collect()
        rss_before = _rss_kb()
        mall, pym = _mallinfo(), _pymalloc()
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                       tracemalloc.Filter(False, __file__)])
            snap.dump(str(out / f"snap{n}.pickle"))
            del snap
        traced, peak = tracemalloc.get_traced_memory()
        objs = gc.get_objects()
        types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objs)
        big = []
        for o in objs:
            if isinstance(o, (dict, list, set, deque)) and len(o) > 100:
                try:
                    sample = repr(next(iter(o)))[:80] if o else ""
                except Exception:  # noqa: BLE001
                    sample = "?"
                big.append([id(o), type(o).__name__, len(o), sample])
        del objs
        try:
            import asyncio
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = -1
        info = {"n": n, "time": time.time(), "traced": traced, "peak": peak,
                "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
                "rss_kb": rss_before, "blocks": sys.getallocatedblocks(),
                "mallinfo": mall, "pymalloc": pym, "tasks": tasks,
                "threads": len(os.listdir("/proc/self/task")),
                "gc_objects": sum(types.values()), "types": dict(types), "big": big}
        if trim or (out / "trim").exists():
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            info["rss_after_trim_kb"] = _rss_kb()
        info["dump_seconds"] = time.monotonic() - t0
        (out / f"snap{n}.json").write_text(json.dumps(info))

    signal.signal(signal.SIGUSR2, dump)
    _experiments(os.environ.get("LEAKHUNT_EXPERIMENT", ""))
    from ecmpd.ecmpd_command import main as ecmpd_main
    return ecmpd_main(args)


# ------------------------------------------------------------------------- driver
def _wait_snapshot(dumpdir: Path, n: int, timeout: float = 60.0) -> dict:
    path = dumpdir / f"snap{n}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # being written
        time.sleep(0.2)
    raise TimeoutError(f"no {path} within {timeout}s")


def analyse(dumpdir: Path, cycles_at: list[int], top: int = 25) -> list[str]:
    import tracemalloc

    infos = [json.loads((dumpdir / f"snap{i}.json").read_text()) for i in range(len(cycles_at))]
    lines = ["| snap | cycles | traced (KB) | VmRSS (KB) | RSS after trim (KB) | pymalloc blocks "
             "| pymalloc arenas (now/max) | pymalloc used / free in arenas (KB) "
             "| malloc heap in use (KB) | malloc heap free (KB) | mmapped (KB) | gc objects "
             "| tasks | threads |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, info in zip(range(len(infos)), infos):
        m = info.get("mallinfo", {})
        pm = info.get("pymalloc", {})
        lines.append(
            f"| {i} | {cycles_at[i]} | {info['traced'] / 1024:.0f} | {info['rss_kb']} | "
            f"{info.get('rss_after_trim_kb', '-')} | {info['blocks']} | "
            f"{pm.get('arenas allocated current', '-')}/{pm.get('arenas highwater mark', '-')} | "
            f"{pm.get('bytes in allocated blocks', 0) / 1024:.0f} / "
            f"{pm.get('bytes in available blocks', 0) / 1024:.0f} | "
            f"{m.get('uordblks', 0) / 1024:.0f} | {m.get('fordblks', 0) / 1024:.0f} | "
            f"{m.get('hblkhd', 0) / 1024:.0f} | {info['gc_objects']} | {info['tasks']} | {info.get('threads', '-')} |")
    lines.append("")
    base = infos[0]
    for i in range(1, len(infos)):
        dc = cycles_at[i] - cycles_at[i - 1]
        d = infos[i]["traced"] - infos[i - 1]["traced"]
        lines.append(f"snap {i - 1} -> {i}: {dc} cycles, traced {d / 1024:+.1f} KB "
                     f"({d / max(dc, 1):+.0f} B/cycle), RSS "
                     f"{infos[i]['rss_kb'] - infos[i - 1]['rss_kb']:+d} KB, gc objects "
                     f"{infos[i]['gc_objects'] - infos[i - 1]['gc_objects']:+d}")
    last = infos[-1]
    dtypes = {t: last["types"].get(t, 0) - base["types"].get(t, 0)
              for t in set(last["types"]) | set(base["types"])}
    grew = sorted(((v, t) for t, v in dtypes.items() if v), reverse=True)
    lines += ["", f"object types, snap 0 -> {len(infos) - 1} (count change):"]
    lines += [f"  {v:+6d} {t} (now {last['types'].get(t, 0)})" for v, t in grew[:15]]
    lines += [f"  {v:+6d} {t}" for v, t in grew[-5:] if v < 0]
    by_id0 = {b[0]: b for b in base["big"]}
    lines += ["", "containers > 100 entries (id, type, len at snap 0 -> last, first key):"]
    for b in sorted(last["big"], key=lambda b: -b[2]):
        was = by_id0.get(b[0])
        lines.append(f"  {b[0]:#x} {b[1]} {was[2] if was else 'new'} -> {b[2]} {b[3]}")

    if not (dumpdir / "snap0.pickle").exists():
        return lines                     # --frames 0: no tracemalloc snapshots
    s0 = tracemalloc.Snapshot.load(str(dumpdir / "snap0.pickle"))
    sl = tracemalloc.Snapshot.load(str(dumpdir / f"snap{len(infos) - 1}.pickle"))
    span = cycles_at[-1] - cycles_at[0]
    lines += ["", f"top lines by growth, snap 0 -> {len(infos) - 1} ({span} cycles):"]
    for st in sl.compare_to(s0, "lineno")[:top]:
        fr = st.traceback[0]
        lines.append(f"  {st.size_diff / 1024:+8.1f} KB {st.count_diff:+6d} blocks "
                     f"({st.size_diff / max(span, 1):+.0f} B/cycle)  now {st.size / 1024:.1f} KB  "
                     f"{fr.filename}:{fr.lineno}")
    # the same per round, to see whether a line keeps growing or stopped
    snaps = [s0] + [tracemalloc.Snapshot.load(str(dumpdir / f"snap{i}.pickle"))
                    for i in range(1, len(infos))]
    keys = [st.traceback[0] for st in sl.compare_to(s0, "lineno")[:10]]
    lines += ["", "those top 10 lines, size (KB) at each snapshot:"]
    per = [{st.traceback[0]: st.size for st in s.statistics("lineno")} for s in snaps]
    for k in keys:
        lines.append(f"  {k.filename}:{k.lineno}: "
                     + " ".join(f"{p.get(k, 0) / 1024:.1f}" for p in per))
    lines += ["", f"top tracebacks by growth, snap 0 -> {len(infos) - 1}:"]
    for st in sl.compare_to(s0, "traceback")[:8]:
        lines.append(f"  {st.size_diff / 1024:+.1f} KB {st.count_diff:+d} blocks:")
        lines += [f"      {fr.filename}:{fr.lineno}" for fr in st.traceback]
    return lines


def drive(args: argparse.Namespace) -> int:
    from ecmpd.ecmpctl_command import request
    from lab import Lab, make_spec
    from lab.runner import Ecmpd, config_for

    dumpdir = Path(args.out).resolve()
    dumpdir.mkdir(parents=True, exist_ok=True)
    for old in [*dumpdir.glob("snap*"), *dumpdir.glob("trim")]:
        old.unlink()

    class TracedEcmpd(Ecmpd):
        def argv(self, *extra: str) -> list[str]:
            wrapper = [sys.executable, str(Path(__file__).resolve()), "--wrap", str(dumpdir),
                       "--frames", str(args.frames)] + (["--trim"] if args.trim else [])
            return wrapper + ["--", "--config", str(self.config_path),
                              "--socket", self.socket, *extra]

        def status(self) -> dict:
            # in-process (not an ecmpctl subprocess per poll): cheaper on a shared machine
            nonlocal statuses
            resp = request(self.socket, {"cmd": "status"})
            if resp.get("ok") is not True:
                raise RuntimeError(f"status failed: {resp}")
            statuses += 1
            return {k: v for k, v in resp.items() if k != "ok"}

        def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                st = self.status()
                if predicate(st):
                    return st
                time.sleep(0.1)
            raise TimeoutError(f"{what} not reached within {timeout}s\n{self.log()[-3000:]}")

    spec = make_spec(3, names=["north", "south", "west"])
    names = [w.name for w in spec.wans]
    progress: list[str] = []
    cycles_at: list[int] = []
    statuses = 0
    timeline: list[tuple[float, int, int, int]] = []
    with Lab(spec) as lab:
        d = TracedEcmpd(lab, config_for(lab, targets="both"))
        d.start(timeout=60)
        try:
            d.wait_states({n: "up" for n in names}, timeout=30)
            pid = d.proc.pid
            t0 = time.monotonic()
            done = 0

            def cycle(k: int) -> None:
                if k % 10 == 0:
                    timeline.append((time.monotonic() - t0, k, statuses, _rss_kb(pid)))
                if not args.no_faults:
                    wan, mode = names[k % 3], FAULTS[(k // 3) % len(FAULTS)]
                    lab.fault(wan, mode)
                    d.wait_states({wan: "down"}, timeout=30)
                    lab.heal(wan)
                    d.wait_states({wan: "up"}, timeout=30)
                for _ in range(args.status):
                    d.status()
                    time.sleep(args.pause)

            def snapshot(n: int) -> None:
                time.sleep(2)                      # let the last cycle's tasks finish
                os.kill(pid, signal.SIGUSR2)
                info = _wait_snapshot(dumpdir, n)
                cycles_at.append(done)
                row = (f"{time.monotonic() - t0:6.0f}s  snap {n}: {done} cycles, {statuses} "
                       f"statuses, traced {info['traced'] / 1024:.0f} KB, VmRSS "
                       f"{info['rss_kb']} KB, dump took {info['dump_seconds']:.1f}s")
                progress.append(row)
                print(row, flush=True)
                time.sleep(3)                      # the dump stalled the loop: settle again
                d.wait_states({w: "up" for w in names}, timeout=30)

            for _ in range(args.warmup):
                cycle(done)
                done += 1
            snapshot(0)
            for r in range(1, args.rounds + 1):
                for _ in range(args.cycles):
                    cycle(done)
                    done += 1
                if r == args.rounds:
                    (dumpdir / "trim").touch()     # the last one: RSS after malloc_trim too
                snapshot(r)
            errors = [x for x in d.log().splitlines() if " ERROR " in x or "Traceback" in x]
        finally:
            d.stop()
    what = ("" if args.no_faults else
            f"fault {'/'.join(FAULTS)} one WAN, wait out, heal, wait back, ")
    report = [f"leakhunt: warm-up {args.warmup} cycles, then {args.rounds} x {args.cycles} "
              f"cycles ({what}{args.status} status requests), {statuses} status requests "
              f"in all (state polls included), tracemalloc {args.frames} frames; "
              f"{len(errors)} ERROR/traceback log lines"
              + (f"; daemon environment {' '.join(args.env)}" if args.env else ""),
              "", *progress, "",
              "VmRSS every 10 cycles (no snapshot in between unless marked):",
              *(f"  {t:6.0f}s cycle {k:4d} statuses {st:5d} VmRSS {v} KB"
                + (" *" if any(c == k for c in cycles_at) else "")
                for t, k, st, v in timeline), "",
              *analyse(dumpdir, cycles_at)]
    text = "\n".join(report)
    print(text)
    (dumpdir / "report.txt").write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--wrap"]:
        p = argparse.ArgumentParser(prog="bench/leakhunt.py --wrap")
        p.add_argument("--wrap", required=True)
        p.add_argument("--frames", type=int, default=10)
        p.add_argument("--trim", action="store_true")
        sep = argv.index("--")
        a = p.parse_args(argv[:sep])
        return wrap(a.wrap, a.frames, a.trim, argv[sep + 1:])
    p = argparse.ArgumentParser(prog="bench/leakhunt.py", description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=30, help="cycles before snapshot 0")
    p.add_argument("--cycles", type=int, default=60, help="cycles between snapshots")
    p.add_argument("--rounds", type=int, default=3, help="snapshots after snapshot 0")
    p.add_argument("--status", type=int, default=10, help="status requests per cycle")
    p.add_argument("--no-faults", action="store_true",
                   help="cycles of status requests only (no WAN is broken)")
    p.add_argument("--pause", type=float, default=0.02, help="seconds after a status request")
    p.add_argument("--frames", type=int, default=10, help="tracemalloc traceback depth")
    p.add_argument("--trim", action="store_true",
                   help="malloc_trim(0) after each snapshot (RSS after trim is reported)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the daemon, e.g. MALLOC_TRIM_THRESHOLD_=131072")
    p.add_argument("--analyse", metavar="N", type=int,
                   help="only analyse DIR's existing snapshots (cycles N apart)")
    p.add_argument("--out", default="/tmp/ecmpd-leakhunt", help="dump directory")
    args = p.parse_args(argv)
    if args.analyse:
        n = len(list(Path(args.out).glob("snap*.json")))
        print("\n".join(analyse(Path(args.out), [i * args.analyse for i in range(n)])))
        return 0
    if os.geteuid() != 0:
        print("bench/leakhunt.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    for kv in args.env:
        name, _, value = kv.partition("=")
        os.environ[name] = value         # the daemon (and the lab's tools) inherit it
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
