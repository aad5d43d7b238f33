"""Write the man pages ecmpd(8), ecmpctl(8) and ecmpd.yaml(5) as roff.

    python3 tools/manpages.py OUTDIR

Built, not written by hand, from what the programs themselves use: the options and
subcommands from the commands' argparse parsers, every config key with its section,
default and range from `ecmpd.schema.SCHEMA` (defaults from the model's dataclasses),
and each key's prose from the comments of the example config/ecmpd.yaml (the comments
tests/test_schema.py holds to the schema).  A key added to SCHEMA appears with no
change here.  A build-time tool: the package on a router does not carry it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:               # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ecmpd import schema  # noqa: E402
from ecmpd.console import version  # noqa: E402

EXAMPLE = ROOT / "config" / "ecmpd.yaml"
DATE = "2026"
SOURCE = "ecmpd"


# ---- roff -----------------------------------------------------------------------------

def esc(text: str) -> str:
    """`text` safe in a roff text line: backslashes and hyphen-minus escaped, a leading
    control character neutralised."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def head(name: str, section: int, title: str) -> list[str]:
    return [f'.TH {name.upper()} {section} "{DATE}" "{SOURCE} {version()}" "{title}"',
            ".nh", ".SH NAME", f"{esc(name)} \\- {esc(_summary(name))}"]


def _summary(name: str) -> str:
    return {"ecmpd": "Linux multi-WAN gateway daemon",
            "ecmpctl": "control a running ecmpd",
            "ecmpd.yaml": "configuration file of ecmpd"}[name]


def paragraph(text: str) -> list[str]:
    return [".PP", esc(" ".join(text.split()))]


def tagged(tag: str, text: str) -> list[str]:
    return [".TP", tag, esc(" ".join(text.split()))]


# ---- the commands ---------------------------------------------------------------------

def options(parser: argparse.ArgumentParser) -> list[str]:
    """One tagged paragraph per option of `parser` (help included)."""
    out: list[str] = []
    for action in parser._actions:          # argparse has no public listing
        if not action.option_strings:
            continue
        names = ", ".join(bold(o) for o in action.option_strings)
        if action.choices:
            names += " " + "|".join(map(italic, map(str, action.choices)))
        elif action.nargs != 0:
            names += " " + italic(action.metavar or action.dest.upper())
        out += tagged(names, action.help or "")
    return out


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(name, usage of its arguments, help) of each subcommand of `parser`."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                usage = sub.format_usage().split(name, 1)[1].replace("[-h]", "").strip()
                out.append((name, usage, helps.get(name, "")))
    return out


def ecmpd_page() -> str:
    from ecmpd.ecmpd_command import DEFAULT_CONFIG, parser
    lines = head("ecmpd", 8, "System Administration")
    lines += [".SH SYNOPSIS", bold("ecmpd") + " [" + bold("--config") + " "
              + italic("FILE") + "] [" + bold("--check") + " | " + bold("--dry-run")
              + "] [" + italic("OPTIONS") + "]", ".SH DESCRIPTION"]
    lines += paragraph(
        "ecmpd balances a LAN's new connections over several WAN uplinks by weight with one "
        "multipath default route, keeps every connection on the WAN it started on (a "
        "conntrack mark per WAN), probes each WAN with ICMP echo requests and takes a "
        "failed WAN out of the route in well under a second, then puts it back when it "
        "answers again, without breaking the connections of the healthy WANs.")
    lines += paragraph(
        "It runs in the foreground (systemd Type=notify, ecmpd.service), owns its routing "
        "tables, rules and one nftables table, and answers ecmpctl(8) on its control "
        "socket. SIGHUP or \"ecmpctl reload\" rereads the configuration; a configuration "
        "with a mistake is refused as a whole and the old one stays in force.")
    lines += [".SH OPTIONS"] + options(parser())
    lines += [".SH EXIT STATUS"]
    lines += tagged(bold("0"), "a valid configuration (--check), or a clean stop")
    lines += tagged(bold("1"), "the daemon cannot run: no CAP_NET_ADMIN (not root), "
                    "libnftables missing, or a start-up failure; one line on stderr says "
                    "which")
    lines += tagged(bold("2"), "the configuration is invalid (one line per problem, "
                    "file:line: key: message) or a usage error")
    lines += tagged(bold("141"), "standard output was closed by its reader (a pipe into "
                    "head)")
    lines += [".SH FILES"]
    lines += tagged(bold(DEFAULT_CONFIG), "the configuration, see ecmpd.yaml(5)")
    lines += tagged(bold("/run/ecmpd/ecmpd.sock"), "the control socket (control.socket)")
    lines += [".SH SEE ALSO", "ecmpctl(8), ecmpd.yaml(5), ip(8), nft(8), systemctl(1)"]
    return "\n".join(lines) + "\n"


