"""Tokenizers: GPT-2's byte-pair encoding (through tiktoken, from local files) and the book's
word-level tokenizer from chapter 2.

Both expose the same small interface: ``encode``, ``encode_batch``, ``decode``, ``vocab_size``,
``eot_id`` and ``describe()`` (what meta.json records to rebuild the tokenizer later).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import r50k_pat_str

from scratchgpt import files
from scratchgpt.files import sha256_file

ENDOFTEXT = "<|endoftext|>"
UNK = "<|unk|>"
GPT2_EOT_ID = 50256
GPT2_VOCAB_SIZE = 50257
GPT2_FILES = ("encoder.json", "vocab.bpe")


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int: ...

    def encode(self, text: str, allow_special: bool = True) -> list[int]: ...

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def describe(self) -> dict[str, Any]: ...


@contextlib.contextmanager
def _tiktoken_cache_off() -> Iterator[None]:
    """tiktoken copies files it reads into a cache folder; for local files that is pointless."""
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


@functools.lru_cache(maxsize=4)
def _gpt2_encoding(encoder_json: str, vocab_bpe: str, hashes: tuple[str, str]) -> tiktoken.Encoding:
    with _tiktoken_cache_off():
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=vocab_bpe,
            encoder_json_file=encoder_json,
            encoder_json_hash=hashes[0],
            vocab_bpe_hash=hashes[1],
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class GPT2Tokenizer:
    """GPT-2's BPE built by tiktoken from a folder holding encoder.json and vocab.bpe.

    Nothing is fetched from the network: the files come from the ``download`` stage.
    """

    kind = "gpt2"

    def __init__(self, bpe_dir: str | os.PathLike[str]):
        self.bpe_dir = Path(bpe_dir)
        paths = [self.bpe_dir / name for name in GPT2_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"GPT-2 BPE file(s) not found: {', '.join(missing)}; run `dvc repro download` first"
            )
        self.hashes = (sha256_file(paths[0]), sha256_file(paths[1]))
        self.encoding = _gpt2_encoding(str(paths[0]), str(paths[1]), self.hashes)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int:
        return self.encoding.eot_token

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids; ``<|endoftext|>`` in the text is the special token unless allow_special is off."""
        if allow_special:
            return self.encoding.encode(text, allowed_special={ENDOFTEXT})
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Ordinary encoding (no special tokens) of many texts on ``num_threads`` threads (0: all cores)."""
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads or os.cpu_count() or 1)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoder.json": self.hashes[0], "vocab.bpe": self.hashes[1]}


class WordTokenizer:
    """The book's SimpleTokenizerV2: split on punctuation and whitespace, map unknown words to
    ``<|unk|>``. The vocabulary is the sorted set of words of a corpus, then ``<|endoftext|>``
    and ``<|unk|>``."""

    kind = "word"
    SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
    JOIN = re.compile(r'\s+([,.:;?!"()\'])')

    def __init__(self, vocab: list[str]):
        if len(set(vocab)) != len(vocab):
            raise ValueError("word vocabulary has duplicate entries")
        for special in (ENDOFTEXT, UNK):
            if special not in vocab:
                raise ValueError(f"word vocabulary lacks {special}")
        self.vocab = list(vocab)
        self.ids = {word: i for i, word in enumerate(self.vocab)}
        self.unk_id = self.ids[UNK]

    @classmethod
    def split(cls, text: str) -> list[str]:
        return [item.strip() for item in cls.SPLIT.split(text) if item.strip()]

    @classmethod
    def build(cls, texts: Iterable[str]) -> WordTokenizer:
        words: set[str] = set()
        for text in texts:
            words.update(cls.split(text))
        words -= {ENDOFTEXT, UNK}
        return cls(sorted(words) + [ENDOFTEXT, UNK])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eot_id(self) -> int:
        return self.ids[ENDOFTEXT]

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        return [self.ids.get(word, self.unk_id) for word in self.split(text)]

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self.JOIN.sub(r"\1", " ".join(self.vocab[i] for i in ids))

    def save(self, path: str | os.PathLike[str]) -> None:
        files.write_json(path, {"kind": self.kind, "vocab": self.vocab})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WordTokenizer:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("kind") != cls.kind or not isinstance(data.get("vocab"), list):
            raise ValueError(f"{path}: not a word-tokenizer vocabulary (expected {{'kind': 'word', 'vocab': [...]}})")
        return cls(data["vocab"])

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": "vocab.json", "vocab_size": self.vocab_size}
