"""What every training section shares (pretrain, classifier, instruct, dpo): the keys and bounds
of the loop's settings (scratchgpt.book.settings.TrainConfig, declared there once), the device,
the program that starts the stage, and the finetuning method with its LoRA settings."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, create_model

from scratchgpt.book.settings import TrainConfig
from scratchgpt.plumbing.sections.base import Section

LAUNCHERS = ("python", "torchrun")
# auto: CUDA, else Apple's mps, else the CPU (scratchgpt.device.pick_device)
Device = Literal["auto", "cpu", "cuda", "mps"]


def _check_launcher(value: str) -> str:
    """The start of a training stage's command in dvc.yaml (``${<section>.launcher} stages/...``)."""
    words = value.split()
    if not words or words[0] not in LAUNCHERS:
        raise ValueError(
            "must be 'python', or 'torchrun' and its options (e.g. 'torchrun --standalone "
            f"--nproc_per_node 8'), got {value!r}"
        )
    return value


class _Training(Section):
    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        s: Any = self
        if s.cosine and s.min_lr > s.lr:
            return [f"{self.section}.min_lr: must be <= {self.section}.lr ({s.lr:g}), got {s.min_lr:g}"]
        return []


def _training_fields() -> dict[str, Any]:
    """Every field of TrainConfig with its type and bounds, required: the training sections
    differ, and params.yaml states each of them in full."""
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    return {f.name: (hints[f.name], ...) for f in dataclasses.fields(TrainConfig)}


TrainingParams: type[Section] = create_model(
    "TrainingParams",
    __base__=_Training,
    __module__=__name__,
    __doc__="""What every training stage shares: the keys and bounds of the loop's settings
    (scratchgpt.book.settings.TrainConfig, declared there once, precision included), the device to train on and the
    program that starts the stage (python, or torchrun for DistributedDataParallel).""",
    **_training_fields(),
    device=(Device, ...),
    launcher=(Annotated[str, StringConstraints(max_length=1_000), AfterValidator(_check_launcher)], ...),
)


class LoraParams(Section):
    """LoRA adapters (appendix E), used when a finetuning stage's method is lora."""

    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    targets: list[Literal["attention", "feed_forward", "head"]] = Field(min_length=1)
    train_head: bool
    save: Literal["merged", "adapters"]


class FinetuneParams(TrainingParams):  # type: ignore[misc, valid-type]
    """What the finetuning stages add: all (or some) weights trained, or LoRA adapters (appendix E)."""

    method: Literal["full", "lora"]
    lora: LoraParams
