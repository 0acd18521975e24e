"""The GPU check: one script that prints a table of what this project does on a CUDA card.

    python bench/gpu.py [--device cuda] [--peak-tflops N] [--skip-pipeline] [--mirror DIR]
    python bench/gpu.py --device cpu --tiny        # the same rows, tiny, to test the script

Rows:

1. the training step (forward, backward, fused AdamW) of the book's 124M model at context 1024
   in bf16 autocast, without and with ``torch.compile``: tokens/s and the model FLOP utilisation
   (6 × non-embedding parameters + 12 × layers × context × width FLOPs a token) against the
   card's dense bf16 peak (known cards by name, else ``--peak-tflops``; on the CPU a bf16 or
   fp32 2048² matmul measured here);
2. chapter 5 end to end (``dvc repro pretrain`` with the book-ch05 experiment) in fp32 and in
   bf16, each in a fresh clone of the committed tree;
3. the default DAG (``dvc repro``) with every stage on the device;
4. pretraining started by ``torchrun --standalone --nproc_per_node 1``.

``--tiny`` shrinks every row (a 1-layer model, a few steps) so that the whole script runs on a
CPU in a minute or two: what the test suite checks. Clones and caches go to a temporary folder
(``--keep DIR`` keeps them); downloads come from ``--mirror`` (default $SCRATCHGPT_MIRROR, else
../shared/data).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from scratchgpt.book.loader import lm_loss  # noqa: E402
from scratchgpt.book.model import PRESETS, GPTModel  # noqa: E402
from scratchgpt.device import autocast, bf16_problem, cpu_name  # noqa: E402
from scratchgpt.plumbing.experiments import apply, overrides  # noqa: E402
from scratchgpt.plumbing.params_file import read_yaml  # noqa: E402

# Dense bf16 peak (TFLOP/s) by a substring of torch.cuda.get_device_name(): the vendors' figures.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
TRAINING = ("pretrain", "classifier", "instruct", "dpo")
TINY_MODEL = dict(context_length=64, emb_dim=32, n_heads=2, n_layers=1)


def peak_flops(device: torch.device, override: float | None) -> tuple[float, str]:
    """The device's dense bf16 FLOP/s and where the figure comes from."""
    if override:
        return override * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in BF16_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{name}: {key} datasheet"
        sys.exit(f"unknown card {name!r}: give its dense bf16 peak with --peak-tflops")
    dtype = torch.bfloat16 if bf16_problem(device) is None else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(2):
        a @ b
    start, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start), f"{cpu_name()}: a 2048² {dtype} matmul here"


def flops_per_token(model: GPTModel) -> float:
    c = model.config
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    head = model.out_head.weight.numel() if c.tie_weights else 0  # a tied head is also an embedding
    return 6 * (model.num_parameters() - embeddings + head) + 12 * c.n_layers * c.context_length * c.emb_dim


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(device: torch.device, tiny: bool, compiled: bool, peak: float) -> dict[str, Any]:
    """tokens/s and MFU of bf16 training steps of the 124M model at context 1024."""
    config = PRESETS["book-124m"].replace(context_length=1024, drop_rate=0.0)
    batch, steps, warmup = 8, 10, 3
    if tiny:
        config, batch, steps, warmup = config.replace(**TINY_MODEL), 2, 2, 1
    torch.manual_seed(123)
    model = GPTModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=True)
    forward = torch.compile(model) if compiled else model
    x = torch.randint(0, config.vocab_size, (batch, config.context_length), device=device)
    y = torch.randint(0, config.vocab_size, (batch, config.context_length), device=device)
    precision = "bf16" if bf16_problem(device) is None else "fp32"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = lm_loss(forward, (x, y))
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    rate = steps * x.numel() / (time.perf_counter() - start)
    return {
        "row": f"train step {'with' if compiled else 'without'} torch.compile ({precision})",
        "result": f"{rate:,.0f} tokens/s, MFU {rate * flops_per_token(model) / peak:.1%}",
        "note": f"batch {batch} × {config.context_length}, {steps} steps after {warmup} ({warm:.1f} s incl. compiling)",
    }


def clone(work: Path, name: str, params: dict[str, Any]) -> Path:
    folder = work / name
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return folder


