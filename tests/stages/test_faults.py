"""Fault injection: each training stage is SIGKILLed at chosen points (in the middle of a
training step, half-way through writing a checkpoint, between writing a checkpoint and pointing
at it), then run again. The rerun must resume and end with files identical to those of an
uninterrupted run, and a damaged checkpoint must never be loaded.

Each stage runs as a real process in a scratch folder with tiny params.
"""

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from committed import committed
from scratch_repo import DVC, repo_env, sh
from scratchgpt.book.instruct import load_entries, split_entries
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.files import sha256_file, write_json
from scratchgpt.formats.modeldir import rewrite_config, save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.shard_writer import write_shards

ROOT = Path(__file__).resolve().parents[2]

# Started instead of the stage script: installs one fault, then runs the stage.
RUNNER = textwrap.dedent(
    """
    import os, runpy, signal, sys
    import torch
    import scratchgpt.book.loader as L
    import scratchgpt.book.train as T
    import scratchgpt.formats.checkpoint as C

    fault, n, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = [0]

    def hit():
        count[0] += 1
        return count[0] == n

    if fault == "step":  # the n-th batch being assembled: mid-way through a step
        collate = L.collate
        def patched(*args, **kwargs):
            if hit():
                os.kill(os.getpid(), signal.SIGKILL)
            return collate(*args, **kwargs)
        T.collate = L.collate = patched  # the training steps' batches and the evaluations'
    elif fault == "checkpoint-write":  # the n-th checkpoint file, half written
        save = torch.save
        def patched(obj, f, *args, **kwargs):
            save(obj, f, *args, **kwargs)
            if hit():
                f.flush()
                name = f.f.name  # the HashingWriter's file
                with open(name, "r+b") as fh:
                    fh.truncate(os.path.getsize(name) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        T.torch.save = patched
    elif fault in ("sigint", "sigterm"):  # Ctrl-C or a SIGTERM at the n-th batch
        collate = L.collate
        def patched(*args, **kwargs):
            if hit():
                os.kill(os.getpid(), signal.SIGINT if fault == "sigint" else signal.SIGTERM)
            return collate(*args, **kwargs)
        T.collate = L.collate = patched  # the training steps' batches and the evaluations'
    elif fault == "commit":  # killed after the n-th output was moved into place, before the others
        import scratchgpt.plumbing.outputs as O
        move = O._move
        def patched(src, target):
            move(src, target)
            if hit():
                os.kill(os.getpid(), signal.SIGKILL)
        O._move = patched
    elif fault in ("params", "base"):  # another `dvc exp run` in this workspace, at the n-th batch
        collate = L.collate
        def patched(*args, **kwargs):
            if hit():
                import json, yaml
                from scratchgpt.formats.modeldir import rewrite_config
                if fault == "params":  # as `dvc exp run -S pretrain.lr=inf ...` rewrites it
                    with open("params.yaml") as f:
                        params = yaml.safe_load(f)
                    params["pretrain"]["lr"] = float("inf")
                    with open("params.yaml", "w") as f:
                        yaml.safe_dump(params, f, sort_keys=False)
                else:  # as it reruns init with another init.drop_rate
                    with open("models/base/config.json") as f:
                        config = json.load(f)
                    config["model"]["drop_rate"] = 0.5
                    rewrite_config("models/base", config)
            return collate(*args, **kwargs)
        T.collate = L.collate = patched  # the training steps' batches and the evaluations'
    elif fault == "pointer":  # the n-th checkpoint written, the pointer to it not yet
        write_json = C.write_json
        def patched(path, obj):
            if str(path).endswith("checkpoint.json") and hit():
                os.kill(os.getpid(), signal.SIGKILL)
            return write_json(path, obj)
        C.write_json = patched
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")
    """
)

