"""Stage finetune_instruct (chapter 7): models/base finetuned to follow instructions.

Splits instruction-data.json into data/instruct/ (train, test, val), trains models/instruct/,
answers the test split (data/instruct/test-responses.json), and writes DVCLive metrics and
curves under metrics/instruct/ with a response after each epoch (samples.json), and the book's
loss figure plots/instruct/loss.png.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scratchgpt.book import lora
from scratchgpt.book.instruct import (
    SPLITS,
    Collate,
    EntryError,
    InstructionDataset,
    answer,
    epoch_sample,
    format_input,
    load_entries,
    split_entries,
)
from scratchgpt.book.loader import Evaluator, lm_loss, seed_everything
from scratchgpt.device import autocast
from scratchgpt.files import atomic_dir, write_json
from scratchgpt.formats.finetuned import save_finetuned
from scratchgpt.formats.modeldir import (
    load_model,
    load_tokenizer,
    save_tokenizer,
)
from scratchgpt.plumbing import paths, stage, training
from scratchgpt.plumbing.datasets import verify_dataset
from scratchgpt.plumbing.live import perplexity
from scratchgpt.plumbing.plots import plot_losses
from scratchgpt.plumbing.sections.download import DownloadParams
from scratchgpt.plumbing.sections.instruct import InstructParams

log = logging.getLogger("finetune_instruct")


def split(st: stage.Stage, run: training.TrainingRun) -> tuple[dict[str, list[dict[str, str]]], Path]:
    """Chapter 7's train, validation and test entries, written to data/instruct/."""
    p = run.params
    raw = paths.raw("instructions")
    verify_dataset("instructions", st.params.download.datasets["instructions"], raw)
    entries = load_entries(raw / "instruction-data.json")
    try:
        parts = dict(zip(SPLITS, split_entries(entries, p.train_frac, p.test_frac, p.shuffle, p.split_seed)))
    except EntryError as e:
        raise EntryError(f"{raw / 'instruction-data.json'}: {e}") from None
    data_dir = st.out(paths.INSTRUCT_DATA)
    run.write_splits(data_dir, parts, "instruction data")
    return parts, data_dir


def measure_start(run: training.TrainingRun, model: Any, evaluator: Evaluator) -> dict[str, float]:
    """The losses before finetuning, measured as the book does (seeded before and after)."""
    p = run.params
    seed_everything(p.seed)
    model.eval()
    start = {
        "initial_train_loss": evaluator.loss("train", p.eval_iter),
        "initial_val_loss": evaluator.loss("val", p.eval_iter),
    }
    seed_everything(p.seed)
    if run.is_main:
        log.info("before finetuning: training loss %.3f, validation loss %.3f", *start.values())
    return start


def finetune(run: training.TrainingRun, model: Any, tokenizer: Any, data: dict, collate_fn: Collate, prompt: str):
    """Chapter 7's loop, with the answer to the first validation prompt after each epoch."""
    return run.fit(
        model,
        data["train"],
        data["val"],
        loss_fn=lm_loss,
        curves=["train_loss", "val_loss", "tokens_seen", "lr"],
        epochs_file="samples.json",
        derived=training.VAL_PERPLEXITY,
        echo=lambda e: f"epoch {e['epoch']} response to the first validation prompt: {e['text']!r}",
        epoch_end=epoch_sample(tokenizer, prompt),
        collate_fn=collate_fn,
        fingerprint_exclude=("response_tokens", "response_batch"),
    )


def save(st: stage.Stage, run: training.TrainingRun, model: Any, tokenizer: Any, summary: dict, history: list) -> None:
    """The metrics, the loss figure and the model."""
    run.finish(summary)
    plot_losses(history, st.out(paths.PLOTS / "instruct" / "loss.png"), title="instruction finetuning")
    with atomic_dir(st.out(paths.INSTRUCT)) as staging:
        meta = {"tokenizer": save_tokenizer(tokenizer, staging), "instruct": {"format": "alpaca"}, **run.model_meta}
        save_finetuned(model, staging, run.params, paths.BASE, meta, lands_at=paths.INSTRUCT)


def main(st: stage.Stage) -> dict[str, Any]:
    run = training.start(st, "instruct")
    p = run.params
    parts, data_dir = split(st, run)
    tokenizer = load_tokenizer(paths.BASE)
    model = load_model(paths.BASE, device=run.device)
    collate_fn = Collate(
        allowed_max_length=min(p.allowed_max_length, model.config.context_length), mask_prompt=p.mask_prompt
    )
    data = {name: InstructionDataset(parts[name], tokenizer) for name in ("train", "val")}  # test: answered below
    lora.setup(model, p)  # method lora: everything frozen, adapters train
    evaluator = Evaluator(model, data, p.batch_size, lm_loss, run.device, collate_fn, p.precision)
    n_trainable = model.num_parameters(trainable_only=True)
    start = measure_start(run, model, evaluator)
    progress = finetune(run, model, tokenizer, data, collate_fn, format_input(parts["val"][0]))
    summary: dict[str, Any] = {}
    if run.is_main:
        with autocast(run.device, p.precision):
            responses = answer(model, tokenizer, parts["test"], p.response_tokens, p.response_batch)
        write_json(data_dir / "test-responses.json", responses)
        final_val = evaluator.loss("val", None, draw=False)
        summary = {
            **start,
            "finetuned_val_loss": final_val,
            "finetuned_val_perplexity": perplexity(final_val),
            "steps": progress.step,
            "tokens_seen": progress.tokens_seen,
            "trainable_parameters": n_trainable,
            "parameters": model.num_parameters(),
        }
        save(st, run, model, tokenizer, summary, progress.history)
        log.info(
            "validation loss %.3f → %.3f; %d test responses in %s",
            start["initial_val_loss"],
            final_val,
            len(responses),
            paths.INSTRUCT_DATA / "test-responses.json",
        )
    run.dist.barrier()
    return summary


if __name__ == "__main__":
    stage.run(main, InstructParams, DownloadParams)
