"""The plumbing every stage shares: its declaration read from dvc.yaml, params restricted to what
it declares, the fingerprint of what determines it, outputs moved into place together, and the
resume folders kept in the cache."""

import json
import os
import time
from pathlib import Path

import pytest

from scratchgpt.plumbing import resume
from scratchgpt.plumbing.outputs import OutputsError, StagedOutputs, recover
from scratchgpt.plumbing.params import load_params
from scratchgpt.plumbing.pipeline import (
    SpecError,
    UndeclaredParams,
    load_spec,
    stage_names,
)
from scratchgpt.plumbing.stage import session

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML, PARAMS_YAML = ROOT / "dvc.yaml", ROOT / "params.yaml"


def test_foreach_stages_are_resolved_as_dvc_resolves_them():
    spec = load_spec("prepare@wikipedia", DVC_YAML, PARAMS_YAML)
    assert "data/raw/wikipedia" in spec.deps and "data/raw/gpt2" in spec.deps  # ${item.dataset}, ${prepare.bpe_dataset}
    assert spec.params == (
        "prepare.bpe_dataset",
        "prepare.corpora.wikipedia",
        "download.datasets.wikipedia",
        "download.datasets.gpt2",
    )
    assert spec.outs == ("data/shards/wikipedia", "metrics/prepare/wikipedia.json")
    names = stage_names(DVC_YAML, PARAMS_YAML)
    assert "download@spam" in names and "finetune_classifier" in names and "download" not in names


def test_outputs_of_a_stage_are_its_outs_metrics_and_plots():
    spec = load_spec("finetune_classifier", DVC_YAML, PARAMS_YAML)
    assert spec.outs == (
        "data/spam",
        "models/classifier",
        "metrics/classifier/plots/metrics",
        "metrics/classifier/confusion.json",
        "plots/classifier",
        "metrics/classifier/metrics.json",
    )
    assert not [o for o in spec.outs if "resume" in o], "resume state is not a DVC output"


def test_unknown_stages_and_items_are_named():
    with pytest.raises(SpecError, match="no stage 'pretrian'"):
        load_spec("pretrian", DVC_YAML, PARAMS_YAML)
    with pytest.raises(SpecError, match="download@nope: not a stage .*expected download@ one of: verdict, spam"):
        load_spec("download@nope", DVC_YAML, PARAMS_YAML)
    with pytest.raises(SpecError, match="pretrain is not a foreach stage"):
        load_spec("pretrain@x", DVC_YAML, PARAMS_YAML)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_stage_reads_only_the_params_it_declares(workdir):
    params = load_params(PARAMS_YAML)
    with session("evaluate", params, DVC_YAML) as st:
        assert st.params.evaluate.batch_size == params.evaluate.batch_size
        assert st.params.instruct.mask_prompt is params.instruct.mask_prompt  # declared key of a section
        assert st.params.download.http == params.download.http
        with pytest.raises(UndeclaredParams, match="stage evaluate reads params key instruct.lr, which dvc.yaml"):
            _ = st.params.instruct.lr
        with pytest.raises(UndeclaredParams, match="params key classifier,"):
            _ = st.params.classifier
        for name in ("data/evaluate/x.json", "metrics/evaluate.json"):
            st.out(name).parent.mkdir(parents=True, exist_ok=True)
            st.out(name).write_text("{}")
    with session("download@spam", params, DVC_YAML) as st:
        assert st.key == "spam" and st.params.download.datasets["spam"] == params.download.datasets["spam"]
        with pytest.raises(UndeclaredParams, match="download.datasets.verdict"):
            st.params.download.datasets["verdict"]
        st.out("data/raw/spam").mkdir(parents=True)


def test_the_fingerprint_follows_deps_and_declared_params(workdir):
    params = load_params(PARAMS_YAML)
    for code in ("stages", "src"):
        Path(code).symlink_to(ROOT / code)
    for dep in ("data/raw/spam", "models/base"):
        Path(dep).mkdir(parents=True)
        (Path(dep) / "f").write_text("one")

    def fp(p=params, exclude=("classifier.device",)):
        with session("finetune_classifier", p, DVC_YAML) as st:
            try:
                return st.fingerprint(exclude=exclude, extra=[1])
            finally:
                for out in st.spec.outs:
                    st.out(out).mkdir(parents=True)

    first = fp()
    assert fp() == first
    cpu = params.model_copy(update={"classifier": params.classifier.model_copy(update={"device": "cpu"})})
    assert fp(cpu) == first, "an excluded key does not count"
    lr = params.model_copy(update={"classifier": params.classifier.model_copy(update={"lr": 1.0})})
    assert fp(lr) != first
    spam = params.download.datasets["spam"].model_copy(update={"files": []})
    other = params.model_copy(
        update={"download": params.download.model_copy(update={"datasets": {**params.download.datasets, "spam": spam}})}
    )
    assert fp(other) != first, "download.datasets.spam is declared"
    (Path("models/base") / "config.json").write_text("{}")
    assert fp() != first, "a new file in a dep folder"


