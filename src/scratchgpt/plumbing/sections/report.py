"""params.yaml's ``report`` section: the one-page report."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from scratchgpt.plumbing.sections.base import Section


class ReportParams(Section):
    """The one-page report."""

    section: ClassVar[str] = "report"

    attention_text: str = Field(min_length=1, max_length=1_000)  # a heat map of its tokens, squared
    samples: int = Field(ge=0)
