"""``scratchgpt metrics``: every metric of the workspace, a block per metrics file, in the
terminal's width (at most 120 columns), where ``dvc metrics show`` puts each file on one line of
over a thousand columns. The files are those dvc.yaml declares, read through DVC."""

from __future__ import annotations

import argparse
import shutil
from typing import Any

from dvc.repo import Repo

from scratchgpt.cli.common import fail
from scratchgpt.cli.compare import numbers

MAX_WIDTH = 120


def value_text(value: float) -> str:
    """A metric as the report prints it: integers with thousands separators, else 4 significant
    digits (more before the point when it is large)."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 1e4 else f"{value:.4g}"


def columns(items: list[str], width: int, indent: str = "  ", gap: int = 3) -> list[str]:
    """``items`` left-aligned in as many equal columns as fit ``width``, filled row by row."""
    if not items:
        return []
    cell = max(map(len, items))
    per_row = max(1, (width - len(indent) + gap) // (cell + gap))
    rows = [items[i : i + per_row] for i in range(0, len(items), per_row)]
    return [indent + (" " * gap).join(item.ljust(cell) for item in row).rstrip() for row in rows]


def metric_files() -> dict[str, Any]:
    """{file: its metrics, or the exception that kept it from being read} for every metrics file of
    dvc.yaml, as the workspace holds them."""
    with Repo(".") as repo:
        shown = repo.metrics.show(hide_workspace=False)
    result = next(iter(shown.values()), {})
    if "error" in result:
        raise result["error"]
    return {path: found.get("data", found.get("error")) for path, found in result.get("data", {}).items()}


def run(args: argparse.Namespace) -> int:
    try:
        files = metric_files()
    except Exception as e:  # DVC's own errors (not a DVC repository, a broken dvc.yaml) come as several types
        return fail(args, f"cannot read the metrics through DVC: {e}")
    width = min(args.width or shutil.get_terminal_size((100, 24)).columns, MAX_WIDTH)
    missing = 0
    for path, data in files.items():
        if isinstance(data, Exception):
            missing += 1
            print(f"{path}: not there yet (`dvc repro` writes it)")
            continue
        print(path)
        items = [f"{key} {value_text(value)}" for key, value in numbers(data).items()]
        print("\n".join(columns(items, width)))
    return 1 if missing else 0
