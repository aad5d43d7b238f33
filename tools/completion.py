"""Write bash completion for `ecmpctl`, from its own argparse parser.

    python3 tools/completion.py FILE

Subcommands, their options, which of them take a WAN and the fixed values of an
argument (`role`'s) come from
`ecmpd.ecmpctl_command.build_parser`, so a subcommand added there is completed with no
change here.  WAN names are read from the config's ``wans:`` mapping (/etc/ecmpd/
ecmpd.yaml, or $ECMPD_CONFIG) with awk: no Python start, no daemon round trip, and it
works where the user may not read the control socket.  A build-time tool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEMPLATE = r"""# bash completion for ecmpctl (written by tools/completion.py from ecmpctl's parser)

_ecmpctl_wans()
{
    # the keys of the top-level `wans:` mapping, block style (as the example writes it)
    local config=${ECMPD_CONFIG:-/etc/ecmpd/ecmpd.yaml}
    [[ -r $config ]] || return 0
    awk '
        /^wans:[[:space:]]*(#.*)?$/ { inside = 1; next }
        inside && /^[^[:space:]#]/ { inside = 0 }
        inside && /^[[:space:]]+[A-Za-z0-9_.-]+:/ {
            match($0, /^[[:space:]]+/)
            if (indent == 0) indent = RLENGTH
            if (RLENGTH == indent) { name = $1; sub(/:.*/, "", name); print name }
        }' "$config" 2>/dev/null
}

_ecmpctl()
{
    # plain COMP_WORDS (no _init_completion): works without the bash-completion package
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local words=("${COMP_WORDS[@]}") cword=$COMP_CWORD

    local global_opts="@GLOBAL_OPTS@"
    local commands="@COMMANDS@"
    local wan_commands=" @WAN_COMMANDS@ "

    case $prev in
        --socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        --timeout)
            return
            ;;
    esac

    local i cmd="" nargs=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket | --timeout) ((i++)) ;;
            -*) ;;
            *)
                if [[ -z $cmd ]]; then cmd=${words[i]}; else ((nargs++)); fi
                ;;
        esac
    done

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts="" choices=""
    case $cmd in
@CASES@
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ $wan_commands == *" $cmd "* && $nargs -eq 0 ]]; then
        COMPREPLY=($(compgen -W "$(_ecmpctl_wans)" -- "$cur"))
    elif [[ -n $choices && $nargs -eq 0 ]]; then
        COMPREPLY=($(compgen -W "$choices" -- "$cur"))
    fi
} &&
    complete -F _ecmpctl ecmpctl
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:          # argparse has no public listing
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _takes_wan(parser: argparse.ArgumentParser) -> bool:
    return any(not a.option_strings and (a.metavar or a.dest).upper() == "WAN"
               for a in parser._actions)


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    """The fixed values of the subcommand's first argument (`role`'s roles), if any."""
    return next((list(a.choices) for a in parser._actions
                 if not a.option_strings and a.choices), [])


def _case(name: str, sub: argparse.ArgumentParser) -> str:
    choices = f" choices=\"{' '.join(_choices(sub))}\"" if _choices(sub) else ""
    return f"        {name}) opts=\"{' '.join(_options(sub))}\"{choices} ;;"


def script() -> str:
    """The completion script for the current `ecmpctl` parser."""
    from ecmpd.ecmpctl_command import build_parser
    top = build_parser()
    subs = _subparsers(top)
    cases = "\n".join(_case(name, sub) for name, sub in subs.items())
    return (TEMPLATE.replace("@GLOBAL_OPTS@", " ".join(_options(top)))
            .replace("@COMMANDS@", " ".join(subs))
            .replace("@WAN_COMMANDS@", " ".join(n for n, s in subs.items() if _takes_wan(s)))
            .replace("@CASES@", cases))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write bash completion for ecmpctl.")
    p.add_argument("file", type=Path)
    path = p.parse_args(argv).file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script(), encoding="utf-8")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
