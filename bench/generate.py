"""Decoding speed against the memory floor: the untrained 124M model (the book's, untied head),
batch 1, KV cache, in fp32 and with bf16 weights, in one process.

    python bench/generate.py [--tokens 200] [--recompute]

A cached decoding step reads every weight once (the token and position embeddings are only
indexed) and the keys and values cached so far, so its floor is those bytes divided by the
memory bandwidth, measured here as a large copy (bytes read plus bytes written, per second).
Prints the bandwidth, then per precision ms/token, the floor and the share of it reached. bf16
runs where the CPU has fast bf16 (scratchgpt.device), else the row says why not. With
``--recompute`` it also times the book's loop (the whole context recomputed each step) against
the cache in fp32 and checks both give the same ids. The allocator is tuned as in every
scratchgpt entry point (scratchgpt.plumbing.allocator.tune_cpu_allocator).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from scratchgpt.book.generate import generate
from scratchgpt.book.model import PRESETS, GPTModel
from scratchgpt.device import bf16_problem, cpu_flags, cpu_name
from scratchgpt.plumbing.allocator import tune_cpu_allocator

PROMPT = [15496, 11, 314, 716]  # "Hello, I am"


def bandwidth(mib: int = 512, tries: int = 5) -> float:
    """Bytes per second of the best of ``tries`` copies of a ``mib`` MiB buffer (read + write)."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def bytes_per_token(model: GPTModel, tokens: int) -> float:
    """What one cached step reads, on average over a generation of ``tokens`` after the prompt:
    every weight but the indexed embeddings (a tied head is the token embedding, read whole),
    and half the keys and values the cache holds at the end."""
    indexed = {"tok_emb.weight", "pos_emb.weight"}
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n not in indexed)
    if model.config.tie_weights:
        weights += model.tok_emb.weight.numel() * model.tok_emb.weight.element_size()
    c = model.config
    element = next(model.parameters()).element_size()
    cache = 2 * c.n_layers * c.emb_dim * element * (len(PROMPT) + tokens / 2)
    return weights + cache


def decode(model: GPTModel, tokens: int, tries: int = 2) -> tuple[float, list[int]]:
    """Seconds per new token (best of ``tries``) of a cached greedy generation, and its ids."""
    generate(model, [PROMPT], 8)  # warm-up (and oneDNN's packing of bf16 weights)
    best, ids = float("inf"), []
    for _ in range(tries):
        start = time.perf_counter()
        ids = generate(model, [PROMPT], tokens)[0]
        best = min(best, (time.perf_counter() - start) / tokens)
    return best, ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--recompute", action="store_true", help="also time the book's loop without the cache")
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.manual_seed(123)
    model = GPTModel(PRESETS["book-124m"]).eval()
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512f", "avx512_bf16", "amx", "avx2")))
    print(f"{cpu_name()} ({', '.join(flags) or 'no flags read'}), {torch.get_num_threads()} threads")
    print(f"{args.tokens} new tokens, 124M model (untied head), batch 1, KV cache; the bandwidth (a 512 MiB copy,")
    print("read + write) measured just before each of three runs, which pair up (median of the three shown):")
    runs = {"fp32": model}
    problem = bf16_problem(torch.device("cpu"))
    if problem is None:
        runs["bf16"] = copy.deepcopy(model).to(torch.bfloat16)
    for name, m in runs.items():
        per_token = bytes_per_token(m, args.tokens)
        trials = []
        for _ in range(3):
            bw = bandwidth()
            seconds, _ = decode(m, args.tokens, tries=1)
            trials.append((per_token / bw / seconds, seconds, bw))
        share, seconds, bw = sorted(trials)[1]
        print(
            f"  {name}: {seconds * 1e3:6.1f} ms/token, floor {per_token / bw * 1e3:5.1f} ms ({per_token / 1e6:.0f} MB "
            f"a token at {bw / 1e9:.1f} GB/s): {share:.0%} of the floor (runs: "
            + ", ".join(f"{t[0]:.0%}" for t in trials)
            + ")"
        )
    if problem is not None:
        print(f"  bf16: not run ({problem})")
    if args.recompute:
        start = time.perf_counter()
        slow = generate(model, [PROMPT], args.tokens, use_cache=False)
        recompute = time.perf_counter() - start
        start = time.perf_counter()
        fast = generate(model, [PROMPT], args.tokens)
        cached = time.perf_counter() - start
        assert slow == fast, "the KV cache changed the ids"
        print(
            f"recompute the context: {recompute:7.2f} s; KV cache {cached:7.2f} s: {recompute / cached:.2f}x (same ids)"
        )


if __name__ == "__main__":
    main()
