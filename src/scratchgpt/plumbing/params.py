"""params.yaml as a whole: every section (:mod:`scratchgpt.plumbing.sections`), validated together.

A stage validates only the sections it reads (scratchgpt.plumbing.stage), so that a change to
another section's schema does not rerun it. The whole file is validated here: by
``scratchgpt experiments run`` before it starts DVC, by ``scratchgpt params`` and by the tests.
Every problem is reported with its full key, e.g.::

    params.yaml: 2 problems
      pretrain.lr: must be > 0, got -1
      prepare.max_lenght: unknown key, did you mean max_length?

params.yaml holds the values. A key the file always states has no default; an optional knob
that the file may leave out has one, equal to the file's value wherever the file states that key
(tests/plumbing/test_params.py compares them). The model and training sections take their keys
and bounds from the book's own declarations (scratchgpt.book.settings: GPTConfig, TrainConfig).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.plumbing.params_file import ParamsError, read_yaml
from scratchgpt.plumbing.sections.base import PARAMS_FILE, Section, validate_sections
from scratchgpt.plumbing.sections.classifier import ClassifierParams
from scratchgpt.plumbing.sections.download import DownloadParams
from scratchgpt.plumbing.sections.dpo import DPOParams
from scratchgpt.plumbing.sections.evaluate import EvaluateParams
from scratchgpt.plumbing.sections.init import InitParams
from scratchgpt.plumbing.sections.instruct import InstructParams
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.prepare import PrepareParams
from scratchgpt.plumbing.sections.pretrain import PretrainParams
from scratchgpt.plumbing.sections.report import ReportParams

__all__ = ["PARAMS_FILE", "SECTIONS", "Params", "ParamsError", "load_params", "validate"]

# Every section, in the file's order.
SECTIONS: tuple[type[Section], ...] = (
    DownloadParams,
    PrepareParams,
    ModelParams,
    PretrainParams,
    InitParams,
    ClassifierParams,
    InstructParams,
    DPOParams,
    EvaluateParams,
    ReportParams,
)


class Params(Section):
    """The whole of params.yaml: every section is required, and nothing else may be there."""

    download: DownloadParams
    prepare: PrepareParams
    model: ModelParams  # type: ignore[valid-type]
    pretrain: PretrainParams
    init: InitParams
    classifier: ClassifierParams
    instruct: InstructParams
    dpo: DPOParams
    evaluate: EvaluateParams
    report: ReportParams


def validate(data: Any, source: str = PARAMS_FILE) -> Params:
    """Validate an already-parsed params mapping; raises ParamsError listing every problem."""
    return validate_sections(data, SECTIONS, source, model=Params)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole of params.yaml."""
    return validate(read_yaml(path), str(path))
