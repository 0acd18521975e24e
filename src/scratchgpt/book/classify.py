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
- :func:`classify` labels a text (``scratchgpt classify --model DIR "text"``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from scratchgpt.book.loader import collate
from scratchgpt.book.model import GPTModel
from scratchgpt.book.tokenizer import GPT2_EOT_ID
from scratchgpt.device import autocast
from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_write

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
    raw: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    quoting: str = "book",
    balanced: bool = True,
    train_frac: float = 0.7,
    val_frac: float = 0.1,
    seed: int = 123,
) -> dict[str, int]:
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

    def __init__(
        self, csv_file: str | os.PathLike[str], tokenizer: Any, max_length: int | None = None, pad_id: int = GPT2_EOT_ID
    ):
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
        return {
            "labels": list(self.labels),
            "position": self.position,
            "pad_id": self.pad_id,
            "max_length": self.max_length,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Head:
        return cls(tuple(data["labels"]), data["position"], data["pad_id"], data.get("max_length"))


def to_classifier(
    model: GPTModel, n_classes: int = 2, trainable: str = "last_blocks", blocks: int = 1, seed: int | None = 123
) -> GPTModel:
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
@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    position: str,
    batch_size: int = 32,
    pad_id: int = GPT2_EOT_ID,
    precision: str = "fp32",
) -> tuple[list[int], list[int]]:
    """(actual, predicted) labels of a whole dataset, in order, computed in ``precision``."""
    device = next(model.parameters()).device
    actual, predicted = [], []
    with autocast(device, precision):
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
    return {
        "accuracy": (tp + tn) / len(pairs) if pairs else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


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
