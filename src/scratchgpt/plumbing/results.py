"""Named experiments' results, kept in git where the report can read them.

``dvc exp run`` keeps an experiment's metrics in a git ref (``refs/exps/.../<name>``), not in the
workspace, so the report stage cannot see them without reading git, which DVC would not track.
:func:`snapshot` copies what an experiment reproduced into ``metrics/experiments/<name>.json``:
the stages it ran (those whose dvc.lock entry differs from its baseline commit's), their metrics
files and per-step curves, and the params it ran with. That file is git-tracked and a dep of
the report stage; a missing file means the experiment has not been run (or not snapshotted).

    scratchgpt experiments snapshot book-ch05     # `experiments run` does it after the run
    scratchgpt experiments figure book-ch05 docs/book-ch05-loss.png
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from scratchgpt.book.printed import CH05_LOSSES
from scratchgpt.errors import PipelineError
from scratchgpt.files import write_json
from scratchgpt.plumbing import figures, paths, plots

SNAPSHOTS = paths.METRICS / "experiments"
EXP_REFS = "refs/exps/"
FORMAT = 1


class ResultsError(PipelineError, ValueError):
    """No such experiment, or a snapshot that cannot be read; the message says which and why."""


def snapshot_path(name: str, folder: str | os.PathLike[str] = SNAPSHOTS) -> Path:
    return Path(folder) / f"{name}.json"


def _git(args: Sequence[str], repo: str | os.PathLike[str]) -> str | None:
    """git's stdout, or None when it fails (e.g. a path that is not in a commit)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def find_ref(name: str, repo: str | os.PathLike[str] = ".") -> str:
    """The newest experiment ref named ``name`` (``refs/exps/<baseline>/<name>``)."""
    out = _git(["for-each-ref", "--sort=-committerdate", "--format=%(refname)", EXP_REFS], repo) or ""
    refs = [r for r in out.split() if r.rsplit("/", 1)[-1] == name]
    if not refs:
        raise ResultsError(f"no experiment named {name!r} under {EXP_REFS} (run it first: dvc exp run -n {name} ...)")
    return refs[0]


def _show(repo: str | os.PathLike[str], rev: str, path: str) -> str | None:
    return _git(["show", f"{rev}:{path}"], repo)


def _lock_stages(text: str | None) -> dict[str, Any]:
    return (yaml.safe_load(text) or {}).get("stages", {}) if text else {}


def read_tsv(text: str, source: str) -> list[list[float]]:
    """[[step, value], ...] of a DVCLive TSV (a header, then step and value per line)."""
    rows = []
    for n, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip():
            continue
        try:
            step, value = line.split("\t")[:2]
            rows.append([int(float(step)), float(value)])
        except ValueError:
            raise ResultsError(f"{source}: line {n}: expected a step and a value separated by a tab") from None
    return rows


def capture(name: str, ref: str, repo: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """What the experiment at ``ref`` reproduced: the stages whose dvc.lock entries differ from
    the baseline's (its parent commit), their metrics (JSON) and curves (TSV) under metrics/,
    and the params it ran with."""
    commit = (_git(["rev-parse", ref], repo) or "").strip()
    if not commit:
        raise ResultsError(f"{ref}: not a commit")
    baseline = (_git(["rev-parse", f"{commit}^"], repo) or "").strip() or None
    after = _lock_stages(_show(repo, commit, "dvc.lock"))
    before = _lock_stages(_show(repo, baseline, "dvc.lock")) if baseline else {}
    stages = sorted(s for s, entry in after.items() if before.get(s) != entry)
    metrics: dict[str, Any] = {}
    curves: dict[str, list[list[float]]] = {}
    for stage in stages:
        for out in after[stage].get("outs", []):
            path = out["path"]
            if not path.startswith(f"{paths.METRICS}/"):
                continue
            files = (_git(["ls-tree", "-r", "--name-only", commit, "--", path], repo) or "").split()
            for file in files:
                text = _show(repo, commit, file)
                if text is None:
                    continue
                if file.endswith(".json"):
                    metrics[file] = json.loads(text)
                elif file.endswith(".tsv"):
                    curves[file] = read_tsv(text, f"{ref}:{file}")
    params = yaml.safe_load(_show(repo, commit, "params.yaml") or "") or {}
    return {
        "format": FORMAT,
        "experiment": name,
        "commit": commit,
        "baseline": baseline,
        "stages": stages,
        "params": params,
        "metrics": metrics,
        "curves": curves,
    }


def snapshot(name: str, repo: str | os.PathLike[str] = ".", folder: str | os.PathLike[str] | None = None) -> Path:
    """Write ``metrics/experiments/<name>.json`` (under ``repo``) from the newest experiment
    ref named ``name``; returns its path."""
    data = capture(name, find_ref(name, repo), repo)
    if not data["stages"]:
        raise ResultsError(f"experiment {name!r} ({data['commit'][:7]}) reproduced no stage: nothing to snapshot")
    out = snapshot_path(name, Path(repo) / SNAPSHOTS if folder is None else folder)
    write_json(out, data)
    return out


def load_snapshot(name: str, folder: str | os.PathLike[str] = SNAPSHOTS) -> dict[str, Any] | None:
    """The snapshot of experiment ``name``, or None when there is none (not run yet)."""
    path = snapshot_path(name, folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    missing = [k for k in ("experiment", "stages", "params", "metrics", "curves") if k not in data]
    if missing:
        raise ResultsError(f"{path}: missing key(s) {', '.join(missing)}; rerun the snapshot")
    return data


def curve(data: dict[str, Any], stage: str, key: str) -> list[tuple[float, float]]:
    """The (step, value) points of curve ``key`` of ``stage`` in a snapshot (empty if absent)."""
    suffix = f"{paths.METRICS}/{stage}/"
    for file, rows in data.get("curves", {}).items():
        if file.startswith(suffix) and Path(file).stem == key:
            return [(r[0], r[1]) for r in rows]
    return []


def stage_metrics(data: dict[str, Any], stage: str) -> dict[str, Any]:
    """The stage's metrics.json in a snapshot (empty if absent)."""
    return data.get("metrics", {}).get(f"{paths.METRICS}/{stage}/metrics.json") or {}


def ch05_figure(data: dict[str, Any], out: str | os.PathLike[str], others: Sequence[dict[str, Any]] = ()) -> Path:
    """Chapter 5's figure: the snapshot's pretraining curves against the book's 18 points, with
    the curves of ``others`` (snapshots of the same run in other settings, e.g. book-ch05-bf16)."""
    name = data.get("experiment", "?")

    def losses(snap: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
        return {key: curve(snap, "pretrain", key) for key in ("train_loss", "val_loss")}

    try:
        fig = figures.book_overlay_figure(
            losses(data),
            curve(data, "pretrain", "tokens_seen"),
            CH05_LOSSES,
            f"Chapter 5: experiment {name} (lines) against the book's printed losses (markers)",
            {other.get("experiment", "?"): losses(other) for other in others},
        )
    except ValueError as e:
        raise ResultsError(f"experiment {name}: {e}") from None
    plots.save(fig, out)
    return Path(out)
