"""Named experiment configs: experiments/<name>.yaml holds dotted params overrides, e.g. the
book's exact settings, that ``dvc exp run -S`` applies on top of params.yaml. A file lists only
the keys whose value differs from params.yaml's (tests/plumbing/test_params.py checks it).

    python -m scratchgpt.experiments list
    python -m scratchgpt.experiments args book-ch05     # the -S arguments, checked
    python -m scratchgpt.experiments run book-ch05      # dvc exp run -n book-ch05 -S ...
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from scratchgpt.plumbing.params import PARAMS_FILE, validate
from scratchgpt.plumbing.params_file import ParamsError, read_yaml

EXPERIMENTS_DIR = Path("experiments")


def names(folder: Path = EXPERIMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def overrides(name: str, folder: Path = EXPERIMENTS_DIR) -> dict[str, Any]:
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(str(path), [f"no such experiment; expected one of: {', '.join(names(folder))}"])
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(str(path), ["must be a mapping of dotted params keys to values"])
    return data


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


def set_args(name: str, folder: Path = EXPERIMENTS_DIR, params_file: str = PARAMS_FILE) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run``, after validating the resulting params."""
    changes = overrides(name, folder)
    validate(apply(read_yaml(params_file), changes, str(folder / f"{name}.yaml")), f"{params_file} + {name}")
    args = []
    for key, value in changes.items():
        args += ["-S", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args
