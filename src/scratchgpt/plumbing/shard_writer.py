"""Token shards written from a corpus (scratchgpt.plumbing.corpus) in the layout
scratchgpt.book.shards reads.

The split follows the book's chapter 5: the first ``train_ratio`` of the corpus's characters
train, the rest validate, split before tokenizing. Documents are joined with ``<|endoftext|>``.
Text is streamed in chunks cut only where the tokenizer would split anyway, so the ids equal
those of encoding each document whole, and memory stays flat however large the corpus. A large
corpus of several files (a Wikipedia dump's shards) is tokenized by file across processes and
joined in file order: the shards are the same bytes for any number of workers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scratchgpt.book.shards import FORMAT_VERSION, ShardError
from scratchgpt.book.tokenizer import GPT2Tokenizer, Tokenizer, WordTokenizer
from scratchgpt.files import atomic_dir, sha256_file, write_json
from scratchgpt.plumbing.corpus import CHUNK_CHARS, count_characters, pieces

BATCH_CHARS = 1 << 23  # text tokenized per parallel batch
POOL_BYTES = 16 << 20  # corpora of several files and at least this many bytes tokenize in processes


@dataclass
class _Split:
    """One split's token file as it is written, with its counts and digest."""

    name: str
    file: Any
    dtype: np.dtype
    tokens: int = 0
    characters: int = 0
    documents: int = 0
    last_doc: int = -1  # the number of the document written last, within the current file

    def __post_init__(self) -> None:
        self.hash = hashlib.sha256()

    def write_bytes(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)

    def write(self, ids: list[int]) -> None:
        self.write_bytes(np.asarray(ids, dtype=self.dtype).tobytes())
        self.tokens += len(ids)

    def add(self, doc: int, text: str, ids: list[int], eot: int) -> None:
        """A piece of document ``doc``; a new document follows the previous one after ``<|endoftext|>``."""
        if doc != self.last_doc:
            if self.documents:
                ids = [eot, *ids]
            self.last_doc = doc
            self.documents += 1
        self.characters += len(text)
        self.write(ids)

    def append(self, part: _Split, path: Path, eot: int) -> None:
        """Another file's tokens for this split, written by a worker to ``path`` (then deleted)."""
        if part.documents:
            if self.documents:
                self.write([eot])
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    self.write_bytes(block)
            self.tokens += part.tokens
            self.characters += part.characters
            self.documents += part.documents
        path.unlink()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def make_tokenizer(kind: str, bpe_dir: Path, files: list[Path], mode: str) -> Tokenizer:
    if kind == "gpt2":
        return GPT2Tokenizer(bpe_dir)
    if kind == "word":
        return WordTokenizer.build(piece for _, piece in pieces(files, mode))
    raise ValueError(f"unknown tokenizer {kind!r}: expected 'gpt2' or 'word'")


def _encode_file(
    path: Path,
    start: int,
    split_at: int,
    splits: dict[str, _Split],
    tokenizer: Tokenizer,
    *,
    mode: str,
    num_threads: int,
    chunk_chars: int,
    batch_chars: int,
    bar: tqdm | None = None,
) -> None:
    """Tokenize one file into ``splits``; its first character is the corpus's ``start``-th, and
    the corpus's first ``split_at`` characters train."""
    for split in splits.values():
        split.last_doc = -1  # documents never span files
    batch: list[tuple[str, int, str]] = []
    size = 0

    def flush() -> None:
        encoded = tokenizer.encode_batch([text for _, _, text in batch], num_threads)
        for (split_name, doc, text), ids in zip(batch, encoded):
            splits[split_name].add(doc, text, ids, tokenizer.eot_id)
        batch.clear()

    seen = start
    for doc, piece in pieces([path], mode, chunk_chars):
        if seen < split_at < seen + len(piece):
            cut = split_at - seen
            batch += [("train", doc, piece[:cut]), ("val", doc, piece[cut:])]
        else:
            batch.append(("train" if seen < split_at else "val", doc, piece))
        seen += len(piece)
        size += len(piece)
        if bar is not None:
            bar.update(len(piece))
        if size >= batch_chars:
            flush()
            size = 0
    flush()


