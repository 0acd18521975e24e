"""dvc.yaml's deps of every stage cover the project source files its script imports, found from
the code (ast, every import statement, function bodies included, followed transitively), not
from a hand-made list; and they list no source file the stage does not import. Since every
imported module is a dep, a stage imports only what it runs: a change to one stage's code
invalidates no stage that does not run it (checked from the closures, dvc.yaml and DVC itself)."""

import ast
import json
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from committed import committed
from conftest import load_stage
from imports import ROOT, import_closure, imported_files, table
from scratch_repo import DVC, init_repo, repo_env, sh
from scratchgpt.plumbing.params import ParamsError, load_params
from scratchgpt.plumbing.pipeline import SpecError, load_spec, stage_names
from scratchgpt.plumbing.sections.download import DatasetParams
from scratchgpt.plumbing.sections.dpo import DPOParams
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.prepare import PrepareParams
from scratchgpt.plumbing.sections.pretrain import PretrainParams
from scratchgpt.plumbing.stage import read_sections

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
        "book/loader",
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
    "stage", sorted({n.partition("@")[0] for n in stage_names(ROOT / "dvc.yaml", committed("params.yaml"))})
)
def test_dvc_yaml_deps_are_the_import_closure_of_the_stage_script(stage):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    body = spec.get("do", spec)
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in body["deps"]]
    script = ROOT / "stages" / f"{stage}.py"
    closure = import_closure(script)
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure if not _covered(p, deps))
    assert not missing, f"stage {stage}: dvc.yaml deps lack files its script imports: {', '.join(missing)}"
    code = [d for d in deps if d.endswith(".py") and "${" not in d]  # a templated dep: see test_download_sources
    extra = sorted(d for d in code if ROOT / d not in closure)
    assert not extra, f"stage {stage}: dvc.yaml deps list files its script does not import: {', '.join(extra)}"


def test_every_stage_resolves_and_its_deps_exist_in_the_repository():
    for name in stage_names(ROOT / "dvc.yaml", committed("params.yaml")):
        spec = load_spec(name, ROOT / "dvc.yaml", committed("params.yaml"))
        for dep in spec.deps:
            if dep.startswith(("src/", "stages/")):
                assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"


def dvc_yaml_code_deps(stage: str) -> list[str]:
    """The source files dvc.yaml lists as deps of the stage definition ``stage``."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    body = spec.get("do", spec)
    return [d for d in (next(iter(d)) if isinstance(d, dict) else d for d in body["deps"]) if d.endswith(".py")]


def code_deps(stage: str) -> dict[str, list[str]]:
    """The stage's source deps, as derived from its script and as dvc.yaml lists them."""
    derived = [p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / f"{stage}.py")]
    return {"import closure": derived, "dvc.yaml": dvc_yaml_code_deps(stage)}


DOWNLOAD_CODE = ("http.py", "download.py", "files.py", "mediawiki.py", "dump.py")
SOURCES = ROOT / "src" / "scratchgpt" / "plumbing" / "sources"
FINETUNING_CODE = ("classify.py", "lora.py", "instruct.py", "dpo.py", "scoring.py", "judge.py")


def code(dep: str) -> str | None:
    """The file name of a dep that is book or plumbing code (not a params section's schema)."""
    path = Path(dep)
    return path.name if path.parent.name in ("book", "plumbing", "formats", "sources") else None


