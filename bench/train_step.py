"""Training-step speed: scratchgpt's model and optimizer against the book's, in one process.

The book's 124M config at context 256, batch 2, dropout 0.1. Both take the same batches; steps
alternate between the two so that drift in the machine's speed hits both alike. Two rounds:
first with glibc's default allocator, then with the allocator as scratchgpt's stages set it
(scratchgpt.plumbing.allocator.tune_cpu_allocator), which speeds up both. Prints tokens/s of each, their
ratio, and our achieved FLOP/s as a fraction of a 2048×2048 fp32 matmul measured in the same
round (FLOPs per token: 6 × non-embedding parameters, the output head included, plus
12 × layers × context × emb_dim).

    python bench/train_step.py [--steps 4] [--warmup 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchgpt.book.loader import lm_loss
from scratchgpt.book.model import PRESETS, GPTModel
from scratchgpt.plumbing.allocator import tune_cpu_allocator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "book"))
from book_reference import PlainGPT  # noqa: E402  (the book's model, as the tests hold it)


def matmul_flops(n: int = 2048, repeat: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - start)


def flops_per_token(model: GPTModel) -> float:
    c = model.config
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    head = 0 if not c.tie_weights else model.out_head.weight.numel()  # a tied head is also an embedding
    non_embedding = model.num_parameters() - embeddings + head
    return 6 * non_embedding + 12 * c.n_layers * c.context_length * c.emb_dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    config = PRESETS["book-124m"].replace(context_length=256)
    torch.manual_seed(123)
    ours = GPTModel(config).train()
    torch.manual_seed(123)
    book = PlainGPT(config).train()
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=4e-4, weight_decay=0.1, fused=True)
    book_opt = torch.optim.AdamW(book.parameters(), lr=4e-4, weight_decay=0.1)
    x = torch.randint(0, config.vocab_size, (args.batch, config.context_length))
    y = torch.randint(0, config.vocab_size, (args.batch, config.context_length))

    def ours_step() -> None:
        ours_opt.zero_grad(set_to_none=True)
        lm_loss(ours, (x, y)).backward()
        ours_opt.step()

    def book_step() -> None:
        book_opt.zero_grad()
        F.cross_entropy(book(x).flatten(0, 1), y.flatten()).backward()
        book_opt.step()

    def measure(title: str) -> dict[str, float]:
        times = {"book": 0.0, "ours": 0.0}
        for i in range(args.warmup + args.steps):
            for name, step in (("book", book_step), ("ours", ours_step)):
                start = time.perf_counter()
                step()
                if i >= args.warmup:
                    times[name] += time.perf_counter() - start
        rate = {k: args.steps * x.numel() / v for k, v in times.items()}
        peak = matmul_flops()
        achieved = rate["ours"] * flops_per_token(ours)
        print(f"-- {title}")
        print(f"book's model and loop: {rate['book']:8.1f} tokens/s")
        print(f"scratchgpt:            {rate['ours']:8.1f} tokens/s")
        print(f"speed-up:              {rate['ours'] / rate['book']:8.2f}x")
        print(f"2048x2048 fp32 matmul: {peak / 1e9:8.1f} GFLOP/s")
        print(f"scratchgpt achieves:   {achieved / 1e9:8.1f} GFLOP/s = {achieved / peak:.0%} of the matmul")
        return rate

    print(
        f"threads {torch.get_num_threads()}, {args.steps} timed steps of {x.numel()} tokens each, after {args.warmup}"
    )
    default = measure("glibc's default allocator")
    if tune_cpu_allocator():
        tuned = measure("allocator tuned as scratchgpt's stages run (both models benefit)")
        print("-- as each runs: scratchgpt's stage (tuned) against the book's code (default allocator)")
        print(f"speed-up:              {tuned['ours'] / default['book']:8.2f}x")


if __name__ == "__main__":
    main()
