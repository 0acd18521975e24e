"""The LLM judge of chapter 7, asked over HTTP.

The judge, as in the book, asks a larger model to rate each response from 0 to 100 with
:func:`judge_prompt`. Two protocols (``evaluate.judge_api``):

* ``ollama``: Ollama's ``/api/chat`` (options seed, temperature, num_ctx; the reply's
  ``message.content``, plain or streamed);
* ``openai``: the OpenAI-compatible ``/v1/chat/completions`` that vLLM, llama.cpp's server,
  LM Studio, LiteLLM and hosted APIs speak (seed, temperature, max_tokens; the reply's
  ``choices[0].message.content``).

An API key, when the environment variable named by ``evaluate.judge_api_key_env`` holds one, is
sent as ``Authorization: Bearer``; it is never logged and is masked (``***``) in every message
built from what a server sends back. Plain http goes only to this machine unless
``evaluate.judge_allow_http`` is true (:func:`~scratchgpt.plumbing.sections.evaluate.judge_url_problem`).

The reply must be the bare integer (:func:`parse_score`); anything else leaves that response
unscored. How failures count, per response and for the whole run:

* a reply that is not JSON, lacks the protocol's content field, reports an error, is compressed,
  is larger than ``MAX_REPLY_BYTES``, or is not a score → unscored, with a warning; the server was
  reached, so the run goes on;
* a request that fails after the HTTP client's retries → unscored, with a warning. Retried with
  backoff (honouring Retry-After, capped at ``download.http.max_backoff``): timeouts, a reply not
  complete within ``evaluate.judge_timeout`` (a server trickling bytes), lost or refused
  connections, HTTP 408/425/429/5xx; another HTTP error (401, 404, ...) fails at once;
* when *every* request fails (checked after the first ``give_up_after`` requests, so an
  unreachable judge costs seconds, not one timeout per response), :func:`judge_each` and
  :func:`judge_responses` raise :class:`~scratchgpt.errors.PipelineError` naming the URL and
  the last reason. Once one request got through, later failures only leave responses unscored.

Without a judge URL (``evaluate.judge_url`` unset) :func:`judge_from_params` returns None and the
judge is skipped; that is not an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import requests
import urllib3
from tqdm.auto import tqdm

from scratchgpt.book.scoring import judge_prompt, parse_score, shorten, summarize_scores
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.http import HttpClient, SourceFailed, redact
from scratchgpt.plumbing.sections.evaluate import judge_url_problem

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3
MAX_REPLY_BYTES = 1 << 20  # a score is a few bytes; a bigger reply is garbage, not read further
API_KEY_ENV = "SCRATCHGPT_JUDGE_API_KEY"
Api = Literal["ollama", "openai"]


@dataclass(frozen=True)
class JudgeSettings:
    """Who judges and how: params' ``evaluate.judge_<field>`` keys, one object from the stage to
    the request. The sampling defaults are the book's (seed 123, temperature 0, num_ctx 2048); the
    others equal params' defaults (a test compares them)."""

    url: str
    model: str
    api: Api = "ollama"
    api_key_env: str | None = API_KEY_ENV  # the variable's name, never the key
    allow_http: bool = False  # plain http to a host other than this machine
    seed: int = 123
    temperature: float = 0.0
    num_ctx: int = 2048  # Ollama's context window
    max_tokens: int = 16  # openai: the most tokens of one reply

    @classmethod
    def from_params(cls, section: Any) -> JudgeSettings | None:
        """The settings of an ``evaluate`` section (``judge_url`` … ``judge_max_tokens``), or None
        when it names no judge."""
        values = {f.name: getattr(section, f"judge_{f.name}") for f in dataclasses.fields(cls)}
        return cls(**values) if values["url"] else None


# ---------------------------------------------------------------------------------------------
# The reply


