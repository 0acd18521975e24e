"""Stage finetune_dpo (chapter 7's bonus): models/instruct aligned with Direct Preference
Optimization on the preference data.

Splits instruction-data-with-preference.json as chapter 7 splits its data (instruct's keys: the
same test entries, checked against data/instruct/test.json) into data/dpo/ (train, val, test),
trains models/dpo/ against a frozen copy of models/instruct (scored once per pair: the reference's
values are remembered), answers the test split
(data/dpo/test-responses.json), and writes DVCLive metrics and curves under metrics/dpo/ (DPO
loss, chosen and rejected rewards, reward margin and accuracy), a response after the epoch
(samples.json), and the book's figures plots/dpo/loss.png and plots/dpo/reward-margins.png.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from scratchgpt.book import lora
from scratchgpt.book.dpo import MEASURES, PREFERENCE_KEYS, Collate, Keyed, Objective, PreferenceDataset
from scratchgpt.book.instruct import (
    SPLITS,
    EntryError,
    answer,
    epoch_sample,
    format_input,
    load_entries,
    split_entries,
)
from scratchgpt.book.loader import Evaluator, seed_everything
from scratchgpt.book.train import TooLittleData
from scratchgpt.device import autocast
from scratchgpt.files import atomic_dir, write_json
from scratchgpt.formats.finetuned import load_finetuned, save_finetuned
from scratchgpt.formats.modeldir import load_tokenizer, save_tokenizer
from scratchgpt.plumbing import paths, stage, training
from scratchgpt.plumbing.datasets import verify_dataset
from scratchgpt.plumbing.plots import plot_curves, plot_losses
from scratchgpt.plumbing.sections.download import DownloadParams
from scratchgpt.plumbing.sections.dpo import DPOParams
from scratchgpt.plumbing.sections.instruct import InstructParams

log = logging.getLogger("finetune_dpo")

PREFERENCE_FILE = "instruction-data-with-preference.json"
CURVES = [f"{split}_{name}" for name in MEASURES for split in ("train", "val")]


def margin(split: str) -> Callable[[dict[str, Any]], float]:
    """The reward margin of ``split`` in an evaluation point: chosen minus rejected reward."""
    return lambda point: point[f"{split}_chosen_reward"] - point[f"{split}_rejected_reward"]


MARGINS = {f"{split}_reward_margin": margin(split) for split in ("train", "val")}


def same_test_split(test: list[dict[str, str]], instruct_test: list[dict[str, str]], where: str) -> None:
    """The preference test entries must be chapter 7's (same instruction, input and output)."""
    keys = ("instruction", "input", "output")
    ours, theirs = [[tuple(e[k] for k in keys) for e in part] for part in (test, instruct_test)]
    if ours != theirs:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise EntryError(
            f"{where}: the preference test split is not chapter 7's ({len(ours)} against {len(theirs)} entries in "
            f"{paths.INSTRUCT_DATA / 'test.json'}, first difference at test entry {first}); both files must list "
            "the same instructions in the same order"
        )


def split(st: stage.Stage, run: training.TrainingRun) -> tuple[dict[str, list[dict[str, str]]], Path]:
    """The preference pairs split with the instruct section's keys (the test split must be
    chapter 7's), written to data/dpo/."""
    split_keys, raw = st.params.instruct, paths.raw("preferences")
    verify_dataset("preferences", st.params.download.datasets["preferences"], raw)
    entries = load_entries(raw / PREFERENCE_FILE, PREFERENCE_KEYS)
    try:
        cut = split_entries(
            entries, split_keys.train_frac, split_keys.test_frac, split_keys.shuffle, split_keys.split_seed
        )
    except EntryError as e:
        raise EntryError(f"{raw / PREFERENCE_FILE}: {e}") from None
    parts = dict(zip(SPLITS, cut))
    same_test_split(parts["test"], load_entries(paths.INSTRUCT_DATA / "test.json"), str(raw / PREFERENCE_FILE))
    data_dir = st.out(paths.DPO_DATA)
    run.write_splits(data_dir, parts, "preference data")
    return parts, data_dir


def pairs_with_responses(run: training.TrainingRun, parts: dict, tokenizer: Any, collate: Collate) -> dict:
    """The training and validation pairs that keep a response token within the length limit,
    keyed (the validation keys after the training ones) for the reference's remembered values."""
    data: dict[str, Keyed] = {}
    for name in ("train", "val"):  # test: answered after training
        pairs = PreferenceDataset(parts[name], tokenizer)
        keep = [i for i, item in enumerate(pairs.items) if collate.has_response(item)]
        if not keep:
            raise TooLittleData(
                f"{name}: none of the {len(pairs)} pairs keeps a response token within {collate.allowed_max_length} "
                "tokens; raise dpo.allowed_max_length or the model's context, or set dpo.mask_prompt: false"
            )
        if len(keep) < len(pairs) and run.is_main:
            log.warning(
                "%s: %d of %d pairs keep no response token within %d tokens and are left out",
                name,
                len(pairs) - len(keep),
                len(pairs),
                collate.allowed_max_length,
            )
        data[name] = Keyed(Subset(pairs, keep), first_key=sum(len(d) for d in data.values()))
    return data


def measurer(evaluator: Evaluator, objective: Objective) -> Callable[..., dict[str, float]]:
    """The DPO measures of a split (``n_batches`` of it, or all), with the reward margin."""

    def measured(split_name: str, n_batches: int | None, draw: bool = True) -> dict[str, float]:
        values = dict(zip(MEASURES, evaluator.measure(split_name, n_batches, objective.measure, draw)))
        return {**values, "reward_margin": values["chosen_reward"] - values["rejected_reward"]}

    return measured


