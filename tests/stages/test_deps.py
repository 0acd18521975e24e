"""dvc.yaml's deps of every stage cover the project source files its script imports, found from
the code (ast, every import statement, function bodies included, followed transitively), not
from a hand-made list; and they list no source file the stage does not import."""

from pathlib import Path

import pytest
import yaml

from imports import ROOT, import_closure, imported_files
from scratchgpt.plumbing.pipeline import load_spec, stage_names

PACKAGE = ROOT / "src" / "scratchgpt"


def _covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def test_the_closure_follows_package_and_nested_imports():
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / "evaluate.py")}
    for name in (
        "book/classify",
        "book/instruct",
        "book/train",
        "book/model",
        "formats/modeldir",
        "plumbing/judge",
        "plumbing/stage",
        "__init__",
        "book/__init__",
        "plumbing/__init__",
    ):
        assert f"src/scratchgpt/{name}.py" in closure, name
    assert "src/scratchgpt/plumbing/report.py" not in closure
    assert imported_files(PACKAGE / "plumbing" / "paths.py") == set()  # os and pathlib only
    assert PACKAGE / "plumbing" / "__init__.py" in imported_files(ROOT / "stages" / "init.py")  # a package's __init__


@pytest.mark.parametrize(
    "stage", sorted({n.partition("@")[0] for n in stage_names(ROOT / "dvc.yaml", ROOT / "params.yaml")})
)
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
