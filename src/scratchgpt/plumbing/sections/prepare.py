"""params.yaml's ``prepare`` section: which dataset holds the BPE files, and every corpus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from scratchgpt.plumbing.sections.base import Key, Section


class CorpusParams(Section):
    """One corpus (data/shards/<key>/): a dataset's text as token shards."""

    dataset: Key
    tokenizer: Literal["gpt2", "word"]
    documents: Literal["file", "wikitext"]
    train_ratio: float = Field(gt=0, lt=1)


class PrepareParams(Section):
    """The prepare stage: the BPE files' dataset and every corpus."""

    section: ClassVar[str] = "prepare"

    bpe_dataset: Key
    corpora: dict[Key, CorpusParams]

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        if "download" not in sections:
            return []
        problems = []
        datasets = sections["download"].datasets
        names = ", ".join(sorted(datasets))
        if self.bpe_dataset not in datasets:
            problems.append(f"prepare.bpe_dataset: unknown dataset {self.bpe_dataset!r}, expected one of: {names}")
        for key, corpus in self.corpora.items():
            if corpus.dataset not in datasets:
                problems.append(
                    f"prepare.corpora.{key}.dataset: unknown dataset {corpus.dataset!r}, expected one of: {names}"
                )
        return problems
