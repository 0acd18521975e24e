"""Chapter 6: finetuning the base model into a spam classifier.

- **Data.** The SMS Spam Collection is read as the book reads it (pandas' default quoting,
  which joins a few lines: 5,572 messages, 4,825 ham and 747 spam, although the file has 5,574
  lines; ``quoting="none"`` reads every line as a message). Ham is undersampled to the spam
  count with ``sample(n_spam, random_state=seed)``, and the shuffled result is split 70/10/20:
  1,494 → 1,045 / 149 / 300, the book's split exactly.
- **Dataset.** GPT-2 ids padded with ``<|endoftext|>`` (50256) to the longest training message
  (or to ``max_length``, truncating longer ones).
- **Model.** The output head becomes a 2-class ``nn.Linear`` (built after ``torch.manual_seed``,
  as the book does) reading the last real token (``last_non_pad``) or, as the book does, the
  final position whatever it holds (``last``). Which weights train is a choice: the book's last
  transformer block + final norm + head, the last N blocks, the head alone, or everything.
- :func:`classify` labels a text; ``python -m scratchgpt.classify --model DIR "text"`` too.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from . import paths
from .stage import Stage
from . import lora
from .device import autocast, peak_memory_mb
from .download import verify_dataset
from .errors import PipelineError
from .files import atomic_dir, atomic_write, write_json
from .model import GPTModel
from .tokenizer import GPT2_EOT_ID
from .train import (
    Evaluator,
    TrainConfig,
    collate,
    init_distributed,
    seed_everything,
    train,
)

log = logging.getLogger(__name__)

LABELS = ("ham", "spam")
SPLITS = ("train", "validation", "test")


class DataError(PipelineError, ValueError):
    """A data file with a bad line; the message names the file and the line."""


# ---------------------------------------------------------------------------------------------
# The SMS Spam Collection


def read_sms(path: str | os.PathLike[str], quoting: str = "book") -> pd.DataFrame:
    """Label/Text rows of the tab-separated collection, each label checked ("ham" or "spam").

    ``quoting="book"`` treats double quotes like pandas' read_csv default (the book), which
    joins a few lines into one message; ``"none"`` makes every line a message."""
    path = Path(path)
    if quoting not in ("book", "none"):
        raise ValueError(f"quoting must be 'book' or 'none', got {quoting!r}")
    mode = csv.QUOTE_MINIMAL if quoting == "book" else csv.QUOTE_NONE
    labels, texts = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=mode)
        first = 1
        try:
            for row in reader:
                where = f"{path}:{first}"
                if len(row) != 2:
                    raise DataError(f"{where}: expected 2 tab-separated fields (label, text), got {len(row)}")
                label, text = row
                if label not in LABELS:
                    raise DataError(f"{where}: label must be 'ham' or 'spam', got {label!r}")
                if not text.strip():
                    raise DataError(f"{where}: empty message")
                labels.append(label)
                texts.append(text)
                first = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
    if not labels:
        raise DataError(f"{path}: no messages")
    return pd.DataFrame({"Label": labels, "Text": texts})


def balance(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Undersample ham to the number of spam messages (the book's create_balanced_dataset)."""
    spam = df[df["Label"] == "spam"]
    ham = df[df["Label"] == "ham"].sample(len(spam), random_state=seed)
    return pd.concat([ham, spam])


def split(df: pd.DataFrame, train_frac: float, val_frac: float, seed: int = 123) -> tuple[pd.DataFrame, ...]:
    """Shuffle, then cut into train / validation / test (the book's random_split)."""
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    val_end = train_end + int(len(df) * val_frac)
    return df[:train_end], df[train_end:val_end], df[val_end:]


