"""Chapter 7: instruction finetuning.

- **Data.** instruction-data.json (1,100 entries of instruction / input / output) is split in
  file order as the book splits it: the first 85% train, the next 10% test, the rest
  validation (935 / 110 / 55), so our test set is the book's; a seeded shuffle first is an
  option. Entries are formatted in the book's Alpaca style.
- **Collate.** Padding with 50256, targets shifted by one, every padding token after the first
  replaced by -100 (so the model learns to stop), truncation to ``allowed_max_length``; an
  option masks the instruction and input tokens in the targets too.
- **Responses.** After training, greedy responses to the test split (stopping at end-of-text,
  batched prompts with the KV cache) are saved with their entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scratchgpt.book.generate import generate
from scratchgpt.book.tokenizer import GPT2_EOT_ID
from scratchgpt.errors import PipelineError

log = logging.getLogger(__name__)

INTRO = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
KEYS = ("instruction", "input", "output")
IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")


class EntryError(PipelineError, ValueError):
    """An instruction entry that is malformed; the message names its index and key."""


def load_entries(path: str | os.PathLike[str], keys: Sequence[str] = KEYS) -> list[dict[str, str]]:
    """The entries of an instruction JSON file, each checked to have string ``keys`` (instruction,
    input, output; a preference file adds chosen and rejected)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EntryError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, list):
        raise EntryError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise EntryError(f"{path}: entry {i}: expected an object, got {type(entry).__name__}")
        for key in keys:
            if key not in entry:
                raise EntryError(f"{path}: entry {i}: missing key {key!r}")
            if not isinstance(entry[key], str):
                raise EntryError(f"{path}: entry {i}: {key!r} must be a string, got {type(entry[key]).__name__}")
    return data


def load_answered(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Entries that each hold a ``model_response`` string too (test-responses.json)."""
    entries = load_entries(path)
    for i, entry in enumerate(entries):
        if not isinstance(entry.get("model_response"), str):
            raise EntryError(f"{path}: entry {i}: missing key 'model_response' (a string)")
    return entries


def split_entries(
    entries: Sequence[dict[str, str]],
    train_frac: float = 0.85,
    test_frac: float = 0.10,
    shuffle: bool = False,
    seed: int = 123,
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """(train, val, test): train first, then test, then validation, as the book cuts them."""
    entries = list(entries)
    if shuffle:
        random.Random(seed).shuffle(entries)
    n_train, n_test = int(len(entries) * train_frac), int(len(entries) * test_frac)
    train_part = entries[:n_train]
    test_part = entries[n_train : n_train + n_test]
    val_part = entries[n_train + n_test :]
    if not (train_part and val_part and test_part):
        raise EntryError(
            f"{len(entries)} entries split {train_frac:g} / {test_frac:g} give {len(train_part)} training, "
            f"{len(val_part)} validation and {len(test_part)} test entries; each split needs at least one"
        )
    return train_part, val_part, test_part


def format_input(entry: dict[str, str]) -> str:
    """The book's Alpaca-style prompt (without the response)."""
    text = f"{INTRO}\n\n### Instruction:\n{entry['instruction']}"
    return text + (f"\n\n### Input:\n{entry['input']}" if entry["input"] else "")


def format_example(entry: dict[str, str]) -> str:
    return f"{format_input(entry)}\n\n### Response:\n{entry['output']}"


class InstructionDataset(Dataset):
    """Each entry as (ids of prompt + response, number of prompt ids)."""

    def __init__(self, entries: Sequence[dict[str, str]], tokenizer: Any):
        self.entries = list(entries)
        self.items = []
        for entry in self.entries:
            prompt = tokenizer.encode(format_input(entry), allow_special=False)
            full = tokenizer.encode(format_example(entry), allow_special=False)
            self.items.append((full, len(prompt)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]


@dataclasses.dataclass(frozen=True)
class Collate:
    """The book's custom_collate_fn, and an option to mask the prompt in the targets."""

    pad_id: int = GPT2_EOT_ID
    ignore_index: int = IGNORE_INDEX
    allowed_max_length: int | None = None
    mask_prompt: bool = False

    def __call__(self, batch: Sequence[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(ids) + 1 for ids, _ in batch)
        inputs, targets = [], []
        for ids, n_prompt in batch:
            padded = ids + [self.pad_id] * (longest - len(ids))  # at least one end-of-text
            x = torch.tensor(padded[:-1])
            y = torch.tensor(padded[1:])
            pads = torch.nonzero(y == self.pad_id).flatten()
            if pads.numel() > 1:
                y[pads[1:]] = self.ignore_index  # keep the first end-of-text as a target
            if self.mask_prompt:
                y[: n_prompt - 1] = self.ignore_index  # targets that are still prompt tokens
            if self.allowed_max_length is not None:
                x, y = x[: self.allowed_max_length], y[: self.allowed_max_length]
            inputs.append(x)
            targets.append(y)
        return torch.stack(inputs), torch.stack(targets)


def extract_response(text: str) -> str:
    """The response part of a generated continuation (the book strips "### Response:")."""
    return text.replace("### Response:", "").strip()


def epoch_sample(tokenizer: Any, prompt: str, max_new_tokens: int = 50) -> Callable[..., dict[str, str]]:
    """What the training loop calls after each epoch: the book's generate_and_print_sample, the
    text of ``max_new_tokens`` greedy tokens after ``prompt`` (no stop at end-of-text)."""

    def sample(model: torch.nn.Module, *_: Any) -> dict[str, str]:
        ids = tokenizer.encode(prompt, allow_special=False)
        return {"text": tokenizer.decode(generate(model, [ids], max_new_tokens, eos_id=None)[0])}

    return sample


def answer(
    model: torch.nn.Module, tokenizer: Any, entries: Sequence[dict[str, str]], max_new_tokens: int, batch_size: int = 8
) -> list[dict[str, str]]:
    """``entries``, each with the model's greedy response as ``model_response`` (the book's
    instruction-data-with-response.json)."""
    responses = generate_responses(model, tokenizer, entries, max_new_tokens, batch_size)
    return [{**entry, "model_response": r} for entry, r in zip(entries, responses)]


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module,
    tokenizer: Any,
    entries: Sequence[dict[str, str]],
    max_new_tokens: int,
    batch_size: int = 8,
    eos_id: int = GPT2_EOT_ID,
) -> list[str]:
    """Greedy responses to each entry's prompt, batched, stopping at end-of-text."""
    out: list[str] = []
    prompts = [tokenizer.encode(format_input(e), allow_special=False) for e in entries]
    for start in tqdm(range(0, len(prompts), batch_size), desc="responses", unit="batch", disable=None):
        new = generate(model, prompts[start : start + batch_size], max_new_tokens, eos_id=eos_id)
        out += [extract_response(tokenizer.decode([t for t in ids if t != eos_id])) for ids in new]
    return out
