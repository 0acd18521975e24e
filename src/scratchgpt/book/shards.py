"""Token shards: a corpus tokenized once into flat binary files, read back as memory-mapped
(input, target) windows.

A shard folder holds ``train.bin`` and ``val.bin`` (little-endian token ids, uint16 when the
vocabulary fits, else uint32), ``meta.json`` (tokenizer, dtype, counts, sha256 of inputs and
outputs) and, for the word tokenizer, ``vocab.json``.

The split follows the book's chapter 5: the first ``train_ratio`` of the corpus's characters
train, the rest validate, split before tokenizing. Documents are joined with ``<|endoftext|>``.
Text is streamed in chunks cut only where the tokenizer would split anyway, so the ids equal
those of encoding each document whole, and memory stays flat however large the corpus. A large
corpus of several files (a Wikipedia dump's shards) is tokenized by file across processes and
joined in file order: the shards are the same bytes for any number of workers.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from scratchgpt.book.tokenizer import GPT2Tokenizer, Tokenizer, WordTokenizer
from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir, sha256_file, write_json

FORMAT_VERSION = 1
SPLITS = ("train", "val")
CHUNK_CHARS = 1 << 20  # text handed to the tokenizer per piece
BATCH_CHARS = 1 << 23  # text tokenized per parallel batch
POOL_BYTES = 16 << 20  # corpora of several files and at least this many bytes tokenize in processes
WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


class ShardError(PipelineError, RuntimeError):
    """A shard folder is missing, corrupt or unusable; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------
# Reading a corpus as a stream of (document number, text piece)


def is_jsonl(path: Path) -> bool:
    """A JSON Lines file, plain (.jsonl) or gzip-compressed (.jsonl.gz: Wikipedia's shards)."""
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def corpus_files(folder: Path) -> list[Path]:
    """The text (.txt) and JSON Lines (.jsonl, .jsonl.gz) files of a dataset folder, in name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".txt" or is_jsonl(p)))
    if not files:
        raise ShardError(f"{folder}: no .txt or .jsonl files to tokenize; run `dvc repro download` first")
    return files


def safe_cut(text: str) -> int:
    """The last index where ``text`` may be cut without changing its tokenization, or 0.

    A cut just before a space or newline that follows a non-space character is a boundary for
    GPT-2's pre-tokenizer regex (no pattern spans non-space then space) and for the word
    tokenizer (whitespace separates words).
    """
    i = len(text)
    while True:
        i = max(text.rfind(" ", 0, i), text.rfind("\n", 0, i))
        if i <= 0:
            return 0
        if not text[i - 1].isspace():
            return i


def _chunks(text_parts: Iterable[str], size: int) -> Iterator[str]:
    """Re-chunk a stream of text into pieces of at least ``size`` characters, cut at safe points."""
    buf: list[str] = []
    n = 0
    for part in text_parts:
        buf.append(part)
        n += len(part)
        if n >= size:
            text = "".join(buf)
            cut = safe_cut(text)
            if cut == 0:  # no safe point yet: keep reading
                buf = [text]
                continue
            yield text[:cut]
            buf, n = [text[cut:]], len(text) - cut
    if n:
        yield "".join(buf)


def _read_blocks(path: Path, size: int) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as f:
        yield from iter(lambda: f.read(size), "")


def _wikitext_articles(path: Path) -> Iterator[Iterator[str]]:
    """WikiText files: a new document at each top-level title line `` = Title = ``."""
    with open(path, encoding="utf-8", newline="") as f:
        lines: list[str] = []
        for line in f:
            if WIKITEXT_TITLE.match(line.rstrip("\r\n")) and any(s.strip() for s in lines):
                yield iter(lines)
                lines = []
            lines.append(line)
        if lines:  # every character belongs to some document (count_characters relies on it)
            yield iter(lines)


def _jsonl_documents(path: Path) -> Iterator[Iterator[str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                raise ShardError(f"{path}:{n}: expected a JSON object with a 'text' string ({e})") from None
            if not isinstance(text, str):
                raise ShardError(f"{path}:{n}: 'text' must be a string, got {type(text).__name__}")
            yield iter([text])


def documents(files: list[Path], mode: str = "file", block: int = CHUNK_CHARS) -> Iterator[Iterator[str]]:
    """Each document of the corpus as a stream of text parts.

    ``mode`` "file": each .txt file is one document; "wikitext": .txt files are split into
    articles at WikiText title lines. Each line of a .jsonl file is one document (its "text").
    """
    if mode not in ("file", "wikitext"):
        raise ValueError(f"documents mode must be 'file' or 'wikitext', got {mode!r}")
    for path in files:
        if is_jsonl(path):
            yield from _jsonl_documents(path)
        elif mode == "wikitext":
            yield from _wikitext_articles(path)
        else:
            yield _read_blocks(path, block)


def count_characters(files: list[Path]) -> int:
    """The characters of every document: a .txt file's are all its characters (whichever way it
    is cut into documents, so the same for every mode), a .jsonl file's those of its "text" fields."""
    total = 0
    for path in files:
        if is_jsonl(path):
            total += sum(len(text) for doc in _jsonl_documents(path) for text in doc)
        else:
            total += sum(len(block) for block in _read_blocks(path, CHUNK_CHARS))
    return total


def pieces(files: list[Path], mode: str = "file", size: int = CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """(document number, text piece) for the whole corpus; a document's pieces concatenate to it."""
    for doc, parts in enumerate(documents(files, mode, size)):
        for piece in _chunks(parts, size):
            yield doc, piece


# ---------------------------------------------------------------------------------------------
# Writing shards


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
        counts = list((pool.map if pool else map)(count_characters, [[p] for p in files]))
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


# ---------------------------------------------------------------------------------------------
# Reading shards


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
