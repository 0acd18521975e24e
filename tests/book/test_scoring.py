"""Scoring instruction responses offline: ROUGE-L, exact match, the judge's prompt and score parsing."""

from __future__ import annotations

import logging

import pytest

from scratchgpt.book.scoring import (
    exact_match,
    judge_prompt,
    mean_rouge_l,
    parse_score,
    rouge_l_f1,
)

# ---------------------------------------------------------------------------------------------
# ROUGE-L


def test_rouge_identical_and_disjoint():
    assert rouge_l_f1("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l_f1("the cat sat on the mat", "dogs bark loudly") == 0.0


def test_rouge_partial_hand_computed():
    # LCS = "the cat on the mat" (5 tokens): P = 5/5, R = 5/6, F1 = 2PR/(P+R) = 10/11
    assert rouge_l_f1("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    # Order matters for an LCS: reversed, only one token lines up: P = R = 1/3
    assert rouge_l_f1("a b c", "c b a") == pytest.approx(1 / 3)


def test_rouge_stems_and_ignores_case():
    assert rouge_l_f1("He runs", "he running") == pytest.approx(1.0)
    assert rouge_l_f1("running", "run") == pytest.approx(1.0)


def test_mean_rouge_l():
    pairs = [("the cat sat on the mat", "the cat on the mat"), ("x y", "x y"), ("a", "b")]
    assert mean_rouge_l(iter(pairs)) == pytest.approx((10 / 11 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="no"):
        mean_rouge_l([])


# ---------------------------------------------------------------------------------------------
# exact match


@pytest.mark.parametrize(
    "reference, candidate",
    [
        ("The Cat", "the cat"),
        ("  the\tcat \n sat ", "the cat sat"),
        ("ＡＢＣ １２３", "abc 123"),  # full-width forms (NFKC)
        ("ﬁle", "file"),  # ligature (NFKC)
        ("Straße", "STRASSE"),  # case folding, not just lower()
    ],
)
def test_exact_match_equal(reference, candidate):
    assert exact_match(reference, candidate)


@pytest.mark.parametrize(
    "reference, candidate",
    [("the cat", "the cat."), ("the cat", "thecat"), ("the cat", "the cats"), ("", "x")],
)
def test_exact_match_different(reference, candidate):
    assert not exact_match(reference, candidate)


# ---------------------------------------------------------------------------------------------
# the judge's prompt and reply


@pytest.mark.parametrize(
    "reply, score",
    [
        ("85", 85),
        (" 85\n", 85),
        ("85.", 85),
        ("85/100", 85),
        ("`90`", 90),
        ('"70"', 70),
        ("0", 0),
        ("100", 100),
        ("101", None),
        ("-3", None),
        ("eighty", None),
        ("Score: 85, because...", None),
        ("85.5", None),
        ("85 90", None),
        ("", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_parse_score_warns_with_shortened_reply(caplog):
    caplog.set_level(logging.WARNING, logger="scratchgpt.book.scoring")
    assert parse_score("The response is good. " * 50) is None
    (record,) = caplog.records
    assert "not a score" in record.getMessage()
    assert "..." in record.getMessage() and len(record.getMessage()) < 200


def test_judge_prompt_is_the_books():
    prompt_text = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile.\n\n"
        "### Input:\nThe car is very fast."
    )
    expected = (
        "Given the input `" + prompt_text + "` and correct output `The car is as fast as lightning.`, "
        "score the model response `The car is as fast as a cheetah.` on a scale from 0 to 100, "
        "where 100 is the best score. Respond with the integer number only."
    )
    reference, response = "The car is as fast as lightning.", "The car is as fast as a cheetah."
    assert judge_prompt(prompt_text, reference, response) == expected
