"""params.yaml fuzzed with hypothesis: for any leaf of the real file, a value of the wrong type
or out of its range is rejected with that key named; a value of the right type within range is
accepted (or, where another key constrains it, rejected naming it); unknown keys are named."""

import copy
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from committed import committed
from scratchgpt.plumbing.params import Params, validate
from scratchgpt.plumbing.params_file import ParamsError

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((committed("params.yaml")).read_text())


def leaves(model: type[BaseModel], data: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, annotation) of every scalar or list-of-scalars leaf of ``data`` under ``model``."""
    out = []
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        out += _walk(field.annotation, field.metadata, data[name], (*prefix, name))
    return out


def _walk(tp: Any, metadata: list, value: Any, path: tuple) -> list:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extra = typing.get_args(tp)
        return _walk(inner, [*metadata, *extra], value, path)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return leaves(tp, value, path)
    if origin is dict:
        _, item = typing.get_args(tp)
        return [leaf for k, v in value.items() for leaf in _walk(item, [], v, (*path, k))]
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models and isinstance(value, dict):
            return leaves(models[0], value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return [leaf for i, v in enumerate(value) for leaf in leaves(item, v, (*path, i))]
    return [(path, (tp, metadata))]


LEAVES = leaves(Params, BASE)


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def set_at(data: dict, path: tuple, value: Any) -> dict:
    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def bounds(metadata: list) -> dict[str, float]:
    found = {}
    for m in metadata:
        for attr in ("gt", "ge", "lt", "le"):
            if isinstance(m, (at.Gt, at.Ge, at.Lt, at.Le)) and getattr(m, attr, None) is not None:
                found[attr] = getattr(m, attr)
        if hasattr(m, "metadata"):
            found.update(bounds(list(m.metadata)))
    return found


def base_type(tp: Any) -> tuple[Any, bool]:
    """The plain type of a leaf, and whether null is allowed."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp, optional


def wrong_type_values(tp: Any, optional: bool) -> st.SearchStrategy:
    tp, _ = base_type(tp)
    nothing = st.nothing() if optional else st.none()
    if typing.get_origin(tp) is Literal:
        return st.one_of(st.integers(), st.lists(st.text(max_size=3), max_size=2), nothing)
    if typing.get_origin(tp) is list:
        return st.one_of(
            st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers(), min_size=1)
        )
    return {
        bool: st.one_of(st.integers(), st.sampled_from(["yes", "true", "on"]), st.floats(allow_nan=False), nothing),
        int: st.one_of(
            st.booleans(),
            st.floats(allow_nan=False).filter(lambda f: not float(f).is_integer()),
            st.text(max_size=5),
            st.lists(st.integers(), max_size=2),
            nothing,
        ),
        float: st.one_of(st.booleans(), st.text(max_size=5), st.lists(st.floats(), max_size=2), nothing),
        str: st.one_of(
            st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.text(), max_size=2), nothing
        ),
    }.get(
        tp,
        st.one_of(
            st.lists(st.integers(), min_size=1, max_size=2),
            st.dictionaries(st.text(max_size=2), st.integers(), min_size=1),
        ),
    )


def problems_of(data: dict) -> list[str] | None:
    try:
        validate(data)
    except ParamsError as e:
        return e.problems
    return None


FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_wrong_type_is_rejected_naming_the_key(data):
    path, (tp, _) = data.draw(st.sampled_from(LEAVES))
    _, optional = base_type(tp)
    value = data.draw(wrong_type_values(tp, optional))
    found = problems_of(set_at(BASE, path, value))
    assert found, f"{dotted(path)} = {value!r} was accepted"
    assert any(p.startswith(dotted(path)) for p in found), (dotted(path), value, found)


NUMERIC = [(path, tp, bounds(meta)) for path, (tp, meta) in LEAVES if base_type(tp)[0] in (int, float) and bounds(meta)]


