"""Figure 9: health under load.  Saturated lines, a dead ISP on a busy line, random loss,
a carrier flap, an ICMP flood at a WAN address, and the daemon's cost with two targets
per WAN — ecmpd against the baseline, one after the other in the same lab.

The lab has 3 WANs, north / south / west, that are modem-like lines when shaped
(`lab.lines`): 20 / 40 / 60 Mbit/s down, a quarter of that up, a tbf buffer of 1 s
or 2 s each way.  The load is iperf3 (TCP reno, one download and one upload stream per
loaded line, each pinned to its line).  Rows without load run on unshaped (idle) lines.

ecmpd runs at its defaults with two targets per WAN, the gateway and the ISP's upstream,
and no ``quorum`` key (a majority: 2).  The baseline is bench/baseline.py with one
change: the L4 multipath hash, so that the load can be placed on each line as with
ecmpd (the seed's L3 hash puts every stream of the one client on one WAN); its
check-gateway emulation is unchanged.

What leaves the route is read from the kernel, never from the router under test:
``ip -ts monitor route`` in the router namespace (`RouteWatch`).  When a line stopped
delivering is the last rise of the router's WAN ``rx_packets`` counter, polled every
20 ms inside the router namespace (`RxWatch`).

Run time (2-CPU host): 13.0 min with the full plan and 3 repetitions (one 60 s soak per
router for saturation at 1 s and 2 s and for loss, 60 s of CPU, 15 s floods, 3 faults
per fault row and router), 3.9 min with ``--quick``.  The soaks are not repeated: each
covers the three lines at once, and repeating them would triple the biggest part.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lab import Lab, Line, StreamResult, lines
from lab.runner import Ecmpd, config_for

from bench import stats
from bench.routers import Baseline, EpochEcmpd, route_interfaces, start_ecmpd, stop_ecmpd

NAMES = ("north", "south", "west")
RATES = {"north": 20.0, "south": 40.0, "west": 60.0}
"""Download Mbit/s per line; upload is a quarter of it."""
FILL_MIN = 3.0
FILL_MAX = 12.0
"""Seconds of load on the victim's own line before its ISP dies: at least FILL_MIN,
then until its download queue is half full (`wait_full`), at most FILL_MAX.  With the
upload saturated too, the download's ACKs wait ~1 s in the upload queue: reno's window
then carries the line's rate, but once it halved after its first loss the download queue
stays shallow (its cwnd grows by one segment per ~2 s RTT).  Measured: the 20 Mbit/s
queue was full after 3–8 s, the 40 and 60 Mbit/s ones at 0–47 % after 8–25 s.  The fill
at the fault is in each run's details."""
FULL = 0.5
"""The download queue's fill (fraction of the buffer) `wait_full` waits for."""
FILL_OTHERS = 8.0
"""Seconds of load on the other lines before an idle line's ISP dies (waiting for their
download queues would take long: see FILL_MAX)."""
FAULT_LOAD = 120
"""iperf3 -t of the load of a fault run (stopped once the run is over)."""
ECMPD_WAIT = 10.0
"""Seconds to wait for ecmpd to take a faulted WAN out."""
BASELINE_MARGIN = 3.0
"""Seconds past the baseline's latest possible reaction (second ping + 1 s timeout)."""
AFTER_OUT = 0.5
"""Seconds the line's rx counter is still watched after the WAN left the route."""
REJOIN = 30.0
"""Seconds to wait for every WAN to be back in the route."""
STATUS_EVERY = 5.0
"""Seconds between two `ecmpctl status` samples during an ecmpd soak (details only)."""
FLOOD_PPS = 150_000
LOSS_PCT = 5.0
INTERVAL = 10.0
"""The baseline's check-gateway interval."""

_RX_POLL = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
step, last = float(sys.argv[2]), None
while True:
    v = int(os.pread(fd, 32, 0))
    if v != last:
        print(f"{time.time():.6f} {v}", flush=True)
        last = v
    time.sleep(step)
