"""Scoring instruction responses (chapter 7), with nothing to download:

* :func:`rouge_l_f1` / :func:`mean_rouge_l`: ROUGE-L F1 from Google's ``rouge-score`` package
  (longest common subsequence of tokens, Porter stemming on). Its tokenizer lowercases and keeps
  only ASCII letters and digits, so text in other scripts tokenizes to nothing and scores 0.
* :func:`exact_match`: equality after Unicode NFKC, case folding and collapsing whitespace.
* the LLM judge's side, as in the book: :func:`judge_prompt` asks for a score from 0 to 100,
  :func:`parse_score` accepts only the bare integer, :func:`summarize_scores` averages them.
  Asking a server is :mod:`scratchgpt.plumbing.judge`.
"""

from __future__ import annotations

import functools
import logging
import re
import statistics
import unicodedata
from collections.abc import Iterable

from rouge_score import rouge_scorer

log = logging.getLogger(__name__)

_QUOTES = "`'\""
_SCORE = re.compile(r"([0-9]{1,3})(?:\s*/\s*100)?")
_SHORT = 120

# ---------------------------------------------------------------------------------------------
# Overlap metrics


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


def shorten(text: str, limit: int = _SHORT) -> str:
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
    log.warning("judge reply is not a score from 0 to 100: %r", shorten(text))
    return None


def summarize_scores(scores: list[int | None]) -> dict[str, float | int | None]:
    """``judge_score`` (mean over the scored, None when none were), ``judge_scored``,
    ``judge_unscored``."""
    scored = [s for s in scores if s is not None]
    return {
        "judge_score": statistics.fmean(scored) if scored else None,
        "judge_scored": len(scored),
        "judge_unscored": len(scores) - len(scored),
    }
