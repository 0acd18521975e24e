"""The plumbing every stage shares: its declaration read from dvc.yaml, params restricted to what
it declares, the fingerprint of what determines it, outputs moved into place together, and the
resume folders kept in the cache."""

import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from committed import committed
from scratchgpt.errors import PipelineError
from scratchgpt.files import try_lock
from scratchgpt.plumbing import resume
from scratchgpt.plumbing.outputs import OutputsError, StagedOutputs, recover
from scratchgpt.plumbing.params import load_params
from scratchgpt.plumbing.pipeline import (
    SpecError,
    UndeclaredParams,
    load_spec,
    stage_names,
)
from scratchgpt.plumbing.sections.pretrain import PretrainParams
from scratchgpt.plumbing.stage import InputsChanged, session

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML, PARAMS_YAML = ROOT / "dvc.yaml", committed("params.yaml")


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


# ---------------------------------------------------------------------------------------------
# One run at a time: inputs that change under a running stage; resume folders' lifetime

DEMO_DVC_YAML = """\
stages:
  demo:
    cmd: python demo.py
    deps: [data/in]
    params: [pretrain.lr]
    outs: [out.txt]
"""


@pytest.fixture
def demo(workdir, monkeypatch):
    """A folder with params.yaml, a dvc.yaml of one stage (demo: data/in → out.txt), its previous
    output and a cache of its own."""
    Path("params.yaml").write_bytes(PARAMS_YAML.read_bytes())
    Path("dvc.yaml").write_text(DEMO_DVC_YAML)
    Path("data/in").mkdir(parents=True)
    Path("data/in/a.txt").write_text("one")
    Path("out.txt").write_text("old")
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(workdir / "cache"))
    monkeypatch.delenv(resume.CAP_ENV, raising=False)
    return workdir


