"""Fault injection: each training stage is SIGKILLed at chosen points (in the middle of a
training step, half-way through writing a checkpoint, between writing a checkpoint and pointing
at it), then run again. The rerun must resume and end with files identical to those of an
uninterrupted run, and a damaged checkpoint must never be loaded.

Each stage runs as a real process in a scratch folder with tiny params.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from scratchgpt import paths
from scratchgpt.model import GPTConfig, GPTModel, save_model
from scratchgpt.shards import write_shards
from scratchgpt.tokenizer import GPT2Tokenizer, save_tokenizer

ROOT = Path(__file__).resolve().parents[1]

# Started instead of the stage script: installs one fault, then runs the stage.
RUNNER = textwrap.dedent(
    """
    import os, runpy, signal, sys
    import torch
    import scratchgpt.train as T

    fault, n, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = [0]

    def hit():
        count[0] += 1
        return count[0] == n

    if fault == "step":  # the n-th batch being assembled: mid-way through a step
        collate = T.collate
        def patched(*args, **kwargs):
            if hit():
                os.kill(os.getpid(), signal.SIGKILL)
            return collate(*args, **kwargs)
        T.collate = patched
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
    elif fault == "pointer":  # the n-th checkpoint written, the pointer to it not yet
        write_json = T.write_json
        def patched(path, obj):
            if str(path).endswith("checkpoint.json") and hit():
                os.kill(os.getpid(), signal.SIGKILL)
            return write_json(path, obj)
        T.write_json = patched
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")
    """
)

TINY = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.1, tie_weights=True)
STAGES = {
    "pretrain": dict(model_dir=paths.PRETRAINED, metrics=paths.METRICS / "pretrain", plots=paths.PLOTS / "pretrain"),
    "finetune_classifier": dict(model_dir=paths.CLASSIFIER, metrics=paths.METRICS / "classifier",
                                plots=paths.PLOTS / "classifier"),
    "finetune_instruct": dict(model_dir=paths.INSTRUCT, metrics=paths.METRICS / "instruct",
                              plots=paths.PLOTS / "instruct"),
}


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    common = dict(checkpoint_every=2, eval_freq=2, eval_iter=1, device="cpu")
    params["pretrain"].update(corpora=["verdict"], max_steps=10, batch_size=2, max_length=32, stride=32,
                              warmup_steps=2, sample_tokens=4, **common)  # fmt: skip
    params["classifier"].update(epochs=2, max_steps=10, batch_size=4, max_length=24, **common)
    params["instruct"].update(max_steps=10, batch_size=4, response_tokens=3, **common)
    return params


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mirror):
    """What the three stages read: shards, raw files and a base model with its tokenizer."""
    root = tmp_path_factory.mktemp("inputs")
    tok = GPT2Tokenizer(mirror / "gpt2")
    for dataset, name in (("gpt2", "encoder.json"), ("gpt2", "vocab.bpe"), ("spam", "SMSSpamCollection"),
                          ("instructions", "instruction-data.json"), ("verdict", "the-verdict.txt")):  # fmt: skip
        src = mirror / ("gpt2/" + name if dataset == "gpt2" else name)
        (root / paths.raw(dataset)).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / paths.raw(dataset) / name)
    write_shards([root / paths.raw("verdict") / "the-verdict.txt"], tok, root / paths.shards("verdict"))
    torch.manual_seed(0)
    save_model(GPTModel(TINY.replace(drop_rate=0.0)), root / paths.BASE,
               {"tokenizer": save_tokenizer(tok, root / paths.BASE)})  # fmt: skip
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
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


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
def uninterrupted(inputs, tmp_path_factory):
    results = {}
    for stage in STAGES:
        work = workdir(inputs, tmp_path_factory.mktemp("clean"), stage)
        done = run(work, stage)
        assert done.returncode == 0, done.stderr[-3000:]
        results[stage] = outputs(work, stage)
    return results


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
    assert "resuming from" in again.stderr
    assert "corrupt" not in again.stderr
    result = outputs(work, stage)
    assert result.keys() == uninterrupted[stage].keys()
    for name, data in uninterrupted[stage].items():
        assert result[name] == data, f"{name} differs from the uninterrupted run"
    assert len(list(resume_dir.glob("checkpoint-*.pt"))) == 1, "stale checkpoint files are cleaned up"
    assert not [p for p in resume_dir.iterdir() if p.name.endswith(".tmp")], "no temporary files left"
    assert not list((work / ".scratchgpt" / "staging").iterdir()), "nothing staged is left behind"