def prepare_splits(
    raw: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, quoting: str = "book", balanced: bool = True,
    train_frac: float = 0.7, val_frac: float = 0.1, seed: int = 123,
) -> dict[str, int]:  # fmt: skip
    """Write train.csv, validation.csv and test.csv (Label 0 = ham, 1 = spam; Text) into ``out_dir``."""
    df = read_sms(raw, quoting)
    counts = {"messages": len(df), "ham": int((df["Label"] == "ham").sum()), "spam": int((df["Label"] == "spam").sum())}
    missing = [label for label in LABELS if not counts[label]]
    if missing:
        raise DataError(f"{raw}: no {' or '.join(map(repr, missing))} messages; the classifier needs both classes")
    if balanced:
        df = balance(df, seed)
    df = df.assign(Label=df["Label"].map({label: i for i, label in enumerate(LABELS)}))
    parts = dict(zip(SPLITS, split(df, train_frac, val_frac, seed)))
    if not all(len(part) for part in parts.values()):
        sizes = " / ".join(str(len(part)) for part in parts.values())
        raise DataError(
            f"{raw}: {len(df)} messages split {train_frac:g} / {val_frac:g} give {sizes} for "
            f"{' / '.join(SPLITS)}; each split needs at least one"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with atomic_write(out / f"{name}.csv") as f:
            f.write(part.to_csv(index=False).encode("utf-8"))
        counts[name] = len(part)
    return counts


class SpamDataset(Dataset):
    """(ids padded to ``max_length``, label) pairs from a CSV of Label,Text rows.

    ``max_length`` None: the longest message (the book's training set); longer messages are
    truncated to it. Texts are encoded without special tokens, so only padding is 50256."""

    def __init__(self, csv_file: str | os.PathLike[str], tokenizer: Any, max_length: int | None = None,
                 pad_id: int = GPT2_EOT_ID):  # fmt: skip
        self.path = Path(csv_file)
        self.pad_id = pad_id
        self.labels: list[int] = []
        self.encoded: list[list[int]] = []
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["Label", "Text"]:
                raise DataError(f"{self.path}:1: expected the header Label,Text, got {header}")
            first = 2
            for row in reader:
                where = f"{self.path}:{first}"
                if len(row) != 2 or row[0] not in ("0", "1"):
                    raise DataError(f"{where}: expected a label 0 or 1 and a text, got {row!r}")
                ids = tokenizer.encode(row[1], allow_special=False)
                if not ids:
                    raise DataError(f"{where}: empty text")
                self.labels.append(int(row[0]))
                self.encoded.append(ids)
                first = reader.line_num + 1
        if not self.encoded:
            raise DataError(f"{self.path}: no rows")
        self.max_length = max_length or max(len(ids) for ids in self.encoded)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.encoded[index][: self.max_length]
        ids = ids + [self.pad_id] * (self.max_length - len(ids))
        return torch.tensor(ids), torch.tensor(self.labels[index])


# ---------------------------------------------------------------------------------------------
# The classifier


@dataclass(frozen=True)
class Head:
    """How the classification head reads the sequence; stored in the model's config.json."""

    labels: tuple[str, ...] = LABELS
    position: str = "last_non_pad"  # or "last": the final position, padding included (the book)
    pad_id: int = GPT2_EOT_ID
    max_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "position": self.position, "pad_id": self.pad_id,
                "max_length": self.max_length}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Head":
        return cls(tuple(data["labels"]), data["position"], data["pad_id"], data.get("max_length"))


def to_classifier(model: GPTModel, n_classes: int = 2, trainable: str = "last_blocks", blocks: int = 1,
                  seed: int | None = 123) -> GPTModel:  # fmt: skip
    """Swap the output head for an ``n_classes`` one (made after ``torch.manual_seed(seed)``, as
    the book does) and freeze all but: everything (``all``), the head (``head``), or the last
    ``blocks`` transformer blocks, the final norm and the head (``last_blocks``; the book: 1)."""
    if trainable not in ("all", "head", "last_blocks"):
        raise ValueError(f"trainable must be all, head or last_blocks, got {trainable!r}")
    if seed is not None:
        torch.manual_seed(seed)
    device = model.tok_emb.weight.device
    model.out_head = nn.Linear(model.config.emb_dim, n_classes).to(device)
    model.config = model.config.replace(n_classes=n_classes, tie_weights=False)
    for p in model.parameters():
        p.requires_grad = trainable == "all"
    trained: list[nn.Module] = [model.out_head]
    if trainable == "last_blocks":
        trained.append(model.final_norm)
        if blocks:
            trained += list(model.trf_blocks)[-blocks:]
    for module in trained:
        for p in module.parameters():
            p.requires_grad = True
    return model


def head_logits(model: nn.Module, x: torch.Tensor, position: str, pad_id: int = GPT2_EOT_ID) -> torch.Tensor:
    """Class logits (batch, n_classes) read at the last real token or at the final position."""
    with autocast(x.device):
        out = model(x)
    if position == "last":
        return out[:, -1, :].float()
    lengths = (x != pad_id).long().sum(dim=1).clamp(min=1)
    return out[torch.arange(x.shape[0], device=x.device), lengths - 1].float()


def loss_fn(position: str, pad_id: int = GPT2_EOT_ID):
    def loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(head_logits(model, x, position, pad_id), y)

    return loss


