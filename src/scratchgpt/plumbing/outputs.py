"""A stage's outputs appear together at the end, or not at all.

While a stage runs it writes every output under a staging folder, ``.scratchgpt/staging/<stage>/``,
at the same relative paths (``models/classifier/``, ``metrics/classifier/metrics.json``, ...).
When it succeeds, :meth:`StagedOutputs.commit` checks that its inputs did not change while it
ran (:func:`scratchgpt.plumbing.stage.session`; if they did, nothing moves and what it staged is
dropped) and that it wrote exactly the outputs dvc.yaml declares, records them in a journal, moves
each into place with ``os.replace`` (a folder is swapped whole) and deletes the journal. A process
killed between two moves leaves the journal; the next stage to start finishes those moves first
(:func:`recover`). A stage that fails or is interrupted before its commit leaves the previous
outputs as they were.

Everything here lives in ``.scratchgpt/``, which git and DVC ignore.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from scratchgpt.errors import PipelineError
from scratchgpt.files import try_lock, write_json

log = logging.getLogger(__name__)

STATE = Path(".scratchgpt")


class OutputsError(PipelineError, RuntimeError):
    """A stage wrote other outputs than dvc.yaml declares, or one is already being written."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _move(src: Path, target: Path) -> None:
    """Put ``src`` at ``target``: a file atomically; a folder by moving the old one aside first
    (left as ``.<name>.old`` beside it only if the process dies between the two renames)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not src.exists():  # already moved by an earlier, interrupted commit
        _remove(_aside(target))
        return
    if target.is_dir() and not target.is_symlink():
        old = _aside(target)
        _remove(old)
        os.replace(target, old)
    elif target.exists() and src.is_dir():
        target.unlink()
    try:
        os.replace(src, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # The target's folder is on another file system (e.g. a symlinked models/): copy beside
        # it, then rename there.
        incoming = target.with_name(f".{target.name}.incoming")
        _remove(incoming)
        if src.is_dir():
            shutil.copytree(src, incoming, symlinks=True)
        else:
            shutil.copy2(src, incoming)
        os.replace(incoming, target)
        _remove(src)
    _remove(_aside(target))


def _finish(journal: Path, root: Path) -> None:
    """Complete the moves a journal lists (those not done yet), then drop the journal."""
    targets = json.loads(journal.read_text(encoding="utf-8"))["outputs"]
    for target in targets:
        _move(root / target, Path(target))
    journal.unlink()
    shutil.rmtree(root, ignore_errors=True)


def recover(state: Path = STATE, holding: str | None = None) -> list[str]:
    """Finish every commit a killed process left half done; returns the stages it completed.

    A journal whose stage is running (its lock taken by a live process) is that process's own
    commit in progress and is left alone; ``holding`` names the stage whose lock the caller holds."""
    done = []
    for journal in sorted((state / "commits").glob("*.json")):
        stage = journal.stem
        fd = None if stage == holding else try_lock(state / "locks" / f"{stage}.lock")
        if fd is None and stage != holding:
            continue
        try:
            if journal.is_file():
                log.warning("finishing the outputs of stage %s, interrupted while they were moved into place", stage)
                _finish(journal, state / "staging" / stage)
                done.append(stage)
        finally:
            if fd is not None:
                os.close(fd)
    return done


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (the moves are not cut half way)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class StagedOutputs:
    """The declared ``outputs`` of ``stage``, written under a staging folder first."""

    def __init__(self, stage: str, outputs: Sequence[str], state: Path = STATE):
        self.stage, self.outputs, self.state = stage, [str(Path(o)) for o in outputs], state
        self.root = state / "staging" / stage
        self.journal = state / "commits" / f"{stage}.json"
        self._lock: int | None = None

    def path(self, target: str | os.PathLike[str]) -> Path:
        """Where ``target`` (a path relative to the repository) is written during the run."""
        target = Path(target)
        if target.is_absolute() or ".." in target.parts:
            raise ValueError(f"{target}: an output path must be relative to the repository, without '..'")
        return self.root / target

    def begin(self) -> None:
        """Take this stage's lock, finish any interrupted commit, start from an empty staging folder."""
        self._lock = try_lock(self.state / "locks" / f"{self.stage}.lock")
        if self._lock is None:
            raise OutputsError(f"stage {self.stage} is already running in this folder (another process holds its lock)")
        recover(self.state, holding=self.stage)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)

    def _check(self) -> None:
        missing = [o for o in self.outputs if not (self.root / o).exists()]
        if missing:
            raise OutputsError(f"stage {self.stage} did not write its declared output(s): {', '.join(missing)}")
        declared = [self.root / o for o in self.outputs]
        extra = [
            str(p.relative_to(self.root))
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not any(p == d or d in p.parents for d in declared)
        ]
        if extra:
            raise OutputsError(
                f"stage {self.stage} wrote file(s) that dvc.yaml does not declare as outputs: {', '.join(extra)}"
            )

    def commit(self, unchanged: Callable[[], None] | None = None) -> None:
        """Move every declared output into place (see the module's docstring). ``unchanged``
        raises when the stage's inputs changed while it ran: then nothing moves and what the run
        staged is dropped."""
        if unchanged is not None:
            try:
                unchanged()
            except BaseException:
                self.abort()
                raise
        self._check()
        with _signals_held():
            write_json(self.journal, {"stage": self.stage, "outputs": self.outputs})
            _finish(self.journal, self.root)
        self.release()

    def abort(self) -> None:
        """Drop what this run staged; the outputs in place stay as they were."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
