"""params.yaml's ``classifier`` section (chapter 6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from scratchgpt.book.settings import MAX_CONTEXT_LENGTH
from scratchgpt.plumbing.sections.training import FinetuneParams


class ClassifierParams(FinetuneParams):  # type: ignore[misc, valid-type]
    """Chapter 6: finetune the base model into a spam classifier."""

    section: ClassVar[str] = "classifier"

    quoting: Literal["book", "none"]
    balance: bool
    train_frac: float = Field(gt=0, lt=1)
    val_frac: float = Field(gt=0, lt=1)
    split_seed: int
    max_length: int = Field(ge=0, le=MAX_CONTEXT_LENGTH)  # and <= the base model's context
    head_position: Literal["last_non_pad", "last"]
    trainable: Literal["all", "head", "last_blocks"]
    trainable_blocks: int = Field(ge=0)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problems = super().checks(sections)
        if self.train_frac + self.val_frac >= 1:
            problems.append(
                "classifier.train_frac + classifier.val_frac: must be < 1 to leave a test split, "
                f"got {self.train_frac + self.val_frac:g}"
            )
        # Other sources' context is known once the base model is (stage finetune_classifier checks it).
        if "model" in sections and "init" in sections and sections["init"].source == "pretrained":
            context = sections["model"].context_length
            if self.max_length > context:
                problems.append(
                    f"classifier.max_length: must be <= model.context_length ({context}, "
                    f"the context of init.source pretrained), got {self.max_length}"
                )
        return problems