def _outputs(tmp_path):
    out = StagedOutputs("demo", ["models/m", "metrics/m.json"], state=tmp_path / ".scratchgpt")
    out.begin()
    out.path("metrics").mkdir(parents=True)
    return out


def _old_and_staged(workdir):
    """Outputs of an earlier run in place, and a new run's staged."""
    Path("models/m").mkdir(parents=True)
    Path("models/m/old.bin").write_text("old")
    Path("metrics").mkdir()
    Path("metrics/m.json").write_text("old")
    out = _outputs(workdir)
    out.path("models/m").mkdir(parents=True)
    out.path("models/m/new.bin").write_text("new")
    out.path("metrics/m.json").write_text("new")
    return out


def test_outputs_replace_the_previous_ones_whole_and_together(workdir):
    out = _old_and_staged(workdir)
    assert Path("metrics/m.json").read_text() == "old", "nothing moves before the commit"
    out.commit()
    assert sorted(os.listdir("models/m")) == ["new.bin"] and Path("metrics/m.json").read_text() == "new"
    assert sorted(os.listdir("models")) == ["m"] and not out.root.exists()


def test_a_failed_run_keeps_the_previous_outputs(workdir):
    Path("metrics").mkdir()
    Path("metrics/m.json").write_text("old")
    out = _outputs(workdir)
    out.path("metrics/m.json").write_text("new")
    out.abort()
    assert Path("metrics/m.json").read_text() == "old" and not out.root.exists()


def test_undeclared_or_missing_outputs_are_errors_and_nothing_moves(workdir):
    out = _outputs(workdir)
    out.path("models/m").mkdir(parents=True)
    out.path("metrics/m.json").write_text("new")
    out.path("metrics/other.json").write_text("stray")
    with pytest.raises(
        OutputsError, match="wrote file.* that dvc.yaml does not declare as outputs: metrics/other.json"
    ):
        out.commit()
    out.path("metrics/other.json").unlink()
    out.path("metrics/m.json").unlink()
    with pytest.raises(OutputsError, match="did not write its declared output.*: metrics/m.json"):
        out.commit()
    assert not Path("models/m").exists() and not Path("metrics/m.json").exists()


def test_one_run_of_a_stage_at_a_time(workdir):
    first = _outputs(workdir)
    with pytest.raises(OutputsError, match="stage demo is already running in this folder"):
        _outputs(workdir)
    first.abort()
    _outputs(workdir).abort()


def test_a_commit_cut_short_is_finished_by_the_next_start(workdir):
    """The journal of a commit killed after its first move: recover() completes the rest."""
    out = _old_and_staged(workdir)
    out.journal.parent.mkdir(parents=True)
    out.journal.write_text(json.dumps({"stage": "demo", "outputs": out.outputs}))
    os.replace("models/m", "models/.m.old")  # killed half way through moving the folder
    os.replace(out.path("models/m"), "models/m")
    out.release()
    assert recover(workdir / ".scratchgpt") == ["demo"]
    assert sorted(os.listdir("models")) == ["m"] and os.listdir("models/m") == ["new.bin"]
    assert Path("metrics/m.json").read_text() == "new" and not out.journal.exists()


def test_resume_folders_are_kept_by_fingerprint_and_bounded(workdir, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(workdir / "cache"))
    monkeypatch.delenv(resume.KEEP_ENV, raising=False)
    used = []
    for fingerprint in ("a" * 64, "b" * 64, "c" * 64):
        with resume.resume_dir("demo", fingerprint) as folder:
            (folder / "checkpoint.json").write_text("{}")
            used.append(folder)
        time.sleep(0.01)
    assert used[0] == workdir / "cache" / "resume" / "demo" / ("a" * 32)
    kept = sorted(p.name for p in (workdir / "cache" / "resume" / "demo").iterdir())
    assert kept == ["b" * 32, "c" * 32], "the two most recently used"
    monkeypatch.setenv(resume.KEEP_ENV, "1")
    with resume.resume_dir("demo", "b" * 64):
        pass
    assert [p.name for p in (workdir / "cache" / "resume" / "demo").iterdir()] == ["b" * 32]
