"""Named experiments: experiments/<name>.yaml states what one run of the book reproduces.

    description: Chapter 5 as the book runs it ...     # one paragraph; its first sentence is the summary
    time: about N minutes on 2 CPU cores               # the measured time, stated here only
    stages: [pretrain]                                 # the dvc.yaml stages it reproduces
    extends: book-ch07                                 # optional: that experiment's params first
    params:                                            # dotted params.yaml keys → the book's values
      model.context_length: 256

``params`` lists only the keys whose value differs from params.yaml's (tests/plumbing/test_params.py
checks it); each must be read by one of the stages that run (the targets or a stage upstream of
them), or the change would do nothing. ``scratchgpt experiments run NAME`` runs
``dvc exp run -n NAME -S key=value ... <stages>``: DVC reproduces the target stages and whatever
they need upstream, nothing downstream (the other stages' outputs in that experiment stay the
baseline's).

    scratchgpt experiments list
    scratchgpt experiments show book-ch05
    scratchgpt experiments run book-ch05 [--queue]

One run at a time in a workspace: ``run`` refuses to start while another DVC process works in
this repository (:func:`dvc_running`), since ``dvc exp run`` rewrites params.yaml and removes the
outputs of the stages it reruns under the running one. ``--queue`` (then ``dvc queue start``) and
``--temp`` run the experiment in a folder of its own and are never refused.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scratchgpt.plumbing.params import validate
from scratchgpt.plumbing.params_file import ParamsError, describe_errors, read_yaml
from scratchgpt.plumbing.pipeline import DVC_YAML, load_spec, stage_names
from scratchgpt.plumbing.sections.base import PARAMS_FILE

EXPERIMENTS_DIR = Path("experiments")


class ExperimentFile(BaseModel):
    """The shape of experiments/<name>.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = Field(min_length=1)
    time: str = Field(min_length=1)
    stages: list[str] = Field(min_length=1)
    extends: str | None = None  # another experiment whose params come first (this file's win)
    params: dict[str, Any] = Field(min_length=1)


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    description: str
    time: str
    stages: tuple[str, ...]
    params: dict[str, Any]
    extends: str | None = None

    @property
    def summary(self) -> str:
        """The description's first sentence."""
        first = " ".join(self.description.split()).split(": ")[0].split(". ")[0]
        return first.rstrip(".")


def names(folder: Path = EXPERIMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load(name: str, folder: Path = EXPERIMENTS_DIR, _seen: tuple[str, ...] = ()) -> Experiment:
    """experiments/<name>.yaml, its shape checked and its stages those of the dvc.yaml beside
    the folder; with ``extends``, the params of that experiment, then its own."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(str(path), [f"no such experiment; expected one of: {', '.join(names(folder))}"])
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(str(path), ["must be a mapping with description, time, stages and params"])
    try:
        parsed = ExperimentFile.model_validate(data)
    except ValidationError as e:
        raise ParamsError(str(path), describe_errors(e, ExperimentFile)) from None
    dvc_yaml = folder.parent / DVC_YAML
    known = stage_names(dvc_yaml, folder.parent / PARAMS_FILE)
    wrong = [s for s in parsed.stages if s not in known]
    if wrong:
        raise ParamsError(str(path), [f"stages: {', '.join(wrong)} not in {dvc_yaml}; stages: {', '.join(known)}"])
    params = parsed.params
    if parsed.extends is not None:
        if parsed.extends in (*_seen, name):
            raise ParamsError(str(path), [f"extends: {' → '.join((*_seen, name, parsed.extends))} is a cycle"])
        params = {**load(parsed.extends, folder, (*_seen, name)).params, **params}
    return Experiment(
        name, path, parsed.description.strip(), parsed.time.strip(), tuple(parsed.stages), params, parsed.extends
    )


def overrides(name: str, folder: Path = EXPERIMENTS_DIR) -> dict[str, Any]:
    """The dotted params overrides of experiment ``name``."""
    return load(name, folder).params


def apply(params: dict[str, Any], changes: dict[str, Any], source: str) -> dict[str, Any]:
    """params with each dotted key of ``changes`` set; a key outside params.yaml is an error."""
    out = copy.deepcopy(params)
    problems = []
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            problems.append(f"{dotted}: not a key of {PARAMS_FILE}")
            continue
        node[last] = value
    if problems:
        raise ParamsError(source, problems)
    return out


def current(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        node = node[key]
    return node


def changes(experiment: Experiment) -> list[tuple[str, Any, Any]]:
    """(key, params.yaml's value, the experiment's value) for each key it sets, after validating
    the params that result (params.yaml beside the experiments folder)."""
    params_file = experiment.path.parent.parent / PARAMS_FILE
    base = read_yaml(params_file)
    validate(apply(base, experiment.params, str(experiment.path)), f"{PARAMS_FILE} + {experiment.name}")
    return [(key, current(base, key), value) for key, value in experiment.params.items()]


def set_args(experiment: Experiment) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values as YAML reads them back)."""
    args = []
    for key, value in experiment.params.items():
        args += ["-S", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def run_command(experiment: Experiment, dvc_options: list[str]) -> list[str]:
    """The ``dvc exp run`` command line that runs ``experiment``: its params, then its stages."""
    return ["dvc", "exp", "run", "-n", experiment.name, *set_args(experiment), *dvc_options, *experiment.stages]


def upstream(targets: tuple[str, ...], root: Path = Path(".")) -> list[str]:
    """The stages of ``root``/dvc.yaml that ``dvc repro TARGETS`` may run: the targets and every
    stage whose outputs they read, directly or not, in dvc.yaml's order."""
    dvc_yaml, params_yaml = root / DVC_YAML, root / PARAMS_FILE
    specs = {name: load_spec(name, dvc_yaml, params_yaml) for name in stage_names(dvc_yaml, params_yaml)}

    def feeds(out: str, dep: str) -> bool:
        o, d = Path(out), Path(dep)
        return o == d or o in d.parents or d in o.parents

    needed, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        todo += [n for n, s in specs.items() if any(feeds(o, d) for o in s.outs for d in specs[name].deps)]
    return [n for n in specs if n in needed]


def describe_value(value: Any) -> str:
    """A params value as YAML reads it back: strings bare, the rest as JSON (1.0 stays 1.0)."""
    return value if isinstance(value, str) else json.dumps(value)


def busy_message(name: str, holder: str) -> str:
    """Why ``experiments run NAME`` does not start now, and how to queue it instead (one line)."""
    return (
        f"DVC is already running in this workspace ({holder}); a second `dvc exp run` here would rewrite "
        f"params.yaml under it. Queue this one instead: `scratchgpt experiments run {name} --queue` "
        f"(`dvc exp run --queue ...`), then `dvc queue start`; or run it apart now with "
        f"`scratchgpt experiments run {name} --temp`"
    )
