"""Scoring instruction responses (chapter 7): offline metrics and an optional LLM judge.

Offline, with nothing to download:

* :func:`rouge_l_f1` / :func:`mean_rouge_l`: ROUGE-L F1 from Google's ``rouge-score`` package
  (longest common subsequence of tokens, Porter stemming on). Its tokenizer lowercases and keeps
  only ASCII letters and digits, so text in other scripts tokenizes to nothing and scores 0.
* :func:`exact_match`: equality after Unicode NFKC, case folding and collapsing whitespace.

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

import functools
import json
import logging
import re
import statistics
import unicodedata
from collections.abc import Iterable
from typing import Any

from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from .download import HttpClient, SourceFailed, check_remote_url
from .errors import PipelineError

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3
_QUOTES = "`'\""
_SCORE = re.compile(r"([0-9]{1,3})(?:\s*/\s*100)?")
_SHORT = 120

# ---------------------------------------------------------------------------------------------
# Offline metrics


@functools.cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(reference: str, candidate: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference``, from 0.0 (nothing shared) to 1.0.

    Tokens are lowercased ASCII letters and digits, Porter-stemmed ("running" matches "run").
    Text with no such token (empty, punctuation only, non-Latin scripts) scores 0.0.
    """
    return float(_scorer().score(reference, candidate)["rougeL"].fmeasure)


def mean_rouge_l(pairs: Iterable[tuple[str, str]]) -> float:
    """Mean ROUGE-L F1 over (reference, candidate) pairs; ValueError when there are none."""
    scores = [rouge_l_f1(reference, candidate) for reference, candidate in pairs]
    if not scores:
        raise ValueError("mean_rouge_l: no (reference, candidate) pairs to score")
    return statistics.fmean(scores)


