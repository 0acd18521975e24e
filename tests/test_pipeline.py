"""The DVC wiring, run for real in a scratch copy of the repository: download → prepare with
the default params, then pretrain on a tiny model.

Offline: the copy's params keep only the mirror as a source (the real URLs are never tried).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from committed import committed

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e  # the whole DAG for real: part of the default run and of CI


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    work = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(committed(name), work / name)
    # experiments/ (the book's settings) and metrics/experiments/ (their snapshots): the report's deps
    for folder in ("stages", "src", "experiments", "metrics/experiments"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    for dataset in params["download"]["datasets"].values():
        for f in dataset.get("files", []):
            f["urls"] = []
    # a context of 64 holds every Alpaca prompt of the preference data (DPO scores only responses)
    params["model"].update(context_length=64, emb_dim=16, n_heads=2, n_layers=1)
    params["pretrain"].update(
        corpora=["verdict"],
        max_steps=6,
        batch_size=2,
        max_length=32,
        stride=32,
        warmup_steps=2,
        eval_freq=2,
        eval_iter=2,
        checkpoint_every=3,
        checkpoint_share=1.0,  # every due checkpoint: the test looks for one in the cache
        sample_tokens=5,
    )
    params["classifier"].update(epochs=1, max_steps=4, batch_size=4, eval_freq=2, eval_iter=1, checkpoint_every=0)
    params["instruct"].update(
        max_steps=3, batch_size=4, eval_freq=2, eval_iter=1, response_tokens=4, checkpoint_every=0
    )
    params["dpo"].update(max_steps=2, batch_size=4, eval_freq=1, eval_iter=1, response_tokens=4, checkpoint_every=0)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SCRATCHGPT_MIRROR": str(mirror),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    sh(["git", "init", "-q"], work, env)
    sh([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], work, env)
    shutil.copytree(ROOT / ".dvc" / "plots", work / ".dvc" / "plots")  # the templates dvc.yaml's plots name
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "scratch copy"], work, env)
    first = sh([sys.executable, "-m", "dvc", "repro", "prepare"], work, env)
    return work, env, first


def test_repro_prepare_builds_every_artifact(repo):
    work, _, first = repo
    # `dvc repro prepare` runs the prepare@ stages and what they depend on, nothing else.
    for name in ("verdict", "gpt2", "wikipedia"):
        assert f"Running stage 'download@{name}'" in first
    assert "download@spam" not in first
    raw = work / "data" / "raw"
    assert sorted(os.listdir(raw)) == ["gpt2", "verdict", "wikipedia"]
    assert sorted(os.listdir(raw / "gpt2")) == ["encoder.json", "vocab.bpe"]
    assert sorted(os.listdir(raw / "wikipedia")) == ["test.txt", "valid.txt"]
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "staging folders left behind"
    for corpus in ("verdict", "wikipedia"):
        assert sorted(os.listdir(work / "data" / "shards" / corpus)) == ["meta.json", "train.bin", "val.bin"]
    metrics = json.loads((work / "metrics" / "prepare" / "verdict.json").read_text())
    assert metrics == {
        "vocab_size": 50257,
        "train_tokens": 4612,
        "val_tokens": 534,
        "train_documents": 1,
        "val_documents": 1,
    }
    wiki = json.loads((work / "metrics" / "prepare" / "wikipedia.json").read_text())
    # the same mirror files and prepare params as the committed run: the same counts, token for token
    assert wiki == json.loads(committed("metrics/prepare/wikipedia.json").read_text())
    assert wiki["train_documents"] > 100 and wiki["train_tokens"] > 350_000


def test_second_repro_changes_nothing(repo):
    work, env, _ = repo
    again = sh([sys.executable, "-m", "dvc", "repro", "prepare"], work, env)
    assert "Running stage" not in again
    assert "didn't change, skipping" in again or "up to date" in again
    status = sh([sys.executable, "-m", "dvc", "status", "prepare"], work, env)
    assert "Data and pipelines are up to date." in status


def test_download_of_the_other_datasets(repo):
    work, env, _ = repo
    out = sh([sys.executable, "-m", "dvc", "repro", "download"], work, env)
    assert "Running stage 'download@spam'" in out and "Running stage 'download@instructions'" in out
    assert "Running stage 'download@verdict'" not in out
    assert (work / "data" / "raw" / "spam" / "SMSSpamCollection").stat().st_size == 477907
    status = sh([sys.executable, "-m", "dvc", "status", "download"], work, env)
    assert "Data and pipelines are up to date." in status


def test_pretrain_writes_model_metrics_and_plots(repo):
    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro", "pretrain"], work, env)
    model_dir = work / "models" / "pretrained"
    assert sorted(os.listdir(model_dir)) == ["config.json", "manifest.json", "model.safetensors", "tokenizer"]
    assert not (work / "models" / "pretrained.resume").exists(), "resume state is not a DVC output"
    resume = Path(env["SCRATCHGPT_CACHE"]) / "resume" / "pretrain"
    assert not resume.is_dir() or not any(resume.iterdir()), "a finished run deletes its resume checkpoints"
    summary = json.loads((work / "metrics" / "pretrain" / "metrics.json").read_text())
    assert summary["steps"] == 6
    assert summary["final_val_loss"] < summary["untrained_val_loss"]
    for name in ("train_loss", "val_loss", "val_perplexity", "lr", "tokens_seen"):
        rows = (work / "metrics" / "pretrain" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{name}" and [r.split("\t")[0] for r in rows[1:]] == ["0", "2", "4"]
    samples = json.loads((work / "metrics" / "pretrain" / "samples.json").read_text())
    assert samples[0]["text"].startswith("Every effort moves you")
    assert (work / "plots" / "pretrain" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    out = sh(
        [
            sys.executable,
            "-m",
            "scratchgpt",
            "generate",
            "--model",
            str(model_dir),
            "--prompt",
            "Every effort",
            "--max-new-tokens",
            "4",
        ],
        work,
        env,
    )
    assert out.startswith("Every effort")
    again = sh([sys.executable, "-m", "dvc", "repro", "pretrain"], work, env)
    assert "Running stage" not in again


def test_init_starts_from_the_pretrained_model(repo):
    work, env, _ = repo
    out = sh([sys.executable, "-m", "dvc", "repro", "init"], work, env)
    assert "Running stage 'init'" in out
    config = json.loads((work / "models" / "base" / "config.json").read_text())
    pretrained = json.loads((work / "models" / "pretrained" / "config.json").read_text())
    assert config["model"] == {**pretrained["model"], "drop_rate": 0.0}
    assert (work / "models" / "base" / "model.safetensors").read_bytes() == (
        work / "models" / "pretrained" / "model.safetensors"
    ).read_bytes()
    pretrain = json.loads((work / "metrics" / "pretrain" / "metrics.json").read_text())
    assert json.loads((work / "metrics" / "init.json").read_text()) == {"parameters": pretrain["parameters"]}


def test_finetune_classifier(repo):
    work, env, _ = repo
    out = sh([sys.executable, "-m", "dvc", "repro", "finetune_classifier"], work, env)
    assert "Running stage 'finetune_classifier'" in out
    assert sorted(os.listdir(work / "data" / "spam")) == ["test.csv", "train.csv", "validation.csv"]
    summary = json.loads((work / "metrics" / "classifier" / "metrics.json").read_text())
    assert summary["steps"] == 4 and 0 <= summary["test_accuracy"] <= 1
    assert (work / "models" / "classifier" / "model.safetensors").is_file()
    again = sh([sys.executable, "-m", "dvc", "repro", "finetune_classifier"], work, env)
    assert "Running stage" not in again


def test_whole_dag_to_evaluate(repo):
    work, env, _ = repo
    out = sh([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Running stage 'finetune_instruct'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'finetune_dpo'" in out
    assert len(json.loads((work / "data" / "instruct" / "test-responses.json").read_text())) == 110
    assert len(json.loads((work / "data" / "dpo" / "test-responses.json").read_text())) == 110
    metrics = json.loads((work / "metrics" / "evaluate.json").read_text())
    assert metrics["instruct_responses"] == 110 and 0 <= metrics["classifier_test_accuracy"] <= 1
    assert metrics["dpo_responses"] == 110 and metrics["dpo_test_loss"] > 0
    assert "Running stage 'report'" in out
    assert "Ours beside the book" in (work / "report" / "index.html").read_text()
    again = sh([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Running stage" not in again


def test_metrics_and_plots_are_declared_for_dvc(repo):
    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro"], work, env)
    shown = json.loads(sh([sys.executable, "-m", "dvc", "metrics", "show", "--json"], work, env))
    files = next(iter(shown.values()))["data"]
    assert files["metrics/prepare/verdict.json"]["data"]["train_tokens"] == 4612
    assert files["metrics/pretrain/metrics.json"]["data"]["steps"] == 6
    plots = json.loads(sh([sys.executable, "-m", "dvc", "plots", "show", "--json", "--split"], work, env))["data"]
    assert "Pretraining loss" in plots and "Classifier confusion" in plots and "plots/pretrain/loss.png" in plots
    data = plots["Pretraining loss"][0]["anchor_definitions"]["<DVC_METRIC_DATA>"]
    assert {row["field"] for row in data} == {"train_loss", "val_loss"}
    assert not [name for name in plots if name.startswith("metrics/")], "no raw per-file charts"
    assert files["metrics/classifier/metrics.json"]["data"]["steps"] == 4
    assert files["metrics/instruct/metrics.json"]["data"]["steps"] == 3
    assert files["metrics/dpo/metrics.json"]["data"]["dpo_steps"] == 2
    assert "DPO reward margin" in plots and "plots/dpo/reward-margins.png" in plots
    assert "instruct_rouge_l" in files["metrics/evaluate.json"]["data"]


def test_experiment_changes_one_param(repo):
    """dvc exp run -S reruns only what the param feeds; exp show and metrics diff see it."""
    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro"], work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "baseline results"], work, env)
    out = sh([sys.executable, "-m", "dvc", "exp", "run", "-n", "faster-lr", "-S", "classifier.lr=0.001"], work, env)
    assert "Running stage 'finetune_classifier'" in out
    assert "Running stage 'pretrain'" not in out and "Running stage 'finetune_instruct'" not in out
    shown = json.loads(sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], work, env))
    names = json.dumps(shown)
    assert "faster-lr" in names and '"lr": 0.001' in names
    diff = json.loads(sh([sys.executable, "-m", "dvc", "metrics", "diff", "--json"], work, env))
    assert "metrics/classifier/metrics.json" in diff
    changed = diff["metrics/classifier/metrics.json"]
    assert any(v.get("diff") not in (0, None) for v in changed.values())
    params = json.loads(sh([sys.executable, "-m", "dvc", "params", "diff", "--json"], work, env))
    lr = params["params.yaml"]["classifier.lr"]
    assert (lr["old"], lr["new"]) == (0.0001, 0.001)


def test_two_repros_at_once(repo, tmp_path):
    """The second fails cleanly on DVC's lock while the first runs; the first finishes intact."""
    import subprocess as sp
    import time

    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro"], work, env)
    env = {**env, "SCRATCHGPT_CACHE": str(tmp_path / "cache")}  # no finished checkpoint: pretrain trains again
    first = sp.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "pretrain"],
        cwd=work,
        env=env,
        stdout=sp.PIPE,
        stderr=sp.STDOUT,
        text=True,
    )
    try:
        seen = ""
        deadline = time.time() + 120
        while "Running stage 'pretrain'" not in seen and time.time() < deadline:
            seen += first.stdout.readline()
        assert "Running stage 'pretrain'" in seen, seen
        second = sp.run(
            [sys.executable, "-m", "dvc", "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
        rest, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, seen + rest
    status = sh([sys.executable, "-m", "dvc", "status", "pretrain"], work, env)
    assert "Data and pipelines are up to date." in status


def _covered(path: str, declared: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def test_fresh_clone_rebuilds_the_same_results_and_reads_only_declared_inputs(repo, tmp_path):
    """A clone of a commit whose dvc.lock is current, rebuilt from nothing (no DVC cache, no
    resume checkpoints): every stage runs, git status stays empty (dvc.lock, metrics, curves and
    figures come out byte for byte), a second repro does nothing, and no stage read a file of
    the repository outside its declared deps and outputs (traced with an audit hook)."""
    from scratchgpt.plumbing.pipeline import load_spec

    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro"], work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "results", "--allow-empty"], work, env)
    sh([sys.executable, "-m", "dvc", "plots", "show"], work, env)
    assert sh(["git", "status", "--porcelain"], work, env) == "", "dvc_plots/ is ignored"

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(work), str(clone)], tmp_path, env)
    audit = tmp_path / "reads.jsonl"
    fresh = {
        **env,
        "SCRATCHGPT_CACHE": str(tmp_path / "cache"),
        "SCRATCHGPT_AUDIT_LOG": str(audit),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "audit"), env.get("PYTHONPATH", "")]),
    }
    out = sh([sys.executable, "-m", "dvc", "repro"], clone, fresh)
    assert "Running stage 'pretrain'" in out and "Running stage 'report'" in out
    assert sh(["git", "status", "--porcelain"], clone, fresh) == ""
    again = sh([sys.executable, "-m", "dvc", "repro"], clone, fresh)
    assert "Running stage" not in again

    runs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(runs) >= 12  # 5 downloads, 2 prepares, pretrain, init, 2 finetunings, evaluate, report
    for entry in runs:
        script, *args = entry["argv"]
        name = Path(script).stem + (f"@{args[0]}" if args else "")
        spec = load_spec(name, clone / "dvc.yaml", clone / "params.yaml")
        undeclared = []
        for path in entry["reads"]:
            if not path.startswith(str(clone) + os.sep):
                continue  # the interpreter, packages, the data mirror, the cache
            rel = os.path.relpath(path, clone)
            if rel in ("dvc.yaml", "params.yaml", ".dvcignore") or rel.startswith((".scratchgpt/", ".git/", ".dvc/")):
                continue  # the stage's declaration, DVC's own files (DVCLive looks for the repository), staging
            if not _covered(rel, spec.deps + spec.outs):
                undeclared.append(rel)
        assert not undeclared, f"stage {name} read files dvc.yaml does not declare as its deps: {undeclared}"


