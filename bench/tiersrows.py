"""Figure 12's table rows (tiers, bench/tiers.py): `figure12` measures, `rows` turns the
measurements into rows (pure).  The baseline column of every row is the same lab with
an untiered ecmpd, measured in the same run, in the same repetitions."""

from __future__ import annotations

import statistics
import textwrap
import traceback
from typing import TYPE_CHECKING, Callable, Sequence

from bench import tiers
from bench.tiers import VERSIONS
from bench.figures import _count_cell, _error
from bench.ipv6rows import route_cell
from bench.plan import CLIENTS
from bench.stats import Row, fmt_summary, meets, verdict

if TYPE_CHECKING:
    from bench.plan import Bench

LAB = ("3 dual-stack WANs wlan1, wlan2 (tier 1), lte (tier 2), weights 1:1:1, defaults, "
       "failback keep and flush runs")
BASE = "; baseline column: the same lab untiered, same run"


def _err(figure: str, setup: str, error: str) -> Row:
    return Row(figure, setup, f"ERROR: {error}", result="**ERROR**")


def _per_version(runs: Sequence[tiers.TierRun],
                 cell: Callable[[Sequence[tiers.TierRun], int], str]) -> str:
    return "; ".join(f"IPv{f} {cell(runs, f)}" for f in VERSIONS)


def _seconds(values: Sequence[float], window: float | None = None,
             never: str = "never") -> str:
    return fmt_summary(values, "s", 2, window=window, never=never)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _logged(values: Sequence[float | None]) -> str:
    """`values` of log lines' delays (None: not logged) as seconds."""
    seen = [v for v in values if v is not None]
    cell = _seconds(seen) if seen else "never"
    return cell + (f", not logged in {len(values) - len(seen)}/{len(values)} runs"
                   if seen and len(seen) < len(values) else "")


def _down_flush(runs: Sequence[tiers.TierRun]) -> str:
    return ("the dead WANs' connections removed (both versions; the DOWN's conntrack flush, "
            f"in the log) after {_logged([r.down_flush for r in runs])}")


def takeover_row(tiered: Sequence[tiers.TierRun], flat: Sequence[tiers.TierRun],
                 error: str | None) -> Row:
    setup = (f"{LAB}; wlan1's and wlan2's ISPs dead at once; new flows of each version every "
             f"{tiers.INTERVAL * 1000:.0f} ms; outage until every new flow is greeted (through "
             f"lte){BASE}, wlan1 alone dead (same-tier failover)")
    if not tiered or not flat:
        return _err("12 tier takeover: new-flow outage", setup, error or "no run")
    window = min(r.window for r in [*tiered, *flat])

    def outage(runs: Sequence[tiers.TierRun], f: int) -> str:
        return _seconds([r.takeover[f] for r in runs], window, "never recovered")

    medians = {f: (_median([r.takeover[f] for r in tiered]),
                   _median([r.takeover[f] for r in flat])) for f in VERSIONS}
    ratio = ", ".join(f"IPv{f} {a / b:.2f}" if b else f"IPv{f} —"
                      for f, (a, b) in medians.items())
    route = _per_version(tiered, lambda rs, f: route_cell([r.route_take[f] for r in rs]))
    logs = _per_version(tiered, lambda rs, f: _logged([r.log_take[f] for r in rs]))
    base_route = _per_version(flat, lambda rs, f: route_cell([r.route_take[f] for r in rs]))
    values = [r.takeover[f] for r in tiered for f in VERSIONS]
    return Row("12 tier takeover: new-flow outage", setup,
               f"{_per_version(tiered, outage)}; lte into the {route}; the daemon's "
               f"\"tier 2\" log line {logs}; median ratio to the baseline {ratio}; "
               f"{_down_flush(tiered)}",
               f"{_per_version(flat, outage)}; wlan1 out of the {base_route}; "
               f"{_down_flush(flat)}",
               f"≤ {tiers.TARGET:.1f} s", verdict(meets(values, tiers.TARGET)))


def share_row(tiered: Sequence[tiers.TierRun], flat: Sequence[tiers.TierRun],
              error: str | None) -> Row:
    setup = (f"{LAB}; every WAN up; {tiers.SHARE} new flows per version and run from "
             f"{CLIENTS + 1} client addresses{BASE}")
    if not tiered or not flat:
        return _err("12 tier 2's share while tier 1 is usable", setup, error or "no run")

    def count(runs: Sequence[tiers.TierRun], f: int) -> str:
        lte = sum(r.share[f][0] for r in runs)
        ok = sum(r.share[f][1] for r in runs)
        opened = sum(r.share[f][2] for r in runs)
        failed = f", {opened - ok} failed" if opened != ok else ""
        return f"{lte} of {ok} through lte ({100 * lte / max(ok, 1):.1f} %{failed})"

    ok = all(r.share[f][0] == 0 and r.share[f][1] > 0 for r in tiered for f in VERSIONS)
    return Row("12 tier 2's share while tier 1 is usable", setup,
               _per_version(tiered, count), _per_version(flat, count), "0", verdict(ok))