def normalize_text(text: str) -> str:
    """The form :func:`exact_match` compares: NFKC, case folded (then NFKC again, as case folding
    can denormalize), runs of whitespace turned into one space, ends stripped."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def exact_match(reference: str, candidate: str) -> bool:
    """True when both texts are equal after :func:`normalize_text`.

    So "The  Cat\\n" matches "the cat", full-width "ＡＢＣ" matches "abc" and "Straße" matches
    "STRASSE"; punctuation still counts ("cat." does not match "cat").
    """
    return normalize_text(reference) == normalize_text(candidate)


# ---------------------------------------------------------------------------------------------
# The judge's prompt and reply


def judge_prompt(prompt_text: str, reference: str, response: str) -> str:
    """The book's judge prompt; ``prompt_text`` is the entry's formatted Alpaca input."""
    return (
        f"Given the input `{prompt_text}` "
        f"and correct output `{reference}`, "
        f"score the model response `{response}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


def _shorten(text: str, limit: int = _SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(text: str) -> str:
    """Strip whitespace and matching quotes or backticks around ``text``."""
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        text = text[1:-1].strip()
    return text


def parse_score(text: str) -> int | None:
    """The judge's score: the reply must be an integer from 0 to 100 and nothing else.

    Whitespace, surrounding quotes or backticks, one trailing "." and a "/100" are tolerated
    ("`90`", "85.", "85/100"); any other text ("Score: 85", "eighty", "85.5", "101") gives None
    and a warning, as strict as the book's ``int()``.
    """
    core = _unwrap(text)
    if core.endswith("."):
        core = _unwrap(core[:-1])
    match = _SCORE.fullmatch(core)
    if match and int(match.group(1)) <= 100:
        return int(match.group(1))
    log.warning("judge reply is not a score from 0 to 100: %r", _shorten(text))
    return None


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
        log.warning("judge reply is not JSON: %r", _shorten(body.decode("utf-8", "replace")))
        return None
    errors = [o["error"] for o in objects if isinstance(o, dict) and o.get("error")]
    if errors:
        log.warning("judge reported an error: %s", _shorten(str(errors[0])))
        return None
    parts = [_content_of(o) for o in objects]
    text = "".join(part for part in parts if part is not None)
    if None in parts:
        log.warning("judge reply has no message.content: %r", _shorten(body.decode("utf-8", "replace")))
        return None
    if len(objects) > 1 and not (isinstance(objects[-1], dict) and objects[-1].get("done") is True):
        log.warning("judge's streamed reply ended before \"done\": %r", _shorten(text))
        return None
    return text


# ---------------------------------------------------------------------------------------------
# The judge


class Judge:
    """A chat model behind an Ollama-compatible ``/api/chat`` URL that scores responses.

    Requests go through :class:`~scratchgpt.download.HttpClient` (timeouts, retries, backoff);
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
        :class:`~scratchgpt.download.SourceFailed` when the request fails after retries."""
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


def summarize_scores(scores: list[int | None]) -> dict[str, float | int | None]:
    """``judge_score`` (mean over the scored, None when none were), ``judge_scored``,
    ``judge_unscored``."""
    scored = [s for s in scores if s is not None]
    return {
        "judge_score": statistics.fmean(scored) if scored else None,
        "judge_scored": len(scored),
        "judge_unscored": len(scores) - len(scored),
    }


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


# ---------------------------------------------------------------------------------------------
# The evaluate stage


def run(st: Any) -> dict[str, Any]:
    """Score both finetuned models on their test splits; write metrics/evaluate.json and the
    per-response scores (data/evaluate/instruct-scores.json) through the stage ``st``."""
    import torch

    from . import paths
    from .classify import SpamDataset, load_classifier, predict, scores
    from .config import HttpParams
    from .files import write_json
    from .instruct import Collate, InstructionDataset, format_input, load_entries
    from .live import perplexity
    from .model import load_model
    from .tokenizer import load_tokenizer
    from .train import Evaluator, lm_loss

    params = st.params
    p = params.evaluate
    device = torch.device("cpu")
    metrics: dict[str, Any] = {}

    model, tokenizer, head = load_classifier(paths.CLASSIFIER, device)
    test = SpamDataset(paths.SPAM / "test.csv", tokenizer, head.max_length)
    s = scores(*predict(model, test, head.position, p.batch_size, head.pad_id))
    metrics |= {f"classifier_test_{k}": s[k] for k in ("accuracy", "precision", "recall", "f1")}

    model, tokenizer = load_model(paths.INSTRUCT, device), load_tokenizer(paths.INSTRUCT)
    test_entries = load_entries(paths.INSTRUCT_DATA / "test.json")
    collate = Collate(allowed_max_length=min(params.instruct.allowed_max_length, model.config.context_length),
                      mask_prompt=params.instruct.mask_prompt)  # fmt: skip
    data = {"test": InstructionDataset(test_entries, tokenizer)}
    test_loss = Evaluator(model, data, p.batch_size, lm_loss, device, collate).loss("test", None, draw=False)
    answered = load_entries_with_responses(paths.INSTRUCT_DATA / "test-responses.json")
    per_item = [{"rouge_l": rouge_l_f1(e["output"], e["model_response"]),
                 "exact_match": exact_match(e["output"], e["model_response"])} for e in answered]  # fmt: skip
    metrics |= {
        "instruct_test_loss": test_loss,
        "instruct_test_perplexity": perplexity(test_loss),
        "instruct_rouge_l": statistics.fmean(x["rouge_l"] for x in per_item) if per_item else 0.0,
        "instruct_exact_match": statistics.fmean(x["exact_match"] for x in per_item) if per_item else 0.0,
        "instruct_responses": len(per_item),
    }
    client = HttpClient(HttpParams(**{**params.download.http.model_dump(), "read_timeout": p.judge_timeout}))
    judge = judge_from_params(p.judge_url, p.judge_model, client, seed=p.judge_seed,
                              temperature=p.judge_temperature, num_ctx=p.judge_num_ctx)  # fmt: skip
    if judge is not None:
        items = [(format_input(e), e["output"], e["model_response"]) for e in answered]
        judged = judge_each(judge, items)
        for entry, score in zip(per_item, judged):
            entry["judge_score"] = score
        summary = summarize_scores(judged)
        metrics |= {k: v for k, v in summary.items() if v is not None}
    write_json(st.out(paths.EVALUATE_DATA / "instruct-scores.json"),
               [{"instruction": e["instruction"], **x} for e, x in zip(answered, per_item)])  # fmt: skip
    write_json(st.out(paths.METRICS / "evaluate.json"), metrics)
    return metrics


def load_entries_with_responses(path: Any) -> list[dict[str, str]]:
    """Test entries with a ``model_response`` string each (the finetune_instruct stage's output)."""
    from .instruct import EntryError, load_entries

    entries = load_entries(path)
    for i, entry in enumerate(entries):
        if not isinstance(entry.get("model_response"), str):
            raise EntryError(f"{path}: entry {i}: missing key 'model_response' (a string)")
    return entries
