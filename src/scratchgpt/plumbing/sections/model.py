"""params.yaml's ``model`` section: the GPT's shape, with the keys and bounds of
scratchgpt.book.settings.GPTConfig (declared there once), every one required. Whether the model
fits the machine's memory is checked where it is built."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import create_model

from scratchgpt.book.settings import GPTConfig, heads_problem
from scratchgpt.plumbing.sections.base import Section

ONLY_IN_CODE = ("n_classes",)  # a classifier's head: the classifier stage sets it, params never


class _Model(Section):
    section: typing.ClassVar[str] = "model"

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problem = heads_problem(self.emb_dim, self.n_heads, "model.")  # type: ignore[attr-defined]
        return [f"model.emb_dim: {problem}"] if problem else []


def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(GPTConfig, include_extras=True)
    return {f.name: (hints[f.name], ...) for f in dataclasses.fields(GPTConfig) if f.name not in ONLY_IN_CODE}


ModelParams: type[Section] = create_model(
    "ModelParams",
    __base__=_Model,
    __module__=__name__,
    __doc__="The GPT architecture: GPTConfig's keys and bounds (but n_classes), every one required.",
    **_fields(),
)
