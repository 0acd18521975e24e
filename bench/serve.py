"""`scratchgpt serve` under load: N = 1, 4 and 8 concurrent streaming clients, the untrained 124M
model (the book's GPT_CONFIG_124M), greedy, in one run on this machine.

    python bench/serve.py [--tokens 64] [--clients 1 4 8] [--precision fp32]

The model folder is written to a scratch folder; `scratchgpt serve` runs in its own process
(as a user runs it) and each client is a thread with the official ``openai`` client streaming
one chat completion of ``--tokens`` tokens (``max_tokens``, no stop: every client decodes the
same count). Each prompt differs, so rows join the batch at different lengths. Prints, per N:
aggregate tokens/s (all clients' tokens over the wall time from the first request to the last
token), the median time to first token, the median time per token after the first, and the
ratio of aggregate tokens/s to N = 1 (target at N = 8: >= 4x). CPU name and SIMD flags first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai
import torch

from scratchgpt.book.model import PRESETS, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.device import cpu_flags, cpu_name
from scratchgpt.formats.modeldir import save_model, save_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def model_folder(folder: Path, bpe_dir: Path) -> Path:
    torch.manual_seed(123)
    config = PRESETS["book-124m"]
    tok = GPT2Tokenizer(bpe_dir)
    save_model(GPTModel(config).eval(), folder, metadata={"tokenizer": save_tokenizer(tok, folder)})
    return folder


def start(folder: Path, precision: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "scratchgpt", "serve", "--model", str(folder), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--precision", precision, "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "Uvicorn running on" in line:
            url = line.split("running on ")[1].split()[0]
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, url
    raise SystemExit("the server did not start")


def one_client(url: str, name: str, question: str, tokens: int, out: list) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=600)
    times = []
    sent = time.perf_counter()
    stream = client.completions.create(
        model=name,
        prompt=question,
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    count = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())
        if chunk.usage:
            count = chunk.usage.completion_tokens
    out.append({"sent": sent, "times": times, "tokens": count})


def load(url: str, name: str, clients: int, tokens: int) -> dict[str, float]:
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=one_client,
            args=(url, name, f"Request {i}: tell me about " + "the weather " * (i + 1), tokens, results),
        )
        for i in range(clients)
    ]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = max(r["times"][-1] for r in results)
    total = sum(r["tokens"] for r in results)
    ttft = statistics.median(r["times"][0] - r["sent"] for r in results)
    per_token = statistics.median(
        (r["times"][-1] - r["times"][0]) / max(1, len(r["times"]) - 1) for r in results if len(r["times"]) > 1
    )
    return {"tokens": total, "seconds": end - begin, "tps": total / (end - begin), "ttft": ttft, "per_token": per_token}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--bpe-dir", type=Path, default=None, help="GPT-2's encoder.json + vocab.bpe (default: the mirror)")
    args = ap.parse_args()
    bpe = args.bpe_dir or Path(os.environ.get("SCRATCHGPT_MIRROR") or ROOT.parent / "shared" / "data") / "gpt2"
    simd = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    print(f"CPU: {cpu_name()}; {' '.join(simd) or 'no AVX2'}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp) / "gpt2-124m", bpe)
        proc, url = start(folder, args.precision)
        try:
            load(url, folder.name, 1, 8)  # warm up
            rows = {n: load(url, folder.name, n, args.tokens) for n in args.clients}
        finally:
            proc.send_signal(2)
            proc.wait(30)
    base = rows[args.clients[0]]["tps"]
    print(f"124M, {args.precision}, greedy, {args.tokens} tokens per client, streaming")
    print(f"{'clients':>7}  {'tokens/s':>9}  {'x N=1':>6}  {'first token':>11}  {'per token':>9}")
    for n, r in rows.items():
        ratio, ttft, per_token = r["tps"] / base, r["ttft"] * 1000, r["per_token"] * 1000
        print(f"{n:>7}  {r['tps']:>9.1f}  {ratio:>5.2f}x  {ttft:>8.0f} ms  {per_token:>6.1f} ms")
    last = args.clients[-1]
    print(f"at {last} clients: {rows[last]['tps'] / base:.2f}x a single stream (target at 8: >= 4x)")


if __name__ == "__main__":
    main()
