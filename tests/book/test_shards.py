"""Token shards: the book's split and window semantics, streaming equal to whole-text encoding,
document separators, integrity checks and atomic output."""

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from scratchgpt.book.shards import ShardError, Shards, TokenWindows, create_dataloader
from scratchgpt.book.tokenizer import GPT2Tokenizer, WordTokenizer
from scratchgpt.plumbing import corpus
from scratchgpt.plumbing.corpus import safe_cut
from scratchgpt.plumbing.shard_writer import make_tokenizer, write_shards


@pytest.fixture(scope="module")
def gpt2(mirror):
    return GPT2Tokenizer(mirror / "gpt2")


@pytest.fixture
def verdict_file(mirror, tmp_path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(mirror / "the-verdict.txt", folder / "the-verdict.txt")
    return folder / "the-verdict.txt"


def book_windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """The book's GPTDatasetV1 loop, written out as the reference."""
    return [(ids[i : i + max_length], ids[i + 1 : i + max_length + 1]) for i in range(0, len(ids) - max_length, stride)]


def test_verdict_split_equals_the_books(gpt2, verdict_file, tmp_path):
    text = verdict_file.read_text(encoding="utf-8")
    meta = write_shards([verdict_file], gpt2, tmp_path / "shards", train_ratio=0.9)
    split_idx = int(0.9 * len(text))
    expected_train = gpt2.encode(text[:split_idx])
    expected_val = gpt2.encode(text[split_idx:])
    data = Shards(tmp_path / "shards", verify=True)
    assert np.fromfile(data.path("train"), dtype=np.uint16).tolist() == expected_train
    assert np.fromfile(data.path("val"), dtype=np.uint16).tolist() == expected_val
    assert meta["dtype"] == "uint16"
    assert meta["splits"]["train"]["characters"] == split_idx
    assert meta["splits"]["val"]["characters"] == len(text) - split_idx
    assert meta["inputs"]["the-verdict.txt"] == "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"
    assert json.loads((tmp_path / "shards" / "meta.json").read_text()) == meta


def test_verdict_batches_as_in_chapter_5(gpt2, verdict_file, tmp_path):
    write_shards([verdict_file], gpt2, tmp_path / "shards", train_ratio=0.9)
    data = Shards(tmp_path / "shards")
    train = create_dataloader(data.windows("train", 256, 256), 2, shuffle=True, drop_last=True, seed=123)
    val = create_dataloader(data.windows("val", 256, 256), 2, shuffle=False, drop_last=False)
    train_batches = list(train)
    val_batches = list(val)
    assert len(train_batches) == 9
    assert sum(x.numel() for x, _ in train_batches) == 4608
    assert len(val_batches) == 1
    assert sum(x.numel() for x, _ in val_batches) == 512
    x, y = train_batches[0]
    assert x.shape == y.shape == (2, 256)
    assert x.dtype == y.dtype == __import__("torch").int64
    assert (x[:, 1:] == y[:, :-1]).all()


@pytest.mark.parametrize("max_length, stride", [(4, 1), (256, 128), (7, 9), (1, 1)])
def test_windows_match_gptdatasetv1(gpt2, verdict_file, tmp_path, max_length, stride):
    write_shards([verdict_file], gpt2, tmp_path / "s", train_ratio=0.9)
    data = Shards(tmp_path / "s")
    ids = np.fromfile(data.path("train"), dtype=np.uint16).tolist()
    ds = data.windows("train", max_length, stride)
    expected = book_windows(ids, max_length, stride)
    assert len(ds) == len(expected)
    for i in [0, 1, len(ds) // 2, len(ds) - 1]:
        x, y = ds[i]
        assert (x.tolist(), y.tolist()) == expected[i]


def test_windows_are_memory_mapped_and_picklable(gpt2, verdict_file, tmp_path):
    write_shards([verdict_file], gpt2, tmp_path / "s")
    ds = Shards(tmp_path / "s").windows("train", 16, 16)
    ds[0]
    assert isinstance(ds.tokens, np.memmap)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._tokens is None
    assert clone[3][0].tolist() == ds[3][0].tolist()
    loader = create_dataloader(ds, 4, shuffle=False, drop_last=False, num_workers=1)
    assert sum(len(x) for x, _ in loader) == len(ds)


def test_streaming_equals_whole_text_encoding(gpt2):
    """Cuts made while streaming never change the token ids (random texts, tiny chunks)."""
    rng = random.Random(0)
    alphabet = [
        "a",
        "b",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        " \n",
        "'s",
        "'t",
        "1",
        "23",
        ".",
        "!!",
        "\u00a0",
        "\u3000",
        "é",
        "\r\n",
        "\x1c",
        "--",
        "😀",
    ]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        for size in (1, 5, 31):
            parts = list(corpus._chunks(iter(text), size))
            assert "".join(parts) == text
            ids = [i for p in parts for i in gpt2.encode(p, allow_special=False)]
            assert ids == gpt2.encode(text, allow_special=False), (text, size)
            word = WordTokenizer.build([text])
            assert [i for p in parts for i in word.encode(p)] == word.encode(text)


def test_safe_cut():
    assert safe_cut("ab cd") == 2
    assert safe_cut("ab  cd") == 2  # before the whole run of spaces
    assert safe_cut("abcd") == 0
    assert safe_cut(" abcd") == 0
    assert safe_cut("a\nb c\n") == 5


def test_streamed_corpus_with_small_chunks(gpt2, mirror, tmp_path):
    src = tmp_path / "valid.txt"
    shutil.copy(mirror / "wikitext-2" / "valid.txt", src)
    text = src.read_text(encoding="utf-8")[:300_000]
    src.write_text(text, encoding="utf-8")
    small = write_shards([src], gpt2, tmp_path / "a", chunk_chars=997, batch_chars=5000)
    big = write_shards([src], gpt2, tmp_path / "b")
    assert small["splits"] == big["splits"]
    split_idx = int(0.9 * len(text))
    assert small["splits"]["train"]["tokens"] == len(gpt2.encode(text[:split_idx], allow_special=False))


def test_documents_joined_by_endoftext(gpt2, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    docs = ["First document here.", "Second one, a bit longer than the first.", "Third."]
    for i, d in enumerate(docs):
        (raw / f"{i}.txt").write_text(d)
    files = corpus.corpus_files(raw)
    meta = write_shards(files, gpt2, tmp_path / "s", train_ratio=0.5)
    train = np.fromfile(tmp_path / "s" / "train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "s" / "val.bin", dtype=np.uint16).tolist()
    total = sum(map(len, docs))
    split_idx = int(0.5 * total)  # falls inside the second document
    cut = split_idx - len(docs[0])
    assert train == gpt2.encode(docs[0]) + [50256] + gpt2.encode(docs[1][:cut])
    assert val == gpt2.encode(docs[1][cut:]) + [50256] + gpt2.encode(docs[2])
    assert meta["splits"]["train"]["documents"] == 2
    assert meta["splits"]["val"]["documents"] == 2


def test_wikitext_articles_become_documents(gpt2, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    text = " \n = Alpha = \n \n Alpha text . \n \n = = Section = = \n More alpha . \n = Beta = \n \n Beta text . \n"
    (raw / "valid.txt").write_text(text)
    docs = list(corpus.documents(corpus.corpus_files(raw), "wikitext"))
    joined = ["".join(d) for d in docs]
    assert joined == [
        "\n= Alpha =\n\nAlpha text.\n\n== Section ==\nMore alpha.\n",
        "= Beta =\n\nBeta text.\n",
    ]
    meta = write_shards(corpus.corpus_files(raw), gpt2, tmp_path / "s", mode="wikitext", train_ratio=0.99)
    assert meta["splits"]["train"]["documents"] == 2
    train = np.fromfile(tmp_path / "s" / "train.bin", dtype=np.uint16).tolist()
    assert train.count(50256) == 1


@pytest.mark.parametrize(
    "line, text",
    [
        (" \n", "\n"),
        (" = = Description = = \n", "== Description ==\n"),
        (" It weighs 0 @.@ 7 – 2 @.@ 2 kg ( 1 @,@ 500 g ) . \n", "It weighs 0.7 – 2.2 kg (1,500 g).\n"),
        (' a well @-@ known , " lobster red " claw ; it \'s here \n', 'a well-known, "lobster red" claw; it\'s here\n'),
        (" They don 't know the players ' names ! \n", "They don't know the players' names!\n"),
        (" a species of <unk> lobster , called <unk> ( <unk> ) . \n", "a species of lobster, called.\n"),
        (' the <unk> @-@ square , <unk> \'s work and " <unk> " end \r\n', "the square, work and end\r\n"),
    ],
)
def test_wikitext_lines_are_detokenised(line, text):
    assert corpus.detokenize_wikitext(line) == text


def test_wikitext_from_the_mirror_has_no_tokenization_left(mirror):
    """Both WikiText files the default corpus reads: no <unk>, no @-@ separators, no space before
    a comma or full stop, no line that starts or ends with a space; about 10% fewer characters."""
    for name in ("valid.txt", "test.txt"):
        raw = (mirror / "wikitext-2" / name).read_text(encoding="utf-8")
        text = "".join(corpus.detokenize_wikitext(line) for line in raw.splitlines(keepends=True))
        assert "<unk>" not in text and " @-@ " not in text and " @,@ " not in text
        assert " , " not in text and " . " not in text and " 's " not in text
        assert not [line for line in text.splitlines() if line != line.strip()]
        assert 0.85 * len(raw) < len(text) < 0.95 * len(raw)
        assert text.count("\n") == raw.count("\n")


def test_jsonl_documents_and_bad_line(gpt2, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "articles.jsonl").write_text(
        json.dumps({"title": "A", "text": "Alpha."}) + "\n" + json.dumps({"text": "Beta."}) + "\n"
    )
    meta = write_shards(corpus.corpus_files(raw), gpt2, tmp_path / "s", train_ratio=0.5)
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 3  # one is split
    (raw / "articles.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(ShardError, match=r"articles.jsonl:2: expected a JSON object with a 'text' string"):
        write_shards(corpus.corpus_files(raw), gpt2, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_word_tokenizer_shards(verdict_file, tmp_path, mirror):
    files = [verdict_file]
    tok = make_tokenizer("word", mirror / "gpt2", files, "file")
    meta = write_shards(files, tok, tmp_path / "s")
    assert meta["vocab_size"] == 1132
    assert meta["tokenizer"]["kind"] == "word"
    data = Shards(tmp_path / "s")
    again = data.tokenizer(mirror / "gpt2")
    assert isinstance(again, WordTokenizer) and again.vocab == tok.vocab
    text = verdict_file.read_text()
    ids = np.fromfile(data.path("train"), dtype=np.uint16).tolist()
    assert ids == tok.encode(text[: int(0.9 * len(text))])


def test_wide_vocabulary_uses_uint32(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text(" ".join(words[-50:] * 3))
    tok = WordTokenizer(words + ["<|endoftext|>", "<|unk|>"])
    meta = write_shards(corpus.corpus_files(raw), tok, tmp_path / "s")
    assert meta["dtype"] == "uint32"
    ids = np.fromfile(tmp_path / "s" / "train.bin", dtype=np.uint32)
    assert ids.max() == 69_999


def test_empty_corpus_and_no_files(gpt2, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(ShardError, match="no .txt or .jsonl files"):
        corpus.corpus_files(raw)
    (raw / "a.txt").write_text("")
    with pytest.raises(ShardError, match="is empty"):
        write_shards(corpus.corpus_files(raw), gpt2, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_corpus_shorter_than_a_window(gpt2, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("Just a few words of text for training and validation.")
    write_shards(corpus.corpus_files(raw), gpt2, tmp_path / "s")
    data = Shards(tmp_path / "s")
    with pytest.raises(ShardError, match=r"val.bin: \d+ tokens, too few for one window of max_length 256"):
        data.windows("val", 256)


def test_truncated_or_corrupt_shard_is_detected(gpt2, verdict_file, tmp_path):
    write_shards([verdict_file], gpt2, tmp_path / "verdict")
    train = tmp_path / "verdict" / "train.bin"
    blob = bytearray(train.read_bytes())
    blob[100] ^= 0xFF
    train.write_bytes(bytes(blob))
    Shards(tmp_path / "verdict")  # same size: only the checksum can tell
    with pytest.raises(ShardError, match=r"train.bin does not match the sha256 in meta.json"):
        Shards(tmp_path / "verdict", verify=True)
    train.write_bytes(bytes(blob[:-10]))
    with pytest.raises(
        ShardError, match=r"train.bin is \d+ bytes but meta.json says \d+.*dvc repro -f prepare@verdict"
    ):
        Shards(tmp_path / "verdict")
    (tmp_path / "verdict" / "meta.json").write_text("{")
    with pytest.raises(ShardError, match="meta.json is unreadable"):
        Shards(tmp_path / "verdict")
    with pytest.raises(ShardError, match="dvc repro prepare"):
        Shards(tmp_path / "nothing")


def test_failure_mid_write_leaves_previous_output(gpt2, verdict_file, tmp_path, monkeypatch):
    write_shards([verdict_file], gpt2, tmp_path / "s")
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}

    def boom(texts, num_threads=0):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(gpt2, "encode_batch", boom)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_shards([verdict_file], gpt2, tmp_path / "s")
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s"]


def test_token_windows_rejects_bad_sizes(tmp_path):
    (tmp_path / "t.bin").write_bytes(np.arange(10, dtype=np.uint16).tobytes())
    with pytest.raises(ValueError, match="max_length and stride must be >= 1"):
        TokenWindows(tmp_path / "t.bin", "uint16", 0, 1)


@pytest.mark.parametrize("mode", ["file", "wikitext"])
def test_character_count_equals_the_document_stream(tmp_path, mode):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text(" \n = T = \n body\n\n = U = \n more \n \n")
    (raw / "b.txt").write_text("\n\n  \n")  # blank only
    (raw / "c.jsonl").write_text('{"text": "Alpha."}\n\n{"text": "Beta beta."}\n')
    files = corpus.corpus_files(raw)
    assert corpus.count_characters(files, mode) == sum(len(p) for _, p in corpus.pieces(files, mode, size=7))


def mixed_corpus(folder: Path) -> list[Path]:
    """Several files of every kind: Wikipedia-like gzipped JSONL shards (an empty text among
    them), WikiText, a blank file and a long text that holds the split point."""
    import gzip

    folder.mkdir()
    rng = random.Random(7)
    words = ["the", "model", "learns", "tokens,", "Wikipedia's", "über", "1999", "  ", "\n", "(see)", "—"]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    for shard in range(3):
        with gzip.open(folder / f"wiki-{shard:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(20):
                body = "" if (shard, i) == (1, 3) else text(rng.randint(5, 300))
                f.write(json.dumps({"title": f"T{shard}.{i}", "text": body}) + "\n")
    (folder / "x-blank.txt").write_text("\n\n  \n")
    (folder / "y-wikitext.txt").write_text(" = Alpha = \n " + text(200) + "\n = Beta = \n " + text(50) + "\n")
    (folder / "z-long.txt").write_text(text(5000))
    return corpus.corpus_files(folder)


@pytest.mark.parametrize("mode, train_ratio", [("file", 0.9), ("wikitext", 0.3)])
def test_output_is_the_same_for_any_number_of_workers(gpt2, tmp_path, mode, train_ratio):
    files = mixed_corpus(tmp_path / "raw")
    results = []
    for workers in (1, 3):
        out = tmp_path / f"s{workers}"
        meta = write_shards(
            files, gpt2, out, mode=mode, train_ratio=train_ratio, name="c", workers=workers, pool_bytes=0
        )
        results.append((meta, (out / "train.bin").read_bytes(), (out / "val.bin").read_bytes()))
        assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert results[1] == results[0]
    # the reference: the corpus's text cut at the split character, each side's documents
    # encoded whole and joined by <|endoftext|>
    docs = [d for d in ("".join(parts) for parts in corpus.documents(files, mode)) if d]
    split_at, seen, sides = int(train_ratio * sum(map(len, docs))), 0, ([], [])
    for doc in docs:
        cut = min(max(split_at - seen, 0), len(doc))
        for side, text in zip(sides, (doc[:cut], doc[cut:])):
            if text:
                side.append(text)
        seen += len(doc)
    meta, train, val = results[0]
    for side, data in zip(sides, (train, val)):
        expected = []
        for n, text in enumerate(side):
            expected += [50256] * (n > 0) + gpt2.encode(text, allow_special=False)
        assert np.frombuffer(data, dtype=np.uint16).tolist() == expected
    assert meta["splits"]["train"]["characters"] == split_at
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(docs) + 1


def test_a_workers_error_names_the_file_and_keeps_the_previous_output(gpt2, tmp_path):
    files = mixed_corpus(tmp_path / "raw")
    write_shards(files, gpt2, tmp_path / "s", workers=2, pool_bytes=0)
    before = (tmp_path / "s" / "train.bin").read_bytes()
    import gzip

    with gzip.open(files[1], "at", encoding="utf-8") as f:
        f.write('{"title": "broken", "text": 5}\n')
    with pytest.raises(ShardError, match=r"wiki-00001.jsonl.gz:21: 'text' must be a string, got int"):
        write_shards(files, gpt2, tmp_path / "s", workers=2, pool_bytes=0)
    assert (tmp_path / "s" / "train.bin").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("raw", "s")] == []
