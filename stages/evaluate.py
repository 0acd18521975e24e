"""Stage evaluate (chapters 6–7): test-split scores of the finetuned models.

Writes metrics/evaluate.json: the classifier's accuracy, precision, recall and F1; for the
instruction model (instruct_*) and the DPO model (dpo_*), the test loss and perplexity on
chapter 7's test split, the ROUGE-L and exact match of their test responses and, when
evaluate.judge_url names a chat server speaking evaluate.judge_api (ollama or openai), the
judge's mean score (*_judge_score). The per-response scores go to
data/evaluate/instruct-scores.json and data/evaluate/dpo-scores.json. The judge's API key (from
the environment variable that evaluate.judge_api_key_env names) reaches only the request
headers, never an output.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from scratchgpt.book.classify import SpamDataset, predict, scores
from scratchgpt.book.instruct import (
    Collate,
    InstructionDataset,
    format_input,
    load_answered,
    load_entries,
)
from scratchgpt.book.loader import Evaluator, lm_loss
from scratchgpt.book.scoring import exact_match, rouge_l_f1, summarize_scores
from scratchgpt.device import check_precision, pick_device
from scratchgpt.files import write_json
from scratchgpt.formats.classifier import load_classifier
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.modeldir import load_tokenizer
from scratchgpt.plumbing import paths, stage
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.judge import Judge, JudgeSettings, judge_each, judge_from_params
from scratchgpt.plumbing.live import perplexity
from scratchgpt.plumbing.sections.download import DownloadParams
from scratchgpt.plumbing.sections.evaluate import EvaluateParams
from scratchgpt.plumbing.sections.instruct import InstructParams


def score_responses(
    st: stage.Stage, model_dir: Path, responses: Path, judge: Judge | None, device: torch.device
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An instruction model's test loss and perplexity on chapter 7's test split, and the scores
    of its test responses (mean over them, and per response)."""
    params, p = st.params, st.params.evaluate
    model, tokenizer = load_finetuned(model_dir, device), load_tokenizer(model_dir)
    collate = Collate(
        allowed_max_length=min(params.instruct.allowed_max_length, model.config.context_length),
        mask_prompt=params.instruct.mask_prompt,
    )
    data = {"test": InstructionDataset(load_entries(paths.INSTRUCT_DATA / "test.json"), tokenizer)}
    test_loss = Evaluator(model, data, p.batch_size, lm_loss, device, collate, p.precision).loss(
        "test", None, draw=False
    )
    answered = load_answered(responses)
    per_item = [
        {
            "rouge_l": rouge_l_f1(e["output"], e["model_response"]),
            "exact_match": exact_match(e["output"], e["model_response"]),
        }
        for e in answered
    ]
    found: dict[str, Any] = {
        "test_loss": test_loss,
        "test_perplexity": perplexity(test_loss),
        "rouge_l": statistics.fmean(x["rouge_l"] for x in per_item) if per_item else 0.0,
        "exact_match": statistics.fmean(x["exact_match"] for x in per_item) if per_item else 0.0,
        "responses": len(per_item),
    }
    if judge is not None:
        judged = judge_each(judge, [(format_input(e), e["output"], e["model_response"]) for e in answered])
        for entry, score in zip(per_item, judged):
            entry["judge_score"] = score
        found |= {k: v for k, v in summarize_scores(judged).items() if v is not None}
    return found, [{"instruction": e["instruction"], **x} for e, x in zip(answered, per_item)]


def main(st: stage.Stage) -> dict[str, Any]:
    params = st.params
    p = params.evaluate
    device = pick_device(p.device)
    check_precision(p.precision, device)
    metrics: dict[str, Any] = {}

    model, tokenizer, head = load_classifier(paths.CLASSIFIER, device)
    test = SpamDataset(paths.SPAM / "test.csv", tokenizer, head.max_length)
    s = scores(*predict(model, test, head.position, p.batch_size, head.pad_id, p.precision))
    metrics |= {f"classifier_test_{k}": s[k] for k in ("accuracy", "precision", "recall", "f1")}

    client = HttpClient(
        params.download.http.model_copy(update={"read_timeout": p.judge_timeout}), allow_http=p.judge_allow_http
    )
    judge = judge_from_params(JudgeSettings.from_params(p), client)
    for prefix, model_dir, data_dir in (
        ("instruct", paths.INSTRUCT, paths.INSTRUCT_DATA),
        ("dpo", paths.DPO, paths.DPO_DATA),
    ):
        found, per_item = score_responses(st, model_dir, data_dir / "test-responses.json", judge, device)
        metrics |= {f"{prefix}_{k}": v for k, v in found.items()}
        write_json(st.out(paths.EVALUATE_DATA / f"{prefix}-scores.json"), per_item)
    write_json(st.out(paths.METRICS / "evaluate.json"), metrics)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return metrics


if __name__ == "__main__":
    stage.run(main, EvaluateParams, InstructParams, DownloadParams)