def summarize(start: dict, final: dict, progress: Any, pairs: int, trainable: int, parameters: int) -> dict[str, Any]:
    """metrics/dpo/metrics.json: the start, the end and the run's size."""
    return {
        "dpo_initial_train_loss": start["train"]["loss"],
        "dpo_initial_val_loss": start["val"]["loss"],
        "dpo_initial_val_reward_margin": start["val"]["reward_margin"],
        **{f"dpo_val_{k}": v for k, v in final.items()},
        "dpo_steps": progress.step,
        "dpo_pairs": pairs,
        "dpo_tokens_seen": progress.tokens_seen,
        "dpo_trainable_parameters": trainable,
        "dpo_parameters": parameters,
    }


def measure_start(run: training.TrainingRun, policy: Any, measured: Callable) -> dict[str, dict[str, float]]:
    """Losses and reward margins before DPO, measured as the book does (seeded before and after)."""
    p = run.params
    seed_everything(p.seed)
    policy.eval()
    start = {name: measured(name, p.eval_iter) for name in ("train", "val")}
    seed_everything(p.seed)
    if run.is_main:
        log.info(
            "before DPO: training loss %.3f, validation loss %.3f, reward margins %.3f and %.3f",
            start["train"]["loss"],
            start["val"]["loss"],
            start["train"]["reward_margin"],
            start["val"]["reward_margin"],
        )
    return start


def finetune(run: training.TrainingRun, policy: Any, objective: Objective, data: dict, collate: Collate, sample: Any):
    """The DPO loop, with the answer to the book's sample prompt after each epoch."""
    return run.fit(
        policy,
        data["train"],
        data["val"],
        loss_fn=objective.loss,
        curves=[*CURVES, "tokens_seen", "lr"],
        epochs_file="samples.json",
        derived=MARGINS,
        echo=lambda e: f"epoch {e['epoch']} response to the third validation prompt: {e['text']!r}",
        epoch_end=sample,
        collate_fn=collate,
        measures=(MEASURES, objective.measure),
        fingerprint_exclude=("response_tokens", "response_batch"),
    )


def save(st: stage.Stage, run: training.TrainingRun, policy: Any, tokenizer: Any, history: list) -> None:
    """The loss and reward-margin figures and the model."""
    history = [{**point, **{k: f(point) for k, f in MARGINS.items()}} for point in history]
    plot_losses(history, st.out(paths.PLOTS / "dpo" / "loss.png"), title="preference tuning (DPO): loss")
    plot_curves(
        history,
        list(MARGINS),
        st.out(paths.PLOTS / "dpo" / "reward-margins.png"),
        ylabel="Reward margins",
        second_axis=("tokens_seen", "Tokens seen"),
        title="preference tuning (DPO): reward margins",
    )
    with atomic_dir(st.out(paths.DPO)) as staging:
        meta = {
            "tokenizer": save_tokenizer(tokenizer, staging),
            "instruct": {"format": "alpaca"},
            "dpo": {"beta": run.params.beta},
            **run.model_meta,
        }
        save_finetuned(policy, staging, run.params, paths.INSTRUCT, meta, lands_at=paths.DPO)


def main(st: stage.Stage) -> dict[str, Any]:
    run = training.start(st, "dpo")
    p = run.params
    parts, data_dir = split(st, run)
    tokenizer = load_tokenizer(paths.INSTRUCT)
    policy = load_finetuned(paths.INSTRUCT, device=run.device)
    reference = load_finetuned(paths.INSTRUCT, device=run.device)  # frozen by the objective
    limit = min(p.allowed_max_length, policy.config.context_length)
    collate = Collate(allowed_max_length=limit, mask_prompt=p.mask_prompt)
    data = pairs_with_responses(run, parts, tokenizer, collate)
    lora.setup(policy, p)  # method lora: everything frozen, adapters train
    objective = Objective(reference, p.beta)
    with autocast(run.device, p.precision):
        objective.remember(list(data.values()), collate, p.batch_size, run.device)
    evaluator = Evaluator(policy, data, p.batch_size, objective.loss, run.device, collate, p.precision)
    n_trainable = policy.num_parameters(trainable_only=True)
    measured = measurer(evaluator, objective)
    start = measure_start(run, policy, measured)
    sample_prompt = format_input(parts["val"][2 if len(parts["val"]) > 2 else 0])  # the book's start_context
    progress = finetune(run, policy, objective, data, collate, epoch_sample(tokenizer, sample_prompt))
    summary: dict[str, Any] = {}
    if run.is_main:
        with autocast(run.device, p.precision):
            responses = answer(policy, tokenizer, parts["test"], p.response_tokens, p.response_batch)
        write_json(data_dir / "test-responses.json", responses)
        final = measured("val", None, draw=False)
        summary = summarize(start, final, progress, len(data["train"]), n_trainable, policy.num_parameters())
        run.finish(summary)
        save(st, run, policy, tokenizer, progress.history)
        log.info(
            "validation DPO loss %.3f → %.3f, reward margin %.3f, accuracy %.3f; %d test responses in %s",
            start["val"]["loss"],
            final["loss"],
            final["reward_margin"],
            final["reward_accuracy"],
            len(responses),
            paths.DPO_DATA / "test-responses.json",
        )
    run.dist.barrier()
    return summary


if __name__ == "__main__":
    stage.run(main, DPOParams, InstructParams, DownloadParams)
