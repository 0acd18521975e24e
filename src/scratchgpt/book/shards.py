"""Token shards: a corpus tokenized once into flat binary files (scratchgpt.plumbing.shard_writer
writes them), read back as memory-mapped (input, target) windows.

A shard folder holds ``train.bin`` and ``val.bin`` (little-endian token ids, uint16 when the
vocabulary fits, else uint32), ``meta.json`` (tokenizer, dtype, counts, sha256 of inputs and
outputs) and, for the word tokenizer, ``vocab.json``. The first ``train_ratio`` of the corpus's
characters train, the rest validate (the book's chapter 5 split); documents are joined with
``<|endoftext|>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scratchgpt.book.tokenizer import GPT2Tokenizer, Tokenizer, WordTokenizer
from scratchgpt.errors import PipelineError
from scratchgpt.files import sha256_file

FORMAT_VERSION = 1
SPLITS = ("train", "val")


class ShardError(PipelineError, RuntimeError):
    """A shard folder is missing, corrupt or unusable; the message names the file and the fix."""


class TokenWindows(Dataset):
    """(input, target) windows over a token file, with the book's GPTDatasetV1 semantics:
    windows start at 0, stride, 2·stride, ... while start < n_tokens - max_length; the target
    is the input shifted by one token. The file is memory-mapped, opened lazily per process."""

    def __init__(self, path: str | os.PathLike[str], dtype: str | np.dtype, max_length: int, stride: int):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be >= 1, got {max_length} and {stride}")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.max_length = max_length
        self.stride = stride
        self.n_tokens = self.path.stat().st_size // self.dtype.itemsize
        self.starts = range(0, self.n_tokens - max_length, stride)
        self._tokens: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def tokens(self) -> np.memmap:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        window = torch.from_numpy(self.tokens[start : start + self.max_length + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}


class Shards:
    """A prepared shard folder: checks meta.json against the files, then serves windows."""

    def __init__(self, folder: str | os.PathLike[str], verify: bool = False):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        fix = f"rerun `dvc repro -f prepare@{self.folder.name}`"
        if not meta_path.is_file():
            raise ShardError(f"{meta_path} not found: run `dvc repro prepare` first")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.dtype = np.dtype(self.meta["dtype"])
            splits = self.meta["splits"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ShardError(f"{meta_path} is unreadable ({e}); {fix}") from None
        if self.meta.get("format") != FORMAT_VERSION:
            raise ShardError(f"{meta_path}: format {self.meta.get('format')} is not {FORMAT_VERSION}; {fix}")
        for split in SPLITS:
            info = splits[split]
            path = self.folder / info["file"]
            if not path.is_file():
                raise ShardError(f"{path} not found; {fix}")
            size, expected = path.stat().st_size, info["tokens"] * self.dtype.itemsize
            if size != expected:
                raise ShardError(f"{path} is {size} bytes but meta.json says {expected}: corrupt or truncated; {fix}")
            if verify and sha256_file(path) != info["sha256"]:
                raise ShardError(f"{path} does not match the sha256 in meta.json: corrupt; {fix}")

    def tokens(self, split: str) -> int:
        return int(self.meta["splits"][split]["tokens"])

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.folder / self.meta["splits"][split]["file"]

    def windows(self, split: str, max_length: int, stride: int | None = None) -> TokenWindows:
        ds = TokenWindows(self.path(split), self.dtype, max_length, stride or max_length)
        if len(ds) == 0:
            raise ShardError(
                f"{self.path(split)}: {ds.n_tokens} tokens, too few for one window of max_length "
                f"{max_length} (needs at least {max_length + 1})"
            )
        return ds

    def tokenizer(self, bpe_dir: str | os.PathLike[str]) -> Tokenizer:
        kind = self.meta["tokenizer"]["kind"]
        if kind == "word":
            return WordTokenizer.load(self.folder / "vocab.json")
        return GPT2Tokenizer(bpe_dir)


def create_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader as the book builds it; ``seed`` fixes the shuffle order independently of
    the global RNG."""
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
