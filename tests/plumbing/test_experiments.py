"""Named experiments (scratchgpt.plumbing.experiments): each file is validated, changes only what
differs from params.yaml, and runs only the stages it reproduces and what they need upstream."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from committed import committed
from scratch_repo import DVC, init_repo, repo_env, sh
from scratchgpt.plumbing.dvc_lock import dvc_running
from scratchgpt.plumbing.experiments import (
    EXPERIMENTS_DIR,
    changes,
    load,
    names,
    run_command,
    upstream,
)
from scratchgpt.plumbing.params_file import ParamsError, read_yaml
from scratchgpt.plumbing.pipeline import load_spec

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / EXPERIMENTS_DIR
# What each of the book's runs reproduces; the stages DVC may run for it are these and their upstream.
TARGETS = {
    "book-ch05": ("pretrain",),
    "book-ch05-bf16": ("pretrain",),
    "book-ch06": ("finetune_classifier",),
    "book-ch07": ("finetune_instruct",),
    "book-ch07-dpo": ("finetune_dpo",),
    "book-appE": ("finetune_classifier",),
    "book-ch06-hub": ("finetune_classifier",),
    "book-ch07-hub": ("finetune_instruct",),
    "book-appE-hub": ("finetune_classifier",),
    "wikipedia-124m": ("pretrain",),
}


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def test_every_experiment_file_is_listed_and_valid():
    assert names(FOLDER) == sorted(TARGETS)
    for name, targets in TARGETS.items():
        experiment = load(name, FOLDER)
        assert experiment.stages == targets, name
        assert experiment.summary and experiment.time, name
        assert changes(experiment), name  # the params that result validate


def test_experiments_state_only_what_differs_from_params_yaml():
    """A named experiment lists the keys it changes; a key equal to params.yaml's value would be
    a second copy of that value."""
    found = []
    for name in names(FOLDER):
        for dotted, old, new in changes(load(name, FOLDER)):
            if _same(old, new):
                found.append(f"{name}: {dotted}: {new!r} is params.yaml's value already")
    assert not found, "\n".join(found)


@functools.cache
def _declared(stage: str) -> tuple[str, ...]:
    return load_spec(stage, ROOT / "dvc.yaml", committed("params.yaml")).params


def _read_by(stage: str, dotted: str) -> bool:
    declared = _declared(stage)
    return any(dotted == p or dotted.startswith(p + ".") for p in declared)


def test_each_experiment_runs_only_what_it_reproduces():
    """The stages that may run are the targets and their upstream; every key the experiment sets
    is read by one of them (else the change would do nothing in that run)."""
    runs = {name: upstream(load(name, FOLDER).stages, ROOT) for name in names(FOLDER)}
    ch05 = runs["book-ch05"]
    assert "pretrain" in ch05
    assert not {"init", "finetune_classifier", "finetune_instruct", "evaluate", "report"} & set(ch05), ch05
    assert "finetune_instruct" not in runs["book-ch06"] and "evaluate" not in runs["book-ch06"]
    assert "finetune_classifier" not in runs["book-ch07"] and "evaluate" not in runs["book-ch07"]
    assert "init" in runs["book-ch06"]  # init.source is what the classifier starts from
    assert {"init", "finetune_instruct", "finetune_dpo"} <= set(runs["book-ch07-dpo"])
    assert not {"finetune_classifier", "evaluate"} & set(runs["book-ch07-dpo"])
    assert {"download@wikipedia", "prepare@wikipedia", "pretrain"} <= set(runs["wikipedia-124m"])
    assert not {"init", "finetune_classifier"} & set(runs["wikipedia-124m"])
    unread = [
        f"{name}: {key} is read by none of {', '.join(stages)}"
        for name, stages in runs.items()
        for key in load(name, FOLDER).params
        if not any(_read_by(stage, key) for stage in stages)
    ]
    assert not unread, "\n".join(unread)


def test_an_experiment_extends_another(tmp_path):
    dpo, ch07 = load("book-ch07-dpo", FOLDER), load("book-ch07", FOLDER)
    assert dpo.params.items() >= ch07.params.items()  # chapter 7's run, then DPO's keys
    assert dpo.params["dpo.eval_freq"] == 5 and "dpo.eval_freq" not in ch07.params
    assert dpo.extends == "book-ch07" and ch07.extends is None
    folder = tmp_path / "experiments"
    folder.mkdir()
    for name in ("a", "b"):
        other = "b" if name == "a" else "a"
        (folder / f"{name}.yaml").write_text(
            f"description: x\ntime: t\nstages: [pretrain]\nextends: {other}\nparams: {{pretrain.lr: 0.5}}\n"
        )
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(committed("params.yaml"), tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="extends: a → b → a is a cycle"):
        load("a", folder)


# OpenAI's GPT-2 sizes and the Hub repositories that hold the same weights as safetensors
HUB_REPOS = {
    "gpt2-124M": "openai-community/gpt2",
    "gpt2-355M": "openai-community/gpt2-medium",
    "gpt2-774M": "openai-community/gpt2-large",
    "gpt2-1558M": "openai-community/gpt2-xl",
}


def test_each_hub_variant_is_its_book_run_with_the_same_weights_from_the_hub():
    variants = [name for name in names(FOLDER) if name.endswith("-hub")]
    assert sorted(variants) == ["book-appE-hub", "book-ch06-hub", "book-ch07-hub"]
    for name in variants:
        hub, book = load(name, FOLDER), load(name.removesuffix("-hub"), FOLDER)
        assert hub.extends == book.name and hub.stages == book.stages
        assert hub.params["init.source"] == "hf:" + HUB_REPOS[book.params["init.source"]]
        assert len(hub.params["init.revision"]) == 40 and int(hub.params["init.revision"], 16) >= 0
        assert {k: v for k, v in hub.params.items() if not k.startswith("init.")} == {
            k: v for k, v in book.params.items() if not k.startswith("init.")
        }


def test_upstream_follows_outputs_to_deps():
    everything = upstream(("report",), ROOT)
    assert {
        "pretrain",
        "init",
        "finetune_classifier",
        "finetune_instruct",
        "finetune_dpo",
        "evaluate",
        "report",
    } <= set(everything)
    assert upstream(("init",), ROOT)[-2:] == ["pretrain", "init"]


def test_run_command_names_the_experiment_and_its_stages():
    experiment = load("book-ch05", FOLDER)
    cmd = run_command(experiment, ["--queue"])
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "book-ch05"]
    assert cmd[-2:] == ["--queue", "pretrain"]
    assert "model.n_layers=12" in cmd and 'pretrain.corpora=["verdict"]' in cmd
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
    assert len(sets) == len(experiment.params)


@pytest.fixture
def project(tmp_path):
    """A copy of the repository's dvc.yaml and params.yaml with an experiments/ folder to fill."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(committed(name), tmp_path / name)
    (tmp_path / "experiments").mkdir()
    return tmp_path / "experiments"


