"""Pure helpers of the benchmark: statistics, formatting, the result table, and parsers
for /proc, ``ip -ts monitor`` and the daemon's log.  No I/O, no lab."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping, Sequence

from lab.traffic import FlowResult, outage


@dataclass(frozen=True)
class Summary:
    """min / median / max of a series of repetitions."""

    n: int
    min: float
    median: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    """The Summary of `values` (ValueError when empty); ``inf`` sorts last."""
    if not values:
        raise ValueError("no values to summarize")
    return Summary(len(values), min(values), statistics.median(values), max(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `values`."""
    if not values:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} out of (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def fmt_num(x: float, digits: int = 2) -> str:
    """A number with `digits` decimals; ``inf`` as "never"."""
    if math.isinf(x):
        return "never"
    return f"{x:.{digits}f}"


def fmt_summary(values: Sequence[float], unit: str = "", digits: int = 2,
                window: float | None = None, never: str = "never recovered") -> str:
    """``min / median / max unit (n=N)``; runs that returned ``inf`` are reported as
    "`never` in k/N runs (> window s)" instead of being folded into the numbers."""
    if not values:
        return "no data"
    sep = " " if unit and not unit.startswith("%") else ""
    finite = [v for v in values if not math.isinf(v)]
    out = []
    if finite:
        s = summarize(finite)
        out.append(f"{fmt_num(s.min, digits)} / {fmt_num(s.median, digits)} / "
                   f"{fmt_num(s.max, digits)}{sep}{unit} (n={s.n})")
    lost = len(values) - len(finite)
    if lost:
        bound = f" (> {window:.1f} s)" if window is not None else ""
        out.append(f"{never} in {lost}/{len(values)} runs{bound}")
    return "; ".join(out)


def meets(values: Sequence[float], target: float, op: str = "<=", stat: str = "all") -> bool:
    """Whether `values` meet `target`: every value (``stat="all"``) or their median."""
    if not values:
        return False
    check = (lambda v: v <= target) if op == "<=" else (lambda v: v >= target)
    if stat == "median":
        return check(statistics.median(values))
    if stat != "all":
        raise ValueError(f"unknown stat {stat!r}")
    return all(check(v) for v in values)


def verdict(ok: bool | None) -> str:
    """The table's last column: pass, FAIL, or info (no target)."""
    return "info" if ok is None else ("pass" if ok else "**FAIL**")


# ------------------------------------------------------------------ the table

COLUMNS = ("figure", "setup", "ecmpd (min / median / max)", "baseline (same lab, same run)",
           "target", "result")


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    figure: str
    setup: str
    ecmpd: str
    baseline: str = "—"
    target: str = "—"
    result: str = "info"

    def cells(self) -> tuple[str, ...]:
        return (self.figure, self.setup, self.ecmpd, self.baseline, self.target, self.result)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: Iterable[Row]) -> str:
    """The rows as one markdown table (header included)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row.cells()) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ outage


def settled_outage(results: Sequence[FlowResult], fault_t: float, settle: float = 1.0) -> float:
    """`lab.traffic.outage`, but a recovery counts only when every flow of at least
    the last `settle` seconds of the run succeeded: when flows alternate between a dead
    and a live WAN, a lucky last flow or two must not read as a recovery."""
    o = outage(results, fault_t)
    if o == 0.0 or math.isinf(o):
        return o
    first = min(r.t for r in results if r.t >= fault_t and not r.ok)
    end = max(r.t for r in results)
    return o if end - (first + o) >= settle else math.inf


# ------------------------------------------------------------------ distribution, ratios


def shares_pct(labels: Iterable[str | None]) -> dict[str | None, float]:
    """Label -> percent of all labels (failed flows count as label None)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {k: 100.0 * v / total for k, v in counts.items()} if total else {}