def _content_of(obj: Any) -> str | None:
    """``obj["message"]["content"]`` when it is a string."""
    message = obj.get("message") if isinstance(obj, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _json_objects(body: bytes) -> list[Any] | None:
    """The reply as a list of JSON values: one for a plain answer, one per line for a streamed
    (newline-delimited) one; None when it is neither."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()] or None
    except ValueError:
        return None


def openai_content(body: bytes) -> str | None:
    """The text of an OpenAI-compatible chat completion (``choices[0].message.content``); None
    (with a warning) when the body is not one JSON object, reports an error or lacks it."""
    objects = _json_objects(body)
    if objects is None or len(objects) != 1:
        log.warning("judge reply is not JSON: %r", shorten(body.decode("utf-8", "replace")))
        return None
    obj = objects[0]
    if isinstance(obj, dict) and obj.get("error"):
        log.warning("judge reported an error: %s", shorten(str(obj["error"])))
        return None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    content = _content_of(first)
    if content is None:
        log.warning("judge reply has no choices[0].message.content: %r", shorten(body.decode("utf-8", "replace")))
    return content


def reply_content(body: bytes, api: Api = "ollama") -> str | None:
    """The text of a chat reply of ``api``; None (with a warning) when it is unusable."""
    return openai_content(body) if api == "openai" else ollama_content(body)


def ollama_content(body: bytes) -> str | None:
    """The text of an Ollama chat reply, plain or streamed; None (with a warning) when the body
    is not JSON, reports an error, lacks ``message.content``, or is a stream cut before "done"."""
    objects = _json_objects(body)
    if objects is None:
        log.warning("judge reply is not JSON: %r", shorten(body.decode("utf-8", "replace")))
        return None
    errors = [o["error"] for o in objects if isinstance(o, dict) and o.get("error")]
    if errors:
        log.warning("judge reported an error: %s", shorten(str(errors[0])))
        return None
    parts = [_content_of(o) for o in objects]
    text = "".join(part for part in parts if part is not None)
    if None in parts:
        log.warning("judge reply has no message.content: %r", shorten(body.decode("utf-8", "replace")))
        return None
    if len(objects) > 1 and not (isinstance(objects[-1], dict) and objects[-1].get("done") is True):
        log.warning('judge\'s streamed reply ended before "done": %r', shorten(text))
        return None
    return text


# ---------------------------------------------------------------------------------------------
# The judge


class ReplyRefused(Exception):
    """The server answered, but with something not worth reading (compressed or too large)."""


class Judge:
    """A chat model behind an Ollama (``/api/chat``) or OpenAI-compatible
    (``/v1/chat/completions``) URL that scores responses.

    Requests go through :class:`~scratchgpt.plumbing.http.HttpClient` (timeouts, retries, backoff);
    each try must deliver its whole reply (at most ``MAX_REPLY_BYTES``) within the client's read
    timeout. The sampling options default to the book's (seed 123, temperature 0, num_ctx 2048).
    Plain http is refused except to this machine, unless ``allow_http``.
    """

    def __init__(self, settings: JudgeSettings, client: HttpClient | None = None, api_key: str | None = None):
        url = settings.url
        if settings.api not in ("ollama", "openai"):
            raise PipelineError(f"evaluate.judge_api: must be 'ollama' or 'openai', got {settings.api!r}")
        problem = judge_url_problem(url, settings.allow_http)
        if problem:
            raise PipelineError(f"evaluate.judge_url: {problem.replace(repr(url), repr(redact(url)))}")
        self.settings, self.url = settings, url
        self.client = client or HttpClient(allow_http=settings.allow_http)
        self.options = {"seed": settings.seed, "temperature": settings.temperature, "num_ctx": settings.num_ctx}
        self._api_key = api_key or None
        if self._api_key and url.startswith("http://") and settings.allow_http:
            log.warning("the judge's API key goes over plain http to %s (evaluate.judge_allow_http)", redact(url))

    def __repr__(self) -> str:
        key = "***" if self._api_key else None
        return f"Judge({redact(self.url)!r}, {self.settings.model!r}, api={self.settings.api!r}, api_key={key})"

    def payload(self, prompt: str) -> dict[str, Any]:
        """The JSON body of one chat request."""
        messages = [{"role": "user", "content": prompt}]
        if self.settings.api == "openai":
            return {
                "model": self.settings.model,
                "messages": messages,
                "temperature": self.options["temperature"],
                "seed": self.options["seed"],
                "max_tokens": self.settings.max_tokens,
                "stream": False,
            }
        return {"model": self.settings.model, "messages": messages, "options": dict(self.options), "stream": False}

    def headers(self) -> dict[str, str]:
        """The request's extra headers: the API key, when there is one."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def hide(self, text: str) -> str:
        """``text`` with the API key masked, for anything logged or raised."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _post(self, prompt: str) -> bytes:
        """The reply's body; raises SourceFailed after the client's retries, ReplyRefused for a
        compressed or oversized reply."""
        payload = self.payload(prompt)
        deadline_s = self.client.policy.read_timeout

        def attempt() -> bytes:
            deadline = time.monotonic() + deadline_s
            resp = self.client.send(self.url, "POST", json=payload, headers=self.headers(), stream=True)
            with resp:
                encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise ReplyRefused(f"a {encoding!r}-encoded reply (asked for identity)")
                body = bytearray()
                try:
                    while chunk := resp.raw.read1(1 << 16, decode_content=False):
                        body += chunk
                        if len(body) > MAX_REPLY_BYTES:
                            raise ReplyRefused(f"a reply over {MAX_REPLY_BYTES} bytes")
                        if time.monotonic() > deadline:
                            raise requests.Timeout(f"no complete reply within {deadline_s:g}s")
                except requests.Timeout:
                    raise
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as e:
                    raise requests.Timeout(f"reply stalled after {len(body)} bytes") from e
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise requests.ConnectionError(f"reply cut off after {len(body)} bytes ({type(e).__name__})") from e
            return bytes(body)

        try:
            return self.client.retrying(attempt, redact(self.url))
        except SourceFailed as e:
            message = self.hide(str(e))
            if self.settings.api_key_env and any(f"HTTP {code}" in message for code in (401, 403)):
                message += f" (is ${self.settings.api_key_env} set to a key this server accepts?)"
            raise SourceFailed(message) from None

    def ask(self, prompt: str) -> int | None:
        """Score for one prompt; None when the reply is unusable. Raises
        :class:`~scratchgpt.plumbing.http.SourceFailed` when the request fails after retries."""
        try:
            body = self._post(prompt)
        except ReplyRefused as e:
            log.warning("judge at %s sent %s; response left unscored", redact(self.url), e)
            return None
        content = reply_content(self.hide(body.decode("utf-8", "replace")).encode(), self.settings.api)
        return None if content is None else parse_score(content)

    def score(self, prompt: str) -> int | None:
        """Like :meth:`ask`, but a failed request also gives None (with a warning)."""
        try:
            return self.ask(prompt)
        except SourceFailed as e:
            log.warning("judge request to %s failed: %s", redact(self.url), e)
            return None


class JudgeUnreachable(PipelineError):
    """Every request to the judge failed."""

    def __init__(self, judge: Judge, reason: str, count: int):
        tries = "the only request" if count == 1 else f"all {count} requests"
        hint = (
            f"Is the server running (e.g. `ollama serve`) and the model pulled (`ollama pull {judge.settings.model}`)?"
            if judge.settings.api == "ollama"
            else f"Is the server running, and does it serve the model {judge.settings.model!r}?"
        )
        super().__init__(
            f"the judge at {redact(judge.url)} could not be reached ({tries} failed): {reason}\n"
            f"  {hint} Or unset evaluate.judge_url to skip the judge."
        )
        self.url = judge.url
        self.reason = reason


def judge_each(
    judge: Judge, items: Iterable[tuple[str, str, str]], give_up_after: int = GIVE_UP_AFTER
) -> list[int | None]:
    """The judge's score (or None) for each (prompt_text, reference, response).

    Raises :class:`JudgeUnreachable` (a PipelineError) when every request fails: as soon as the
    first ``give_up_after`` requests have all failed, or at the end when fewer were made.
    """
    scores: list[int | None] = []
    failed, reason = 0, ""
    for prompt_text, reference, response in tqdm(items, desc="judge", unit="response", leave=False, disable=None):
        try:
            scores.append(judge.ask(judge_prompt(prompt_text, reference, response)))
        except SourceFailed as e:
            log.warning("judge request to %s failed: %s", redact(judge.url), e)
            scores.append(None)
            failed, reason = failed + 1, str(e)
            if failed == len(scores) >= give_up_after:
                raise JudgeUnreachable(judge, reason, failed) from None
    if scores and failed == len(scores):
        raise JudgeUnreachable(judge, reason, failed)
    return scores


def judge_responses(
    judge: Judge, items: Iterable[tuple[str, str, str]], give_up_after: int = GIVE_UP_AFTER
) -> dict[str, float | int | None]:
    """Score every (prompt_text, reference, response) with the judge and summarize
    (:func:`summarize_scores`); see :func:`judge_each` for when it raises."""
    summary = summarize_scores(judge_each(judge, items, give_up_after))
    if summary["judge_unscored"]:
        log.warning("judge: %d response(s) left unscored", summary["judge_unscored"])
    return summary


def judge_from_params(settings: JudgeSettings | None, client: HttpClient | None = None) -> Judge | None:
    """A :class:`Judge`, or None (logged, not an error) when no judge is configured. The API key
    is read from the environment variable ``settings.api_key_env`` names; unset or empty means no
    key (servers on this machine rarely want one)."""
    if settings is None or not settings.url:
        log.info("no judge configured (evaluate.judge_url); skipping the judge")
        return None
    env = settings.api_key_env
    api_key = os.environ.get(env, "").strip() if env else ""
    log.info(
        "judge: %s (%s API, model %s, %s)",
        redact(settings.url),
        settings.api,
        settings.model,
        f"API key from ${env}" if api_key else "no API key",
    )
    return Judge(settings, client, api_key=api_key or None)
