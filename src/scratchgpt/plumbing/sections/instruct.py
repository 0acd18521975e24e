"""params.yaml's ``instruct`` section (chapter 7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from scratchgpt.book.settings import MAX_CONTEXT_LENGTH
from scratchgpt.plumbing.sections.training import FinetuneParams


class InstructParams(FinetuneParams):  # type: ignore[misc, valid-type]
    """Chapter 7: finetune the base model to follow instructions."""

    section: ClassVar[str] = "instruct"

    train_frac: float = Field(gt=0, lt=1)
    test_frac: float = Field(gt=0, lt=1)
    shuffle: bool
    split_seed: int
    allowed_max_length: int = Field(ge=2, le=MAX_CONTEXT_LENGTH)  # then cut to the base model's context
    mask_prompt: bool
    response_tokens: int = Field(ge=1)
    response_batch: int = Field(ge=1)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problems = super().checks(sections)
        if self.train_frac + self.test_frac >= 1:
            problems.append(
                "instruct.train_frac + instruct.test_frac: must be < 1 to leave a validation split, "
                f"got {self.train_frac + self.test_frac:g}"
            )
        return problems