TINY = GPTConfig(
    vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.1, tie_weights=True
)
STAGES = {
    "pretrain": dict(model_dir=paths.PRETRAINED, metrics=paths.METRICS / "pretrain", plots=paths.PLOTS / "pretrain"),
    "finetune_classifier": dict(
        model_dir=paths.CLASSIFIER, metrics=paths.METRICS / "classifier", plots=paths.PLOTS / "classifier"
    ),
    "finetune_instruct": dict(
        model_dir=paths.INSTRUCT, metrics=paths.METRICS / "instruct", plots=paths.PLOTS / "instruct"
    ),
    "finetune_dpo": dict(model_dir=paths.DPO, metrics=paths.METRICS / "dpo", plots=paths.PLOTS / "dpo"),
}


def tiny_params() -> dict:
    params = yaml.safe_load((committed("params.yaml")).read_text())
    params["model"].update(context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    common = dict(checkpoint_every=2, checkpoint_share=1.0, eval_freq=2, eval_iter=1, device="cpu")
    params["pretrain"].update(
        corpora=["verdict"],
        max_steps=10,
        batch_size=2,
        max_length=32,
        stride=32,
        warmup_steps=2,
        sample_tokens=4,
        **common,
    )
    params["classifier"].update(epochs=2, max_steps=10, batch_size=4, max_length=24, **common)
    params["instruct"].update(max_steps=10, batch_size=4, response_tokens=3, **common)
    params["dpo"].update(max_steps=10, batch_size=4, response_tokens=3, lr=1e-3, **common)
    return params


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mirror):
    """What the three stages read: shards, raw files and a base model with its tokenizer."""
    root = tmp_path_factory.mktemp("inputs")
    tok = GPT2Tokenizer(mirror / "gpt2")
    for dataset, name in (
        ("gpt2", "encoder.json"),
        ("gpt2", "vocab.bpe"),
        ("spam", "SMSSpamCollection"),
        ("instructions", "instruction-data.json"),
        ("preferences", "instruction-data-with-preference.json"),
        ("verdict", "the-verdict.txt"),
    ):
        src = mirror / ("gpt2/" + name if dataset == "gpt2" else name)
        (root / paths.raw(dataset)).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / paths.raw(dataset) / name)
    write_shards([root / paths.raw("verdict") / "the-verdict.txt"], tok, root / paths.shards("verdict"))
    torch.manual_seed(0)
    save_model(
        GPTModel(TINY.replace(drop_rate=0.0)), root / paths.BASE, {"tokenizer": save_tokenizer(tok, root / paths.BASE)}
    )
    # finetune_dpo's input: an instruction model (a context that holds the prompts) and chapter 7's test split
    meta = {"tokenizer": save_tokenizer(tok, root / paths.INSTRUCT), "instruct": {"format": "alpaca"}}
    save_model(GPTModel(TINY.replace(drop_rate=0.0, context_length=128)), root / paths.INSTRUCT, meta)
    (root / paths.INSTRUCT_DATA).mkdir(parents=True)
    test = split_entries(load_entries(root / paths.raw("instructions") / "instruction-data.json"))[2]
    write_json(root / paths.INSTRUCT_DATA / "test.json", test)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (root / "runner.py").write_text(RUNNER)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    for code in ("stages", "src"):
        (root / code).symlink_to(ROOT / code)
    return root


def workdir(inputs: Path, tmp_path: Path, name: str) -> Path:
    work = tmp_path / name
    shutil.copytree(inputs, work)
    return work


def run(work: Path, stage: str, fault: str | None = None, n: int = 0) -> subprocess.CompletedProcess:
    script = f"stages/{stage}.py"
    cmd = [sys.executable, str(work / "runner.py"), fault, str(n), script] if fault else [sys.executable, script]
    env = {**os.environ, "TQDM_DISABLE": "1", "SCRATCHGPT_CACHE": str(work / ".cache")}
    # Ctrl-C as a terminal delivers it, even where the tests run as a background job (a shell's
    # `&` starts those with SIGINT ignored, which Python would then keep)
    restore = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300, preexec_fn=restore)