"""


def line(name: str, buffer_s: float) -> Line:
    return Line(RATES[name], RATES[name] / 4, buffer_s)


def shape_all(lab: Lab, buffer_s: float) -> None:
    for name in NAMES:
        lab.shape(name, line(name, buffer_s))


def unshape_all(lab: Lab) -> None:
    for name in NAMES:
        lab.unshape(name)


def buffer_bytes(name: str, direction: str, buffer_s: float) -> float:
    """Bytes of `buffer_s` of line `name` in `direction` ("down" or "up")."""
    rate = RATES[name] if direction == "down" else RATES[name] / 4
    return rate * 1e6 / 8 * buffer_s


def queues(lab: Lab, names: Sequence[str], buffer_s: float) -> dict[str, tuple[float, float]]:
    """Per line the fill of its download and upload tbf, as fractions of the buffer."""
    out = {}
    for n in names:
        q = lines.qdiscs(lab, n)
        fill = {d: sum(x.backlog for x in q[d] if x.kind == "tbf") / buffer_bytes(n, d, buffer_s)
                for d in ("down", "up")}
        out[n] = (fill["down"], fill["up"])
    return out


def fmt_queues(q: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{n} down {d:.0%} up {u:.0%}" for n, (d, u) in q.items())


def wait_full(lab: Lab, names: Sequence[str], buffer_s: float) -> tuple[float, bool]:
    """Load for at least `FILL_MIN` s, then until every download queue of `names` is
    `FULL`; (seconds waited, whether they got full within `FILL_MAX`)."""
    t0 = time.monotonic()
    time.sleep(FILL_MIN)  # the load starts: a duration, then the state is polled
    while True:
        full = all(d >= FULL for d, _ in queues(lab, names, buffer_s).values())
        if full or time.monotonic() - t0 > FILL_MAX:
            return time.monotonic() - t0, full
        time.sleep(0.3)


def ecmpd_config(lab: Lab) -> dict[str, Any]:
    """Defaults, targets gateway + the ISP's upstream, no quorum key (majority: 2)."""
    cfg = config_for(lab, targets="both")
    for wan in cfg["wans"].values():
        wan["probe"].pop("quorum", None)
    return cfg


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def spool(f: Any) -> str:
    """Everything a child wrote to the temporary file `f` so far (complete lines only),
    read without moving the offset the child shares."""
    size = os.fstat(f.fileno()).st_size
    data = os.pread(f.fileno(), size, 0).decode(errors="replace")
    return data[:data.rfind("\n") + 1]