GOOD = "description: A run.\ntime: 1 minute\nstages: [pretrain]\nparams:\n  pretrain.lr: 0.001\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("stages: [pretrain]", "stages: [pretrian]"), "stages: pretrian not in"),
        (GOOD.replace("stages: [pretrain]\n", ""), "stages"),
        (GOOD.replace("time: 1 minute\n", ""), "time"),
        (GOOD + "seed: 1\n", "seed"),
        (GOOD.replace("  pretrain.lr: 0.001\n", "  {}\n").replace("params:\n", "params:"), "params"),
        ("- a list\n", "must be a mapping"),
    ],
    ids=["unknown stage", "no stages", "no time", "unknown key", "no params", "not a mapping"],
)
def test_bad_experiment_files_are_named_with_the_key(project, text, message):
    (project / "x.yaml").write_text(text)
    with pytest.raises(ParamsError) as e:
        load("x", project)
    assert "x.yaml" in str(e.value) and message in str(e.value)


def test_a_key_outside_params_yaml_or_an_invalid_value_is_refused(project):
    (project / "ok.yaml").write_text(GOOD)
    assert changes(load("ok", project)) == [
        ("pretrain.lr", read_yaml(committed("params.yaml"))["pretrain"]["lr"], 0.001)
    ]
    (project / "bad.yaml").write_text(GOOD.replace("pretrain.lr: 0.001", "pretrain.lrr: 0.001"))
    with pytest.raises(ParamsError, match="pretrain.lrr: not a key of params.yaml"):
        changes(load("bad", project))
    (project / "neg.yaml").write_text(GOOD.replace("0.001", "-1.0"))
    with pytest.raises(ParamsError, match="pretrain.lr"):
        changes(load("neg", project))
    with pytest.raises(ParamsError, match="no such experiment; expected one of: bad, neg, ok"):
        load("nope", project)


