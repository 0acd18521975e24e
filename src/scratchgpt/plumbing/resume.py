"""Where a training stage keeps its resume checkpoint: outside DVC's outputs and git, keyed by
the run's fingerprint, so a run only ever resumes its own checkpoint.

``$SCRATCHGPT_CACHE/resume/<stage>/<fingerprint>/`` (default ``~/.cache/scratchgpt/resume/``):
shared by the workspace and DVC's temporary experiment workspaces (``dvc exp run --queue``,
``--temp``), so an interrupted experiment resumes wherever it runs again. A fingerprint covers
everything that determines the run (the stage's declared params, the content of its declared
deps: code, data and model files), so experiments never resume each other's checkpoints.

The ``$SCRATCHGPT_RESUME_KEEP`` most recently used folders of each stage are kept (default 2); a
run deletes the older ones when it ends. A folder in use is locked; a second run of the same
fingerprint waits for the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from scratchgpt.files import try_lock
from scratchgpt.plumbing import paths

log = logging.getLogger(__name__)

KEEP_ENV = "SCRATCHGPT_RESUME_KEEP"
DEFAULT_KEEP = 2
LOCK = ".lock"


def root() -> Path:
    return paths.cache_dir() / "resume"


def keep() -> int:
    value = os.environ.get(KEEP_ENV, "")
    return max(1, int(value)) if value.strip().isdigit() else DEFAULT_KEEP


def prune(stage: str, keep_: int | None = None, current: Path | None = None) -> list[Path]:
    """Delete all but the ``keep_`` most recently used resume folders of ``stage`` (never
    ``current``, nor one another process holds); returns those deleted."""
    folder = root() / stage
    if not folder.is_dir():
        return []
    runs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    deleted = []
    for run in runs[keep_ or keep() :]:
        if current is not None and run == current:
            continue
        fd = try_lock(run / LOCK)
        if fd is None:
            continue  # in use
        shutil.rmtree(run, ignore_errors=True)
        os.close(fd)
        deleted.append(run)
    return deleted


@contextlib.contextmanager
def resume_dir(stage: str, fingerprint: str, writer: bool = True) -> Iterator[Path]:
    """The resume folder of ``stage`` for ``fingerprint``. The ``writer`` (rank 0 of a
    distributed run) locks it while the run lasts, marks it as just used and prunes the others."""
    folder = root() / stage / fingerprint[:32]
    if not writer:
        yield folder
        return
    fd = try_lock(folder / LOCK)
    if fd is None:
        log.info("waiting for another run of %s with the same inputs (it holds %s)", stage, folder)
        fd = os.open(folder / LOCK, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.utime(folder)
        log.info("resume checkpoints of this run: %s", folder)
        yield folder
    finally:
        os.close(fd)
        prune(stage, current=folder)
