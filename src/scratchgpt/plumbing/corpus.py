"""A dataset folder read as a corpus: its text (.txt) and JSON Lines (.jsonl, .jsonl.gz) files as a
stream of documents, and each document as pieces of text cut only where the tokenizer would cut
anyway (scratchgpt.plumbing.shard_writer tokenizes them into shards).

A .txt file is one document, or with mode "wikitext" one per article of a WikiText file; each
line of a .jsonl file is one document (its "text").
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from scratchgpt.book.shards import ShardError

CHUNK_CHARS = 1 << 20  # text handed to the tokenizer per piece
WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


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
