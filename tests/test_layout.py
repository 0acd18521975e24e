"""The code's shape, checked from the code: the layers import in one direction, no module cycle,
no import hidden in a function body (but TensorFlow's, an optional heavy dependency; the command
line keeps --help fast by importing a command's module only when it runs), and ruff's formatter
and linter pass with the settings in pyproject.toml."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imports import ROOT, imported_files

PACKAGE = ROOT / "src" / "scratchgpt"
BASE = {"errors.py", "files.py", "device.py"}  # shared by every layer
OPTIONAL_HEAVY = {"tensorflow"}  # imported where a checkpoint is read, only then
CLI = PACKAGE / "cli"  # the `scratchgpt` command


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name(file: Path) -> str:
    return file.relative_to(PACKAGE).as_posix()


def graph() -> dict[Path, set[Path]]:
    """Module → the package modules it imports (package __init__ files left out: they import nothing)."""
    return {f: {g for g in imported_files(f) if g.name != "__init__.py"} for f in modules()}


def cycles(edges: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected components with more than one module, or a module importing itself."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    found: list[list[Path]] = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_the_packages_modules():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(name(f) for f in c) for c in found)


def test_the_cycle_check_can_fail():
    a, b, c = Path("a.py"), Path("b.py"), Path("c.py")
    assert cycles({a: {b}, b: {c}, c: {a}}) == [[a, b, c]]
    assert cycles({a: {b}, b: set(), c: {c}}) == [[c]]


def test_the_book_knows_nothing_of_the_pipeline():
    """book/ imports only book/ and the shared base: no params, paths, DVC or file formats."""
    wrong = [
        f"{name(f)} imports {name(g)}"
        for f, targets in graph().items()
        if name(f).startswith("book/")
        for g in targets
        if not (name(g).startswith("book/") or name(g) in BASE)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_base_imports_no_layer():
    wrong = [
        f"{name(f)} imports {name(g)}" for f, t in graph().items() if name(f) in BASE for g in t if name(g) not in BASE
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_entry_points_import_the_command_line():
    """Nothing but __main__.py and the command line's own modules imports scratchgpt.cli."""
    wrong = [
        f"{name(f)} imports {name(g)}"
        for f in modules()
        if f != PACKAGE / "__main__.py" and CLI not in f.parents
        for g in imported_files(f)
        if CLI in g.parents
    ]
    assert not wrong, "\n".join(wrong)


def nested_imports(file: Path) -> list[str]:
    """Imports inside function bodies, but those of an optional heavy dependency."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else [inner.module or "."]
                if not any(n.split(".")[0] in OPTIONAL_HEAVY for n in names):
                    found.append(f"{file.name}:{inner.lineno}: {', '.join(names)} in {node.name}()")
    return found


def test_no_import_hidden_in_a_function():
    files = modules() + sorted((ROOT / "stages").glob("*.py"))
    found = [line for f in files for line in nested_imports(f)]
    assert not found, "\n".join(found)


def test_the_hidden_import_check_can_fail(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import json\n    import tensorflow as tf\n")
    assert nested_imports(sample) == ["m.py:2: json in f()"]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff(command):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff not found: it is in requirements-dev.txt, which `make test` installs"
    run = subprocess.run([ruff, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_blanket_formatter_or_linter_skips():
    markers = ("fmt: skip", "fmt: off", "ruff: noqa")
    found = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in sorted(
            {
                *ROOT.glob("src/**/*.py"),
                *ROOT.glob("stages/*.py"),
                *ROOT.glob("tests/**/*.py"),
                *ROOT.glob("bench/*.py"),
            }
        )
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if any(m in line for m in markers) and f.name != "test_layout.py"
    ]
    assert not found, "formatter or linter switched off at: " + ", ".join(found)
