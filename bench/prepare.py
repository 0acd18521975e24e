"""Shard-building speed and memory: scratchgpt's prepare against tiktoken's own
encode_ordinary_batch on the same text already in memory, for the WikiText files read as plain
text (documents: file) and as articles detokenised (documents: wikitext, what the default
pipeline does: against tiktoken on the detokenised text), and peak memory when the corpus is 10x
larger.

    python bench/prepare.py [--mirror ../shared/data]     (or $SCRATCHGPT_MIRROR)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys
from pathlib import Path
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.plumbing.corpus import corpus_files
from scratchgpt.plumbing.shard_writer import write_shards
tok = GPT2Tokenizer(sys.argv[1])
write_shards(corpus_files(Path(sys.argv[2])), tok, Path(sys.argv[3]), mode="wikitext")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(bpe: Path, corpus: Path, out: Path) -> int:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(bpe), str(corpus), str(out)], capture_output=True, text=True, check=True
    )
    return int(run.stdout.split()[-1])


def best_time(fn, repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs (the others were slowed by something else)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from scratchgpt.book.tokenizer import GPT2Tokenizer
    from scratchgpt.plumbing.corpus import corpus_files, documents
    from scratchgpt.plumbing.shard_writer import write_shards

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=os.environ.get("SCRATCHGPT_MIRROR", "../shared/data"))
    args = ap.parse_args()
    mirror = Path(args.mirror)
    tok = GPT2Tokenizer(mirror / "gpt2")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "x1").mkdir()
        (tmp / "x10").mkdir()
        for name in ("valid.txt", "test.txt"):
            shutil.copy(mirror / "wikitext-2" / name, tmp / "x1" / name)
        with open(tmp / "x10" / "big.txt", "w", encoding="utf-8") as big:
            for _ in range(10):
                for name in ("valid.txt", "test.txt"):
                    big.write((mirror / "wikitext-2" / name).read_text(encoding="utf-8"))
        files = corpus_files(tmp / "x1")
        rows = []
        for mode in ("file", "wikitext"):
            texts = ["".join(parts) for parts in documents(files, mode)]
            n_ref = sum(len(ids) for ids in tok.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count()))
            ref = n_ref / best_time(
                lambda texts=texts: tok.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count())
            )
            meta = write_shards(files, tok, tmp / "out", mode=mode)
            tokens = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
            ours = tokens / best_time(lambda mode=mode: write_shards(files, tok, tmp / "out", mode=mode))
            rows.append((mode, tokens, ref, ours))
        detok = best_time(lambda: [len("".join(p)) for p in documents(files, "wikitext")])
        rss1 = peak_rss_kib(mirror / "gpt2", tmp / "x1", tmp / "o1")
        rss10 = peak_rss_kib(mirror / "gpt2", tmp / "x10", tmp / "o10")
    print(f"WikiText-2 valid+test, {os.cpu_count()} cores; best of 5 each")
    for mode, tokens, ref, ours in rows:
        print(f"documents: {mode} ({tokens:,} tokens)")
        print(f"  tiktoken encode_ordinary_batch: {ref:12,.0f} tokens/s  (the same text, already in memory)")
        print(f"  scratchgpt write_shards:        {ours:12,.0f} tokens/s  ({ours / ref:.2f}x; reads, splits, writes)")
    print(f"detokenising the two files once: {detok:.3f} s (write_shards does it twice: to count, then to encode)")
    print(f"peak RSS, corpus x1:  {rss1 / 1024:7.1f} MiB")
    print(f"peak RSS, corpus x10: {rss10 / 1024:7.1f} MiB  ({rss10 / rss1:.2f}x)")


if __name__ == "__main__":
    main()
