"""``scratchgpt experiments``: the book's runs, named in experiments/: list them, show one, run
one as a DVC experiment of only the stages it reproduces, snapshot its results for the report,
draw chapter 5's figure from a snapshot."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

from scratchgpt.cli.common import columns, fail
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing import experiments as ex
from scratchgpt.plumbing import results
from scratchgpt.plumbing.dvc_lock import dvc_running
from scratchgpt.plumbing.params_file import ParamsError


def run(args: argparse.Namespace) -> int:
    if args.action in ("snapshot", "figure"):
        return _results(args)
    try:
        if args.action == "list":
            rows = [ex.load(name) for name in ex.names()]
            if not rows:
                return fail(args, f"no experiment files in {ex.EXPERIMENTS_DIR}/")
            table = [("NAME", "STAGES", "DESCRIPTION", "TIME")]
            table += [(e.name, " ".join(e.stages), e.summary, e.time) for e in rows]
            widths = [max(len(r[i]) for r in table) for i in range(3)]
            indent = sum(widths) + 6
            for row in table:  # the time column wraps within the terminal's width
                lines = textwrap.wrap(row[3], width=max(20, columns() - indent)) or [""]
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + lines[0])
                for more in lines[1:]:
                    print(" " * indent + more)
            return 0
        experiment = ex.load(args.name)
        changed = ex.changes(experiment)
    except ParamsError as e:
        return fail(args, str(e))
    if args.action == "args":
        print(shlex.join(ex.set_args(experiment)))
        return 0
    if args.action == "show":
        upstream = [s for s in ex.upstream(experiment.stages) if s not in experiment.stages]
        wrap = textwrap.TextWrapper(width=100, subsequent_indent=" " * 9)
        print(f"{experiment.name} ({experiment.path})\n")
        print(textwrap.fill(experiment.description, width=100) + "\n")
        print(wrap.fill(f"time:    {experiment.time}"))
        if experiment.extends:
            print(f"extends: {experiment.extends} (its params first, then this file's)")
        print(f"stages:  {' '.join(experiment.stages)}")
        print(wrap.fill(f"         and, where their inputs changed, upstream: {', '.join(upstream) or 'none'}"))
        print("params:  params.yaml → this experiment")
        width = max(len(key) for key, _, _ in changed)
        for key, old, new in changed:
            print(f"  {key:<{width}}  {ex.describe_value(old)} → {ex.describe_value(new)}")
        print(f"run:     {shlex.join(ex.run_command(experiment, []))}")
        return 0
    options = (["--queue"] if args.queue else []) + args.dvc_options
    if not {"--queue", "--temp"} & set(options):  # those run in a folder of their own
        holder = dvc_running()
        if holder is not None:
            return fail(args, ex.busy_message(experiment.name, holder))
    cmd = ex.run_command(experiment, options)
    print("+", shlex.join(cmd), file=sys.stderr)
    # The venv's dvc and python first, so that stage commands (`python stages/...`) find them.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        code = subprocess.call(cmd, env=env)
    except FileNotFoundError:
        return fail(args, "dvc not found: activate the project's virtual environment (source .venv/bin/activate)")
    if code != 0:
        return code
    if args.queue or "--queue" in args.dvc_options:
        print(f"when it has run: scratchgpt experiments snapshot {args.name}  (the report's row)", file=sys.stderr)
        return 0
    return _results(argparse.Namespace(**{**vars(args), "action": "snapshot"}))


def _results(args: argparse.Namespace) -> int:
    """snapshot: the newest experiment NAME into metrics/experiments/NAME.json (what the report
    reads); figure: chapter 5's curves of that snapshot against the book's points."""
    try:
        if args.action == "snapshot":
            print(results.snapshot(args.name))
            return 0
        data = results.load_snapshot(args.name)
        if data is None:
            path = results.snapshot_path(args.name)
            return fail(args, f"{path}: no snapshot; run `scratchgpt experiments snapshot {args.name}` after the run")
        print(results.ch05_figure(data, args.out))
        return 0
    except PipelineError as e:
        return fail(args, str(e))