def max_deviation_pp(labels: Iterable[str | None], weights: Mapping[str, int]) -> float:
    """The largest |share - weight share| in percentage points over the weighted WANs."""
    got = shares_pct(labels)
    total = sum(weights.values())
    return max(abs(got.get(w, 0.0) - 100.0 * n / total) for w, n in weights.items())


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Element-wise a[i] / b[i] (pairs measured back to back)."""
    if len(a) != len(b):
        raise ValueError("need as many A as B measurements")
    return [x / y for x, y in zip(a, b)]


# ------------------------------------------------------------------ /proc


def proc_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # after the ")" field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12
    return int(fields[11]) + int(fields[12])


def proc_status_kb(status_text: str, key: str) -> int:
    """A "kB" field (VmHWM, VmRSS, ...) from the text of /proc/<pid>/status."""
    m = re.search(rf"^{re.escape(key)}:\s+(\d+)\s+kB", status_text, re.M)
    if not m:
        raise ValueError(f"no {key} in status")
    return int(m.group(1))


def cpu_percent(ticks_before: int, ticks_after: int, seconds: float, clk_tck: int) -> float:
    """Percent of one core used between two samples `seconds` apart."""
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    return 100.0 * (ticks_after - ticks_before) / clk_tck / seconds


# ------------------------------------------------------------------ reaction cross-check

_MON_TS = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\]\s?(.*)$")


def parse_monitor(text: str) -> list[tuple[float, str]]:
    """(epoch, event text) for each event of ``ip -ts monitor`` output (local time);
    continuation lines (multipath nexthops) are joined to their event."""
    events: list[tuple[float, str]] = []
    for line in text.splitlines():
        m = _MON_TS.match(line)
        if m:
            events.append((datetime.fromisoformat(m.group(1)).timestamp(), m.group(2)))
        elif events and line.strip():
            ts, body = events[-1]
            events[-1] = (ts, body + " " + line.strip())
    return events


ECMPD_TABLE = "1000"
"""The table of ecmpd's multipath route (`tables.base` by default); the seed baseline
keeps its route in table main.  "The default route" below is whichever of them exists."""


def route_json_devs(text: str) -> set[str]:
    """The devices of the live nexthops of the default route in ``ip [-6] -j route show
    default table all`` output: table main's or ecmpd's (`ECMPD_TABLE`), unicast only;
    nexthops flagged ``dead`` do not count."""
    found: set[str] = set()
    for route in json.loads(text or "[]"):
        if route.get("table", "main") not in ("main", ECMPD_TABLE) \
                or route.get("type", "unicast") != "unicast":
            continue
        hops = route.get("nexthops") or [route]
        found |= {h["dev"] for h in hops if "dev" in h and "dead" not in h.get("flags", [])}
    return found


def _other_table(body: str) -> bool:
    """Whether a monitor line is about a table other than main and ecmpd's."""
    m = re.search(r" table (\S+)", f"{body} ")
    return m is not None and m.group(1) != ECMPD_TABLE


def main_route_without(events: Sequence[tuple[float, str]], gateway: str) -> list[float]:
    """Times of new default routes (table main or ecmpd's) that do not use `gateway`."""
    out = []
    for ts, body in events:
        if body.startswith("default ") and not _other_table(body) \
                and f"via {gateway} " not in body + " ":
            out.append(ts)
    return out


_DECISION = re.compile(r"^(\d+\.\d+) ecmpd\[\d+\] \w+ (\S+): \w+ -> DOWN ")


def down_decisions(log_text: str) -> list[tuple[float, str]]:
    """(epoch, WAN) of each "-> DOWN" line of a daemon log written with epoch stamps."""
    return [(float(m.group(1)), m.group(2)) for line in log_text.splitlines()
            if (m := _DECISION.match(line))]


def first_after(times: Sequence[float], t: float, limit: float = 5.0) -> float | None:
    """The first of `times` at or after `t` (and within `limit` s), else None."""
    later = [x for x in times if t <= x <= t + limit]
    return min(later) if later else None