def repro(folder: Path, mirror: str, *targets: str) -> float:
    env = {
        **os.environ,
        "SCRATCHGPT_MIRROR": mirror,
        "SCRATCHGPT_CACHE": str(folder / ".bench-cache"),
        "PYTHONPATH": str(folder / "src"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    start = time.perf_counter()
    with open(folder / "repro.log", "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", *targets], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode:
        tail = (folder / "repro.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"dvc repro {' '.join(targets)} failed in {folder}:\n{tail}")
    return time.perf_counter() - start


def on_device(params: dict[str, Any], device: str, precision: str | None = None) -> dict[str, Any]:
    for section in (*TRAINING, "evaluate"):
        params[section]["device"] = device
        if precision:
            params[section]["precision"] = precision
    return params


def shrink(params: dict[str, Any]) -> dict[str, Any]:
    """The whole DAG in seconds: a 1-layer model, a few steps per stage (as tests/test_pipeline.py)."""
    params["model"].update(TINY_MODEL)
    params["pretrain"].update(corpora=["verdict"], max_steps=3, batch_size=2, max_length=32, stride=32)
    params["pretrain"].update(warmup_steps=1, eval_freq=2, eval_iter=1, sample_tokens=4)
    for section in ("classifier", "instruct", "dpo"):
        params[section].update(max_steps=2, batch_size=4, eval_freq=2, eval_iter=1, checkpoint_every=0)
    params["classifier"].update(epochs=1)
    for section in ("instruct", "dpo"):
        params[section].update(response_tokens=4)
    return params


def ch05(work: Path, mirror: str, device: str, precision: str, tiny: bool) -> dict[str, Any]:
    params = apply(read_yaml(ROOT / "params.yaml"), overrides("book-ch05", ROOT / "experiments"), "book-ch05")
    params = on_device(params, device, precision)
    if tiny:
        params["model"].update(TINY_MODEL)
        params["pretrain"].update(max_steps=2, max_length=32, stride=32, eval_freq=1, eval_iter=1, sample_tokens=4)
    folder = clone(work, f"ch05-{precision}", params)
    seconds = repro(folder, mirror, "pretrain")
    metrics = yaml.safe_load((folder / "metrics" / "pretrain" / "metrics.json").read_text())
    return {
        "row": f"chapter 5 end to end, {precision}",
        "result": f"{seconds:.1f} s",
        "note": f"dvc repro pretrain (book-ch05), final val loss {metrics['final_val_loss']:.3f}",
    }


def dag(work: Path, mirror: str, device: str, tiny: bool) -> dict[str, Any]:
    params = on_device(read_yaml(ROOT / "params.yaml"), device)
    folder = clone(work, "dag", shrink(params) if tiny else params)
    seconds = repro(folder, mirror)
    return {"row": f"default DAG, device {device}", "result": f"{seconds:.1f} s", "note": "dvc repro, every stage"}


def torchrun(work: Path, mirror: str, device: str, tiny: bool) -> dict[str, Any]:
    params = on_device(read_yaml(ROOT / "params.yaml"), device)
    if tiny:
        params = shrink(params)
    params["pretrain"]["launcher"] = "torchrun --standalone --nproc_per_node 1"
    folder = clone(work, "torchrun", params)
    seconds = repro(folder, mirror, "pretrain")
    return {"row": "pretrain under torchrun, 1 process", "result": f"{seconds:.1f} s", "note": "dvc repro pretrain"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny rows: a test of the script, not a measurement")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, where its name is unknown")
    ap.add_argument("--skip-pipeline", action="store_true", help="only the train-step rows")
    ap.add_argument("--mirror", default=os.environ.get("SCRATCHGPT_MIRROR") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--keep", type=Path, help="clones and caches in this (new) folder, kept")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu --tiny to test the script")
    peak, peak_source = peak_flops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {name}; torch {torch.__version__}; bf16 peak {peak / 1e12:.1f} TFLOP/s ({peak_source})")
    rows = [train_step(device, args.tiny, compiled, peak) for compiled in (False, True)]
    if not args.skip_pipeline:
        work = args.keep or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
        work.mkdir(parents=True, exist_ok=True)
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and bf16_problem(device) is not None:
                rows.append({"row": "chapter 5 end to end, bf16", "result": "not run", "note": bf16_problem(device)})
                continue
            rows.append(ch05(work, args.mirror, args.device, precision, args.tiny))
        rows.append(dag(work, args.mirror, args.device, args.tiny))
        rows.append(torchrun(work, args.mirror, args.device, args.tiny))
    print("| row | result | how |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['row']} | {r['result']} | {r['note']} |")


if __name__ == "__main__":
    main()
