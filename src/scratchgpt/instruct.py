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
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import lora, paths
from .stage import Stage
from .device import peak_memory_mb
from .download import verify_dataset
from .errors import PipelineError
from .files import atomic_dir, write_json
from .generate import generate
from .tokenizer import GPT2_EOT_ID
from .train import (
    Evaluator,
    TrainConfig,
    init_distributed,
    lm_loss,
    seed_everything,
    train,
)

log = logging.getLogger(__name__)

INTRO = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
KEYS = ("instruction", "input", "output")
IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")


class EntryError(PipelineError, ValueError):
    """An instruction entry that is malformed; the message names its index and key."""


def load_entries(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The entries of an instruction JSON file, each checked to have string instruction, input, output."""
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
        for key in KEYS:
            if key not in entry:
                raise EntryError(f"{path}: entry {i}: missing key {key!r}")
            if not isinstance(entry[key], str):
                raise EntryError(f"{path}: entry {i}: {key!r} must be a string, got {type(entry[key]).__name__}")
    return data


def split_entries(
    entries: Sequence[dict[str, str]], train_frac: float = 0.85, test_frac: float = 0.10,
    shuffle: bool = False, seed: int = 123,
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:  # fmt: skip
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


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module, tokenizer: Any, entries: Sequence[dict[str, str]], max_new_tokens: int,
    batch_size: int = 8, eos_id: int = GPT2_EOT_ID,
) -> list[str]:  # fmt: skip
    """Greedy responses to each entry's prompt, batched, stopping at end-of-text."""
    out: list[str] = []
    prompts = [tokenizer.encode(format_input(e), allow_special=False) for e in entries]
    for start in tqdm(range(0, len(prompts), batch_size), desc="responses", unit="batch", disable=None):
        new = generate(model, prompts[start : start + batch_size], max_new_tokens, eos_id=eos_id)
        out += [extract_response(tokenizer.decode([t for t in ids if t != eos_id])) for ids in new]
    return out


# ---------------------------------------------------------------------------------------------
# The finetune_instruct stage

METRICS_DIR = paths.METRICS / "instruct"
PLOT = paths.PLOTS / "instruct" / "loss.png"


def run(st: Stage) -> dict[str, Any]:
    """Split the data, finetune models/base into models/instruct, and answer the test split."""
    from .live import LiveLogger, perplexity
    from .model import load_model
    from .plots import plot_losses
    from .tokenizer import load_tokenizer, save_tokenizer

    p = st.params.instruct
    dist_info, device = init_distributed(p.device)
    raw = paths.raw("instructions")
    verify_dataset("instructions", st.params.download.datasets["instructions"], raw)
    entries = load_entries(raw / "instruction-data.json")
    try:
        parts = dict(zip(SPLITS, split_entries(entries, p.train_frac, p.test_frac, p.shuffle, p.split_seed)))
    except EntryError as e:
        raise EntryError(f"{raw / 'instruction-data.json'}: {e}") from None
    data_dir = st.out(paths.INSTRUCT_DATA)
    if dist_info.is_main:
        data_dir.mkdir(parents=True, exist_ok=True)
        for name, part in parts.items():
            write_json(data_dir / f"{name}.json", part)
        log.info("instruction data: %s", ", ".join(f"{k} {len(v):,}" for k, v in parts.items()))
    tokenizer = load_tokenizer(paths.BASE)
    model = load_model(paths.BASE, device=device)
    allowed = min(p.allowed_max_length, model.config.context_length)
    collate_fn = Collate(allowed_max_length=allowed, mask_prompt=p.mask_prompt)
    data = {name: InstructionDataset(parts[name], tokenizer) for name in ("train", "val")}  # test: answered below
    config = TrainConfig.from_params(p)
    lora.setup(model, p)  # method lora: everything frozen, adapters train
    evaluator = Evaluator(model, {"train": data["train"], "val": data["val"]}, p.batch_size, lm_loss, device, collate_fn)
    n_trainable = model.num_parameters(trainable_only=True)
    seed_everything(p.seed)  # the book measures the starting loss after seeding, then seeds again
    model.eval()
    start = {"initial_train_loss": evaluator.loss("train", p.eval_iter), "initial_val_loss": evaluator.loss("val", p.eval_iter)}
    seed_everything(p.seed)
    if dist_info.is_main:
        log.info("before finetuning: training loss %.3f, validation loss %.3f", *start.values())
    run_fp = st.fingerprint(
        exclude=("instruct.device", "instruct.checkpoint_every", "instruct.response_tokens", "instruct.response_batch"),
        extra=[dist_info.world_size],
    )
    sample_prompt = format_input(parts["val"][0])

    def epoch_end(m: torch.nn.Module, _: Evaluator) -> dict[str, Any]:
        ids = tokenizer.encode(sample_prompt, allow_special=False)
        new = generate(m, [ids], 50, eos_id=None)[0]  # the book's generate_text_simple: 50 greedy tokens
        return {"text": tokenizer.decode(new)}

    logger = None
    if dist_info.is_main:
        logger = LiveLogger(
            st.out(METRICS_DIR), ["train_loss", "val_loss", "tokens_seen", "lr"], epochs_file="samples.json",
            derived={"val_perplexity": lambda point: perplexity(point["val_loss"])},
            echo=lambda e: f"epoch {e['epoch']} response to the first validation prompt: {e['text']!r}",
        )  # fmt: skip
    with st.resume_dir(run_fp) as checkpoints:
        progress = train(
            model, data["train"], data["val"], config, loss_fn=lm_loss, device=device,
            checkpoint_dir=checkpoints, run_fingerprint=run_fp, epoch_end=epoch_end,
            hooks=logger.hooks() if logger else None, dist_info=dist_info, collate_fn=collate_fn,
        )  # fmt: skip
    summary: dict[str, Any] = {}
    if logger:
        responses = generate_responses(model, tokenizer, parts["test"], p.response_tokens, p.response_batch)
        write_json(data_dir / "test-responses.json",
                   [{**entry, "model_response": r} for entry, r in zip(parts["test"], responses)])  # fmt: skip
        final_val = evaluator.loss("val", None, draw=False)
        summary = {**start, "final_val_loss": final_val, "final_val_perplexity": perplexity(final_val),
                   "steps": progress.step, "tokens_seen": progress.tokens_seen, "trainable_parameters": n_trainable,
                   "parameters": model.num_parameters()}  # fmt: skip
        logger.finish(summary)
        plot_losses(progress.history, st.out(PLOT), title="instruction finetuning")
        with atomic_dir(st.out(paths.INSTRUCT)) as staging:
            meta = {"tokenizer": save_tokenizer(tokenizer, staging), "instruct": {"format": "alpaca"}}
            lora.save_finetuned(model, staging, p, paths.BASE, meta, lands_at=paths.INSTRUCT)
        log.info("validation loss %.3f → %.3f; %d test responses in %s", start["initial_val_loss"], final_val,
                 len(responses), paths.INSTRUCT_DATA / "test-responses.json")  # fmt: skip
        # Measured resources vary from run to run: a file git and DVC do not track, beside the metrics.
        write_json(METRICS_DIR / "memory.json", {"peak_memory_mb": round(peak_memory_mb(device), 1)})
    dist_info.barrier()
    return summary