def resume_dirs(work: Path, stage: str) -> list[Path]:
    """The stage's resume folders in the work folder's cache (one per fingerprint)."""
    folder = work / ".cache" / "resume" / stage
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def outputs(work: Path, stage: str) -> dict[str, bytes]:
    """Every file the stage leaves in its model, metrics and plots folders."""
    info = STAGES[stage]
    files = {}
    for folder in (info["model_dir"], info["metrics"], info["plots"]):
        for p in sorted((work / folder).rglob("*")):
            if p.is_file() and p.name != "memory.json":  # measured resources differ between any two runs
                files[str(p.relative_to(work))] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):
    """Per stage, a work folder after one uninterrupted run (with its resume cache)."""
    works = {}
    for stage in STAGES:
        work = workdir(inputs, tmp_path_factory.mktemp("clean"), stage)
        done = run(work, stage)
        assert done.returncode == 0, done.stderr[-3000:]
        assert resume_dirs(work, stage) == [], "a finished run deletes its resume folder"
        works[stage] = work
    return works


@pytest.fixture(scope="module")
def uninterrupted(finished):
    return {stage: outputs(work, stage) for stage, work in finished.items()}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("fault, n", [("step", 15), ("checkpoint-write", 2), ("pointer", 3)])
def test_killed_stage_resumes_to_the_same_result(inputs, uninterrupted, tmp_path, stage, fault, n):
    work = workdir(inputs, tmp_path, stage)
    killed = run(work, stage, fault, n)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (resume_dir,) = resume_dirs(work, stage)
    pointer = json.loads((resume_dir / "checkpoint.json").read_text())
    assert (resume_dir / pointer["file"]).is_file(), "the pointer names a complete checkpoint"
    again = run(work, stage)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(rf"INFO scratchgpt.book.train: resuming from {resume_dir} at step [1-9]\d* of 10 ", again.stderr)
    assert "corrupt" not in again.stderr
    result = outputs(work, stage)
    assert result.keys() == uninterrupted[stage].keys()
    for name, data in uninterrupted[stage].items():
        assert result[name] == data, f"{name} differs from the uninterrupted run"
    assert not resume_dir.exists(), "finished, its outputs in place: its resume folder is deleted"
    assert not list((work / ".scratchgpt" / "staging").iterdir()), "nothing staged is left behind"


# ---------------------------------------------------------------------------------------------
# Nothing mixed: a run that fails or is interrupted leaves the previous outputs as they were

SECTION = {
    "pretrain": "pretrain",
    "finetune_classifier": "classifier",
    "finetune_instruct": "instruct",
    "finetune_dpo": "dpo",
}
DATA = {
    "pretrain": [],
    "finetune_classifier": [paths.SPAM],
    "finetune_instruct": [paths.INSTRUCT_DATA],
    "finetune_dpo": [paths.DPO_DATA],
}


