"""Stage finetune_classifier (chapter 6, appendix E): models/base finetuned into a spam classifier.

Splits the SMS Spam Collection into data/spam/ (train, validation, test CSVs), trains the
classifier models/classifier/ (all weights, the last blocks, the head, or LoRA adapters), and
writes DVCLive metrics under metrics/classifier/ (accuracy, precision, recall, F1 per split; the
test confusion matrix) and the book's loss and accuracy figures under plots/classifier/.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from scratchgpt.book import lora
from scratchgpt.book.classify import (
    LABELS,
    Head,
    SpamDataset,
    accuracy_and_loss,
    loss_fn,
    predict,
    prepare_splits,
    scores,
    to_classifier,
)
from scratchgpt.book.loader import Evaluator, seed_everything
from scratchgpt.book.tokenizer import GPT2_EOT_ID
from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir, write_json
from scratchgpt.formats.finetuned import save_finetuned
from scratchgpt.formats.modeldir import (
    CONFIG_FILE,
    load_model,
    load_tokenizer,
    read_model_config,
    save_tokenizer,
)
from scratchgpt.plumbing import paths, stage, training
from scratchgpt.plumbing.datasets import verify_dataset
from scratchgpt.plumbing.plots import plot_curves
from scratchgpt.plumbing.sections.classifier import ClassifierParams
from scratchgpt.plumbing.sections.download import DownloadParams

log = logging.getLogger("finetune_classifier")

SPLITS = ("train", "val", "test")


def check_max_length(max_length: int, base_dir: Path) -> None:
    """classifier.max_length (0: the longest message) must fit the base model's context."""
    context = read_model_config(base_dir)[0].context_length
    if max_length > context:
        raise PipelineError(
            f"classifier.max_length: must be <= the base model's context length ({context}, "
            f"{base_dir / CONFIG_FILE}), got {max_length}"
        )


