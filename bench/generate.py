"""Generation speed: 200 new tokens from the untrained 124M model, with the KV cache against
recomputing the whole context each step (the book's loop), in one process. Also checks that
both give the same ids. The allocator is tuned as in every scratchgpt entry point
(scratchgpt.plumbing.allocator.tune_cpu_allocator), for both paths alike.

    python bench/generate.py [--tokens 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from scratchgpt.book.generate import generate
from scratchgpt.book.model import PRESETS, GPTModel
from scratchgpt.plumbing.allocator import tune_cpu_allocator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.manual_seed(123)
    model = GPTModel(PRESETS["book-124m"]).eval()
    prompt = [15496, 11, 314, 716]  # "Hello, I am"
    generate(model, [prompt], 5)  # warm-up
    results, seconds = {}, {}
    for use_cache in (False, True):
        start = time.perf_counter()
        results[use_cache] = generate(model, [prompt], args.tokens, use_cache=use_cache)
        seconds[use_cache] = time.perf_counter() - start
    assert results[True] == results[False], "the KV cache changed the ids"
    print(f"{args.tokens} new tokens, 124M model, threads {torch.get_num_threads()}")
    print(f"recompute the context: {seconds[False]:7.2f} s ({args.tokens / seconds[False]:6.1f} tokens/s)")
    print(f"KV cache:              {seconds[True]:7.2f} s ({args.tokens / seconds[True]:6.1f} tokens/s)")
    print(f"speed-up:              {seconds[False] / seconds[True]:7.2f}x (same ids)")


if __name__ == "__main__":
    main()
