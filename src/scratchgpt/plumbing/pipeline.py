"""What dvc.yaml declares for one stage, read as DVC reads it, so nothing is declared twice.

A stage's ``deps``, ``params`` and outputs (``outs``, ``metrics``, ``plots``) are resolved here
(``foreach`` items, ``${key}``, ``${item.field}`` and ``${params.key}`` interpolation), then:

- the resume fingerprint of a training stage hashes exactly its declared deps and params;
- the stage writes exactly its declared outputs (:mod:`scratchgpt.plumbing.outputs` checks);
- the stage reads only the params it declares: :class:`ParamsView` raises
  :class:`UndeclaredParams` on any other key, so what DVC watches is what the stage reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.params_file import read_yaml

DVC_YAML = Path("dvc.yaml")
PARAMS_YAML = Path("params.yaml")
_VAR = re.compile(r"\$\{\s*([^}]+?)\s*\}")


class SpecError(PipelineError, ValueError):
    """dvc.yaml does not declare the stage as expected."""


class UndeclaredParams(PipelineError, KeyError):
    """A stage read a params key that dvc.yaml does not list for it."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class StageSpec:
    """One stage of dvc.yaml, interpolated: ``name`` is e.g. ``pretrain`` or ``download@spam``."""

    name: str
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots alike: every path the stage writes


def _lookup(context: dict[str, Any], dotted: str, where: str) -> Any:
    node: Any = context
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SpecError(f"{where}: ${{{dotted}}} names nothing in params.yaml or the foreach item")
        node = node[part]
    return node


def _interpolate(value: str, context: dict[str, Any], where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        found = _lookup(context, match.group(1), where)
        if isinstance(found, (dict, list)):
            raise SpecError(f"{where}: ${{{match.group(1)}}} is not a single value")
        return str(found)

    return _VAR.sub(sub, value)


def _paths(entries: list[Any] | None) -> list[str]:
    """Entries are a path or a one-key mapping {path: options}."""
    out = []
    for entry in entries or []:
        out.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def stage_names(dvc_yaml: Path = DVC_YAML, params_yaml: Path = PARAMS_YAML) -> list[str]:
    """Every stage name DVC would list (``foreach`` stages once per item)."""
    stages, params = _read(dvc_yaml, params_yaml)
    names = []
    for name, body in stages.items():
        if "foreach" in body:
            names += [f"{name}@{key}" for key in _foreach(name, body, params)]
        else:
            names.append(name)
    return names


def _read(dvc_yaml: Path, params_yaml: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not Path(dvc_yaml).is_file():
        raise SpecError(f"{dvc_yaml} not found: run stages from the repository's root, where DVC runs them")
    stages = (yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}).get("stages") or {}
    params = read_yaml(params_yaml) if Path(params_yaml).is_file() else {}  # capped, like every params read
    return stages, params or {}


def _foreach(name: str, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    items = body["foreach"]
    if isinstance(items, str):
        match = _VAR.fullmatch(items.strip())
        if not match:
            raise SpecError(f"{name}: foreach must be ${{...}} or a mapping")
        items = _lookup(params, match.group(1), name)
    if isinstance(items, list):
        return {str(item): item for item in items}
    if not isinstance(items, dict):
        raise SpecError(f"{name}: foreach must give a mapping or a list")
    return items


def load_spec(name: str, dvc_yaml: Path = DVC_YAML, params_yaml: Path = PARAMS_YAML) -> StageSpec:
    """The stage ``name`` (``stage`` or ``stage@key``) of ``dvc_yaml``, interpolated with
    ``params_yaml`` as DVC does."""
    stages, params = _read(dvc_yaml, params_yaml)
    base, _, key = name.partition("@")
    body = stages.get(base)
    if body is None:
        raise SpecError(f"{dvc_yaml}: no stage {base!r}; stages: {', '.join(stages)}")
    context = dict(params)
    if "foreach" in body:
        items = _foreach(base, body, params)
        if key not in items:
            raise SpecError(f"{base}@{key}: not a stage of {dvc_yaml}; expected {base}@ one of: {', '.join(items)}")
        context |= {"key": key, "item": items[key]}
        body = body["do"]
    elif key:
        raise SpecError(f"{base} is not a foreach stage: run it without an argument")

    def resolve(entries: list[Any] | None, field: str) -> tuple[str, ...]:
        return tuple(_interpolate(p, context, f"{dvc_yaml}: {name}.{field}") for p in _paths(entries))

    outs = (
        resolve(body.get("outs"), "outs")
        + resolve(body.get("metrics"), "metrics")
        + resolve(body.get("plots"), "plots")
    )
    return StageSpec(name, resolve(body.get("deps"), "deps"), resolve(body.get("params"), "params"), outs)


# ---------------------------------------------------------------------------------------------
# Params a stage may read


def key_tree(keys: tuple[str, ...]) -> dict[str, Any]:
    """Dotted keys as a tree: {"instruct": {"mask_prompt": True}}; True allows a whole subtree."""
    tree: dict[str, Any] = {}
    for dotted in keys:
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            if node.get(part) is True:
                break
            node = node.setdefault(part, {})
        else:
            node[last] = True
    return tree


def _child(value: Any, name: str) -> Any:
    return value[name] if isinstance(value, dict) else getattr(value, name)


class ParamsView:
    """Read-only params of one stage: sections and keys that dvc.yaml lists under the stage's
    ``params`` read as usual (attribute or ``[key]`` access); any other raises
    :class:`UndeclaredParams` naming the key, so an undeclared read fails every test that runs
    the stage instead of going unseen by DVC and the resume fingerprint."""

    __slots__ = ("_value", "_allowed", "_where", "_stage")

    def __init__(self, value: Any, allowed: dict[str, Any], stage: str, where: str = ""):
        self._value, self._allowed, self._stage, self._where = value, allowed, stage, where

    def _get(self, name: str) -> Any:
        where = f"{self._where}.{name}" if self._where else str(name)
        allowed = self._allowed.get(name)
        if allowed is None:
            raise UndeclaredParams(
                f"stage {self._stage} reads params key {where}, which dvc.yaml does not list under its params"
            )
        value = _child(self._value, name)
        return value if allowed is True else ParamsView(value, allowed, self._stage, where)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._get(name)

    def __getitem__(self, key: str) -> Any:
        return self._get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._allowed

    def __iter__(self) -> Iterator[str]:
        return iter(self._allowed)

    def __repr__(self) -> str:
        return f"ParamsView({self._stage}: {', '.join(self._allowed)})"


def declared_values(params: Any, keys: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """{dotted key: JSON-able value} of each declared key, without the ``exclude`` keys."""
    out = {}
    for dotted in keys:
        value = params
        for part in dotted.split("."):
            value = _child(value, part)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        prefix = dotted + "."
        for skipped in exclude:
            if skipped.startswith(prefix) and isinstance(value, dict):
                node = value
                *parents, last = skipped[len(prefix) :].split(".")
                for part in parents:
                    node = node.get(part, {})
                node.pop(last, None)
        if dotted not in exclude:
            out[dotted] = value
    return out
