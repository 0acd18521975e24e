"""params.yaml's ``pretrain`` section (chapter 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from scratchgpt.plumbing.sections.base import Key, Text
from scratchgpt.plumbing.sections.training import TrainingParams


class PretrainParams(TrainingParams):  # type: ignore[misc, valid-type]
    """Chapter 5: pretrain the GPT on the corpora's shards."""

    section: ClassVar[str] = "pretrain"

    corpora: list[Key] = Field(min_length=1)
    max_length: int = Field(ge=1)
    stride: int = Field(ge=1)
    sample_prompt: Text
    sample_tokens: int = Field(ge=0)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problems = super().checks(sections)
        if "model" in sections:
            context = sections["model"].context_length
            for key in ("max_length", "stride"):
                if getattr(self, key) > context:
                    problems.append(
                        f"pretrain.{key}: must be <= model.context_length ({context}), got {getattr(self, key)}"
                    )
        if "prepare" in sections:
            corpora = sections["prepare"].corpora
            for i, name in enumerate(self.corpora):
                if name not in corpora:
                    problems.append(
                        f"pretrain.corpora[{i}]: unknown corpus {name!r}, expected one of: {', '.join(sorted(corpora))}"
                    )
            kinds = {corpora[c].tokenizer for c in self.corpora if c in corpora}
            if len(kinds) > 1:
                problems.append(
                    f"pretrain.corpora: every corpus must use the same tokenizer, got {', '.join(sorted(kinds))}"
                )
            if "model" in sections and "gpt2" in kinds and sections["model"].vocab_size < 50257:
                problems.append(
                    f"model.vocab_size: must be >= 50257 for the gpt2 tokenizer, got {sections['model'].vocab_size}"
                )
        return problems
