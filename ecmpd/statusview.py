"""What `ecmpctl` prints: the status at a glance or in detail, the history, the
monitor's lines.  Pure functions of the daemon's JSON payloads (fields may be missing or
odd: an older or newer daemon; they show as ``?`` or ``-``) and of ``now``."""

from __future__ import annotations

import time
TYPE_CHECKING = False  # `typing` stays unimported: ecmpctl's start (tests/test_startup_imports.py)
if TYPE_CHECKING:
    from typing import Any

from .history import human_duration

DAY = 86400.0


def _num(v: Any) -> float | None:
    """`v` as a float, or None when it is not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _ago(since: Any, now: float) -> str:
    t = _num(since)
    if t is None or t <= 0:
        return "?"
    return f"{human_duration(now - t, coarse=True)} ago"


def _yesno(v: Any) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _ms(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.2f}ms"


def _target_line(addr: str, t: Any) -> str:
    t = t if isinstance(t, dict) else {}
    loss = _num(t.get("loss_pct"))
    loss_s = "-" if loss is None else f"{loss:.3g}%"
    line = (f"    {addr}  rtt {_ms(t.get('rtt_ms'))}  srtt {_ms(t.get('srtt_ms'))}  "
            f"loss {loss_s}")
    return line + (f"  ({t['reason']}: counts as failed)" if t.get("reason") else "")


def _wan_block(name: str, w: Any, now: float, tiered: bool = False) -> list[str]:
    w = w if isinstance(w, dict) else {}
    state = str(w.get("health") or w.get("state") or "unknown").upper()
    if w.get("disabled"):
        state = f"DISABLED (probes say {state})"
    head = f"  state: {state}, since {_ago(w.get('since'), now)}"
    if w.get("reason"):
        head += f" ({w['reason']})"
    out = [f"wan: {name}", head]
    if "downs_24h" in w:
        last = w.get("last_down") if isinstance(w.get("last_down"), dict) else None
        down = "" if last is None else (f", last {_ago(last.get('at'), now)}"
                                         f" ({last.get('reason') or '?'})")
        out.append(f"  downs in the last 24 h: {w['downs_24h']}{down}")
    if w.get("last_round"):
        verdict = f" ({w['verdict']})" if w.get("verdict") else ""
        out.append(f"  last round{verdict}: {w['last_round']}")
    if w.get("timeout_ms") is not None:
        out.append(f"  reply timeout: {_ms(w['timeout_ms'])}")
    iface = f"  interface: {w.get('interface', '?')}"
    if w.get("link") == "missing":          # not "carrier no": there is no such link
        iface += " (no such interface)"
    elif "carrier" in w:
        iface += f", carrier {_yesno(w['carrier'])}"
    out.append(iface)
    gw = f"  gateway: {w.get('gateway', '?')}"
    if w.get("gateway_source") == "learned":
        gw = f"  gateway: {w.get('gateway') or 'none yet'} (learned)"
        if (w.get("nexthop") or "").startswith("dev "):
            gw = (f"  gateway: none needed (point-to-point: {w['nexthop']})"
                  if w.get("point_to_point", True) else
                  f"  gateway: none (learned: default {w['nexthop']}, not point-to-point)")
    if w.get("address"):
        gw += f", address {w['address']}"
    out.append(gw)
    tier = ""
    if tiered:
        tier = f", tier {w.get('tier', '?')}"
        if w.get("failback") == "flush":
            tier += " (failback: flush)"
    standby = " (standby)" if w.get("standby") else ""
    out.append(f"  weight: {w.get('weight', '?')}{tier}, active: {_yesno(w.get('active'))}"
               f"{standby}, connections: {w.get('connections', '?')}")
    nat = w.get("nat") if isinstance(w.get("nat"), dict) else {}
    unmasked = [f"{v} {m}" for v, m in nat.items() if m != "masquerade"]
    if unmasked:                                # masquerade, the default, goes unsaid
        out.append(f"  nat: {', '.join(unmasked)}")
    if "mark" in w or "table" in w:
        out.append(f"  mark: {w.get('mark', '?')}, table: {w.get('table', '?')}")
    targets = w.get("targets")
    if isinstance(targets, dict) and targets:
        out.append("  targets (rtt and loss over the window, srtt now):")
        out.extend(_target_line(str(a), t) for a, t in targets.items())
    six = w.get("ipv6")
    if isinstance(six, dict) and w.get("ipv4"):     # dual-stack: IPv6 judged on its own
        state6 = str(six.get("state") or "unknown").upper()
        line = f"  ipv6: state {state6}, since {_ago(six.get('since'), now)}"
        if six.get("reason"):
            line += f" ({six['reason']})"
        out.append(line)
        learned = " (learned)" if six.get("gateway_source") == "learned" else ""
        standby6 = " (standby)" if six.get("standby") else ""
        out.append(f"    gateway: {six.get('gateway') or 'none yet'}{learned}, address "
                   f"{six.get('address') or 'none'}, active: {_yesno(six.get('active'))}"
                   f"{standby6}")
        t6 = six.get("targets")
        if isinstance(t6, dict) and t6:
            out.extend("  " + _target_line(str(a), t) for a, t in t6.items())
    return out


def _route_block(route: Any, name: str = "route") -> list[str]:
    if not isinstance(route, dict):
        return [f"{name}: unknown"]
    if not route.get("present", True):
        return [f"{name}: none (ecmpd has no default route installed)"]
    head = f"{name}: default proto ecmpd"
    if route.get("kept_last"):
        head += " (kept: the last route while all WANs are down)"
    out = [head]
    hops = route.get("nexthops")
    for nh in hops if isinstance(hops, list) else []:
        nh = nh if isinstance(nh, dict) else {}
        weight = f" weight {nh['weight']}" if nh.get("weight") is not None else ""
        via = f"via {nh['gateway']} " if nh.get("gateway") else ""
        onlink = " onlink" if nh.get("onlink") else ""
        out.append(f"  {via}dev {nh.get('interface', '?')}{weight}{onlink}")
    return out


def _policy_block(policies: Any) -> list[str]:
    if not isinstance(policies, list) or not policies:
        return []
    out = ["", "policies (first match wins):"]
    for p in policies:
        p = p if isinstance(p, dict) else {}
        via = p.get("via") if isinstance(p.get("via"), dict) else {}
        now = "; ".join(f"{v.replace('ipv', 'IPv')} via {', '.join(w) or 'none usable'}"
                        for v, w in via.items() if isinstance(w, list))
        out.append(f"  {p.get('position', '?')}. {p.get('name', '?')}: {p.get('match', '?')}"
                   f" -> use {', '.join(map(str, p.get('use') or []))}"
                   f" (fallback {p.get('fallback', '?')}), {p.get('packets', '?')} packets")
        if now:
            out.append(f"     now: {now}")
    return out


def _verbose(payload: dict, now: float) -> str:
    """`ecmpctl status -v`: every WAN's detail, the policies and the daemon's counters."""
    head = [f"pid {payload.get('pid', '?')}", f"config {payload.get('config', '?')}"]
    uptime = _num(payload.get("uptime"))
    head.append(f"up {'?' if uptime is None else human_duration(uptime)}")
    head.append(f"hash {payload.get('hash', '?')}")
    lines = ["ecmpd: " + ", ".join(head + _ha_head(payload))]
    lines += _ha_lines(payload, now, verbose=True)
    wans = payload.get("wans")
    tiered = isinstance(wans, dict) and len({w.get("tier") for w in wans.values()
                                             if isinstance(w, dict)}) > 1
    carrying = payload.get("new_flows_tier")
    if tiered and isinstance(carrying, dict) and carrying:
        def tier(version: str, t: Any) -> str:
            shown = "no WAN usable" if t is None else f"tier {t}"
            return f"{shown} ({version.replace('ipv', 'IPv')})" if len(carrying) > 1 else shown
        lines.append("new flows: " + ", ".join(tier(v, t) for v, t in carrying.items()))
    if isinstance(wans, dict):
        for name, w in wans.items():
            lines.append("")
            lines.extend(_wan_block(str(name), w, now, tiered))
    lines.append("")
    lines.extend(_route_block(payload.get("route")))
    if isinstance(wans, dict) and any(isinstance(w, dict) and w.get("ipv6")
                                      for w in wans.values()):
        lines.extend(_route_block(payload.get("route6"), "route6"))
    lines.extend(_policy_block(payload.get("policies")))
    stats = payload.get("stats")
    if isinstance(stats, dict) and stats:
        lines.append("")
        lines.append("stats: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    warnings = payload.get("warnings")
    if isinstance(warnings, list) and warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in warnings)
    return "\n".join(lines) + "\n"




# ---- at a glance ------------------------------------------------------------------------

def clock(t: Any, now: float) -> str:
    """Epoch seconds as local clock time: ``14:02:11``, or ``Dec 05 14:02`` when it is
    more than a day from `now`; ``?`` when not a time."""
    x = _num(t)
    if x is None or x <= 0:
        return "?"
    if abs(now - x) < DAY:
        return time.strftime("%H:%M:%S", time.localtime(x))
    return time.strftime("%b %d %H:%M", time.localtime(x))


def _since(t: Any, now: float) -> str:
    x = _num(t)
    return "?" if x is None or x <= 0 else f"{clock(x, now)} ({human_duration(now - x)})"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _probe_summary(fam: dict) -> tuple[str, str]:
    """(RTT, loss): the means over a WAN's targets (over the prober's window)."""
    targets = fam.get("targets") if isinstance(fam.get("targets"), dict) else {}
    per = [t for t in targets.values() if isinstance(t, dict)]
    rtt = _mean([x for t in per if (x := _num(t.get("rtt_ms"))) is not None])
    loss = _mean([x for t in per if (x := _num(t.get("loss_pct"))) is not None])
    return ("-" if rtt is None else f"{rtt:.1f}ms", "-" if loss is None else f"{loss:.0f}%")


def _state(fam: dict, w: dict) -> str:
    state = str(fam.get("health") or fam.get("state") or "unknown").upper()
    return "DISABLED" if w.get("disabled") else state


def _in_route(fam: dict) -> str:
    if fam.get("active"):
        return "yes"
    return "standby" if fam.get("standby") else "no"


def _rows(name: str, w: dict) -> list[tuple[str, dict]]:
    """(label, that version's fields) per IP version of WAN `name`: one row, or two for
    a WAN carrying both (the IPv6 one labelled)."""
    four, six = w.get("ipv4"), w.get("ipv6")
    if isinstance(four, dict) and isinstance(six, dict):
        return [(name, four), (f"{name} IPv6", six)]
    return [(name, w)]


def _glance(payload: dict, now: float) -> str:
    head = [f"pid {payload.get('pid', '?')}", f"config {payload.get('config', '?')}"]
    uptime = _num(payload.get("uptime"))
    head.append(f"up {'?' if uptime is None else human_duration(uptime)}")
    lines = ["ecmpd: " + ", ".join(head + _ha_head(payload))]
    lines += _ha_lines(payload, now, verbose=False)
    wans = payload.get("wans") if isinstance(payload.get("wans"), dict) else {}
    tiered = len({w.get("tier") for w in wans.values() if isinstance(w, dict)}) > 1
    carrying = payload.get("new_flows_tier")
    if tiered and isinstance(carrying, dict) and carrying:
        lines.append("new flows: " + ", ".join(
            f"{'no WAN usable' if t is None else f'tier {t}'}"
            + (f" ({v.replace('ipv', 'IPv')})" if len(carrying) > 1 else "")
            for v, t in carrying.items()))
    header = ["WAN", "STATE", "SINCE", "ROUTE", "WEIGHT"] + (["TIER"] if tiered else []) + \
        ["RTT", "LOSS", "CONNS", "DOWNS/24H", "LAST DOWN"]
    table, notes = [header], []
    for name, w in wans.items():
        w = w if isinstance(w, dict) else {}
        for label, fam in _rows(str(name), w):
            rtt, loss = _probe_summary(fam)
            last = fam.get("last_down") if isinstance(fam.get("last_down"), dict) else None
            downs = fam.get("downs_24h")
            row = [label, _state(fam, w), _since(fam.get("since"), now), _in_route(fam),
                   str(w.get("weight", "?"))] + ([str(w.get("tier", "?"))] if tiered else []) + \
                [rtt, loss, str(w.get("connections", "?")),
                 "?" if downs is None else str(downs),
                 "-" if last is None else _since(last.get("at"), now)]
            table.append(row)
            state = row[1]
            health = str(fam.get("health") or "unknown").upper()
            if state == "DISABLED":
                why = f": {fam['reason']}" if fam.get("reason") else ""
                notes.append(f"  {label} DISABLED by the administrator; probes say "
                             f"{health}{why}")
            elif state != "UP" and fam.get("reason"):
                notes.append(f"  {label} {state}: {fam['reason']}")
            elif last is not None and last.get("reason"):
                notes.append(f"  {label} last down: {last['reason']}")
    if wans:
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines.append("")
        lines.extend("  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip() for r in table)
        lines.extend(notes)
    lines.append("")
    lines.extend(_route_block(payload.get("route")))
    if any(isinstance(w, dict) and w.get("ipv6") for w in wans.values()):
        lines.extend(_route_block(payload.get("route6"), "route6"))
    policies = payload.get("policies")
    if isinstance(policies, list) and policies:
        lines.append(f"policies: {len(policies)} (ecmpctl status -v)")
    warnings = payload.get("warnings")
    if isinstance(warnings, list) and warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in warnings)
    return "\n".join(lines) + "\n"


def render_status(payload: dict, now: float, verbose: bool = False) -> str:
    """The `ecmpctl status` text for a daemon status payload (`now`: epoch seconds):
    one line per WAN and the route; `verbose`: every detail and the daemon's counters."""
    return _verbose(payload, now) if verbose else _glance(payload, now)


# ---- HA pair ---------------------------------------------------------------------------

def _ha_head(payload: dict) -> list[str]:
    """The header's role: ``HA master`` (``HA MASTER, SPLIT BRAIN``); none standalone."""
    ha = payload.get("ha")
    if not isinstance(ha, dict):
        return []
    if isinstance(ha.get("split_brain"), dict):
        return [f"HA {str(ha.get('role', '?')).upper()}, SPLIT BRAIN"]
    return [f"HA {ha.get('role', '?')}"]


def _ha_lines(payload: dict, now: float, verbose: bool) -> list[str]:
    """A split brain, loudly, one line per address another host holds; `verbose`: the
    role's detail, the floating addresses and the numbers both routers must share."""
    ha = payload.get("ha")
    if not isinstance(ha, dict):
        return []
    out = []
    split = ha.get("split_brain")
    if isinstance(split, dict):
        out.append(f"SPLIT BRAIN since {_since(split.get('since'), now)}: another router is "
                   f"master too, both answer for the floating addresses")
        for a in split.get("addresses") or ():
            if isinstance(a, dict):
                out.append(f"  {a.get('address', '?')} on {a.get('interface', '?')} held by "
                           f"{a.get('mac', '?')} since {_since(a.get('since'), now)}")
    if verbose:
        why = f" ({ha['reason']})" if ha.get("reason") else ""
        out.append(f"ha: role {ha.get('role', '?')} since {_since(ha.get('since'), now)}{why}")
        floating = ha.get("floating")
        if isinstance(floating, dict) and floating:
            out.append("  floating: " + "; ".join(
                f"{i} {', '.join(map(str, a))}" for i, a in floating.items()))
        out.append(f"  marks digest {ha.get('marks_digest', '?')} (the same on both routers)")
        for m in ha.get("marks") or ():
            if isinstance(m, dict):
                who = m.get("wan") or f"policy set {m.get('set', '?')}"
                out.append(f"  {who}: mark {m.get('mark', '?')}, table {m.get('table', '?')}")
    return out


# ---- history and monitor --------------------------------------------------------------

def _label(e: dict) -> str:
    """The WAN (``wlan1 IPv6``), or ``ha`` for the HA pair's changes."""
    six = " IPv6" if e.get("family") == "ipv6" else ""
    return f"{e.get('wan', '?')}{six}"


def event_line(e: Any, now: float) -> str:
    """One transition as a monitor line: ``14:02:11 wlan1 up -> down: why (up 3h04m)``."""
    e = e if isinstance(e, dict) else {}
    lasted = _num(e.get("lasted"))
    was = "" if lasted is None else f" ({e.get('previous', '?')} {human_duration(lasted)})"
    reason = f": {e['reason']}" if e.get("reason") else ""
    route = "" if e.get("active") is None else (", in the route" if e["active"]
                                                 else ", out of the route")
    return (f"{clock(e.get('at'), now)} {_label(e)} {e.get('previous', '?')} -> "
            f"{e.get('state', '?')}{reason}{was}{route}")


def render_history(payload: dict, now: float) -> str:
    """`ecmpctl history`: a table of the transitions kept, oldest first."""
    entries = payload.get("transitions")
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    if not entries:
        return "no WAN state changes since ecmpd started\n"
    table = [["TIME", "WAN", "CHANGE", "LASTED", "REASON"]]
    for e in entries:
        lasted = _num(e.get("lasted"))
        table.append([clock(e.get("at"), now), _label(e),
                      f"{e.get('previous', '?')} -> {e.get('state', '?')}",
                      "-" if lasted is None else human_duration(lasted),
                      str(e.get("reason") or "")])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip() for r in table]
    limit = payload.get("limit")
    if isinstance(limit, int) and len(entries) >= limit:
        lines.append(f"(the last {limit} kept; the journal has more: journalctl WAN=<name>)")
    return "\n".join(lines) + "\n"
