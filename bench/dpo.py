"""The finetune_dpo stage, before and after a change, back to back on this machine.

    python bench/dpo.py [--baseline REV] [--runs 1]

Runs ``stages/finetune_dpo.py`` on the default params twice per round: with the code of git
revision ``--baseline`` (default: the last commit before the reference model's values were
remembered) and with the working tree's, each in its own scratch folder holding that code, the
working tree's committed params.yaml and dvc.yaml, and this workspace's inputs of the stage
(models/instruct, data/instruct/test.json, data/raw/preferences; run ``dvc repro finetune_instruct``
first), with a fresh resume cache. Prints each wall time, the ratio and the largest relative
difference between the two runs' metrics/dpo/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REMEMBERED = "c417d80"  # finetune_dpo ran the reference model in every step and evaluation
INPUTS = ("models/instruct", "models/base", "data/instruct/test.json", "data/raw/preferences")


def scratch(folder: Path, rev: str | None) -> Path:
    """``folder`` with the code of ``rev`` (None: the working tree) and this workspace's inputs."""
    folder.mkdir(parents=True)
    if rev is None:
        for name in ("stages", "src"):
            shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        archive = subprocess.run(["git", "archive", rev, "stages", "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    for name in ("params.yaml", "dvc.yaml"):
        shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, check=True).stdout
        (folder / name).write_bytes(shown)
    if rev is not None:  # the baseline's code knows no precision key
        (folder / "params.yaml").write_text(strip_precision((folder / "params.yaml").read_text()))
    for name in INPUTS:
        src, dst = ROOT / name, folder / name
        if not src.exists():
            sys.exit(f"{src} is missing: run `dvc repro finetune_instruct` first")
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return folder


def strip_precision(text: str) -> str:
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for line in lines:
        if line.lstrip().startswith("precision:"):
            skipping = True
            continue
        if skipping and line.lstrip().startswith("#") and line.startswith(" " * 28):
            continue  # the comment's continuation lines
        skipping = False
        out.append(line)
    return "".join(out)


def run(folder: Path) -> tuple[float, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(folder / "src"), "SCRATCHGPT_CACHE": str(folder / ".cache")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "stages/finetune_dpo.py"], cwd=folder, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"finetune_dpo failed in {folder}:\n{done.stderr[-3000:]}")
    (folder / "stage.log").write_text(done.stdout + done.stderr)
    return seconds, json.loads((folder / "metrics" / "dpo" / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=BEFORE_REMEMBERED, help="the git revision to compare with")
    ap.add_argument("--runs", type=int, default=1, help="rounds of (baseline, working tree)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    times: dict[str, list[float]] = {"baseline": [], "now": []}
    metrics: dict[str, dict[str, float]] = {}
    for r in range(args.runs):
        for label, rev in (("baseline", args.baseline), ("now", None)):
            seconds, metrics[label] = run(scratch(work / f"{label}{r}", rev))
            times[label].append(seconds)
            print(f"{label:8s} round {r + 1}: {seconds:6.1f} s", flush=True)
    before, after = min(times["baseline"]), min(times["now"])
    print(f"finetune_dpo, default params: baseline {args.baseline} {before:.1f} s, working tree {after:.1f} s")
    print(f"time now / baseline: {after / before:.0%} (best of {args.runs})")
    worst = max(
        (abs(metrics["now"][k] - v) / max(abs(v), 1e-12), k)
        for k, v in metrics["baseline"].items()
        if isinstance(v, float)
    )
    print(f"largest relative metric difference: {worst[0]:.2e} ({worst[1]})")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