def split(st: stage.Stage, run: training.TrainingRun) -> Path:
    """The SMS Spam Collection split into data/spam/ (by the main process; the others wait)."""
    p = run.params
    verify_dataset("spam", st.params.download.datasets["spam"], paths.raw("spam"))
    spam = st.out(paths.SPAM)
    if run.is_main:
        counts = prepare_splits(
            paths.raw("spam") / "SMSSpamCollection",
            spam,
            quoting=p.quoting,
            balanced=p.balance,
            train_frac=p.train_frac,
            val_frac=p.val_frac,
            seed=p.split_seed,
        )
        log.info("SMS Spam Collection: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    run.dist.barrier()
    return spam


def load_splits(spam: Path, tokenizer: Any, max_length: int, limit: int) -> dict[str, SpamDataset]:
    """The three splits, padded to the longest training message (cut to the context ``limit``)."""
    train_data = SpamDataset(spam / "train.csv", tokenizer, max_length or None)
    if train_data.max_length > limit:
        log.warning("messages of up to %d tokens are truncated to the context length %d", train_data.max_length, limit)
        train_data.max_length = limit
    return {
        "train": train_data,
        "val": SpamDataset(spam / "validation.csv", tokenizer, train_data.max_length),
        "test": SpamDataset(spam / "test.csv", tokenizer, train_data.max_length),
    }


def finetune(run: training.TrainingRun, model: Any, data: dict[str, SpamDataset], head: Head) -> Any:
    """Chapter 6's loop, with the book's accuracy (and loss) on both splits after each epoch."""
    p = run.params
    measure = accuracy_and_loss(head.position, head.pad_id)

    def epoch_end(m: nn.Module, ev: Evaluator) -> dict[str, Any]:
        train_acc, train_loss = ev.measure("train", p.eval_iter, measure)  # the book's accuracy, and loss
        val_acc, val_loss = ev.measure("val", p.eval_iter, measure)
        return {
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "train_loss_epoch": train_loss,
            "val_loss_epoch": val_loss,
        }

    return run.fit(
        model,
        data["train"],
        data["val"],
        loss_fn=loss_fn(head.position, head.pad_id),
        curves=["train_loss", "val_loss", "examples_seen"],
        epoch_curves=["train_accuracy", "val_accuracy", "train_loss_epoch", "val_loss_epoch"],
        epoch_end=epoch_end,
        echo=lambda e: (
            f"epoch {e['epoch']}: training accuracy {e['train_accuracy']:.2%}, "
            f"validation accuracy {e['val_accuracy']:.2%}"
        ),
    )


def final_scores(run: training.TrainingRun, model: Any, data: dict[str, SpamDataset], head: Head) -> tuple[dict, dict]:
    """Accuracy as the book measures it (its loaders, in this order), then precision, recall and
    F1 of spam from a prediction for every message of each split; and the predictions."""
    p = run.params
    measure = accuracy_and_loss(head.position, head.pad_id)
    ev = Evaluator(model, data, p.batch_size, loss_fn(head.position, head.pad_id), run.device, precision=p.precision)
    summary, predictions = {}, {}
    for name in SPLITS:
        accuracy, split_loss = ev.measure(name, None, measure)
        predictions[name] = predict(model, data[name], head.position, p.batch_size, head.pad_id, p.precision)
        s = scores(*predictions[name])
        summary |= {
            f"{name}_accuracy": accuracy,
            f"{name}_loss": split_loss,
            f"{name}_precision": s["precision"],
            f"{name}_recall": s["recall"],
            f"{name}_f1": s["f1"],
        }
    return summary, predictions


def save(st: stage.Stage, run: training.TrainingRun, model: Any, tokenizer: Any, head: Head, progress: Any, test: Any):
    """The confusion of the test split, the loss and accuracy figures and the classifier."""
    actual, predicted = test
    write_json(
        st.out(run.metrics_dir / "confusion.json"),
        [{"actual": LABELS[a], "predicted": LABELS[b]} for a, b in zip(actual, predicted)],
    )
    figures = st.out(paths.PLOTS / "classifier")
    plot_curves(
        progress.history,
        ["train_loss", "val_loss"],
        figures / "loss.png",
        ylabel="Loss",
        second_axis=("examples_seen", "Examples seen"),
        title="spam classifier: loss",
    )
    plot_curves(
        progress.epochs,
        ["train_accuracy", "val_accuracy"],
        figures / "accuracy.png",
        ylabel="Accuracy",
        title="spam classifier: accuracy (eval_iter batches per epoch)",
    )
    with atomic_dir(st.out(paths.CLASSIFIER)) as staging:
        meta = {"tokenizer": save_tokenizer(tokenizer, staging), "classifier": head.to_dict(), **run.model_meta}
        save_finetuned(model, staging, run.params, paths.BASE, meta, lands_at=paths.CLASSIFIER)


def main(st: stage.Stage) -> dict[str, Any]:
    run = training.start(st, "classifier")
    p = run.params
    check_max_length(p.max_length, paths.BASE)
    spam = split(st, run)
    tokenizer = load_tokenizer(paths.BASE)
    model = load_model(paths.BASE, device=run.device)
    data = load_splits(spam, tokenizer, p.max_length, model.config.context_length)
    head = Head(LABELS, p.head_position, GPT2_EOT_ID, data["train"].max_length)
    seed_everything(p.seed)  # the book seeds before making the head, and again before training
    to_classifier(model, len(LABELS), p.trainable, p.trainable_blocks, seed=None)
    lora.setup(model, p)  # method lora: everything frozen, adapters train
    seed_everything(p.seed)
    n_trainable = model.num_parameters(trainable_only=True)
    if run.is_main:
        how = "LoRA adapters" if p.method == "lora" else p.trainable
        log.info("classifier: %s of %s parameters train (%s)", f"{n_trainable:,}", f"{model.num_parameters():,}", how)
    progress = finetune(run, model, data, head)
    summary: dict[str, Any] = {}
    if run.is_main:
        summary, predictions = final_scores(run, model, data, head)
        summary |= {
            "trainable_parameters": n_trainable,
            "parameters": model.num_parameters(),
            "steps": progress.step,
            "examples_seen": progress.examples_seen,
        }
        run.finish(summary)
        save(st, run, model, tokenizer, head, progress, predictions["test"])
        accuracies = (100 * summary[f"{name}_accuracy"] for name in SPLITS)
        log.info("accuracy: train %.2f%%, validation %.2f%%, test %.2f%%", *accuracies)
    run.dist.barrier()
    return summary


if __name__ == "__main__":
    stage.run(main, ClassifierParams, DownloadParams)
