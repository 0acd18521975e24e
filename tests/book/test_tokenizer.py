"""Both tokenizers against the book's golden values, built only from local files."""

import hashlib
import shutil
import socket

import pytest
import tiktoken

from scratchgpt.book.tokenizer import (
    ENDOFTEXT,
    GPT2Tokenizer,
    WordTokenizer,
    _gpt2_encoding,
)


@pytest.fixture(scope="module")
def gpt2(mirror):
    return GPT2Tokenizer(mirror / "gpt2")


@pytest.fixture(scope="module")
def verdict(mirror) -> str:
    return (mirror / "the-verdict.txt").read_text(encoding="utf-8")


def test_gpt2_golden_ids(gpt2, verdict):
    assert gpt2.encode("Hello, I am") == [15496, 11, 314, 716]
    assert gpt2.encode(ENDOFTEXT) == [50256]
    assert gpt2.eot_id == 50256
    assert gpt2.vocab_size == 50257
    assert len(verdict) == 20479
    assert len(gpt2.encode(verdict)) == 5145
    assert gpt2.decode(gpt2.encode(verdict)) == verdict


def test_gpt2_special_token_only_when_allowed(gpt2):
    ids = gpt2.encode(f"a{ENDOFTEXT}b", allow_special=False)
    assert 50256 not in ids
    assert gpt2.decode(ids) == f"a{ENDOFTEXT}b"
    assert gpt2.encode(f"a{ENDOFTEXT}b") == [64, 50256, 65]


def test_gpt2_built_without_network(mirror, tmp_path, monkeypatch):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(mirror / "gpt2" / name, tmp_path / name)
    _gpt2_encoding.cache_clear()

    def no_network(*args, **kwargs):
        raise AssertionError("the tokenizer tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    tok = GPT2Tokenizer(tmp_path)
    assert tok.encode("Hello, I am") == [15496, 11, 314, 716]
    assert not (tmp_path / "cache").exists(), "local BPE files must not be copied into tiktoken's cache"


def test_gpt2_equals_tiktokens_own_gpt2(gpt2, mirror, tmp_path, monkeypatch):
    """An independent build: tiktoken's registered "gpt2" encoding, fed the same files through
    its cache (keyed by the sha1 of each canonical URL) so it needs no network."""
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((base + name).encode()).hexdigest()
        shutil.copy(mirror / "gpt2" / name, tmp_path / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    reference = tiktoken.get_encoding("gpt2")
    text = (mirror / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:200_000]
    assert gpt2.encode(text, allow_special=False) == reference.encode_ordinary(text)


def test_gpt2_missing_files_say_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json.*dvc repro download"):
        GPT2Tokenizer(tmp_path)


def test_word_tokenizer_on_the_verdict(verdict):
    tok = WordTokenizer.build([verdict])
    assert tok.vocab_size == 1132  # 1,130 words + <|endoftext|> + <|unk|>
    assert tok.vocab[-2:] == [ENDOFTEXT, "<|unk|>"]
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tok.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tok.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    assert tok.eot_id == 1130


def test_word_tokenizer_book_sample(verdict):
    """Chapter 2's example: the ids and the (lossy) decoded text the book prints."""
    tok = WordTokenizer.build([verdict])
    text = """"It's the last he painted, you know," Mrs. Gisburn said with pardonable pride."""
    ids = tok.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tok.decode(ids) == """" It' s the last he painted, you know," Mrs. Gisburn said with pardonable pride."""


def test_word_vocab_save_load(tmp_path, verdict):
    tok = WordTokenizer.build([verdict])
    tok.save(tmp_path / "vocab.json")
    again = WordTokenizer.load(tmp_path / "vocab.json")
    assert again.vocab == tok.vocab
    (tmp_path / "bad.json").write_text('{"vocab": 3}')
    with pytest.raises(ValueError, match="bad.json: not a word-tokenizer vocabulary"):
        WordTokenizer.load(tmp_path / "bad.json")
