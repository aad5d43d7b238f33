#!/usr/bin/env bash
# Build vagrant/.wheelhouse on the host: the wheels the lab router installs ecmpd from.
# The guests have no internet, so everything pip needs comes from here: ecmpd's
# dependencies (read from pyproject.toml) plus the build backend (setuptools) that
# `pip install /vagrant` needs to build ecmpd itself inside the guest.
#
#   ./wheelhouse.sh            download for the guests' platform (Debian 12: CPython 3.11, x86_64)
#   PYTHON=python3.12 ./wheelhouse.sh    use another host interpreter to run pip
#   GUEST_PYTHON=3.13 ./wheelhouse.sh    guests with another CPython (e.g. a Debian 13 box)
#
# Only binary wheels are fetched, for the guests' platform rather than the host's, so
# any host with pip works (Linux, macOS).  Re-run it after changing dependencies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(dirname "$here")
out=$here/.wheelhouse
py=${PYTHON:-python3}
guest_py=${GUEST_PYTHON:-3.11}
abi=cp${guest_py/./}

command -v "$py" >/dev/null || { echo "wheelhouse.sh: $py not found (set PYTHON=...)" >&2; exit 1; }
"$py" -m pip --version >/dev/null 2>&1 || { echo "wheelhouse.sh: pip is missing for $py" >&2; exit 1; }

# The [project] dependencies of pyproject.toml, one per line (tomllib on 3.11+, else a
# plain reading of the `dependencies = [...]` list).
mapfile -t deps < <("$py" - "$project/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
try:
    import tomllib
    deps = tomllib.loads(text)["project"]["dependencies"]
except ImportError:
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r"""["']([^"']+)["']""", re.sub(r"#.*", "", block))
print("\n".join(deps))
EOF
)
[ ${#deps[@]} -gt 0 ] || { echo "wheelhouse.sh: no dependencies found in pyproject.toml" >&2; exit 1; }

mkdir -p "$out"
echo "wheelhouse.sh: ${deps[*]} setuptools wheel -> $out (CPython $guest_py, manylinux x86_64)"
"$py" -m pip download --disable-pip-version-check --quiet --dest "$out" \
  --only-binary=:all: --implementation cp --python-version "$guest_py" --abi "$abi" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  "${deps[@]}" "setuptools>=64" wheel
ls -1 "$out"
