"""The LLM judge of chapter 7, asked over HTTP.

The judge, as in the book, asks a larger model served by Ollama (or any server speaking its
``/api/chat`` protocol) to rate each response from 0 to 100 with :func:`judge_prompt`. The reply
must be the bare integer (:func:`parse_score`); anything else leaves that response unscored.

How failures count, per response and for the whole run:

* a reply that is not JSON, has no ``message.content``, or is not a score → unscored, with a
  warning; the server was reached, so the run goes on;
* a request that fails after the HTTP client's retries (timeouts, lost connections, HTTP
  408/425/429/5xx, or another HTTP error at once) → unscored, with a warning;
* when *every* request fails (checked after the first ``give_up_after`` requests, so an
  unreachable judge costs seconds, not one timeout per response), :func:`judge_each` and
  :func:`judge_responses` raise :class:`~scratchgpt.errors.PipelineError` naming the URL and
  the last reason. Once one request got through, later failures only leave responses unscored.

Without a judge URL (``evaluate.judge_url`` unset) :func:`judge_from_params` returns None and the
judge is skipped; that is not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from scratchgpt.book.scoring import judge_prompt, parse_score, shorten, summarize_scores
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.http import HttpClient, SourceFailed, check_remote_url

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3


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


def reply_content(body: bytes) -> str | None:
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


class Judge:
    """A chat model behind an Ollama-compatible ``/api/chat`` URL that scores responses.

    Requests go through :class:`~scratchgpt.plumbing.http.HttpClient` (timeouts, retries, backoff);
    the sampling options default to the book's (seed 123, temperature 0, num_ctx 2048).
    Plain http is refused except to this machine (127.0.0.1 / localhost).
    """

    def __init__(
        self,
        url: str,
        model: str,
        client: HttpClient | None = None,
        *,
        seed: int = 123,
        temperature: float = 0.0,
        num_ctx: int = 2048,
    ):
        check_remote_url(url)
        self.url = url
        self.model = model
        self.client = client or HttpClient()
        self.options = {"seed": seed, "temperature": temperature, "num_ctx": num_ctx}

    def payload(self, prompt: str) -> dict[str, Any]:
        """The JSON body of one chat request."""
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": dict(self.options),
            "stream": False,
        }

    def ask(self, prompt: str) -> int | None:
        """Score for one prompt; None when the reply is unusable. Raises
        :class:`~scratchgpt.plumbing.http.SourceFailed` when the request fails after retries."""
        resp = self.client.post_json(self.url, self.payload(prompt))
        content = reply_content(resp.content)
        return None if content is None else parse_score(content)

    def score(self, prompt: str) -> int | None:
        """Like :meth:`ask`, but a failed request also gives None (with a warning)."""
        try:
            return self.ask(prompt)
        except SourceFailed as e:
            log.warning("judge request to %s failed: %s", self.url, e)
            return None


class JudgeUnreachable(PipelineError):
    """Every request to the judge failed."""

    def __init__(self, judge: Judge, reason: str, count: int):
        tries = "the only request" if count == 1 else f"all {count} requests"
        super().__init__(
            f"the judge at {judge.url} could not be reached ({tries} failed): {reason}\n"
            f"  Is the server running (e.g. `ollama serve`) and the model pulled "
            f"(`ollama pull {judge.model}`)? Or unset evaluate.judge_url to skip the judge."
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
            log.warning("judge request to %s failed: %s", judge.url, e)
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


def judge_from_params(
    url: str | None,
    model: str,
    client: HttpClient | None = None,
    *,
    seed: int = 123,
    temperature: float = 0.0,
    num_ctx: int = 2048,
) -> Judge | None:
    """A :class:`Judge` for ``url``, or None (logged, not an error) when no URL is configured."""
    if not url:
        log.info("no judge configured (evaluate.judge_url); skipping the judge")
        return None
    return Judge(url, model, client, seed=seed, temperature=temperature, num_ctx=num_ctx)
