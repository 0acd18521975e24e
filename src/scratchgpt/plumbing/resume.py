"""Where a training stage keeps its resume checkpoint: outside DVC's outputs and git, keyed by
the run's fingerprint, so a run only ever resumes its own checkpoint.

``$SCRATCHGPT_CACHE/resume/<stage>/<fingerprint>/`` (default ``~/.cache/scratchgpt/resume/``):
shared by the workspace and DVC's temporary experiment workspaces (``dvc exp run --queue``,
``--temp``), so an interrupted experiment resumes wherever it runs again. A fingerprint covers
everything that determines the run (the stage's declared params, the content of its declared
deps: code, data and model files), so experiments never resume each other's checkpoints.

A folder lives as long as its run is unfinished: a run whose outputs are in place deletes its
folder (:func:`finished`); an interrupted or failed run keeps it for the next run with the same
fingerprint. Beyond that:

- the ``$SCRATCHGPT_RESUME_KEEP`` most recently used folders of each stage are kept (default 2);
  a run deletes the older ones when it ends;
- ``$SCRATCHGPT_CACHE_MAX_GB`` (e.g. ``20``, ``0.5``) caps the size of the whole resume folder: a
  run that starts or ends above it deletes the least recently used folders of any stage (never
  its own, never one in use) until it fits, and logs one line naming them.

A folder in use is locked (its lock file holds the process id); a second run of the same
fingerprint waits for the first to finish and says so every 30 seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from scratchgpt.errors import PipelineError
from scratchgpt.files import try_lock
from scratchgpt.plumbing import paths

log = logging.getLogger(__name__)

KEEP_ENV = "SCRATCHGPT_RESUME_KEEP"
DEFAULT_KEEP = 2
CAP_ENV = "SCRATCHGPT_CACHE_MAX_GB"
LOCK = ".lock"
WAIT_POLL_S = 0.5  # how often a waiting run tries the lock again
WAIT_LOG_S = 30.0  # how often it says it is still waiting


def root() -> Path:
    return paths.cache_dir() / "resume"


def folder_of(stage: str, fingerprint: str) -> Path:
    """The resume folder of ``stage`` for the run ``fingerprint``."""
    return root() / stage / fingerprint[:32]


def keep() -> int:
    value = os.environ.get(KEEP_ENV, "")
    return max(1, int(value)) if value.strip().isdigit() else DEFAULT_KEEP


def cap() -> int | None:
    """``$SCRATCHGPT_CACHE_MAX_GB`` in bytes, or None when it is not set."""
    value = os.environ.get(CAP_ENV, "").strip()
    if not value:
        return None
    try:
        gb = float(value)
    except ValueError:
        gb = -1.0
    if not gb >= 0 or gb == float("inf"):
        raise PipelineError(f"{CAP_ENV}={value}: expected a size in GB, e.g. 20 or 0.5")
    return int(gb * 1e9)


def _size(folder: Path) -> int:
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _mtime(folder: Path) -> int:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return 0


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e7 else f"{size / 1e6:.3f} MB"


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as far as its file tells (``pid host started``): the process, its host,
    since when and, where this machine's /proc shows it, its command."""
    try:
        pid_text, host, started = (lock.read_text().split() + ["", ""])[:3]
        pid = int(pid_text)
    except (OSError, ValueError):
        return "another process"
    cmd = ""
    if host in ("", socket.gethostname()):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    where = f" on {host}" if host else ""
    since = f" since {started}" if started else ""
    return f"process {pid}{where}{since}" + (f" ({cmd})" if cmd else "")


def _lock(folder: Path, stage: str) -> int:
    """Hold the lock of ``folder``: at once, or after the run holding it ends (said every WAIT_LOG_S)."""
    lock = folder / LOCK
    fd = try_lock(lock)
    if fd is None:
        log.info(
            "waiting for another run of %s with the same inputs to finish: %s holds %s", stage, _holder(lock), folder
        )
        started, said = time.monotonic(), 0.0
        while (fd := try_lock(lock)) is None:
            time.sleep(WAIT_POLL_S)
            waited = time.monotonic() - started
            if waited - said >= WAIT_LOG_S:
                said = waited
                log.info("still waiting for the other run of %s (%s) to finish (%.0f s)", stage, _holder(lock), waited)
    os.ftruncate(fd, 0)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {now}\n".encode(), 0)
    return fd


def prune(stage: str, keep_: int | None = None, current: Path | None = None) -> list[Path]:
    """Delete all but the ``keep_`` most recently used resume folders of ``stage`` (never
    ``current``, nor one another process holds); returns those deleted."""
    folder = root() / stage
    if not folder.is_dir():
        return []
    runs = sorted((p for p in folder.iterdir() if p.is_dir()), key=_mtime, reverse=True)
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


def evict(current: Path | None = None, limit: int | None = None) -> list[Path]:
    """While the resume folders of all stages together exceed ``limit`` (default: :func:`cap`),
    delete the least recently used (never ``current``, nor one another process holds); one log
    line names those deleted, which are returned."""
    limit = cap() if limit is None else limit
    base = root()
    if limit is None or not base.is_dir():
        return []
    runs = [run for stage in base.iterdir() if stage.is_dir() for run in stage.iterdir() if run.is_dir()]
    sizes = {run: _size(run) for run in runs}
    total = sum(sizes.values())
    deleted: list[Path] = []
    for run in sorted(runs, key=_mtime):
        if total <= limit:
            break
        if run == current:
            continue
        fd = try_lock(run / LOCK)
        if fd is None:
            continue  # in use
        shutil.rmtree(run, ignore_errors=True)
        os.close(fd)
        total -= sizes[run]
        deleted.append(run)
    if deleted:
        log.info(
            "resume checkpoints over %s=%s: deleted the least recently used unfinished run(s): %s; %s left",
            CAP_ENV,
            os.environ.get(CAP_ENV, "").strip() or f"{limit / 1e9:g}",
            ", ".join(f"{run.parent.name} {run.name[:12]} ({_gb(sizes[run])})" for run in deleted),
            _gb(total),
        )
    return deleted


def finished(folder: Path) -> None:
    """Delete the resume folder of a run whose outputs are in place (its lock held by the caller):
    nothing of it is left to resume."""
    if folder.is_dir():
        size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        log.info(
            "the run finished and its outputs are in place: deleted its resume checkpoints (%s, %s)", folder, _gb(size)
        )


@contextlib.contextmanager
def resume_dir(stage: str, fingerprint: str, writer: bool = True) -> Iterator[Path]:
    """The resume folder of ``stage`` for ``fingerprint``. The ``writer`` (rank 0 of a
    distributed run) locks it while the run lasts, marks it as just used and deletes the
    others that :func:`prune` and :func:`evict` select."""
    folder = folder_of(stage, fingerprint)
    if not writer:
        yield folder
        return
    cap()  # a bad $SCRATCHGPT_CACHE_MAX_GB stops the run before it trains
    fd = _lock(folder, stage)
    try:
        os.utime(folder)
        log.info("resume checkpoints of this run: %s", folder)
        evict(current=folder)
        yield folder
    finally:
        os.close(fd)
        prune(stage, current=folder)
        evict(current=folder)
