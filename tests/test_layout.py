"""The project's shape: the wheel holds only the daemon and ecmpctl, no package imports
itself back (runtime or type-only), and bare namespaces come from the lab and the one
fixture (`make_netns` in conftest.py)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecmpd", "lab", "bench")
"""The import roots checked for cycles (all at the project root)."""


# ------------------------------------------------------------------ import graph

def modules() -> dict[str, Path]:
    """Module name -> file, for every module of `PACKAGES`."""
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that module `name` imports anywhere in its text: at the top, in
    functions and under ``if TYPE_CHECKING`` alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c`: the deepest known one
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_the_cycle_finder_sees_type_only_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from p.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    known = {"p", "p.a", "p.b"}
    graph = {"p": set(), "p.a": imports_of("p.a", pkg / "a.py", known),
             "p.b": imports_of("p.b", pkg / "b.py", known)}
    assert graph == {"p": set(), "p.a": {"p.b"}, "p.b": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b"]]


def test_no_import_cycles_in_ecmpd_lab_or_bench() -> None:
    graph = import_graph()
    assert {"ecmpd.ecmpd_command", "lab.lab", "lab.dhcp", "bench.run", "bench.figures"} <= set(graph)
    assert cycles(graph) == []


def test_the_daemon_imports_neither_the_lab_nor_the_bench() -> None:
    graph = import_graph()
    wrong = {m: sorted(t for t in ts if not t.startswith("ecmpd"))
             for m, ts in graph.items() if m.startswith("ecmpd")}
    assert {m: ts for m, ts in wrong.items() if ts} == {}


# ------------------------------------------------------------------ the wheel

def test_the_wheel_holds_only_the_daemon_and_ecmpctl(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree (pip writes build/ and *.egg-info beside
    the sources), offline, and list it."""
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for d in ("ecmpd", "lab", "bench", "tests", "config", "systemd"):
        shutil.copytree(ROOT / d, src / d, ignore=junk)
    out = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = out.glob("ecmpd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()   # what `unzip -l` lists
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    assert sorted({n.split("/")[0] for n in names}) == sorted({"ecmpd", dist_info})
    assert not [n for n in names if re.search(r"(^|/)(lab|bench|tests?|demo)(/|\.py$)|test_", n)]
    shipped = {n for n in names if n.startswith("ecmpd/")}
    assert shipped == {p.relative_to(ROOT).as_posix() for p in (ROOT / "ecmpd").rglob("*.py")}
    wheel_zip = zipfile.ZipFile(wheel)
    assert wheel_zip.read(f"{dist_info}/top_level.txt").decode().split() == ["ecmpd"]
    entry = wheel_zip.read(f"{dist_info}/entry_points.txt").decode()
    assert "ecmpd = ecmpd.ecmpd_command:main" in entry and "ecmpctl = ecmpd.ecmpctl_command:main" in entry


# ------------------------------------------------------------------ namespaces

NETNS_ADD = re.compile(r"""netns\s+add\b|["']netns["']\s*,\s*["']add["']|\bnetns\.create\(""")
MAY_ADD = {
    "lab/netns.py": "the lab's primitive (`create`)",
    "lab/lab.py": "the lab builds its namespaces",
    "lab/hapair.py": "the HA pair's lab builds its namespaces (prefix from the fixture)",
    "tests/conftest.py": "the one fixture, `make_netns`",
    "tests/test_layout.py": "this check",
    "tests/test_vagrant.py": "a shell script run under `unshare --net` with a private "
                             "/run/netns (plays the isp VM; nothing outlives it)",
    "tests/test_systemd_real.py": "a shell script run inside the systemd-nspawn container",
}


def test_namespaces_are_added_only_by_the_lab_and_the_fixture() -> None:
    found = sorted({p.relative_to(ROOT).as_posix()
                    for d in ("ecmpd", "lab", "bench", "tests")
                    for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".sh")
                    and NETNS_ADD.search(p.read_text(encoding="utf-8", errors="replace"))})
    assert [f for f in found if f not in MAY_ADD] == []


# ------------------------------------------------------------------ waiting

CLOCKS = {"monotonic", "time", "perf_counter"}


def _calls(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
               and c.func.attr in names for c in ast.walk(node))


def deadline_loops(path: Path) -> list[int]:
    """Lines of loops that sleep and compare a clock reading (``time.monotonic() <
    end``): a wait of their own.  Code in strings (scripts run elsewhere) is not parsed."""
    return [loop.lineno for loop in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(loop, (ast.While, ast.For, ast.AsyncFor))
            and _calls(loop, {"sleep"})
            and any(isinstance(c, ast.Compare) and _calls(c, CLOCKS) for c in ast.walk(loop))]


def test_tests_wait_only_through_lab_wait(tmp_path: Path) -> None:
    """Every wait in the tests is `lab.wait` (`until`, `within`, `expect`, ...)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nwhile time.monotonic() < end:\n    time.sleep(1)\n"
                      "s = 'while time.time() < x: time.sleep(1)'\n"
                      "for g in gs:\n    if time.time() - g.mtime < 5:\n        continue\n")
    assert deadline_loops(sample) == [2]
    found = {p.relative_to(ROOT).as_posix(): lines for p in sorted((ROOT / "tests").rglob("*.py"))
             if (lines := deadline_loops(p))}
    assert found == {}


# ------------------------------------------------------------------ kernel I/O, ownership

def _calls_named(tree: ast.AST, suffix: str) -> list[int]:
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(suffix)]


def test_one_place_opens_the_daemons_rtnetlink_socket() -> None:
    opened = {p.stem: lines for p in sorted((ROOT / "ecmpd").glob("*.py"))
              if (lines := _calls_named(ast.parse(p.read_text()), "IPRoute")
                  + _calls_named(ast.parse(p.read_text()), "self._factory"))}
    # kernel: the daemon's socket for dumps and changes; watcher: its event subscription
    # (a socket of its own, bound to multicast groups); ownaddr and lan: `--check`,
    # outside the daemon, one synchronous dump each
    assert set(opened) == {"kernel", "watcher", "ownaddr", "lan"}, opened
    watcher = (ROOT / "ecmpd" / "watcher.py").read_text()
    assert "await ipr.bind(groups=GROUPS)" in watcher


OWN_TYPES = {
    # module: names of objects of its own types (or the stdlib's/libraries' documented
    # setters) that it may assign attributes of
    "config": {"m"}, "yamlpos": {"data", "node", "key_node"},
    "control_server": {"conn", "transport"}, "prober": {"rnd"},
    "routing": {"actual", "have"}, "logsetup": {"handler", "logger"},
    "icmpecho": {"self._icmp"}, "netlinkimport": {"module"},
}


def test_no_module_assigns_another_modules_fields() -> None:
    """Outside `self`, an attribute is assigned only on an object of the module's own
    types (`OWN_TYPES`): the daemon never writes the prober's, the reconciler's or the
    watcher's fields, they are told through a method."""
    found = []
    for path in sorted((ROOT / "ecmpd").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                       else [])
            for t in targets:
                for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                    if not isinstance(el, ast.Attribute):
                        continue
                    base = ast.unparse(el.value)
                    if base in ("self", "cls") or base in OWN_TYPES.get(path.stem, ()):
                        continue
                    found.append(f"{path.name}:{el.lineno}: {ast.unparse(el)}")
    assert not found, found
