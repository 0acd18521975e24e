"""dvc.yaml's deps of every stage cover the project source files its script imports, found from
the code (ast, every import statement, function bodies included, followed transitively), not
from a hand-made list; and they list no source file the stage does not import."""

import ast
from pathlib import Path

import pytest
import yaml

from scratchgpt.pipeline import load_spec, stage_names

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


def imported_files(file: Path) -> set[Path]:
    """Project files that ``file`` imports directly (its package's __init__ included)."""
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
    return found


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


def _covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def test_the_closure_follows_relative_lazy_and_package_imports():
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / "evaluate.py")}
    # evaluate.run imports classify, instruct and train inside the function body
    for name in ("evaluate", "classify", "instruct", "train", "model", "tokenizer", "__init__", "stage"):
        assert f"src/scratchgpt/{name}.py" in closure, name
    assert "src/scratchgpt/report.py" not in closure
    assert imported_files(PACKAGE / "paths.py") == set()  # os and pathlib only
    assert imported_files(ROOT / "stages" / "init.py") == {
        PACKAGE / f"{name}.py" for name in ("__init__", "base", "paths", "stage", "files")
    }


@pytest.mark.parametrize("stage", sorted({n.partition("@")[0] for n in stage_names(ROOT / "dvc.yaml", ROOT / "params.yaml")}))
def test_dvc_yaml_deps_are_the_import_closure_of_the_stage_script(stage):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    body = spec.get("do", spec)
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in body["deps"]]
    script = ROOT / "stages" / f"{stage}.py"
    closure = import_closure(script)
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure if not _covered(p, deps))
    assert not missing, f"stage {stage}: dvc.yaml deps lack files its script imports: {', '.join(missing)}"
    code = [d for d in deps if d.endswith(".py")]
    extra = sorted(d for d in code if ROOT / d not in closure)
    assert not extra, f"stage {stage}: dvc.yaml deps list files its script does not import: {', '.join(extra)}"


def test_every_stage_resolves_and_its_deps_exist_in_the_repository():
    for name in stage_names(ROOT / "dvc.yaml", ROOT / "params.yaml"):
        spec = load_spec(name, ROOT / "dvc.yaml", ROOT / "params.yaml")
        for dep in spec.deps:
            if dep.startswith(("src/", "stages/")):
                assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"