def ecmpctl_page() -> str:
    from ecmpd.ecmpctl_command import build_parser
    p = build_parser()
    lines = head("ecmpctl", 8, "System Administration")
    lines += [".SH SYNOPSIS", bold("ecmpctl") + " [" + bold("--socket") + " "
              + italic("PATH") + "] [" + bold("--timeout") + " " + italic("S") + "] "
              + italic("COMMAND") + " [" + italic("ARGS") + "]", ".SH DESCRIPTION"]
    lines += paragraph(
        "ecmpctl talks to a running ecmpd(8) over its control socket: it shows the WANs' "
        "states, probes and the route, rereads the configuration, and takes a WAN out of "
        "the route by hand or gives it back. Root, or a member of the socket's group "
        "(control.group in ecmpd.yaml(5)), may use it.")
    lines += [".SH OPTIONS"] + options(p)
    lines += [".SH COMMANDS"]
    for name, usage, help_ in subcommands(p):
        lines += tagged(bold(name) + (" " + esc(usage) if usage else ""), help_)
    lines += [".SH EXIT STATUS"]
    for code, what in (("0", "done"), ("1", "the daemon answered with an error, or no "
                                            "usable answer came"),
                       ("2", "a usage error"), ("3", "ecmpd is not running (no socket, or "
                                                     "nobody listening on it)"),
                       ("141", "standard output was closed by its reader")):
        lines += tagged(bold(code), what)
    lines += [".SH SEE ALSO", "ecmpd(8), ecmpd.yaml(5)"]
    return "\n".join(lines) + "\n"


# ---- the config file ------------------------------------------------------------------

_KEY_LINE = re.compile(r"( *)([A-Za-z0-9_.-]+):(?: (.*))?$")
_COMMENT = re.compile(r"( *)#(.*)$")
_NAMED = re.compile(r"([a-z_][a-z0-9_]*):")


def _path(parts: list[str]) -> str:
    if len(parts) > 1 and parts[0] == "wans":
        parts = ["wans", "*", *parts[2:]]
    return ".".join(parts)


def key_comments(text: str) -> dict[str, str]:
    """Key path -> the comments that document it in the example `text`: the comment on
    its line and deeper-indented ones below it, the comment lines just above it, and for
    a key shown commented out the lines from its own on; runs of whitespace as one space
    (tests/test_schema.py checks the example's defaults and ranges with it)."""
    docs: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []
    pending: dict[str, list[str]] = {}
    current: dict[str, str] = {}
    paths = {k.path for k in schema.SCHEMA if not k.is_section}
    for line in text.splitlines():
        if not line.strip():
            pending.clear()
            current.clear()
            continue
        if m := _COMMENT.fullmatch(line):
            indent, body = len(m[1]), m[2].strip()
            where = _path([k for i, k in stack if i < indent])
            if where in paths:
                docs.setdefault(where, []).append(body)
                continue
            named = _NAMED.match(body)
            sect = "probe" if where.endswith(".probe") else where
            if named and named[1] in schema.keys(sect):
                current[where] = f"{where}.{named[1]}" if where else named[1]
            if where in current:
                docs.setdefault(current[where], []).append(body)
            else:
                pending.setdefault(where, []).append(body)
            continue
        m = _KEY_LINE.fullmatch(line)
        if not m:
            continue
        indent = len(m[1])
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, m[2])]
        where, path = _path([k for _, k in stack[:-1]]), _path([k for _, k in stack])
        comment = (m[3] or "").partition("#")[2].strip()
        docs.setdefault(path, []).extend(pending.pop(where, []) + [comment])
        current.pop(where, None)
    return {p: " ".join(" ".join(x for x in lines if x).split()) for p, lines in docs.items()}