def _rewrite_params(**changes):
    """params.yaml with ``changes`` to its pretrain section, as `dvc exp run -S pretrain.KEY=...` writes it."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["pretrain"].update(changes)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("changed", ["params.yaml", "data/in"])
def test_inputs_changed_while_a_stage_ran_are_refused_and_nothing_moves(demo, changed):
    with pytest.raises(InputsChanged) as e:
        with session("demo", dvc_yaml=Path("dvc.yaml"), sections=[PretrainParams]) as st:
            st.out("out.txt").write_text("new")
            folder = st.resume_dir("f" * 64).__enter__()
            (folder / "checkpoint.json").write_text("{}")
            if changed == "params.yaml":
                _rewrite_params(lr=float("inf"))  # another `dvc exp run -S pretrain.lr=inf` in this workspace
            else:
                Path("data/in/a.txt").write_text("two")  # an upstream stage rerun by another `dvc exp run`
    assert str(e.value) == f"{changed} changed while this stage ran (another `dvc exp run`?); nothing was recorded"
    assert Path("out.txt").read_text() == "old", "nothing moved"
    assert not (demo / ".scratchgpt" / "staging" / "demo").exists(), "what the run staged is dropped"
    assert (folder / "checkpoint.json").is_file(), "a run that recorded nothing keeps its resume folder"
    Path("params.yaml").write_bytes(PARAMS_YAML.read_bytes())
    with session(
        "demo", dvc_yaml=Path("dvc.yaml"), sections=[PretrainParams]
    ) as st:  # the stage's lock is free again; unchanged inputs commit
        st.out("out.txt").write_text("new")
    assert Path("out.txt").read_text() == "new"


def test_a_finished_run_deletes_its_resume_folder_a_failed_one_keeps_it(demo, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError):
        with session("demo", dvc_yaml=Path("dvc.yaml"), sections=[PretrainParams]) as st:
            with st.resume_dir("a" * 64) as failed:
                (failed / "checkpoint.json").write_text("{}")
            raise RuntimeError("diverged")
    assert (failed / "checkpoint.json").is_file()
    with session("demo", dvc_yaml=Path("dvc.yaml"), sections=[PretrainParams]) as st:
        with st.resume_dir("b" * 64) as done:
            (done / "checkpoint.json").write_text("{}")
        st.out("out.txt").write_text("new")
        assert done.is_dir(), "kept until the outputs are in place"
    assert not done.exists() and failed.is_dir()
    assert f"deleted its resume checkpoints ({done}" in caplog.text


def _resume_folder(stage: str, fingerprint: str, size: int, age: float) -> Path:
    folder = resume.folder_of(stage, fingerprint)
    folder.mkdir(parents=True)
    (folder / "checkpoint-x.pt").write_bytes(b"\0" * size)
    os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def test_a_cap_on_the_cache_evicts_the_least_recently_used_unfinished_folders(demo, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    oldest = _resume_folder("pretrain", "a" * 64, 600, age=400)
    in_use = _resume_folder("finetune_classifier", "b" * 64, 600, age=300)
    older = _resume_folder("pretrain", "c" * 64, 600, age=200)
    newest = _resume_folder("finetune_dpo", "d" * 64, 300, age=100)
    other_run = try_lock(in_use / resume.LOCK)  # another process runs it
    try:
        monkeypatch.setenv(resume.CAP_ENV, "0.000001")  # 1000 bytes: 2100 are there
        with resume.resume_dir("demo", "e" * 64) as current:
            assert not oldest.exists() and not older.exists(), "oldest first, until under the cap"
            assert in_use.is_dir() and newest.is_dir() and current.is_dir()
    finally:
        os.close(other_run)
    lines = [r.getMessage() for r in caplog.records if "SCRATCHGPT_CACHE_MAX_GB" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"pretrain {'a' * 12} (0.001 MB), pretrain {'c' * 12} (0.001 MB)" in lines[0], lines[0]
    monkeypatch.setenv(resume.CAP_ENV, "lots")
    with pytest.raises(PipelineError, match="SCRATCHGPT_CACHE_MAX_GB=lots: expected a size in GB"):
        with resume.resume_dir("demo", "e" * 64):
            pass


def test_a_second_run_of_the_same_inputs_waits_and_says_who_it_waits_for(demo, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(resume, "WAIT_POLL_S", 0.01)
    monkeypatch.setattr(resume, "WAIT_LOG_S", 0.05)
    got = []

    def second():
        with resume.resume_dir("demo", "f" * 64) as folder:
            got.append(folder)

    with resume.resume_dir("demo", "f" * 64):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        assert not got, "it waits while the first run holds the folder"
    waiter.join(10)
    assert got
    text = caplog.text
    assert f"waiting for another run of demo with the same inputs to finish: process {os.getpid()}" in text
    assert re.search(r"still waiting for the other run of demo \(process \d+.*\) to finish \(\d+ s\)", text), text


def test_a_run_waiting_for_the_lock_says_who_holds_it_and_keeps_saying_it(tmp_path, monkeypatch, caplog):
    """Another run with the same inputs holds the resume folder: the waiting run names it (pid,
    host, since when, its command) at once and again every WAIT_LOG_S, never silent for long."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(resume, "WAIT_POLL_S", 0.01)
    monkeypatch.setattr(resume, "WAIT_LOG_S", 0.05)
    folder = tmp_path / "run"
    holder = resume._lock(folder, "pretrain")
    pid, host, started = (folder / resume.LOCK).read_text().split()
    got = []
    waiter = threading.Thread(target=lambda: got.append(resume._lock(folder, "pretrain")))
    waiter.start()
    time.sleep(0.3)
    os.close(holder)
    waiter.join(timeout=10)
    os.close(got[0])
    assert int(pid) == os.getpid() and host == socket.gethostname() and started.endswith("Z")
    text = caplog.text
    first = (
        f"waiting for another run of pretrain with the same inputs to finish: process {os.getpid()} on {host} since "
    )
    assert first in text
    assert text.count("still waiting for the other run of pretrain (process ") >= 2
