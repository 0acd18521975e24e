"""params.yaml's ``dpo`` section (chapter 7's bonus: preference tuning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from scratchgpt.book.settings import MAX_CONTEXT_LENGTH
from scratchgpt.plumbing.sections.training import FinetuneParams


class DPOParams(FinetuneParams):  # type: ignore[misc, valid-type]
    """Chapter 7's bonus: preference tuning of the instruction model with DPO. The preference
    file is split with the instruct section's keys, so the test entries are chapter 7's."""

    section: ClassVar[str] = "dpo"

    beta: float = Field(gt=0)
    allowed_max_length: int = Field(ge=2, le=MAX_CONTEXT_LENGTH)  # then cut to the model's context
    mask_prompt: bool
    response_tokens: int = Field(ge=1)
    response_batch: int = Field(ge=1)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problems = super().checks(sections)
        ins = sections.get("instruct")
        adapters = self.method == "lora" and self.lora.save == "adapters"
        if adapters and ins is not None and ins.method == "lora" and ins.lora.save == "adapters":
            problems.append(
                "dpo.lora.save: adapters must sit beside a model with its own weights, but models/instruct holds "
                "adapters too (instruct.lora.save: adapters); save one of them merged"
            )
        return problems