# ---------------------------------------------------------------------------------------------
# One run at a time: `experiments run` does not start while DVC works in the workspace


def test_a_dvc_process_at_work_is_found_by_its_locks(tmp_path):
    zc = pytest.importorskip("zc.lockfile")
    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    assert dvc_running(tmp_path) is None
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # a stage running: DVC lets its repository lock go and names the process against its paths
        entry = {"pid": sleeper.pid, "cmd": "dvc repro finetune_classifier"}
        (tmp / "rwlock").write_text(json.dumps({"read": {str(tmp_path / "models/base"): [entry]}}))
        assert dvc_running(tmp_path) == f"process {sleeper.pid}: dvc repro finetune_classifier"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert dvc_running(tmp_path) is None, "a process that is gone holds nothing"
    held = zc.LockFile(str(tmp / "lock"))  # DVC between two stages: its repository lock taken
    try:
        assert dvc_running(tmp_path).startswith(f"process {os.getpid()}: ")
    finally:
        held.close()
    assert dvc_running(tmp_path) is None


HOLD_STAGE = {"cmd": "python hold.py", "deps": ["hold.py"], "outs": ["held.txt"]}
HOLD = "import pathlib, sys, time\npathlib.Path(sys.argv[0]).with_name('started').touch()\ntime.sleep(120)\n"


@pytest.mark.e2e
def test_experiments_run_refuses_while_dvc_repro_runs_and_says_how_to_queue(tmp_path):
    """`dvc repro` runs a stage (DVC lets go of its repository lock meanwhile); `scratchgpt
    experiments run` refuses with one line naming the way to queue, and changes nothing."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "experiments", work / "experiments")
    shutil.copy(committed("params.yaml"), work / "params.yaml")
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc_yaml["stages"]["hold"] = HOLD_STAGE
    (work / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (work / "hold.py").write_text(HOLD)
    env = repo_env()
    init_repo(work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "baseline"], work, env)
    repro = subprocess.Popen(
        [*DVC, "repro", "hold"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (work / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (work / "started").exists(), "the stage did not start"
        before = sh(["git", "status", "--porcelain"], work, env), (work / "params.yaml").read_bytes()
        refused = subprocess.run(
            [sys.executable, "-m", "scratchgpt", "experiments", "run", "book-ch05"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        after = sh(["git", "status", "--porcelain"], work, env), (work / "params.yaml").read_bytes()
        assert repro.poll() is None, "the running repro is left alone"
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("scratchgpt experiments run: error: DVC is already running in this workspace (process "), (
        line
    )
    assert "repro hold" in line, "the process at work is named"
    for hint in ("scratchgpt experiments run book-ch05 --queue", "dvc exp run --queue", "dvc queue start", "--temp"):
        assert hint in line, line
    assert after == before, "the workspace is untouched"
