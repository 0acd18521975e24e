"""Loaded by every Python process whose PYTHONPATH holds this folder (tests/test_pipeline.py
sets it for `dvc repro`): a stage script (stages/*.py) records each file it opens for reading,
and appends {"argv": ..., "cwd": ..., "reads": [...]} as a JSON line to $SCRATCHGPT_AUDIT_LOG
when it exits. The test checks every file a stage reads against the deps dvc.yaml declares."""

import atexit
import json
import os
import sys

_LOG = os.environ.get("SCRATCHGPT_AUDIT_LOG")
_reads: set[str] = set()


def _hook(event: str, args: tuple) -> None:
    if event != "open" or not args:
        return
    path, mode, flags = (tuple(args) + (None, None))[:3]
    if not isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, int):
        return
    # io.open (mode given) is how files are read for their content; os.open calls (mode None)
    # come from the standard library walking folders, often relative to a folder descriptor
    reading = isinstance(mode, str) and "r" in mode and "+" not in mode
    if reading and not os.path.isdir(path):
        _reads.add(os.path.abspath(os.fsdecode(path)))


def _write() -> None:
    argv = list(sys.argv)
    if not argv or not argv[0].replace(os.sep, "/").startswith("stages/"):
        return
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "reads": sorted(_reads)}) + "\n")


if _LOG:
    sys.addaudithook(_hook)
    atexit.register(_write)
