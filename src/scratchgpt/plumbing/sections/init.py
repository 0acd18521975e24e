"""params.yaml's ``init`` section: the model finetuning starts from (chapter 5)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from scratchgpt.plumbing.sections.base import Section

OPENAI_SOURCES = {"gpt2-124M": "124M", "gpt2-355M": "355M", "gpt2-774M": "774M", "gpt2-1558M": "1558M"}
INIT_SOURCES = ("pretrained", *OPENAI_SOURCES)
HUB_PREFIX = "hf:"  # a Hugging Face Hub model: hf:<owner>/<name>
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
COMMIT = re.compile(r"[0-9a-f]{40}")


def _check_source(value: str) -> str:
    if value.startswith(HUB_PREFIX):
        if not HUB_REPO.fullmatch(value[len(HUB_PREFIX) :]):
            raise ValueError(f"a Hub model is hf:<owner>/<name>, e.g. hf:openai-community/gpt2, got {value!r}")
        return value
    if value in INIT_SOURCES or "/" in value or value.startswith((".", "~")):
        return value
    close = difflib.get_close_matches(value, INIT_SOURCES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(
        f"must be one of {', '.join(INIT_SOURCES)}, hf:<owner>/<name> (a Hugging Face Hub model), "
        f"or a folder path (with a '/'), got {value!r}{hint}"
    )


def _check_revision(value: str | None) -> str | None:
    if value is not None and not COMMIT.fullmatch(value):
        raise ValueError(f"must be a commit hash (40 lowercase hex digits) so the run is reproducible, got {value!r}")
    return value


class InitParams(Section):
    """The model the finetuning stages start from (the defaults are params.yaml's)."""

    section: ClassVar[str] = "init"

    source: Annotated[str, AfterValidator(_check_source)] = "pretrained"
    revision: Annotated[str | None, AfterValidator(_check_revision)] = None  # the Hub commit of an hf: source
    drop_rate: float | None = Field(0.0, ge=0, lt=1)
    allow_http: bool = False  # an hf: source: plain http also to hosts other than this machine (else only https)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        hub = self.source.startswith(HUB_PREFIX)
        if hub and self.revision is None:
            return [f"init.revision: required for the Hub model {self.source} (the commit hash to download)"]
        if not hub and self.revision is not None:
            return [f"init.revision: only for a Hub source (hf:<owner>/<name>), not {self.source!r}"]
        return []