def prose(name: str, doc: str) -> str:
    """A key's comment without a leading ``name:`` and without a YAML example of the
    key that follows the prose (``policies: - name: voip ...``)."""
    doc = doc.removeprefix(f"{name}:").strip()
    return doc.split(f" {name}: ", 1)[0]


def _facts(key: schema.Key) -> str:
    """Default, range and list shape of `key`, as the example states them."""
    facts = [key.default_text()]
    if key.range:
        facts.append(f"range {key.range}")
    if key.items:
        facts.append(f"a list of {key.items}")
    return "; ".join(f for f in facts if f)


def _sections() -> list[str]:
    """The sections in the order SCHEMA first names them (the top level first)."""
    seen: list[str] = []
    for k in schema.SCHEMA:
        if k.section not in seen:
            seen.append(k.section)
    return seen


def _title(section: str) -> str:
    return {"": "TOP LEVEL", "wans.*": "WANS"}.get(section, section.upper())


def config_page(example: Path = EXAMPLE) -> str:
    docs = key_comments(example.read_text(encoding="utf-8")) if example.exists() else {}
    lines = head("ecmpd.yaml", 5, "File Formats")
    lines += [".SH SYNOPSIS", bold("/etc/ecmpd/ecmpd.yaml"), ".SH DESCRIPTION"]
    lines += paragraph(
        "The configuration of ecmpd(8), in YAML. \"ecmpd --check\" validates a file and "
        "reports every mistake at once as file:line: key.path: message; a reload with a "
        "mistake changes nothing. Durations accept 200ms, 1.5s, 1m or a plain number of "
        "seconds; integers are plain decimal.")
    lines += paragraph(
        "Below, every key of every section, with its default and range. Under wans, each "
        "WAN is a mapping keyed by a name of your choice; its probe takes the keys of the "
        "top-level probe section, merged key by key. The example shipped as "
        "/usr/share/doc/ecmpd/examples/ecmpd.yaml and installed as /etc/ecmpd/ecmpd.yaml "
        "shows each key in use.")
    for section in _sections():
        lines += [".SH " + esc(_title(section))]
        if section == "wans.*":
            lines += paragraph("wans: {NAME: {...}, ...}: the keys of each WAN.")
        for key in schema.section(section):
            label = "section" if key.is_section else _facts(key)
            tag = bold(key.path) + (" (" + esc(label) + ")" if label else "")
            lines += tagged(tag, prose(key.name, docs.get(key.path, "")))
    lines += [".SH FILES"]
    lines += tagged(bold("/etc/ecmpd/ecmpd.yaml"), "read at start and on every reload")
    lines += [".SH SEE ALSO", "ecmpd(8), ecmpctl(8)"]
    return "\n".join(lines) + "\n"


PAGES = {"ecmpd.8": ecmpd_page, "ecmpctl.8": ecmpctl_page, "ecmpd.yaml.5": config_page}


def write(outdir: Path, names: Iterable[str] = PAGES) -> list[Path]:
    """Write the pages into `outdir`; their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = outdir / name
        path.write_text(PAGES[name](), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write ecmpd's man pages (roff).")
    p.add_argument("outdir", type=Path)
    for path in write(p.parse_args(argv).outdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