def test_each_download_source_is_a_dep_of_its_own_datasets_only(tmp_path):
    """download@<key>'s deps are the stage script's closure and the module of the dataset's
    source, which imports nothing else of the project: a change to the dump's code reruns the
    dump's datasets, and the-verdict's download depends on no MediaWiki or dump code."""
    literal = typing.get_args(DatasetParams.model_fields["source"].annotation)
    assert sorted(literal) == sorted(f.stem for f in SOURCES.glob("*.py") if f.name != "__init__.py")
    script = import_closure(ROOT / "stages" / "download.py")
    for name in literal:
        module = SOURCES / f"{name}.py"
        assert module not in script, f"stages/download.py imports the {name} source whatever the dataset"
        extra = sorted(f.relative_to(ROOT).as_posix() for f in import_closure(module) - script - {module})
        assert not extra, f"the {name} source imports what the download stage's deps lack: {extra}"
    params = yaml.safe_load((committed("params.yaml")).read_text())
    params["download"]["datasets"]["wikipedia"]["source"] = "dump"
    params["download"]["datasets"]["wikipedia"]["dump"] = {"wiki": "simplewiki", "date": "20260101"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    deps = {
        key: [
            d for d in load_spec(f"download@{key}", ROOT / "dvc.yaml", tmp_path / "params.yaml").deps if "sources/" in d
        ]
        for key in ("wikipedia", "verdict")
    }
    assert deps == {
        "wikipedia": ["src/scratchgpt/plumbing/sources/__init__.py", "src/scratchgpt/plumbing/sources/dump.py"],
        "verdict": ["src/scratchgpt/plumbing/sources/__init__.py", "src/scratchgpt/plumbing/sources/files.py"],
    }


def test_a_stage_validates_exactly_the_params_sections_dvc_yaml_declares_for_it():
    """Each script passes ``stage.run`` the section classes whose keys dvc.yaml declares for it
    (the stage refuses to start otherwise): so its deps hold those sections' schema, no other."""
    for stage in STAGES:
        module = load_stage(stage)
        call = next(
            node
            for node in ast.walk(ast.parse((ROOT / "stages" / f"{stage}.py").read_text()))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "stage.run"
        )
        given = sorted(getattr(module, arg.id).section for arg in call.args[1:])
        body = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
        declared = sorted({key.split(".")[0] for key in body.get("do", body)["params"]})
        assert given == declared, stage


def test_a_stage_that_validates_other_sections_than_it_declares_does_not_start():
    spec = load_spec("pretrain", ROOT / "dvc.yaml", committed("params.yaml"))
    with pytest.raises(SpecError, match="validates the params sections dpo, dvc.yaml declares keys of model, "):
        read_sections(spec, [DPOParams], str(committed("params.yaml")))
    params = read_sections(spec, [ModelParams, PretrainParams, PrepareParams], str(committed("params.yaml")))
    assert set(type(params).model_fields) == {"model", "pretrain", "prepare"}
    assert params.pretrain.lr > 0


def test_a_stage_validates_its_sections_only(tmp_path):
    """A problem in a section pretrain does not read is not pretrain's: the whole file's
    validation (scratchgpt params, scratchgpt experiments run) names it."""
    data = yaml.safe_load((committed("params.yaml")).read_text())
    data["dpo"]["betta"] = 0.1
    data["pretrain"]["lr"] = -1.0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec("pretrain", ROOT / "dvc.yaml", committed("params.yaml"))
    with pytest.raises(ParamsError) as err:
        read_sections(spec, [ModelParams, PretrainParams, PrepareParams], str(tmp_path / "params.yaml"))
    assert err.value.problems == ["pretrain.lr: must be > 0, got -1"]
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert any(p.startswith("dpo.betta") for p in err.value.problems), err.value.problems


def test_pretrain_depends_on_no_finetuning_or_download_code():
    """A change to the classifier, LoRA, instruction or preference tuning, the scores, the
    judge, or any download code does not rerun pretraining."""
    for where, deps in code_deps("pretrain").items():
        found = sorted(d for d in deps if code(d) in FINETUNING_CODE + DOWNLOAD_CODE)
        assert not found, f"pretrain's {where} holds {found}"


MODEL_CODE = (
    "src/scratchgpt/book/model.py",
    "src/scratchgpt/book/train.py",
    "src/scratchgpt/book/loader.py",
    "src/scratchgpt/book/generate.py",
    "src/scratchgpt/device.py",
    "src/scratchgpt/plumbing/training.py",
    "src/scratchgpt/plumbing/checkpointing.py",
    "src/scratchgpt/plumbing/distributed.py",
    "src/scratchgpt/plumbing/live.py",
    *(f"src/scratchgpt/book/{name}" for name in FINETUNING_CODE if name != "judge.py"),
)


@pytest.mark.parametrize("stage", ["download", "prepare"])
def test_the_data_stages_depend_on_no_model_or_training_code(stage):
    """Downloads and shards rerun for no change to the model, training or a model format
    (prepare runs the tokenizer and writes shards, nothing else of the book)."""
    for where, deps in code_deps(stage).items():
        found = sorted(d for d in deps if d in MODEL_CODE or d.startswith("src/scratchgpt/formats/"))
        assert not found, f"{stage}'s {where} holds {found}"


@pytest.mark.parametrize(
    "stage, fetches",
    [
        ("prepare", ()),
        ("pretrain", ()),
        ("init", ("http.py", "download.py")),  # OpenAI's checkpoint files and the Hub
        ("finetune_classifier", ()),
        ("finetune_instruct", ()),
        ("finetune_dpo", ()),
        ("evaluate", ("http.py",)),  # the judge
        ("report", ()),
    ],
)
def test_only_what_a_stage_downloads_with_is_its_dep(stage, fetches):
    """Readers of data/raw check it with plumbing/datasets.py, not with the download code; only
    the download stage depends on the MediaWiki and dump sources."""
    for where, deps in code_deps(stage).items():
        found = sorted(code(d) for d in deps if code(d) in DOWNLOAD_CODE)
        assert found == sorted(fetches), f"{stage}'s {where} holds {found}"


STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])

