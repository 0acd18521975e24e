"""What every script in stages/ shares. A stage script is ``stage.run(main, *sections)``, the
params sections it reads (:mod:`scratchgpt.plumbing.sections`); ``run``:

- names the stage after its script (``stages/<name>.py``; a ``foreach`` stage takes its item as
  its one argument: ``python stages/download.py spam`` is ``download@spam``);
- reads the stage's declaration in dvc.yaml (:mod:`scratchgpt.plumbing.pipeline`), checks that
  ``sections`` are the sections whose keys dvc.yaml declares for it, and validates those sections
  of params.yaml with the rules among them (not the others: their schema is not the stage's dep);
- calls ``main(st)`` with a :class:`Stage`: ``st.params`` (only the keys dvc.yaml declares for the
  stage), ``st.out(path)`` (where to write an output while the stage runs),
  ``st.fingerprint(...)`` and ``st.resume_dir(...)`` (training stages);
- moves the outputs into place together when ``main`` returns, and keeps none of them when it
  fails or is interrupted (:mod:`scratchgpt.plumbing.outputs`);
- records the sha256 of params.yaml and of every declared dep when it starts, and refuses to
  move its outputs into place when one changed before it ended (another ``dvc exp run`` rewrote
  params.yaml, or reran an upstream stage): DVC would record those outputs against inputs the
  stage never read;
- deletes a training run's resume folder once its outputs are in place (the run is finished:
  nothing of it is to resume); a failed or interrupted run keeps it (:mod:`scratchgpt.plumbing.resume`);
- prints expected failures (:class:`~scratchgpt.errors.PipelineError`: bad params or data, a
  download that failed from every source, a diverged run) and missing files as one line and
  exits with status 1; Ctrl-C prints one line and exits 130, SIGTERM 143. Anything else is a
  bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scratchgpt.errors import PipelineError
from scratchgpt.files import json_digest, sha256_file, tree_digest
from scratchgpt.plumbing import logs, resume
from scratchgpt.plumbing.allocator import tune_cpu_allocator
from scratchgpt.plumbing.outputs import StagedOutputs
from scratchgpt.plumbing.params_file import read_yaml
from scratchgpt.plumbing.pipeline import (
    DVC_YAML,
    ParamsView,
    SpecError,
    StageSpec,
    declared_values,
    key_tree,
    load_spec,
)
from scratchgpt.plumbing.sections.base import PARAMS_FILE, Section, validate_sections


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or a process run alone: the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


class Stage:
    """One run of a dvc.yaml stage: its declaration, its params and where its outputs go."""

    def __init__(self, spec: StageSpec, params: Any, outputs: StagedOutputs, held: contextlib.ExitStack | None = None):
        self.spec, self.name = spec, spec.name
        self.key = spec.name.partition("@")[2] or None  # the foreach item
        self._params = params
        self.params: Any = ParamsView(params, key_tree(spec.params), spec.name)
        self._outputs = outputs
        self._held = held if held is not None else contextlib.ExitStack()  # what lasts until the stage ends
        self.resume_folders: list[Path] = []

    def out(self, path: str | os.PathLike[str]) -> Path:
        """Where to write the output ``path`` (relative to the repository) during this run (and
        where every process of a distributed run reads what the main process wrote there)."""
        return self._outputs.path(path)

    def fingerprint(self, exclude: Sequence[str] = (), extra: Sequence[Any] = ()) -> str:
        """sha256 of everything that determines this run: the declared params (but ``exclude``,
        dotted keys that do not change what is computed), the content of every declared dep
        (code, data, model files) and ``extra`` (e.g. the number of processes)."""
        values = declared_values(self._params, self.spec.params, tuple(exclude))
        deps = {dep: tree_digest(dep) for dep in self.spec.deps}
        return json_digest(values, deps, list(extra))

    def resume_dir(self, fingerprint: str) -> contextlib.AbstractContextManager[Path]:
        """The folder of this run's resume checkpoints (:mod:`scratchgpt.plumbing.resume`), held
        until the stage ends: deleted once its outputs are in place, kept when it fails."""
        folder = resume.folder_of(self.name, fingerprint)
        if folder not in self.resume_folders:
            self._held.enter_context(resume.resume_dir(self.name, fingerprint, writer=is_main_process()))
            self.resume_folders.append(folder)
        return contextlib.nullcontext(folder)


class InputsChanged(PipelineError):
    """params.yaml or a dep of the stage changed while it ran."""


def _read_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hashes(path: str, again: bool = False) -> dict[str, str] | None:
    """The sha256 of each file of ``path`` (a file, or a folder: by relative name), or None when
    it does not exist. The first time through :func:`~scratchgpt.files.sha256_file`, whose memory
    the run's fingerprint then reuses (one pass over a large model); ``again`` reads every file
    anew, whatever its timestamps say."""
    digest = _read_sha256 if again or path == PARAMS_FILE else sha256_file
    root = Path(path)
    try:
        if root.is_file():
            return {".": digest(root)}
        if not root.is_dir():
            return None
        return {f.relative_to(root).as_posix(): digest(f) for f in sorted(root.rglob("*")) if f.is_file()}
    except FileNotFoundError:  # a file went while it was read
        return None


def _unchanged(started: dict[str, dict[str, str] | None]) -> None:
    """Raise :class:`InputsChanged` when a file or folder of ``started`` no longer holds what it held."""
    for path, before in started.items():
        if _hashes(path, again=True) != before:
            raise InputsChanged(f"{path} changed while this stage ran (another `dvc exp run`?); nothing was recorded")


def read_sections(spec: StageSpec, sections: Sequence[type[Section]], path: str = PARAMS_FILE) -> Any:
    """The params sections a stage reads, validated; ``sections`` must be the top-level keys of
    what dvc.yaml declares for the stage (then every key it may read is validated, and nothing
    else)."""
    declared = sorted({key.split(".")[0] for key in spec.params})
    given = sorted(cls.section for cls in sections)
    if given != declared:
        raise SpecError(
            f"stage {spec.name}: its script validates the params sections {', '.join(given) or 'none'}, "
            f"dvc.yaml declares keys of {', '.join(declared) or 'none'}"
        )
    return validate_sections(read_yaml(path), sections, path)


@contextlib.contextmanager
def session(
    name: str, params: Any = None, dvc_yaml: Path = DVC_YAML, sections: Sequence[type[Section]] = ()
) -> Iterator[Stage]:
    """A :class:`Stage` for ``name`` with ``params`` (validated params), or else the ``sections``
    of params.yaml it reads (:func:`read_sections`); its outputs are committed when the block ends
    normally and its inputs (params.yaml when read from it, the declared deps) are as they were
    when it started, and dropped otherwise. Only the main process hashes the inputs, stages,
    commits or drops the outputs, and deletes the resume folders of a finished run."""
    writer = is_main_process()
    started = {PARAMS_FILE: _hashes(PARAMS_FILE)} if writer and params is None else {}  # before it is read
    spec = load_spec(name, dvc_yaml, dvc_yaml.with_name("params.yaml"))
    params = params if params is not None else read_sections(spec, sections)
    outputs = StagedOutputs(spec.name, spec.outs)
    if writer:
        outputs.begin()
    with contextlib.ExitStack() as held:
        try:
            if writer:  # after begin(), which may finish an upstream stage's interrupted commit
                started |= {dep: _hashes(dep) for dep in spec.deps}
            st = Stage(spec, params, outputs, held)
            yield st
        except BaseException:
            if writer:
                outputs.abort()
            raise
        if writer:
            outputs.commit(unchanged=lambda: _unchanged(started))
            for folder in st.resume_folders:
                resume.finished(folder)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the stage cleans up."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted("SIGTERM")


def stage_name(argv: list[str]) -> str:
    """``stages/<name>.py`` → ``name``; with one argument (a foreach item) ``name@item``."""
    name = Path(argv[0]).stem
    if len(argv) > 2:
        raise SystemExit(f"usage: {argv[0]} [item]: settings come from params.yaml")
    return f"{name}@{argv[1]}" if len(argv) == 2 else name


def run(main: Callable[[Stage], None], *sections: type[Section]) -> None:
    logs.configure()
    tune_cpu_allocator()  # see its docstring: large tensors reused, not re-faulted every step
    signal.signal(signal.SIGTERM, _on_sigterm)
    name = Path(sys.argv[0]).stem
    try:
        name = stage_name(sys.argv)
        with session(name, sections=sections) as st:
            main(st)
    except (PipelineError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        how = "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C"
        print(f"{name}: interrupted ({how}); nothing of this run was kept, its outputs are as before", file=sys.stderr)
        sys.exit(143 if isinstance(e, Interrupted) else 130)
    finally:
        dist = sys.modules.get("torch.distributed")  # only when this stage used torch
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
