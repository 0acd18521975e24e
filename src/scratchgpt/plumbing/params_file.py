"""Reading a params file and saying what is wrong with it: at most 1 MiB, YAML 1.2 numbers (as DVC
reads params.yaml), no silent duplicate keys, syntax errors with their line, and pydantic's
validation errors as one line each with the full dotted key (``pretrain.lr: must be > 0, got -1``)."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from scratchgpt.errors import PipelineError


class ParamsError(PipelineError, ValueError):
    """params.yaml is unreadable or invalid; the message lists every problem with its key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {p}" for p in problems))


# ---------------------------------------------------------------------------------------------
# YAML reading: YAML 1.2 numbers (DVC reads params.yaml that way) and no silent duplicate keys


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_YAML_BYTES = 1 << 20  # 1 MiB; params.yaml is about 15 kB, and parsing 50 MB took minutes


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file of at most MAX_YAML_BYTES (refused unread past that); a file too large,
    not UTF-8 or with a syntax error becomes a ParamsError naming the file (and the line)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
            if len(data) > MAX_YAML_BYTES:
                size = os.fstat(f.fileno()).st_size
                size_text = f"{size:,} bytes" if size > MAX_YAML_BYTES else f"more than {MAX_YAML_BYTES:,} bytes"
                raise ParamsError(
                    str(path), [f"{size_text}; {path.name} is capped at 1 MiB ({MAX_YAML_BYTES:,} bytes)"]
                )
    except OSError as e:
        raise ParamsError(str(path), [f"cannot read: {e.strerror or e}"]) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ParamsError(str(path), [f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x})"]) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ParamsError(str(path), [f"{where}{problem}"]) from e


# ---------------------------------------------------------------------------------------------
# Error messages


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an invalid mapping key: the key is already named
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = _clip(str(part))  # an over-long mapping key is named by its start
            out += f".{part}" if out else part
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class found by following ``loc`` (field names, dict keys, list indices)."""
    tp: Any = model
    rest = list(loc)
    while rest:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                return None
            tp = models[0]
            continue
        if origin in (list, dict):
            tp = typing.get_args(tp)[-1]
            rest.pop(0)
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(rest.pop(0))
            if field is None:
                return None
            tp = field.annotation
            continue
        return None
    while typing.get_origin(tp) in (typing.Union, types.UnionType, Annotated):
        args = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        tp = args[0] if args else None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _clip(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep + 20 else f"{text[:keep]}... ({len(text):,} characters)"


def show(value: Any) -> str:
    """A value as a message quotes it: YAML's words for booleans and null, long strings cut short."""
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value):,} characters)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{_dotted(loc)}: unknown key, {hint}"
    if kind == "missing":
        return f"{_dotted(loc)}: required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{_dotted(loc)}: must be {bounds[kind]} {show(limit)}, got {show(value)}"
    if kind == "literal_error":
        return f"{_dotted(loc)}: must be one of {ctx['expected']}, got {show(value)}"
    if kind in _TYPE_WORDS:
        return f"{_dotted(loc)}: must be {_TYPE_WORDS[kind]}, got {show(value)}"
    if kind == "finite_number":
        return f"{_dotted(loc)}: must be a finite number, got {show(value)}"
    if kind == "string_too_short":
        return f"{_dotted(loc)}: must not be empty"
    if kind == "string_too_long":
        return f"{_dotted(loc)}: must be at most {ctx['max_length']:,} characters, got {len(value):,}"
    if kind == "too_long":
        got = ctx.get("actual_length")
        return f"{_dotted(loc)}: must have at most {ctx['max_length']:,} items" + (f", got {got:,}" if got else "")
    if kind == "value_error":
        return f"{_dotted(loc)}: {str(ctx.get('error', err['msg']))}"
    return f"{_dotted(loc)}: {err['msg'].lower()}, got {show(value)}"


def describe_errors(error: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem of ``error`` (validating ``model``), duplicates dropped, in order."""
    seen: set[str] = set()
    problems = []
    for err in error.errors():
        msg = _message(err, model)
        if msg not in seen:
            seen.add(msg)
            problems.append(msg)
    return problems