def copy_of(work: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    return copy


def set_params(work: Path, changes: dict) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def pin(work: Path, dataset: str, raw: Path) -> None:
    """params.yaml pins ``raw`` (a rewritten download of ``dataset``): its sha256 and size."""
    key = f"download.datasets.{dataset}.files.0"
    set_params(work, {f"{key}.sha256": sha256_file(raw), f"{key}.size": raw.stat().st_size})


def snapshot(work: Path, stage: str) -> dict[str, bytes]:
    """The stage's outputs and data splits, byte for byte."""
    files = outputs(work, stage)
    for folder in DATA[stage]:
        files |= {str(p.relative_to(work)): p.read_bytes() for p in sorted((work / folder).rglob("*")) if p.is_file()}
    return files


def untracked(work: Path) -> list[str]:
    """Files in the output folders that are neither outputs nor the untracked memory figures."""
    return [
        str(p.relative_to(work))
        for top in ("models", "metrics", "plots", "data")
        for p in (work / top).rglob("*")
        if p.name.startswith(".") and p.name != ".gitignore"
    ]


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("how", ["kill", "sigint", "sigterm", "diverge"])
def test_a_failed_or_interrupted_run_leaves_the_previous_outputs(finished, tmp_path, stage, how):
    work = copy_of(finished[stage], tmp_path)
    before = snapshot(work, stage)
    section = SECTION[stage]
    set_params(
        work, {f"{section}.seed": 7} if how != "diverge" else {f"{section}.lr": 1e9, f"{section}.grad_clip": 0.0}
    )
    fault = {"kill": ("step", 5), "sigint": ("sigint", 5), "sigterm": ("sigterm", 5), "diverge": (None, 0)}[how]
    done = run(work, stage, *fault)
    expected = {"kill": -signal.SIGKILL, "sigint": 130, "sigterm": 143, "diverge": 1}[how]
    assert done.returncode == expected, done.stderr[-3000:]
    if how != "kill":
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(
            {
                "sigint": f"{stage}: interrupted (Ctrl-C); nothing of this run was kept",
                "sigterm": f"{stage}: interrupted (SIGTERM); nothing of this run was kept",
                "diverge": "error: training diverged: ",
            }[how]
        ), last
        assert not (work / ".scratchgpt" / "staging" / stage).exists(), "what the run staged is dropped"
    after = snapshot(work, stage)
    assert after.keys() == before.keys()
    assert [name for name in before if after[name] != before[name]] == []
    assert untracked(work) == []


def test_killed_while_outputs_move_into_place_the_next_start_finishes_the_move(finished, tmp_path, monkeypatch):
    from scratchgpt.plumbing.outputs import recover

    stage = "finetune_classifier"
    reference = copy_of(finished[stage], tmp_path / "reference")
    set_params(reference, {"classifier.seed": 7})
    assert run(reference, stage).returncode == 0
    expected = snapshot(reference, stage)

    work = copy_of(finished[stage], tmp_path)
    set_params(work, {"classifier.seed": 7})
    killed = run(work, stage, "commit", 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (work / ".scratchgpt" / "commits" / f"{stage}.json").is_file(), "the moves are journaled"
    monkeypatch.chdir(work)
    assert recover() == [stage]
    after = snapshot(work, stage)
    assert after.keys() == expected.keys()
    assert [name for name in expected if after[name] != expected[name]] == []
    assert untracked(work) == []
    assert not (work / ".scratchgpt" / "commits" / f"{stage}.json").exists()


def _one_line_error(done: subprocess.CompletedProcess, starts: str) -> None:
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(starts), done.stderr[-3000:]


@pytest.mark.parametrize("entries", [0, 1])
def test_too_few_instructions_is_an_error_before_anything_is_written(finished, tmp_path, mirror, entries):
    stage = "finetune_instruct"
    work = copy_of(finished[stage], tmp_path)
    before = snapshot(work, stage)
    raw = work / paths.raw("instructions") / "instruction-data.json"
    raw.write_text(json.dumps(json.loads((mirror / "instruction-data.json").read_text())[:entries]))
    pin(work, "instructions", raw)
    done = run(work, stage)
    _one_line_error(
        done,
        f"error: data/raw/instructions/instruction-data.json: {entries} entries split 0.85 / 0.1 "
        f"give 0 training, {entries} validation and 0 test entries; each split needs at least one",
    )
    assert snapshot(work, stage) == before


def test_spam_file_without_spam_is_an_error_before_anything_is_written(finished, tmp_path, mirror):
    stage = "finetune_classifier"
    work = copy_of(finished[stage], tmp_path)
    before = snapshot(work, stage)
    raw = work / paths.raw("spam") / "SMSSpamCollection"
    raw.write_text("".join(line for line in (mirror / "SMSSpamCollection").open() if line.startswith("ham\t")))
    pin(work, "spam", raw)
    done = run(work, stage)
    _one_line_error(done, "error: data/raw/spam/SMSSpamCollection: no 'spam' messages; the classifier needs both")
    assert snapshot(work, stage) == before


def test_non_finite_params_are_refused_before_a_stage_starts(finished, tmp_path):
    work = copy_of(finished["pretrain"], tmp_path)
    before = snapshot(work, "pretrain")
    set_params(work, {"pretrain.lr": float("inf"), "pretrain.max_steps": 1})
    assert "lr: .inf" in (work / "params.yaml").read_text()  # as `dvc exp run -S pretrain.lr=.inf` writes it
    done = run(work, "pretrain")
    _one_line_error(done, "  pretrain.lr: must be a finite number, got inf")
    assert snapshot(work, "pretrain") == before


# ---------------------------------------------------------------------------------------------
# Resume only what belongs to this exact run


def test_an_other_base_model_or_other_data_is_not_resumed(finished, tmp_path):
    stage = "finetune_classifier"
    work = copy_of(finished[stage], tmp_path / "a")
    before = snapshot(work, stage)
    assert run(work, stage, "step", 9).returncode == -signal.SIGKILL  # a checkpoint to resume with these inputs
    (interrupted,) = resume_dirs(work, stage)
    config = json.loads((work / paths.BASE / "config.json").read_text())
    config["model"]["drop_rate"] = 0.5  # what -S init.drop_rate=0.5 writes into models/base
    rewrite_config(work / paths.BASE, config)  # as init does: config.json and its digest in the manifest
    other = run(work, stage)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming from" not in other.stderr
    assert (work / paths.CLASSIFIER / "model.safetensors").read_bytes() != before[
        f"{paths.CLASSIFIER}/model.safetensors"
    ]
    assert resume_dirs(work, stage) == [interrupted], "the other run finished; the interrupted one is kept"

    stage = "finetune_instruct"
    work = copy_of(finished[stage], tmp_path / "b")
    assert run(work, stage, "step", 9).returncode == -signal.SIGKILL
    raw = work / paths.raw("instructions") / "instruction-data.json"
    raw.write_text(json.dumps(json.loads(raw.read_text())[:300]))
    pin(work, "instructions", raw)
    other = run(work, stage)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming from" not in other.stderr
    assert len(json.loads((work / paths.INSTRUCT_DATA / "train.json").read_text())) == 255


def test_dpo_from_an_other_instruction_model_is_not_resumed(finished, tmp_path):
    stage = "finetune_dpo"
    work = copy_of(finished[stage], tmp_path)
    assert run(work, stage, "step", 9).returncode == -signal.SIGKILL
    (interrupted,) = resume_dirs(work, stage)
    config = json.loads((work / paths.INSTRUCT / "config.json").read_text())
    config["model"]["drop_rate"] = 0.25  # the policy and the reference start from another model
    rewrite_config(work / paths.INSTRUCT, config)
    other = run(work, stage)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming from" not in other.stderr
    assert resume_dirs(work, stage) == [interrupted]


def test_experiments_never_resume_each_other_and_old_resume_folders_go(finished, tmp_path):
    """Three experiments interrupted, then a fourth that finishes: its own folder goes with it, and
    of the interrupted ones the two most recently used stay ($SCRATCHGPT_RESUME_KEEP)."""
    stage = "finetune_classifier"
    work = copy_of(finished[stage], tmp_path)
    interrupted: list[Path] = []
    for lr in (2e-4, 3e-4, 4e-4):
        set_params(work, {"classifier.lr": lr})
        killed = run(work, stage, "step", 9)
        assert killed.returncode == -signal.SIGKILL
        (new,) = set(resume_dirs(work, stage)) - set(interrupted)
        interrupted.append(new)
    set_params(work, {"classifier.lr": 5e-4})
    other = run(work, stage)
    assert other.returncode == 0 and "resuming from" not in other.stderr, other.stderr[-3000:]
    assert resume_dirs(work, stage) == sorted(interrupted[1:]), "the two most recently used are kept"
    set_params(work, {"classifier.lr": 3e-4})
    again = run(work, stage)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {interrupted[1]} at step" in again.stderr
    assert resume_dirs(work, stage) == [interrupted[2]]


# ---------------------------------------------------------------------------------------------
# One run at a time: a stage whose inputs change while it runs records nothing


@pytest.mark.parametrize("fault, changed", [("params", "params.yaml"), ("base", "models/base")])
def test_inputs_changed_by_another_experiment_while_a_stage_runs_record_nothing(finished, tmp_path, fault, changed):
    """`dvc exp run -S pretrain.lr=inf pretrain` while `dvc repro finetune_classifier` runs: it
    rewrites params.yaml (or reruns init, replacing models/base) under the running stage, which
    then moves nothing into place, says why in one line and keeps its checkpoint."""
    stage = "finetune_classifier"
    work = copy_of(finished[stage], tmp_path)
    set_params(work, {"classifier.seed": 7})  # this run's outputs would differ from those in place
    before = snapshot(work, stage)
    done = run(work, stage, fault, 5)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {changed} changed while this stage ran (another `dvc exp run`?); nothing was recorded"
    )
    after = snapshot(work, stage)
    assert after.keys() == before.keys()
    assert [name for name in before if after[name] != before[name]] == []
    assert not (work / ".scratchgpt" / "staging" / stage).exists(), "what the run staged is dropped"
    assert untracked(work) == []
    assert len(resume_dirs(work, stage)) == 1, "its checkpoint is kept for a rerun"


def _classifier_under_ddp(work: Path) -> None:
    summary = json.loads((work / paths.METRICS / "classifier" / "metrics.json").read_text())
    assert summary["steps"] == 10 and summary["examples_seen"] == 10 * 2 * 2


def _dpo_under_ddp(work: Path) -> None:
    summary = json.loads((work / paths.METRICS / "dpo" / "metrics.json").read_text())
    assert summary["dpo_steps"] == 10 and summary["dpo_val_reward_margin"] != 0
    assert len(json.loads((work / paths.DPO_DATA / "test-responses.json").read_text())) == 110


@pytest.mark.parametrize(
    "stage, check",
    [("finetune_classifier", _classifier_under_ddp), ("finetune_dpo", _dpo_under_ddp)],
)
def test_a_finetuning_stage_under_torchrun(finished, tmp_path, stage, check):
    """Two processes (DDP, gloo on the CPU): rank 0 writes the data splits where rank 1 reads
    them (the classifier), trains with it (DPO: the policy under DDP, one forward over both sides
    of each pair per step, the frozen reference on each rank), and alone commits the outputs."""
    work = copy_of(finished[stage], tmp_path)
    set_params(work, {f"{SECTION[stage]}.batch_size": 2})
    for folder in DATA[stage]:
        shutil.rmtree(work / folder)  # as DVC removes a stage's outputs before running it
    env = {**os.environ, "TQDM_DISABLE": "1", "SCRATCHGPT_CACHE": str(work / ".cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"stages/{stage}.py"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check(work)
    assert untracked(work) == [] and not (work / ".scratchgpt" / "staging" / stage).exists()


def test_under_dvc_repro_a_stage_whose_params_yaml_is_rewritten_records_nothing(inputs, tmp_path):
    """The same under `dvc repro`: the stage fails with the line, and dvc.lock records nothing of it."""
    stage = "finetune_classifier"
    work = workdir(inputs, tmp_path, stage)
    set_params(work, {"classifier.launcher": "python runner.py params 5"})  # dvc.yaml's cmd: ${launcher} stages/...
    env = repo_env(TQDM_DISABLE="1", SCRATCHGPT_CACHE=str(work / ".cache"))
    sh([*DVC, "init", "-q", "--no-scm"], work, env)
    done = subprocess.run([*DVC, "repro", "-s", stage], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert "error: params.yaml changed while this stage ran (another `dvc exp run`?); nothing was recorded" in out
    assert f"failed to reproduce '{stage}'" in out, out[-3000:]
    lock = work / "dvc.lock"
    assert not lock.exists() or stage not in (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    assert untracked(work) == [] and not (work / ".scratchgpt" / "staging" / stage).exists()
