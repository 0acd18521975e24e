"""The project's import graph, read from the code with ``ast`` (every import statement, function
bodies included): what tests/stages/test_deps.py checks dvc.yaml's deps against and
tests/test_layout.py checks the layers and cycles of.

    python tests/imports.py          # rewrite dvc.yaml's source deps to each stage's import closure
    python tests/imports.py table    # print which stages each module invalidates (docs/pipeline.md)
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "scratchgpt"


def _module_file(name: str) -> Path | None:
    """The project file of module ``scratchgpt[.x]``, or None for anything outside the project."""
    parts = name.split(".")
    if parts[0] != "scratchgpt":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(file: Path) -> str:
    rel = file.relative_to(ROOT / "src").with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts[:-1]) if file.name != "__init__.py" else ".".join(parts)


@functools.cache
def imported_files(file: Path) -> frozenset[Path]:
    """Project files that ``file`` imports directly (its package's __init__ included); read once
    per process."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(file).split(".")
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]  # `from . import x`
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                target = _module_file(".".join(parts[:i]))
                if target is not None:
                    found.add(target)
    return frozenset(found)


def import_closure(script: Path) -> set[Path]:
    """``script`` and every project file it imports, transitively."""
    seen, todo = set(), [script]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo += imported_files(file) - seen
    return seen


def stage_script_deps(stage: str) -> list[str]:
    """The source deps of a stage: its script, then the package files it imports, sorted."""
    script = ROOT / "stages" / f"{stage}.py"
    files = sorted(p.relative_to(ROOT).as_posix() for p in import_closure(script) if p != script)
    return [script.relative_to(ROOT).as_posix(), *files]


def rewrite_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> None:
    """Replace the source-file deps (stages/*.py, src/**.py) of every stage by its import closure,
    keeping the other deps and the file's layout and comments."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, stage, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^  ([a-z_]+):\s*$", line)
        if match:
            stage = match.group(1)
        if stage and re.match(r"^\s+deps:\s*$", line):
            out.append(line)
            indent = None
            i += 1
            kept = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                item = lines[i].strip()[2:]
                if not re.fullmatch(r"(stages|src)/[^\s$]+\.py", item):  # a templated dep (${...}) stays
                    kept.append(lines[i])
                i += 1
            out += [f"{indent}- {dep}\n" for dep in stage_script_deps(stage)] + kept
            continue
        out.append(line)
        i += 1
    path.write_text("".join(out), encoding="utf-8")


def stage_definitions(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """The stage definitions of dvc.yaml in their order (a ``foreach`` stage once, by its name)."""
    return list(yaml.safe_load(path.read_text(encoding="utf-8"))["stages"])


def templated_deps(stage: str, path: Path = ROOT / "dvc.yaml") -> list[str]:
    """The source deps of a foreach stage that name a module by its item (``${item.source}``)."""
    body = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"][stage]
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in body.get("do", body).get("deps", [])]
    return [d for d in deps if d.endswith(".py") and "${item." in d]


def invalidated_by() -> dict[str, list[str]]:
    """Each package module (by its path under src/scratchgpt) → the stage definitions whose deps
    a change to it invalidates, in dvc.yaml's order: those whose script imports it, and a foreach
    stage whose deps name it by its item's key (as ``stage (items whose key is value)``)."""
    stages = stage_definitions()
    closures = {stage: import_closure(ROOT / "stages" / f"{stage}.py") for stage in stages}
    found = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        found[file.relative_to(PACKAGE).as_posix()] = [stage for stage in stages if file in closures[stage]]
        for stage in stages:
            for dep in templated_deps(stage):
                before, key, after = re.split(r"\$\{item\.(\w+)\}", dep, maxsplit=1)
                match = re.fullmatch(f"{re.escape(before)}(?P<{key}>[^/_][^/]*){re.escape(after)}", rel)
                if match:
                    ((key, value),) = match.groupdict().items()
                    found[file.relative_to(PACKAGE).as_posix()].append(f"{stage} (items whose {key} is {value})")
    return found


def table() -> str:
    """The Markdown table module → stages it invalidates (``every stage``, or ``none``)."""
    everything = stage_definitions()
    rows = ["| module | stages a change to it invalidates |", "| --- | --- |"]
    for module, stages in invalidated_by().items():
        listed = "every stage" if stages == everything else ", ".join(f"`{s}`" for s in stages) or "none"
        rows.append(f"| `{module}` | {listed} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["table"]:
        print(table(), end="")
    elif sys.argv[1:]:
        sys.exit(f"usage: python {sys.argv[0]} [table]")
    else:
        rewrite_dvc_yaml()