def accuracy_and_loss(position: str, pad_id: int = GPT2_EOT_ID):
    """A measure for Evaluator: (correct, loss × n) over a batch of n → accuracy and mean loss."""

    def measure(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[list[float], int]:
        x, y = batch
        logits = head_logits(model, x, position, pad_id)
        correct = (logits.argmax(dim=-1) == y).sum().item()
        loss = F.cross_entropy(logits, y, reduction="sum").item()
        return [correct, loss], len(y)

    return measure


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, position: str, batch_size: int = 32,
            pad_id: int = GPT2_EOT_ID) -> tuple[list[int], list[int]]:  # fmt: skip
    """(actual, predicted) labels of a whole dataset, in order."""
    device = next(model.parameters()).device
    actual, predicted = [], []
    for start in range(0, len(dataset), batch_size):
        x, y = collate(dataset, range(start, min(start + batch_size, len(dataset))), device)
        predicted += head_logits(model, x, position, pad_id).argmax(dim=-1).tolist()
        actual += y.tolist()
    return actual, predicted


def scores(actual: Sequence[int], predicted: Sequence[int], positive: int = 1) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of the ``positive`` class, and the confusion counts."""
    pairs = list(zip(actual, predicted))
    tp = sum(a == positive and p == positive for a, p in pairs)
    fp = sum(a != positive and p == positive for a, p in pairs)
    fn = sum(a == positive and p != positive for a, p in pairs)
    tn = len(pairs) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(pairs) if pairs else float("nan"), "precision": precision,
            "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}  # fmt: skip


@torch.no_grad()
def classify(text: str, model: GPTModel, tokenizer: Any, head: Head) -> tuple[str, float]:
    """The label of ``text`` and its probability."""
    model.eval()
    limit = min(head.max_length or model.config.context_length, model.config.context_length)
    ids = tokenizer.encode(text, allow_special=False)[:limit] or [head.pad_id]
    if head.position == "last":  # the book pads to the training length and reads the final position
        ids = ids + [head.pad_id] * (limit - len(ids))
    device = next(model.parameters()).device
    logits = head_logits(model, torch.tensor([ids], device=device), head.position, head.pad_id)
    probs = torch.softmax(logits[0], dim=-1)
    best = int(probs.argmax())
    return head.labels[best], float(probs[best])


def load_classifier(model_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[GPTModel, Any, Head]:
    """Model, tokenizer and head description of a classifier directory."""
    from .model import load_model, read_model_config
    from .tokenizer import load_tokenizer

    config, extra = read_model_config(model_dir)
    if not config.n_classes or "classifier" not in extra:
        raise ValueError(f"{model_dir} is not a classifier (no classification head in config.json)")
    return load_model(model_dir, device=device), load_tokenizer(model_dir), Head.from_dict(extra["classifier"])


# ---------------------------------------------------------------------------------------------
# The finetune_classifier stage

METRICS_DIR = paths.METRICS / "classifier"
PLOTS_DIR = paths.PLOTS / "classifier"
EPOCH_KEYS = ["train_accuracy", "val_accuracy", "train_loss_epoch", "val_loss_epoch"]


def run(st: Stage) -> dict[str, Any]:
    """Split the data, finetune models/base into models/classifier, measure and plot it."""
    from .live import LiveLogger
    from .model import load_model
    from .plots import plot_curves
    from .tokenizer import load_tokenizer, save_tokenizer

    p = st.params.classifier
    dist_info, device = init_distributed(p.device)
    verify_dataset("spam", st.params.download.datasets["spam"], paths.raw("spam"))
    spam = st.out(paths.SPAM)
    if dist_info.is_main:
        counts = prepare_splits(
            paths.raw("spam") / "SMSSpamCollection", spam, quoting=p.quoting, balanced=p.balance,
            train_frac=p.train_frac, val_frac=p.val_frac, seed=p.split_seed,
        )  # fmt: skip
        log.info("SMS Spam Collection: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    dist_info.barrier()
    tokenizer = load_tokenizer(paths.BASE)
    model = load_model(paths.BASE, device=device)
    limit = model.config.context_length
    train_data = SpamDataset(spam / "train.csv", tokenizer, p.max_length or None)
    if train_data.max_length > limit:
        log.warning("messages of up to %d tokens are truncated to the context length %d", train_data.max_length, limit)
        train_data.max_length = limit
    val_data = SpamDataset(spam / "validation.csv", tokenizer, train_data.max_length)
    test_data = SpamDataset(spam / "test.csv", tokenizer, train_data.max_length)
    head = Head(LABELS, p.head_position, GPT2_EOT_ID, train_data.max_length)

    seed_everything(p.seed)  # the book seeds before making the head, and again before training
    to_classifier(model, len(LABELS), p.trainable, p.trainable_blocks, seed=None)
    lora.setup(model, p)  # method lora: everything frozen, adapters train
    seed_everything(p.seed)
    run_fp = st.fingerprint(exclude=("classifier.device", "classifier.checkpoint_every"), extra=[dist_info.world_size])
    measure = accuracy_and_loss(head.position, head.pad_id)

    def epoch_end(m: nn.Module, ev: Evaluator) -> dict[str, Any]:
        train_acc, train_loss = ev.measure("train", p.eval_iter, measure)  # the book's accuracy, and loss
        val_acc, val_loss = ev.measure("val", p.eval_iter, measure)
        return {"train_accuracy": train_acc, "val_accuracy": val_acc, "train_loss_epoch": train_loss,
                "val_loss_epoch": val_loss}  # fmt: skip

    logger = None
    if dist_info.is_main:
        logger = LiveLogger(
            st.out(METRICS_DIR), ["train_loss", "val_loss", "examples_seen"], EPOCH_KEYS,
            echo=lambda e: f"epoch {e['epoch']}: training accuracy {e['train_accuracy']:.2%}, "
                           f"validation accuracy {e['val_accuracy']:.2%}",
        )  # fmt: skip
    n_trainable = model.num_parameters(trainable_only=True)
    if dist_info.is_main:
        log.info("classifier: %s of %s parameters train (%s)", f"{n_trainable:,}", f"{model.num_parameters():,}",
                 "LoRA adapters" if p.method == "lora" else p.trainable)  # fmt: skip
    with st.resume_dir(run_fp) as checkpoints:
        progress = train(
            model, train_data, val_data, TrainConfig.from_params(p), loss_fn=loss_fn(head.position, head.pad_id),
            device=device, checkpoint_dir=checkpoints, run_fingerprint=run_fp, epoch_end=epoch_end,
            hooks=logger.hooks() if logger else None, dist_info=dist_info,
        )  # fmt: skip
    summary: dict[str, Any] = {}
    if logger:
        # Final accuracy as the book measures it (its loaders, in this order), then precision,
        # recall and F1 of spam from a prediction for every message of each split.
        ev = Evaluator(model, {"train": train_data, "val": val_data, "test": test_data}, p.batch_size,
                       loss_fn(head.position, head.pad_id), device)  # fmt: skip
        predictions = {}
        for split, data in (("train", train_data), ("val", val_data), ("test", test_data)):
            accuracy, loss = ev.measure(split, None, measure)
            predictions[split] = predict(model, data, head.position, p.batch_size, head.pad_id)
            s = scores(*predictions[split])
            summary |= {f"{split}_accuracy": accuracy, f"{split}_loss": loss, f"{split}_precision": s["precision"],
                        f"{split}_recall": s["recall"], f"{split}_f1": s["f1"]}  # fmt: skip
        summary |= {"trainable_parameters": n_trainable, "parameters": model.num_parameters(), "steps": progress.step,
                    "examples_seen": progress.examples_seen}  # fmt: skip
        logger.finish(summary)
        actual, predicted = predictions["test"]
        write_json(st.out(METRICS_DIR / "confusion.json"),
                   [{"actual": LABELS[a], "predicted": LABELS[b]} for a, b in zip(actual, predicted)])  # fmt: skip
        plots = st.out(PLOTS_DIR)
        plot_curves(progress.history, ["train_loss", "val_loss"], plots / "loss.png", ylabel="Loss",
                    second_axis=("examples_seen", "Examples seen"), title="spam classifier: loss")  # fmt: skip
        plot_curves(progress.epochs, ["train_accuracy", "val_accuracy"], plots / "accuracy.png",
                    ylabel="Accuracy", title="spam classifier: accuracy (eval_iter batches per epoch)")  # fmt: skip
        with atomic_dir(st.out(paths.CLASSIFIER)) as staging:
            meta = {"tokenizer": save_tokenizer(tokenizer, staging), "classifier": head.to_dict()}
            lora.save_finetuned(model, staging, p, paths.BASE, meta, lands_at=paths.CLASSIFIER)
        log.info("accuracy: train %.2f%%, validation %.2f%%, test %.2f%%", 100 * summary["train_accuracy"],
                 100 * summary["val_accuracy"], 100 * summary["test_accuracy"])  # fmt: skip
        # Measured resources vary from run to run: a file git and DVC do not track, beside the metrics.
        write_json(METRICS_DIR / "memory.json", {"peak_memory_mb": round(peak_memory_mb(device), 1)})
    dist_info.barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scratchgpt.classify", description="Label texts as spam or not spam.")
    ap.add_argument("--model", required=True, help="a classifier directory (models/classifier)")
    ap.add_argument("texts", nargs="*", help="texts to label; none: read one per line from stdin")
    args = ap.parse_args(argv)
    try:
        model, tokenizer, head = load_classifier(args.model)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in texts:
        label, prob = classify(text, model, tokenizer, head)
        shown = "spam" if label == "spam" else "not spam"
        print(f"{shown}\t{prob:.3f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
