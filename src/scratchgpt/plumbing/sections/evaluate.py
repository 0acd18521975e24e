"""params.yaml's ``evaluate`` section: scoring the finetuned models, and the optional LLM judge."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, StringConstraints

from scratchgpt.book.settings import Precision
from scratchgpt.plumbing.sections.base import MAX_NAME, MAX_URL, Section, allowed_url
from scratchgpt.plumbing.sections.training import Device


def _check_judge_url(value: str) -> str:
    if not re.match(r"https?://[^/?#@\s]+", value):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value  # whether plain http may go there depends on evaluate.judge_allow_http


def judge_url_problem(url: str, allow_http: bool) -> str | None:
    """Why the judge may not be asked at ``url``, or None. https:// goes anywhere; plain http://
    only to this machine, or to another host with ``evaluate.judge_allow_http: true`` (prompts
    and any API key then cross the network unencrypted)."""
    if not re.match(r"https?://[^/?#@\s]+", url):
        return f"must be an http:// or https:// URL, got {url!r}"
    if allowed_url(url) or (allow_http and url.startswith("http://")):
        return None
    return (
        f"plain http to a host other than this machine needs evaluate.judge_allow_http: true "
        f"(or use https://), got {url!r}"
    )


def _check_env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"must be the name of an environment variable (letters, digits, '_'), got {value!r}")
    return value


JudgeUrl = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_check_judge_url)]
EnvName = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_check_env_name)]


class EvaluateParams(Section):
    """Scoring the finetuned models on their test splits; the LLM judge is optional."""

    section: ClassVar[str] = "evaluate"

    batch_size: int = Field(ge=1)
    precision: Precision
    device: Device
    judge_url: JudgeUrl | None = None  # no judge unless one is given
    judge_api: Literal["ollama", "openai"] = "ollama"  # Ollama's /api/chat or /v1/chat/completions
    judge_model: str = Field(min_length=1, max_length=MAX_NAME)
    judge_api_key_env: EnvName | None = "SCRATCHGPT_JUDGE_API_KEY"  # the variable's name, never the key
    judge_allow_http: bool = False  # plain http to a host other than this machine
    judge_seed: int
    judge_temperature: float = Field(ge=0, le=2)
    judge_num_ctx: int = Field(ge=1, le=1_048_576)
    judge_max_tokens: int = Field(16, ge=1, le=4096)  # openai: the most tokens of one reply
    judge_timeout: float = Field(gt=0, le=86_400)

    def checks(self, sections: Mapping[str, Any]) -> list[str]:
        problem = self.judge_url and judge_url_problem(self.judge_url, self.judge_allow_http)
        return [f"evaluate.judge_url: {problem}"] if problem else []