@FUZZ
@given(st.data())
def test_out_of_range_is_rejected_naming_the_key(data):
    path, tp, limits = data.draw(st.sampled_from(NUMERIC))
    kind = base_type(tp)[0]
    choices = []
    if "gt" in limits:
        choices.append(st.just(limits["gt"]) if kind is float else st.integers(max_value=math.floor(limits["gt"])))
    if "ge" in limits:
        choices.append(
            st.floats(max_value=limits["ge"], exclude_max=True, allow_nan=False)
            if kind is float
            else st.integers(max_value=math.ceil(limits["ge"]) - 1)
        )
    if "lt" in limits:
        choices.append(
            st.floats(min_value=limits["lt"], allow_nan=False, allow_infinity=False)
            if kind is float
            else st.integers(min_value=math.ceil(limits["lt"]))
        )
    if "le" in limits:
        choices.append(
            st.floats(min_value=limits["le"], exclude_min=True, allow_nan=False, allow_infinity=False)
            if kind is float
            else st.integers(min_value=math.floor(limits["le"]) + 1)
        )
    value = data.draw(st.one_of(*choices))
    found = problems_of(set_at(BASE, path, value))
    assert found and any(p.startswith(dotted(path)) for p in found), (dotted(path), value, found)


@FUZZ
@given(st.data())
def test_values_in_range_are_accepted(data):
    path, tp, limits = data.draw(st.sampled_from(NUMERIC))
    kind = base_type(tp)[0]
    low = limits.get("gt", limits.get("ge", 0))
    high = limits.get("lt", limits.get("le", low + 1000))
    if kind is int:
        value = data.draw(
            st.integers(
                min_value=math.floor(low) + (1 if "gt" in limits else 0),
                max_value=math.ceil(high) - (1 if "lt" in limits else 0),
            )
        )
    else:
        value = data.draw(
            st.floats(
                min_value=low, max_value=high, exclude_min="gt" in limits, exclude_max="lt" in limits, allow_nan=False
            )
        )
    found = problems_of(set_at(BASE, path, value))
    # Accepted, unless another key constrains this one (e.g. max_length <= context_length): then
    # the message still names it.
    assert found is None or any(dotted(path) in p for p in found), (dotted(path), value, found)


@FUZZ
@given(st.data(), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_are_named(data, key):
    sections = [path[:-1] for path, _ in LEAVES if len(path) > 1 and not isinstance(path[-2], int)]
    parent = data.draw(st.sampled_from(sections))
    node = BASE
    for part in parent:
        node = node[part]
    if key in node:
        return
    found = problems_of(set_at(BASE, (*parent, key), 1))
    assert found and f"{dotted((*parent, key))}: unknown key" in " ".join(found), found


def test_every_leaf_is_covered():
    assert len(LEAVES) > 80
    assert len(NUMERIC) > 40
    # the upper bounds of lengths and of the model's shape are fuzzed like every other bound
    upper = {dotted(path) for path, _, limits in NUMERIC if "le" in limits}
    assert {
        "model.vocab_size",
        "model.context_length",
        "classifier.max_length",
        "instruct.allowed_max_length",
    } <= upper, upper


def test_the_real_file_is_valid():
    assert problems_of(BASE) is None


FLOATS = [path for path, (tp, _) in LEAVES if base_type(tp)[0] is float]


def test_non_finite_floats_are_rejected_everywhere():
    """Every float of params.yaml (the whole schema's, as each section inherits it) refuses
    .inf, -.inf and .nan, naming the key; e.g. `-S pretrain.lr=.inf` never reaches training."""
    assert len(FLOATS) > 20
    for path in FLOATS:
        for value in (math.inf, -math.inf, math.nan):
            found = problems_of(set_at(BASE, path, value))
            assert found and any(p.startswith(f"{dotted(path)}: must be a finite number") for p in found), (
                dotted(path),
                value,
                found,
            )


def _is_text(tp: Any) -> bool:
    """A str leaf (a Literal is a choice, not text)."""
    tp, _ = base_type(tp)
    return tp is str


def _is_text_list(tp: Any) -> bool:
    tp, _ = base_type(tp)
    return typing.get_origin(tp) is list and _is_text(typing.get_args(tp)[0])


TEXTS = [path for path, (tp, _) in LEAVES if _is_text(tp)]
TEXT_LISTS = [path for path, (tp, _) in LEAVES if _is_text_list(tp)]


def test_every_string_has_a_length_limit():
    """Every string of params.yaml, and every string item of its lists, refuses 100,001
    characters naming the key, before its own rules and without quoting the value."""
    assert len(TEXTS) > 30 and len(TEXT_LISTS) > 8
    huge = "a" * 100_001
    for path in TEXTS + TEXT_LISTS:
        key, value = (dotted(path), huge) if path in TEXTS else (f"{dotted(path)}[0]", [huge])
        found = problems_of(set_at(BASE, path, value))
        assert found, f"{key}: 100,001 characters were accepted"
        assert any(p.startswith(f"{key}: must be at most ") and p.endswith("got 100,001") for p in found), found
        assert all(len(p) < 300 for p in found), found