_worker_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_part(task: tuple[Path, int, int, str, Path, str, int]) -> dict[str, tuple[int, int, int]]:
    """A worker's job: one file into ``<stem>.train``/``<stem>.val`` token files; their counts."""
    path, start, split_at, mode, stem, dtype, chunk_chars = task
    assert _worker_tokenizer is not None
    with open(f"{stem}.train", "wb") as ftrain, open(f"{stem}.val", "wb") as fval:
        splits = {"train": _Split("train", ftrain, np.dtype(dtype)), "val": _Split("val", fval, np.dtype(dtype))}
        _encode_file(
            path,
            start,
            split_at,
            splits,
            _worker_tokenizer,
            mode=mode,
            num_threads=1,
            chunk_chars=chunk_chars,
            batch_chars=chunk_chars,
        )
    return {name: (s.tokens, s.characters, s.documents) for name, s in splits.items()}


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def write_shards(
    files: list[Path],
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike[str],
    *,
    train_ratio: float = 0.9,
    mode: str = "file",
    name: str = "",
    workers: int = 0,
    pool_bytes: int = POOL_BYTES,
    chunk_chars: int = CHUNK_CHARS,
    batch_chars: int = BATCH_CHARS,
) -> dict[str, Any]:
    """Tokenize ``files`` into ``out_dir`` (replaced whole on success) and return meta.json's data.

    ``workers`` (0: every core) tokenize: a corpus of several files and at least ``pool_bytes``
    is split by file across that many processes, each writing its files' tokens to disk, which
    are then joined in file order; a smaller one runs here on that many threads. The output is
    the same byte for byte either way, and memory stays flat.
    """
    if not 0 < train_ratio < 1:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}")
    out_dir = Path(out_dir)
    workers = workers or available_cores()
    processes = min(workers, len(files))
    if sum(p.stat().st_size for p in files) < pool_bytes:
        processes = 1
    dtype = token_dtype(tokenizer.vocab_size)
    desc = f"tokenizing {name or out_dir.name}"

    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(atomic_dir(out_dir))  # left last: the workers stop first
        pool = None
        if processes > 1:
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(context.Pool(processes, _start_worker, (tokenizer,)))
        count = functools.partial(count_characters, mode=mode)
        counts = list((pool.map if pool else map)(count, [[p] for p in files]))
        total_chars = sum(counts)
        if total_chars == 0:
            raise ShardError(f"corpus {name or out_dir.name} is empty: {', '.join(map(str, files))}")
        split_at = int(train_ratio * total_chars)  # the book: split_idx = int(train_ratio * len(text))
        starts = list(itertools.accumulate(counts, initial=0))  # each file's first character

        bar = stack.enter_context(tqdm(total=total_chars, desc=desc, unit="char", unit_scale=True, disable=None))
        with open(staging / "train.bin", "wb") as ftrain, open(staging / "val.bin", "wb") as fval:
            splits = {"train": _Split("train", ftrain, dtype), "val": _Split("val", fval, dtype)}
            if pool is None:
                for path, start in zip(files, starts):
                    _encode_file(
                        path,
                        start,
                        split_at,
                        splits,
                        tokenizer,
                        mode=mode,
                        num_threads=workers,
                        chunk_chars=chunk_chars,
                        batch_chars=batch_chars,
                        bar=bar,
                    )
            else:
                tasks = [
                    (path, start, split_at, mode, staging / f"part-{i:06d}", dtype.str, chunk_chars)
                    for i, (path, start) in enumerate(zip(files, starts))
                ]
                for (*_, stem, _, _), parts in zip(tasks, pool.imap(_encode_part, tasks)):
                    for split_name, split in splits.items():
                        part = _Split(split_name, None, dtype, *parts[split_name])
                        split.append(part, Path(f"{stem}.{split_name}"), tokenizer.eot_id)
                        bar.update(part.characters)

        if isinstance(tokenizer, WordTokenizer):
            tokenizer.save(staging / "vocab.json")
        meta = {
            "format": FORMAT_VERSION,
            "corpus": name or out_dir.name,
            "tokenizer": tokenizer.describe(),
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "dtype": dtype.name,
            "train_ratio": train_ratio,
            "documents": mode,
            "splits": {
                s.name: {
                    "file": f"{s.name}.bin",
                    "tokens": s.tokens,
                    "characters": s.characters,
                    "documents": s.documents,
                    "sha256": s.hash.hexdigest(),
                }
                for s in splits.values()
            },
            "inputs": {p.name: sha256_file(p) for p in files},
        }
        write_json(staging / "meta.json", meta)
    return meta
