"""A dataset folder read as a corpus: its text (.txt) and JSON Lines (.jsonl, .jsonl.gz) files as a
stream of documents, and each document as pieces of text cut only where the tokenizer would cut
anyway (scratchgpt.plumbing.shard_writer tokenizes them into shards).

A .txt file is one document, or with mode "wikitext" one per article of a WikiText file, each
line detokenised back to ordinary text (`detokenize_wikitext`); each line of a .jsonl file is one
document (its "text").
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

# WikiText's tokenization undone, in this order (the rules its users apply before a model with its
# own tokenizer reads it, e.g. the wikitext task of EleutherAI's lm-evaluation-harness). Each rule
# runs only on a line holding one of its triggers (a plain substring test, far cheaper than a scan).
_WIKITEXT_RULES = [
    # 1 @,@ 000 @.@ 5 → 1,000.5; well @-@ known → well-known
    ((" @",), re.compile(r" @([-,.])@ "), r"\1"),
    # <unk>, WikiText's stand-in for a rare word, is dropped with a separator or 's joined to it
    # (mapping it to some word would invent text); then quotes or brackets it left empty
    (("<unk>",), re.compile(r"[-,.]?<unk>(?:[-,.]<unk>)*(?:[-,.](?=\w)| ['’]s\b)?"), ""),
    (('"', "(", "["), re.compile(r'"\s*"|\(\s*\)|\[\s*\]'), ""),
    (("  ",), re.compile(r" {2,}"), " "),
    (("= =",), re.compile(r"(?<==) (?==)"), ""),  # = = Heading = = → == Heading ==
    ((" '", " ’"), re.compile(r" (['’](?:s|t|re|ve|ll|d|m))\b"), r"\1"),  # lobster 's → lobster's; don 't → don't
    (("s ' ",), re.compile(r"(?<=s) ' "), "' "),  # the players ' → the players'
    (("( ", "[ "), re.compile(r"([(\[]) "), r"\1"),
    ((" ",), re.compile(r" ([)\].,;:!?%])(?= |$)"), r"\1"),  # no space before closing punctuation
    (('" ',), re.compile(r'" ([^"]*?) "'), r'"\1"'),  # " lobster red " → "lobster red"
]


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


def detokenize_wikitext(line: str) -> str:
    """One line of a WikiText file as ordinary text: `` @-@ `` → ``-``, `` @,@ `` → ``,``,
    `` @.@ `` → ``.``, no space before punctuation or inside quotes and brackets, ``'s`` and
    ``n't`` joined, `` = = Heading = = `` → ``== Heading ==``, the line's outer spaces gone, and
    ``<unk>`` (WikiText's stand-in for rare words) dropped. The line break is kept."""
    body = line.rstrip("\r\n")
    text = body.strip()
    for triggers, pattern, replacement in _WIKITEXT_RULES:
        if any(trigger in text for trigger in triggers):
            text = pattern.sub(replacement, text)
    return text.strip() + line[len(body) :]


def _wikitext_articles(path: Path) -> Iterator[Iterator[str]]:
    """WikiText files: a new document at each top-level title line `` = Title = ``; each line
    detokenised."""
    with open(path, encoding="utf-8", newline="") as f:
        lines: list[str] = []
        for line in f:
            if WIKITEXT_TITLE.match(line.rstrip("\r\n")) and any(s.strip() for s in lines):
                yield iter(lines)
                lines = []
            lines.append(detokenize_wikitext(line))
        if lines:
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


def count_characters(files: list[Path], mode: str = "file") -> int:
    """The characters of every document of the corpus (a .txt file's in mode "wikitext" are
    those of its detokenised lines, a .jsonl file's those of its "text" fields)."""
    return sum(len(part) for parts in documents(files, mode) for part in parts)


def pieces(files: list[Path], mode: str = "file", size: int = CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """(document number, text piece) for the whole corpus; a document's pieces concatenate to it."""
    for doc, parts in enumerate(documents(files, mode, size)):
        for piece in _chunks(parts, size):
            yield doc, piece
