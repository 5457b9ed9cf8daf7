"""The shape of the code: no import cycles (imports inside functions count), no reaching into another module's
private names, small modules and functions, one YAML reader, distro branches only in the family modules, ruff
clean, and a README map that names every package. The checks read the source (only the last imports the CLI)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILDER = REPO / "builder"
MAX_MODULE_LINES = 700
LONG_FUNCTION = 80
MAX_LONG_FUNCTIONS = 2


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(BUILDER.rglob("*.py")):
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> tuple[set[str], list[str]]:
    """The builder modules `name` imports anywhere in it (not under `if TYPE_CHECKING:`), and the private names
    it imports from another module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    private: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in MODULES)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.split(".")[0] == "builder":
                    for a in child.names:
                        if f"{module}.{a.name}" in MODULES:
                            found.add(f"{module}.{a.name}")
                        else:
                            found.add(module)
                            if a.name.startswith("_") and not a.name.startswith("__"):
                                private.append(f"{name}: from {module} import {a.name}")
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    # importing a.b.c first runs the packages a and a.b (their __init__): edges to them too
    found |= {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)}
    found -= {name, *(".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))}
    return {m for m in found if m in MODULES}, private


GRAPH: dict[str, set[str]] = {}
PRIVATE: list[str] = []
for _name, _path in MODULES.items():
    GRAPH[_name], _private = _imports(_name, _path)
    PRIVATE += _private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(GRAPH)
    shown = ["\n".join(f"  {m} -> {', '.join(sorted(GRAPH[m] & set(c)))}" for m in c) for c in found]
    assert not found, "import cycles (imports inside functions count):\n" + "\n\n".join(shown)


def test_no_module_imports_another_modules_private_names():
    assert not PRIVATE, "\n".join(PRIVATE)


def test_modules_are_small():
    big = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text().splitlines()))
           > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_few_long_functions():
    long = []
    for p in MODULES.values():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n >= LONG_FUNCTION:
                    long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert len(long) <= MAX_LONG_FUNCTIONS, f"functions of {LONG_FUNCTION}+ lines: {long}"


def test_distro_branches_live_in_the_family_modules():
    pattern = re.compile(r"family\.name\s*(==|!=|\bin\b)|\[\s*[\w.]*family\.name\s*\]|get\(\s*[\w.]*family\.name")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in MODULES.values() if "families" not in p.parts and p.stem != "families"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "branches on the distro family outside its module:\n" + "\n".join(hits)


def test_yaml_is_read_only_through_the_strict_loader():
    pattern = re.compile(r"yaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(|SafeLoader\b")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in MODULES.values() if p.name != "untrusted.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, f"YAML read outside builder/core/untrusted.py (duplicate keys, aliases unchecked): {hits}"


def test_code_and_docs_speak_of_the_workflow_not_of_write_ups():
    files = [*MODULES.values(), REPO / "README.md", *(REPO / "docs").rglob("*.md")]
    hits = [f"{p.relative_to(REPO)}:{i}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bseeds? 0\d\d", line)]
    assert not hits, hits


def test_the_readme_map_names_every_package():
    readme = (REPO / "README.md").read_text()
    packages = sorted(p.parent.relative_to(REPO) for p in BUILDER.rglob("__init__.py") if p.parent != BUILDER)
    # each package is a line of the map's tree: its name with a slash, indented under its parent
    missing = [f"{d}/" for d in packages if not re.search(rf"^ +{re.escape(d.name)}/ ", readme, re.M)]
    assert not missing, f"README's map of the code does not name: {missing}"


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (it is in the test extras: pip install -e '.[test]')"
    r = subprocess.run([ruff, "check", "--no-cache", "builder", "tests", "bench"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", ["imgbuild", "migrate"])
def test_every_lazy_command_loads(script: str):
    """Each entry of a group's COMMANDS table imports to the command of that name, and --help lists it with the
    short help click would make (read from the source, so --help imports no command; a typo in the table would
    otherwise show only when a user ran that command)."""
    import importlib

    import click

    group = getattr(importlib.import_module(f"builder.cli.{script}"), script)
    ctx = click.Context(group)
    assert group.lazy
    read = {name: group.help_line(name, 60) for name in group.lazy}    # from the source, nothing imported
    for name in group.lazy:
        command = group.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
        assert read[name] and read[name] == command.get_short_help_str(60), name
    r = subprocess.run([str(Path(sys.executable).parent / script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in group.lazy:
        assert re.search(rf"^  {re.escape(name)}\s", r.stdout, re.M), f"{script} --help does not list {name}"


def test_building_does_not_load_what_only_installing_needs():
    """A no-change rebuild's time is mostly imports: the build command loads the pipeline but not the identity
    engine or migration (install-lxc and clone load those when they run). The --install-lxc name in build's
    module names the real command."""
    code = ("import sys, builder.cli.build as b, builder.cli.lazy as lazy; "
            "heavy = sorted(m for m in sys.modules if m.startswith(('builder.identity.engine', 'builder.migrate', "
            "'builder.build.install_lxc'))); print(heavy); "
            "assert lazy.load(b.INSTALL_LXC, 'install-lxc').name == 'install-lxc'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"builder.cli.build loads {r.stdout.strip()}"
