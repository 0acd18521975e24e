"""Named experiment configs: experiments/<name>.yaml holds dotted params overrides, e.g. the
book's exact settings, that ``dvc exp run -S`` applies on top of params.yaml.

    python -m scratchgpt.experiments list
    python -m scratchgpt.experiments args book-ch05     # the -S arguments, checked
    python -m scratchgpt.experiments run book-ch05      # dvc exp run -n book-ch05 -S ...
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from .config import PARAMS_FILE, ParamsError, read_yaml, validate

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["list"]:
        print("\n".join(names()))
        return 0
    if len(argv) == 2 and argv[0] == "args":
        try:
            print(shlex.join(set_args(argv[1])))
        except ParamsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if len(argv) >= 2 and argv[0] == "run":
        try:
            cmd = ["dvc", "exp", "run", "-n", argv[1], *set_args(argv[1]), *argv[2:]]
        except ParamsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print("+", shlex.join(cmd), file=sys.stderr)
        return subprocess.call(cmd)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