def monitor_routes(lab: Lab, family: int | None = None) -> tuple[subprocess.Popen, Any, float]:
    """Start ``ip -ts monitor route`` (of IP version `family`; None: both) in the router
    namespace, writing to a temporary file (read it with `spool`); returns (process,
    file, epoch time it subscribed by)."""
    out = tempfile.TemporaryFile()
    version = [f"-{family}"] if family else []
    proc = lab.popen(lab.ns_router, "ip", *version, "-ts", "monitor", "route", stdout=out,
                     stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # let it subscribe before the starting state is read
    return proc, out, time.time()


class RouteWatch:
    """``ip -ts monitor route`` in the router namespace: table main's default route
    (its devices) over time, from the moment of construction.  `family` 6 watches the
    IPv6 route (4: IPv4 only; None, figure 9's: every event, for an IPv4-only router)."""

    def __init__(self, lab: Lab, family: int | None = None) -> None:
        self.lab = lab
        self.proc, self.out, self.start = monitor_routes(lab, family)
        self.initial = route_interfaces(lab, family or 4)

    def timeline(self) -> list[tuple[float, frozenset[str]]]:
        return stats.route_timeline(self.initial, stats.parse_monitor(spool(self.out)),
                                    self.start)

    def now(self) -> frozenset[str]:
        return self.timeline()[-1][1]

    def wait(self, pred: Callable[[list[tuple[float, frozenset[str]]]], Any], timeout: float,
             step: float = 0.05) -> Any:
        """Poll the timeline until `pred` returns something other than None; None after
        `timeout` s."""
        end = time.monotonic() + timeout
        while True:
            got = pred(self.timeline())
            if got is not None or time.monotonic() > end:
                return got
            time.sleep(step)

    def wait_out(self, dev: str, after: float, timeout: float) -> float | None:
        """Epoch at which `dev` left the route after `after`; None if not within `timeout`."""
        return self.wait(lambda tl: stats.first_removal(tl, dev, after), timeout)

    def wait_whole(self, timeout: float = REJOIN) -> None:
        every = frozenset(NAMES)
        if self.wait(lambda tl: True if tl[-1][1] == every else None, timeout) is None:
            raise TimeoutError(f"route not back over {sorted(every)} within {timeout:.0f}s "
                               f"(now {sorted(self.now())})")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()

    def __enter__(self) -> "RouteWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RxWatch:
    """The router's ``rx_packets`` of WAN `dev`, polled every `step` s in its namespace;
    prints (and keeps) only the changes."""

    def __init__(self, lab: Lab, dev: str, step: float = 0.02, timeout: float = 10.0) -> None:
        self.out = tempfile.TemporaryFile()
        self.proc = lab.popen(lab.ns_router, sys.executable, "-c", _RX_POLL,
                              f"/sys/class/net/{dev}/statistics/rx_packets", str(step),
                              stdout=self.out, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while not spool(self.out):  # its first sample: it runs
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the rx_packets poller of {dev} did not start")
            time.sleep(0.02)

    def stop(self) -> list[tuple[float, int]]:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        return stats.parse_samples(spool(self.out))


# ------------------------------------------------------------------ results


@dataclass
class Soak:
    """A stretch of `seconds` with every WAN in the route at the start: what left it."""

    router: str
    what: str
    seconds: float
    start: float
    """Epoch of the start."""
    removals: list[tuple[float, str]]
    streams: list[StreamResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def broken(self) -> int:
        return sum(1 for s in self.streams if s.broken)

    def line(self) -> str:
        left = ", ".join(f"{d} at +{t - self.start:.1f}s" for t, d in self.removals) or "none"
        streams = ""
        if self.streams:
            per = ", ".join(f"{s.direction[0]}:{s.wan or '?'} {s.mbit:.1f}"
                            f"{' BROKEN ' + (s.error or '') if s.broken else ''}"
                            for s in self.streams)
            streams = f"; streams broken {self.broken}/{len(self.streams)} (Mbit/s: {per})"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"{self.router} {self.what}, {self.seconds:.0f}s: left the route "
                f"{len(self.removals)}x ({left}){streams}{extra}")


@dataclass
class FaultOut:
    """One fault on one WAN: seconds from the fault (and from the line's last delivered
    packet) to the nexthop leaving the kernel route."""

    router: str
    what: str
    wan: str
    fault_wall: float
    out: float | None
    """Seconds from the fault; math.inf: not out within `window`; None: the WAN was not
    in the route when the fault came."""
    window: float
    stop_out: float | None = None
    """Seconds from the last packet the line delivered to the removal (None: unknown)."""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        out = ("not in the route at the fault" if self.out is None else
               f"never (window {self.window:.1f}s)" if math.isinf(self.out) else
               f"{self.out:.3f}s")
        stop = "" if self.stop_out is None else f", stop -> out {self.stop_out:.3f}s"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.router} {self.what} on {self.wan}: fault -> out {out}{stop}{extra}"


@dataclass
class FloodRun:
    wan: str
    start: float
    cpu_pct: float
    removals: list[tuple[float, str]]
    router_pps: float
    sender_pps: float
    seconds: float
    notes: str = ""

    def line(self) -> str:
        return (f"ecmpd flood at {self.wan}: {self.sender_pps:.0f} pps sent, "
                f"{self.router_pps:.0f} pps reached the router's {self.wan} over "
                f"{self.seconds:.1f}s; daemon CPU {self.cpu_pct:.2f}% of a core; left the "
                f"route {len(self.removals)}x{f'; {self.notes}' if self.notes else ''}")


def _cpu_ticks(pid: int) -> int:
    return stats.proc_cpu_ticks(_read(f"/proc/{pid}/stat"))


def _status_sample(d: Ecmpd, acc: dict[str, dict[str, Any]]) -> None:
    """Keep per WAN the largest srtt and timeout seen and count the round verdicts."""
    for name, w in d.status()["wans"].items():
        a = acc.setdefault(name, {"srtt_ms": 0.0, "timeout_ms": 0.0, "verdicts": {}})
        srtts = [t["srtt_ms"] for t in w["targets"].values() if t.get("srtt_ms") is not None]
        a["srtt_ms"] = max([a["srtt_ms"], *srtts])
        a["timeout_ms"] = max(a["timeout_ms"], w.get("timeout_ms") or 0.0)
        v = w.get("verdict") or "none"
        a["verdicts"][v] = a["verdicts"].get(v, 0) + 1


def _fmt_samples(acc: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{n}: max srtt {a['srtt_ms']:.0f} ms, max timeout {a['timeout_ms']:.0f} "
                     f"ms, verdicts {a['verdicts']}" for n, a in sorted(acc.items()))


def _soak_load(lab: Lab, watch: RouteWatch, router: str, what: str, seconds: float,
               d: Ecmpd | None = None) -> Soak:
    """Load every line both ways for `seconds`; count removals from the load's start to
    its end (ecmpd: status sampled every `STATUS_EVERY` s for the details)."""
    t0 = time.time()
    load = lab.load(seconds=math.ceil(seconds), streams_per_wan=1)
    acc: dict[str, dict[str, Any]] = {}
    end = time.monotonic() + seconds
    if d is not None:
        while time.monotonic() + STATUS_EVERY < end:
            time.sleep(STATUS_EVERY)  # a sampling period, not a wait for a state
            _status_sample(d, acc)
    streams = load.wait()
    t1 = time.time()
    soak = Soak(router, what, seconds, t0, stats.removals(watch.timeline(), t0, t1), streams)
    if acc:
        soak.notes.append(_fmt_samples(acc))
    return soak


def ecmpd_saturation(lab: Lab, buffer_s: float, seconds: float) -> Soak:
    """Every line shaped with `buffer_s`, loaded both ways for `seconds`, ecmpd."""
    shape_all(lab, buffer_s)
    try:
        d = start_ecmpd(lab, config=ecmpd_config(lab), cls=EpochEcmpd)
        try:
            with RouteWatch(lab) as watch:
                soak = _soak_load(lab, watch, "ecmpd", f"saturation, {buffer_s:g} s buffers",
                                  seconds, d)
        finally:
            stop_ecmpd(lab, d)
        soak.notes.append(_transitions(d.log(), soak.start, soak.start + seconds + 15.0))
        return soak
    finally:
        unshape_all(lab)


def log_note(log: str, origin: float, start: float, end: float, prefix: str) -> str:
    """The daemon's log lines from `start` to `end` whose message starts with `prefix`
    (epoch-stamped log), each stamped with its offset from `origin`."""
    lines_ = stats.log_between(log, start, end, prefix)
    return "log: " + (" | ".join(f"{t - origin:+.2f}s {msg[:160]}"
                                 for t, _, msg in lines_) or "nothing")


def _log_note(d: Ecmpd, run: FaultOut) -> str:
    """The daemon's log lines about the faulted WAN from the fault to its removal."""
    end = run.fault_wall + (run.out if run.out is not None and not math.isinf(run.out)
                            else run.window) + 0.1
    return log_note(d.log(), run.fault_wall, run.fault_wall, end, f"{run.wan}:")


def baseline_saturation(lab: Lab, buffer_s: float, seconds: float) -> Soak:
    """The same with the baseline (first ping 0.5 s after it is up, then every 10 s)."""
    shape_all(lab, buffer_s)
    try:
        base = Baseline(lab, interval=INTERVAL, first_delay=0.5, hash_policy=1).start()
        try:
            with RouteWatch(lab) as watch:
                soak = _soak_load(lab, watch, "baseline", f"saturation, {buffer_s:g} s buffers",
                                  seconds)
        finally:
            out = base.stop()
        soak.notes.append(_checks(out))
        return soak
    finally:
        unshape_all(lab)


def _fault_on_load(lab: Lab, watch: RouteWatch, router: str, what: str, victim: str,
                   own: bool, window: float, fault_at: Callable[[], float] | None = None,
                   d: Ecmpd | None = None) -> FaultOut:
    """Load the victim's line (`own`) or the others, fill the queues, kill the victim's
    ISP (at `fault_at()` if given), read when it left the route and when its line last
    delivered; stop the load and heal (the caller waits for the route)."""
    loaded = [victim] if own else [n for n in NAMES if n != victim]
    load = lab.load(wans=loaded, seconds=FAULT_LOAD, streams_per_wan=1)
    rx = None
    notes: list[str] = []
    try:
        if own:
            waited, full = wait_full(lab, loaded, 1.0)
            notes.append(f"loaded {waited:.1f}s"
                         f"{'' if full else ' (download queue NOT half full)'}")
        else:
            time.sleep(FILL_OTHERS)  # a duration of load on the other lines
        if d is not None:
            w = d.status()["wans"][victim]
            srtt = max((t["srtt_ms"] or 0.0) for t in w["targets"].values())
            notes.append(f"before: srtt {srtt:.1f} ms, timeout {w['timeout_ms']:.0f} ms, "
                         f"verdict {w['verdict']}")
        if own:
            rx = RxWatch(lab, victim)
        if fault_at is not None:
            delay = fault_at() - time.time()
            if delay > 0:
                time.sleep(delay)  # the baseline's check phase
        notes.append(f"queues {fmt_queues(queues(lab, loaded, 1.0))}")
        if victim not in watch.now():
            return FaultOut(router, what, victim, time.time(), None, window,
                            notes=notes + ["left before the fault"])
        t_fault = time.time()
        lab.fault(victim, "dead")
        gone = watch.wait_out(victim, t_fault, window)
        if gone is not None and rx is not None:
            time.sleep(AFTER_OUT)  # rx still watched after the removal
        res = FaultOut(router, what, victim, t_fault,
                       math.inf if gone is None else gone - t_fault, window, notes=notes)
        samples = rx.stop() if rx is not None else []
        stop = stats.last_rise(samples, (gone or time.time()) + AFTER_OUT)
        if stop is not None:
            res.notes.append(f"line stopped {stop - t_fault:.3f}s after the fault")
            if gone is not None:
                res.stop_out = gone - stop
    finally:
        if rx is not None:
            rx.stop()
        streams = load.stop()
        lab.heal(victim)
    if not own:
        others = [s for s in streams if s.wan != victim]
        res.notes.append(f"streams of the loaded lines broken {sum(s.broken for s in others)}"
                         f"/{len(others)}")
    return res


def ecmpd_dead_on_load(lab: Lab, own: bool, reps: int) -> list[FaultOut]:
    """`reps` dead ISPs on the 1 s lines, the victim rotating; its own line loaded
    (`own`) or the other two."""
    what = "dead ISP, own line saturated" if own else "dead ISP, other lines saturated"
    shape_all(lab, 1.0)
    runs = []
    try:
        d = start_ecmpd(lab, config=ecmpd_config(lab), cls=EpochEcmpd)
        try:
            with RouteWatch(lab) as watch:
                for k in range(reps):
                    victim = NAMES[k % len(NAMES)]
                    run = _fault_on_load(lab, watch, "ecmpd", what, victim, own, ECMPD_WAIT,
                                         d=d)
                    run.notes.append(_log_note(d, run))
                    runs.append(run)
                    watch.wait_whole()
        finally:
            stop_ecmpd(lab, d)
    finally:
        unshape_all(lab)
    return runs


def baseline_dead_on_load(lab: Lab, own: bool, reps: int) -> list[FaultOut]:
    """The same with the baseline; the fault's phase in the 10 s check cycle is
    stratified over the runs as in figure 1 (run k: the next ping comes
    (k + 0.5) / reps * 10 s after the fault), and the first ping is the one after the
    fault (no ping sees the saturated line before: see the saturation rows for that)."""
    what = "dead ISP, own line saturated" if own else "dead ISP, other lines saturated"
    shape_all(lab, 1.0)
    runs = []
    try:
        for k in range(reps):
            victim = NAMES[k % len(NAMES)]
            phase = (k + 0.5) / reps * INTERVAL
            base = Baseline(lab, interval=INTERVAL, first_delay=phase + 16.0,
                            hash_policy=1).start()
            try:
                with RouteWatch(lab) as watch:
                    def fault_at() -> float:
                        slot = base.first_ping - phase
                        while slot < time.time():
                            slot += INTERVAL
                        return slot
                    run = _fault_on_load(lab, watch, "baseline", what, victim, own,
                                         phase + INTERVAL + 1.0 + BASELINE_MARGIN, fault_at)
                    late = max(0.0, run.fault_wall - base.first_ping)
                    nxt = base.first_ping + math.ceil(late / INTERVAL) * INTERVAL
                    run.notes.append(f"next ping {nxt - run.fault_wall:.1f}s after the fault")
            finally:
                out = base.stop()
            outs = [x.split()[1] for x in out if x.startswith("out ")]
            run.notes.append(f"took out: {', '.join(outs) or 'nothing'}")
            runs.append(run)
    finally:
        unshape_all(lab)
    return runs


def baseline_loss(lab: Lab, seconds: float) -> Soak:
    """`LOSS_PCT` % random loss each way on every (idle) line for `seconds`, baseline."""
    base = Baseline(lab, interval=INTERVAL, first_delay=0.5, hash_policy=1).start()
    try:
        with RouteWatch(lab) as watch:
            soak = _loss(lab, watch, "baseline", seconds)
    finally:
        out = base.stop()
    soak.notes.append(_checks(out))
    return soak


def _checks(out: list[str]) -> str:
    """What the baseline's check-gateway did, from its output lines."""
    pings = [x for x in out if x.startswith("ping ")]
    misses = sum(x.count("=miss") for x in pings)
    moves = [x.rsplit(" ", 1)[0] for x in out if x.startswith(("out ", "in "))]
    return (f"{len(pings)} check rounds, {misses} missed pings"
            + (f", {', '.join(moves)}" if moves else ""))


def _loss(lab: Lab, watch: RouteWatch, router: str, seconds: float) -> Soak:
    t0 = time.time()
    try:
        for name in NAMES:
            lab.set_loss(name, LOSS_PCT)
        time.sleep(seconds)  # the observation window itself
    finally:
        for name in NAMES:
            lab.set_loss(name, 0)
    return Soak(router, f"{LOSS_PCT:g}% loss each way on every line", seconds, t0,
                stats.removals(watch.timeline(), t0, time.time()))


# ------------------------------------------------------------------ idle lines, ecmpd


@dataclass
class Idle:
    """ecmpd on idle (unshaped) lines: faults, a flap, a flood, random loss."""

    upstream: list[FaultOut] = field(default_factory=list)
    carrier: list[FaultOut] = field(default_factory=list)
    flap_dead: list[FaultOut] = field(default_factory=list)
    floods: list[FloodRun] = field(default_factory=list)
    loss: Soak | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Part -> error text, for the parts that failed."""


def _simple_fault(lab: Lab, watch: RouteWatch, d: Ecmpd, what: str, victim: str,
                  mode: str) -> FaultOut:
    t = time.time()
    lab.fault(victim, mode)
    gone = watch.wait_out(victim, t, ECMPD_WAIT)
    lab.heal(victim)
    res = FaultOut("ecmpd", what, victim, t, math.inf if gone is None else gone - t,
                   ECMPD_WAIT)
    res.notes.append(_log_note(d, res))
    watch.wait_whole()
    return res


def _flap_then_dead(lab: Lab, watch: RouteWatch, d: Ecmpd, victim: str) -> FaultOut:
    t = time.time()
    lab.fault(victim, "carrier")
    flap_out = watch.wait_out(victim, t, ECMPD_WAIT)
    lab.heal(victim)
    watch.wait_whole()
    back = watch.timeline()[-1][0]
    res = _simple_fault(lab, watch, d, "carrier flap, then ISP dead", victim, "dead")
    res.notes.insert(0, f"flap: out after {'never' if flap_out is None else f'{flap_out - t:.3f}s'}"
                     f", back in the route {back - t:.2f}s after the carrier loss, "
                     f"ISP dead {res.fault_wall - back:.2f}s after that")
    return res


def _flood(lab: Lab, watch: RouteWatch, d: Ecmpd, victim: str, seconds: float) -> FloodRun:
    assert d.proc is not None
    pid = d.proc.pid
    clk = os.sysconf("SC_CLK_TCK")
    t0w = time.time()
    fl = lab.flood(victim, pps=FLOOD_PPS, seconds=seconds)
    t0, c0 = time.monotonic(), _cpu_ticks(pid)
    r = fl.wait()
    t1, c1 = time.monotonic(), _cpu_ticks(pid)
    time.sleep(1.0)  # a late verdict would show here
    return FloodRun(victim, t0w, stats.cpu_percent(c0, c1, t1 - t0, clk),
                    stats.removals(watch.timeline(), t0w, time.time()), r.router_pps, r.pps,
                    r.router_seconds)


def ecmpd_idle(lab: Lab, reps: int, flood_seconds: float, loss_seconds: float) -> Idle:
    """One daemon on idle lines: upstream-dead and carrier faults, a carrier flap then a
    dead ISP, `reps` floods, then `loss_seconds` of random loss on every line."""
    res = Idle()
    d = start_ecmpd(lab, config=ecmpd_config(lab), cls=EpochEcmpd)
    try:
        with RouteWatch(lab) as watch:
            parts: list[tuple[str, Callable[[int], None]]] = [
                ("upstream", lambda k: res.upstream.append(_simple_fault(
                    lab, watch, d, "upstream dead (default quorum)", NAMES[k % 3],
                    "upstream"))),
                ("carrier", lambda k: res.carrier.append(_simple_fault(
                    lab, watch, d, "carrier down", NAMES[k % 3], "carrier"))),
                ("flap", lambda k: res.flap_dead.append(
                    _flap_then_dead(lab, watch, d, NAMES[k % 3]))),
                ("flood", lambda k: res.floods.append(_flood(lab, watch, d, NAMES[k % 3],
                                                             flood_seconds))),
            ]
            for part, step in parts:
                try:
                    for k in range(reps):
                        step(k)
                except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                    res.errors[part] = f"{type(exc).__name__}: {exc}"
                    for name in NAMES:
                        lab.heal(name)
                    watch.wait_whole()
            try:
                res.loss = _loss(lab, watch, "ecmpd", loss_seconds)
            except Exception as exc:  # noqa: BLE001
                res.errors["loss"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop_ecmpd(lab, d)
    log = d.log()
    if res.loss is not None:
        res.loss.notes.append(_transitions(log, res.loss.start,
                                           res.loss.start + res.loss.seconds + 1.0))
    for f in res.floods:
        f.notes = _transitions(log, f.start, f.start + f.seconds + 1.0)
    return res


def _transitions(log: str, start: float, end: float) -> str:
    """The daemon's state changes logged from `start` to `end` (epoch-stamped log)."""
    moves = [msg for _, _, msg in stats.log_between(log, start, end) if " -> " in msg]
    return f"{len(moves)} state change(s) in the log" + (
        ": " + " | ".join(m[:120] for m in moves[:6]) if moves else "")


def wan_counts(removals: Sequence[tuple[float, str]]) -> dict[str, int]:
    return {n: sum(1 for _, d in removals if d == n) for n in NAMES}