def log_errors(text: str) -> list[str]:
    """The daemon's ERROR/CRITICAL log lines, each with the exception line of the
    traceback that follows it, if any."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if " ERROR " not in line and " CRITICAL " not in line:
            continue
        exc = ""
        if i + 1 < len(lines) and lines[i + 1].startswith("Traceback"):
            for nxt in lines[i + 2:]:
                if nxt and not nxt.startswith(" "):
                    exc = nxt
                    break
        out.append(f"{line} -> {exc}" if exc else line)
    return out



# ------------------------------------------------------------------ figure 9: route timeline

_DEV = re.compile(r"\bdev (\S+)")


def default_route_devs(body: str) -> set[str] | None:
    """The devices of the live nexthops of the default route (table main's, or ecmpd's
    table's: `ECMPD_TABLE`) after one
    `parse_monitor` event: ``set()`` when the route was deleted, None when the event is
    about another route (another table, another prefix, an ``unreachable`` default).
    Nexthops flagged ``dead`` do not count."""
    deleted = body.startswith("Deleted ")
    if deleted:
        body = body[len("Deleted "):]
    if not body.startswith("default ") or _other_table(body) or " unreachable " in body:
        return None
    if deleted:
        return set()
    parts = re.split(r"\bnexthop\b", body)
    hops = parts[1:] if len(parts) > 1 else parts
    return {m.group(1) for h in hops
            if (m := _DEV.search(h)) and "dead" not in h.split()}


def route_timeline(initial: Iterable[str], events: Sequence[tuple[float, str]],
                   start: float = -math.inf) -> list[tuple[float, frozenset[str]]]:
    """The default route's devices over time: ``(start, initial)`` then one entry per
    event about that route (``ip -ts monitor route`` after `parse_monitor`) from `start`
    on."""
    out = [(start, frozenset(initial))]
    for ts, body in events:
        devs = default_route_devs(body)
        if devs is not None and ts >= start:
            out.append((ts, frozenset(devs)))
    return out


def removals(timeline: Sequence[tuple[float, frozenset[str]]], start: float = -math.inf,
             end: float = math.inf) -> list[tuple[float, str]]:
    """``(time, device)`` each time a device left the route within [start, end]."""
    out = []
    for (_, before), (ts, after) in zip(timeline, timeline[1:]):
        if start <= ts <= end:
            out += [(ts, dev) for dev in sorted(before - after)]
    return out


def devs_at(timeline: Sequence[tuple[float, frozenset[str]]], t: float) -> frozenset[str]:
    """The route's devices at time `t` (the state of the last entry at or before it)."""
    now = timeline[0][1]
    for ts, devs in timeline:
        if ts > t:
            break
        now = devs
    return now


def first_removal(timeline: Sequence[tuple[float, frozenset[str]]], dev: str,
                  after: float) -> float | None:
    """When `dev` first left the route after `after` (None: it did not)."""
    return next((ts for ts, d in removals(timeline, after) if d == dev), None)


def first_in(timeline: Sequence[tuple[float, frozenset[str]]], dev: str,
             after: float) -> float | None:
    """When `dev` was first in the route at or after `after` (`after` itself when it
    already was; None: it was not)."""
    if dev in devs_at(timeline, after):
        return after
    return next((ts for ts, devs in timeline if ts >= after and dev in devs), None)


def last_rise(samples: Sequence[tuple[float, int]], until: float) -> float | None:
    """The last time (at or before `until`) a counter sampled as ``(time, value)`` rose:
    when a line last delivered a packet (None: it never rose in the samples)."""
    last = None
    for (_, before), (ts, value) in zip(samples, samples[1:]):
        if ts > until:
            break
        if value > before:
            last = ts
    return last


def parse_samples(text: str) -> list[tuple[float, int]]:
    """``EPOCH VALUE`` lines (a counter poller's output) -> [(epoch, value)]; a partial
    or foreign line is skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((float(parts[0]), int(parts[1])))
            except ValueError:
                continue
    return out


def fmt_fault_outs(values: Sequence[float | None], unit: str = "s", digits: int = 2,
                   window: float | None = None, never: str = "never out") -> str:
    """`fmt_summary` of fault -> out times, where None marks a run in which the WAN was
    not in the route any more when the fault came (counted apart)."""
    measured = [v for v in values if v is not None]
    before = len(values) - len(measured)
    out = [fmt_summary(measured, unit, digits, window, never)] if measured else []
    if before:
        out.append(f"already out before the fault in {before}/{len(values)} runs")
    return "; ".join(out) or "no data"


_EPOCH_LINE = re.compile(r"^(\d+\.\d+) ecmpd\[\d+\] (\w+) (.*)$")


def log_between(text: str, start: float, end: float,
                prefix: str = "") -> list[tuple[float, str, str]]:
    """``(epoch, level, message)`` of the lines of a daemon log written with epoch stamps
    (`bench.routers.EpochEcmpd`) from `start` to `end` whose message starts with
    `prefix`."""
    out = []
    for line in text.splitlines():
        m = _EPOCH_LINE.match(line)
        if m and start <= float(m.group(1)) <= end and m.group(3).startswith(prefix):
            out.append((float(m.group(1)), m.group(2), m.group(3)))
    return out