# Which stage definitions list each module: a change to it reruns these and no other.
INVALIDATES = {
    "book/classify.py": {"finetune_classifier", "evaluate"},
    "book/lora.py": {"finetune_classifier", "finetune_instruct", "finetune_dpo", "evaluate"},
    "book/instruct.py": {"finetune_instruct", "finetune_dpo", "evaluate"},
    "book/dpo.py": {"finetune_dpo"},
    "book/scoring.py": {"evaluate"},
    "book/shards.py": {"prepare", "pretrain"},
    "plumbing/corpus.py": {"prepare"},
    "plumbing/shard_writer.py": {"prepare"},
    "plumbing/sources/__init__.py": {"download"},
    "plumbing/download.py": {"download", "init"},
    "plumbing/datasets.py": {"download", "prepare", "init", "finetune_classifier", "finetune_instruct", "finetune_dpo"},
    "formats/finetuned.py": {"finetune_classifier", "finetune_instruct", "finetune_dpo", "evaluate"},
    "formats/classifier.py": {"evaluate"},
    "formats/openai_download.py": {"init"},
    # params schema: a section's module reruns the stages that read that section (report reads most)
    "plumbing/params.py": {"report"},
    "plumbing/sections/download.py": set(STAGES) - {"pretrain"},
    "plumbing/sections/prepare.py": {"prepare", "pretrain", "report"},
    "plumbing/sections/model.py": {"pretrain", "report"},
    "plumbing/sections/pretrain.py": {"pretrain", "report"},
    "plumbing/sections/init.py": {"init", "report"},
    "plumbing/sections/classifier.py": {"finetune_classifier", "report"},
    "plumbing/sections/instruct.py": {"finetune_instruct", "finetune_dpo", "evaluate", "report"},
    "plumbing/sections/dpo.py": {"finetune_dpo", "report"},
    "plumbing/sections/evaluate.py": {"evaluate", "report"},
    "plumbing/sections/report.py": {"report"},
}


@pytest.mark.parametrize("module", sorted(INVALIDATES))
def test_a_change_to_a_module_invalidates_only_the_stages_that_run_it(module):
    path = f"src/scratchgpt/{module}"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listing = {stage for stage in stages if path in dvc_yaml_code_deps(stage)}
    importing = {stage for stage in stages if ROOT / path in import_closure(ROOT / "stages" / f"{stage}.py")}
    assert listing == importing == INVALIDATES[module], f"{module}: dvc.yaml {listing}, imports {importing}"


def test_docs_hold_the_current_table_of_what_a_change_invalidates():
    """docs/pipeline.md shows `python tests/imports.py table` as it is now."""
    lines = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8").splitlines()
    header = table().splitlines()[0]
    assert header in lines, "docs/pipeline.md lacks the table of `python tests/imports.py table`"
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    shown = "\n".join(lines[start:end]) + "\n"
    assert shown == table(), "docs/pipeline.md: paste the output of `python tests/imports.py table`"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A scratch copy of the pipeline whose dvc.lock records every stage as run: each output and
    data dep a placeholder, committed with `dvc commit` (nothing runs), so `dvc status` shows
    only what a change to the code does."""
    work = tmp_path_factory.mktemp("deps")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(committed(name), work / name)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = repo_env()
    init_repo(work, env)
    for name in stage_names(ROOT / "dvc.yaml", committed("params.yaml")):
        spec = load_spec(name, ROOT / "dvc.yaml", committed("params.yaml"))
        for path in [work / d for d in spec.deps if not d.endswith(".py")] + [work / o for o in spec.outs]:
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text("placeholder\n")
    sh([*DVC, "commit", "-f", "-q"], work, env)
    assert json.loads(sh([*DVC, "status", "--json"], work, env)) == {}
    return work, env


@pytest.mark.e2e
@pytest.mark.parametrize(
    "module, changed",
    [
        ("book/classify.py", {"finetune_classifier", "evaluate"}),
        ("book/lora.py", {"finetune_classifier", "finetune_instruct", "finetune_dpo", "evaluate"}),
        (
            "plumbing/sources/files.py",
            {n for n in stage_names(ROOT / "dvc.yaml", committed("params.yaml")) if n.startswith("download@")},
        ),
        ("plumbing/sources/dump.py", set()),  # no dataset of the default params is a dump
        ("plumbing/sources/mediawiki.py", set()),
        ("plumbing/sections/dpo.py", {"finetune_dpo", "report"}),
        ("plumbing/sections/model.py", {"pretrain", "report"}),
    ],
    ids=["classify", "lora", "files-source", "dump-source", "mediawiki-source", "dpo-params", "model-params"],
)
def test_dvc_status_after_a_change_lists_only_the_stages_that_run_it(recorded, module, changed):
    """A comment appended to one module: `dvc status` names the stages that import it and no other."""
    work, env = recorded
    path = work / "src" / "scratchgpt" / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# a comment\n")
        status = json.loads(sh([*DVC, "status", "--json"], work, env))
    finally:
        path.write_bytes(original)
    assert set(status) == changed
    for stage, changes in status.items():
        assert changes == [{"changed deps": {f"src/scratchgpt/{module}": "modified"}}], stage