def test_queued_experiment_runs_only_the_stages_it_changes(repo):
    """dvc exp run --queue runs in a temporary workspace: only the classifier, evaluate and
    report run (no resume folder is a DVC output that such a workspace could lack)."""
    import time

    work, env, _ = repo
    sh([sys.executable, "-m", "dvc", "repro"], work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "results", "--allow-empty"], work, env)
    sh(
        [sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", "queued-lr", "-S", "classifier.lr=0.002"],
        work,
        env,
    )
    sh([sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], work, env)
    deadline = time.time() + 400
    while time.time() < deadline:
        status = sh([sys.executable, "-m", "dvc", "queue", "status"], work, env)
        if "queued-lr" in status and not any(s in status for s in ("Queued", "Running")):
            break
        time.sleep(3)
    assert "Success" in status, status
    logs = sh([sys.executable, "-m", "dvc", "queue", "logs", "queued-lr"], work, env)
    assert "Running stage 'finetune_classifier'" in logs and "Running stage 'report'" in logs
    for unchanged in ("pretrain", "init", "finetune_instruct", "download@verdict", "prepare@verdict"):
        assert f"Running stage '{unchanged}'" not in logs, unchanged
    shown = json.dumps(json.loads(sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], work, env)))
    assert "queued-lr" in shown
    assert sh(["git", "status", "--porcelain"], work, env) == ""


def test_pretrain_under_torchrun_through_dvc(repo):
    """pretrain.launcher starts the stage under torchrun (DistributedDataParallel, gloo on the
    CPU): DVC runs that command, records it in dvc.lock, and the stage's outputs are complete."""
    work, env, _ = repo
    launcher = "torchrun --standalone --nproc_per_node 2"
    out = sh([sys.executable, "-m", "dvc", "exp", "run", "-n", "ddp", "-S", f"pretrain.launcher={launcher}"], work, env)
    assert f"> {launcher} stages/pretrain.py" in out
    assert "Running stage 'pretrain'" in out and "Running stage 'finetune_classifier'" in out
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert lock["stages"]["pretrain"]["cmd"] == f"{launcher} stages/pretrain.py"
    assert lock["stages"]["finetune_classifier"]["cmd"] == "python stages/finetune_classifier.py"
    metrics = json.loads((work / "metrics/pretrain/metrics.json").read_text())
    assert metrics["steps"] == 6
    assert yaml.safe_load((work / "params.yaml").read_text())["pretrain"]["launcher"] == launcher
    status = sh([sys.executable, "-m", "dvc", "status"], work, env)
    assert "changed" not in status, status
