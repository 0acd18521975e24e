"""Chapter 5 end to end: the book's own code against the pipeline, back to back on this machine.

    python bench/end_to_end.py [--mirror DIR] [--keep DIR] [--no-bf16]

1. A clone of the repository's committed state gets the book-ch05 experiment's params; ``dvc
   repro pretrain`` runs there from nothing (download@verdict, download@gpt2, prepare@verdict,
   pretrain), with a fresh resume cache. Its code is the clone's (PYTHONPATH).
2. The book's own code runs the same training (bench/book_ch05.py, PyPI ``llms-from-scratch``,
   installed by ``make bench``), reading the files the clone downloaded.

3. Where the CPU has fast bf16 (AMX or AVX-512 BF16; scratchgpt.device), step 1 again in a
   second clone with the book-ch05-bf16 experiment (bf16 autocast, fp32 master weights).

Prints each wall time, the ratio (book / ours), where our time went (from the training loop's
log line and the stage's total) and whether both curves agree at the book's printed precision;
for bf16 its ratio, the largest deviation from the book's 18 points and the final validation
loss against the fp32 run's (targets: within 0.25 and 0.1). Exits 1 when the fp32 curves differ.
Downloads come from ``--mirror`` (default $SCRATCHGPT_MIRROR,
else ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from scratchgpt.device import bf16_problem  # noqa: E402
from scratchgpt.plumbing.experiments import apply, overrides  # noqa: E402
from scratchgpt.plumbing.params_file import read_yaml  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return seconds


def ours(
    work: Path, mirror: str, experiment: str = "book-ch05"
) -> tuple[dict[str, float], list[dict[str, float]], str]:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(work)], check=True)
    params = apply(read_yaml(work / "params.yaml"), overrides(experiment, ROOT / "experiments"), experiment)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {
        **os.environ,
        "SCRATCHGPT_MIRROR": mirror,
        "SCRATCHGPT_CACHE": str(work / ".bench-cache"),
        "PYTHONPATH": str(work / "src"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    dvc = [sys.executable, "-m", "dvc", "repro"]
    data = timed([*dvc, "prepare@verdict"], work, env, work / "data.log")
    pretrain = timed([*dvc, "pretrain"], work, env, work / "pretrain.log")
    log = (work / "pretrain.log").read_text(encoding="utf-8")
    curve = {}
    for key in ("train_loss", "val_loss"):
        tsv = (work / "metrics/pretrain/plots/metrics" / f"{key}.tsv").read_text().splitlines()[1:]
        for line in tsv:
            step, value = line.split("\t")[:2]
            curve.setdefault(int(step), {})[key] = float(value)
    points = [{"step": s, **v} for s, v in sorted(curve.items())]
    return {"download and prepare": data, "pretrain stage": pretrain}, points, log


def book(work: Path) -> tuple[float, dict]:
    out = work / "book.json"
    cmd = [sys.executable, str(ROOT / "bench" / "book_ch05.py"), "--out", str(out)]
    cmd += ["--text", str(work / "data/raw/verdict/the-verdict.txt"), "--bpe", str(work / "data/raw/gpt2")]
    seconds = timed(cmd, work, dict(os.environ), work / "book.log")
    return seconds, json.loads(out.read_text())


def bf16(work: Path, mirror: str, book_seconds: float, book_points: list[dict], fp32_points: list[dict]) -> None:
    """The book-ch05-bf16 row: its time against the book's code, its points against the book's."""
    problem = bf16_problem(torch.device("cpu"))
    if problem is not None:
        print(f"bf16: not run ({problem})")
        return
    times, points, log = ours(work, mirror, "book-ch05-bf16")
    total = show_ours("scratchgpt bf16 (dvc repro pretrain, book-ch05-bf16):", times, log)
    print(f"ratio bf16 (book / ours): {book_seconds / total:.2f}x (target on a CPU with AMX: >= 2.5x)")
    book = {p["step"]: p for p in book_points}
    worst = max(abs(p[k] - book[p["step"]][k]) for p in points for k in ("train_loss", "val_loss"))
    final = abs(points[-1]["val_loss"] - fp32_points[-1]["val_loss"])
    print(f"bf16 against the book's {len(book)} points: largest deviation {worst:.3f} (target <= 0.25)")
    print(
        f"final validation loss: bf16 {points[-1]['val_loss']:.3f}, fp32 {fp32_points[-1]['val_loss']:.3f}, "
        f"difference {final:.3f} (target <= 0.1)"
    )


def show_ours(label: str, times: dict[str, float], log: str, outside: bool = False) -> float:
    """Print one of our runs: its total and parts, and the training loop's own account (with
    ``outside``, the pretrain stage's time outside the loop too); return the total."""
    total = sum(times.values())
    print(f"{label} {total:7.1f} s", end="")
    print("  (" + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()) + ")")
    loop = re.search(r"(\d+) steps in (\d+)s \((\d+) tokens/s\); time in (.*)", log)
    if loop:
        print(f"  training loop {loop.group(2)} s: {loop.group(4)}")
        if outside:
            print(f"  pretrain stage outside the loop: {times['pretrain stage'] - float(loop.group(2)):.0f} s")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_mirror = os.environ.get("SCRATCHGPT_MIRROR") or str(ROOT.parent / "shared" / "data")
    ap.add_argument("--mirror", default=default_mirror)
    ap.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    ap.add_argument("--no-bf16", action="store_true", help="leave out the bf16 run")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-e2e-")) / "repo"
    ours_times, our_points, log = ours(work, args.mirror)
    book_seconds, book_result = book(work)
    print(f"book's code (llms-from-scratch, train_model_simple): {book_seconds:7.1f} s", end="")
    print("  (" + ", ".join(f"{k} {v:.1f}s" for k, v in book_result["seconds"].items()) + ")")
    our_total = show_ours("scratchgpt (dvc repro pretrain, book-ch05):         ", ours_times, log, outside=True)
    print(f"ratio (book / ours): {book_seconds / our_total:.2f}x")
    book_points = [(p["step"], round(p["train_loss"], 3), round(p["val_loss"], 3)) for p in book_result["points"]]
    mine = [(p["step"], round(p["train_loss"], 3), round(p["val_loss"], 3)) for p in our_points]
    same = book_points == mine
    print(f"curves: {len(book_points)} evaluation points, {'identical' if same else 'DIFFERENT'} at 3 decimals")
    if not args.no_bf16:
        bf16(work.parent / "repo-bf16", args.mirror, book_seconds, book_result["points"], our_points)
    if not same:
        for a, b in zip(book_points, mine):
            print(f"  book {a}  ours {b}{'' if a == b else '  <--'}")
        sys.exit(1)


if __name__ == "__main__":
    main()