def failback_row(tiered: Sequence[tiers.TierRun], flat: Sequence[tiers.TierRun],
                 error: str | None) -> Row:
    setup = (f"{LAB}; tier 1 healed (both ISPs at once) across new flows of each version "
             f"every {tiers.INTERVAL * 1000:.0f} ms; seconds from the heal until no new flow "
             "goes through lte any more (the heal waits for the daemon's conntrack flushes of "
             f"the dead WANs){BASE}: heal of wlan1 -> its first new flow (UP after 5 good "
             "rounds in both)")
    if not tiered or not flat:
        return _err("12 failback: new flows leave lte", setup, error or "no run")
    window = tiers.FAILBACK_AFTER

    def back(runs: Sequence[tiers.TierRun], f: int) -> str:
        return _seconds([r.back[f] for r in runs], window)

    failed = sum(r.back_failed[f] for r in tiered for f in VERSIONS)
    base_failed = sum(r.back_failed[f] for r in flat for f in VERSIONS)
    route = _per_version(tiered, lambda rs, f: route_cell([r.route_back[f] for r in rs]))
    base_route = _per_version(flat, lambda rs, f: route_cell([r.route_back[f] for r in rs]))
    ok = failed == 0 and meets([r.back[f] for r in tiered for f in VERSIONS], window)
    return Row("12 failback: new flows leave lte", setup,
               f"{_per_version(tiered, back)}; lte out of the {route}; new flows failed "
               f"across the heal {failed}",
               f"{_per_version(flat, back)}; wlan1 into the {base_route}; failed {base_failed}",
               "0 failed", verdict(ok))


def _broken(runs: Sequence[tiers.TierRun], f: int) -> str:
    held = [r.held[f] for r in runs]
    span = f"{min(held)}–{max(held)}" if min(held) != max(held) else f"{held[0]}"
    return _count_cell([r.broken[f] for r in runs], f" of {span}")


def held_rows(keep: Sequence[tiers.TierRun], flush: Sequence[tiers.TierRun],
              flat: Sequence[tiers.TierRun], errors: dict[str, str], hold: int) -> list[Row]:
    setup = (f"{LAB}; {hold} long-lived flows per version (a byte every 100 ms) opened while "
             "tier 1 is dead, so through lte; tier 1 healed; broken within the heal and "
             f"{tiers.OBSERVE:.1f} s after the routes are whole (flush: and lte's connections "
             f"removed){BASE} (its flows on lte across wlan1's heal)")
    out = []
    base = _per_version(flat, _broken) if flat else "no run"
    if keep and flat:
        ok = all(r.broken[f] == 0 and r.held[f] > 0 for r in keep for f in VERSIONS)
        out.append(Row("12 failback keep: long-lived flows on lte broken", setup,
                       _per_version(keep, _broken), base, "0", verdict(ok)))
    else:
        out.append(_err("12 failback keep: long-lived flows on lte broken", setup,
                        errors.get("keep") or errors.get("untiered") or "no run"))
    if flush and flat:
        def when(runs: Sequence[tiers.TierRun], f: int) -> str:
            breaks = [max(r.broken_after[f]) for r in runs if r.broken_after[f]]
            return (f"tier 1 again {_logged([r.log_back[f] for r in runs])}, the last flow "
                    f"broken {_seconds(breaks) if breaks else 'never'}")
        ok = all(r.broken[f] == r.held[f] > 0 for r in flush for f in VERSIONS)
        out.append(Row("12 failback flush: long-lived flows on lte removed", setup,
                       f"{_per_version(flush, _broken)}; after the heal: "
                       f"{_per_version(flush, when)}; lte's connections removed (log, both "
                       f"versions) {_logged([r.flushed for r in flush])}",
                       base, "all", verdict(ok)))
    else:
        out.append(_err("12 failback flush: long-lived flows on lte removed", setup,
                        errors.get("flush") or errors.get("untiered") or "no run"))
    return out


def rows(res: tiers.Fig12, hold: int) -> list[Row]:
    """Figure 12's rows from its measurements."""
    keep, flush, flat = res.of("keep"), res.of("flush"), res.of("untiered")
    error = "; ".join(f"{k}: {e}" for k, e in res.errors.items()) or None
    return [takeover_row([*keep, *flush], flat, error),
            share_row([*keep, *flush], flat, error),
            failback_row([*keep, *flush], flat, error),
            *held_rows(keep, flush, flat, res.errors, hold)]


def figure12(bench: "Bench") -> list[Row]:
    """Measure figure 12 in its own lab: per repetition an untiered, a keep and a flush
    daemon (a run that fails is reported; the others are still measured)."""
    plan = bench.plan
    lab = bench.lab("12")
    res = tiers.Fig12()
    try:
        for k in range(plan.reps):
            for kind in tiers.KINDS:
                bench.progress(f"  fig 12: {kind} ({k + 1}/{plan.reps})")
                try:
                    res.runs.append(tiers.tier_run(lab, kind, plan.hold))
                except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                    res.errors[kind] = _error(exc).removeprefix("ERROR: ")
                    bench.details.extend(traceback.format_exc().splitlines())
                    for w in lab.spec.wans:
                        lab.heal(w.name)
    finally:
        bench.drop("12")
    for line in res.details():
        bench.note(line)
    return rows(res, plan.hold)


def note() -> str:
    """How to read figure 12 (for the report)."""
    return textwrap.fill(
        "Figure 12 (bench/tiers.py): tiers in one dual-stack lab of 3 WANs wlan1, wlan2, "
        "lte; per repetition three daemons at defaults one after the other: untiered (the "
        "baseline column), lte at tier 2 with failback: keep, then with failback: flush.  "
        "Each run: new flows of both versions with every WAN up (how many through lte); "
        "new flows of both versions every 10 ms across the death of tier 1 (wlan1 and "
        "wlan2 dead at once; untiered: wlan1 alone), outage as figure 1; long-lived flows "
        "of both versions opened while tier 1 is dead (the heal waits until the daemon has "
        "flushed the dead WANs' connections: logged when done); new flows across the heal "
        "(when they leave lte); the long-lived flows on lte broken by the failback.  Routes are "
        "read from the kernel (ip -ts monitor route), the tier moves from the daemon's log "
        "(epoch timestamps).  The tiered columns pool the keep and flush runs (n = 2 per "
        "repetition); the ratio is the tiered median over the untiered median.", 88) + "\n\n"
