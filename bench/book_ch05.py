"""The book's own chapter 5 run, as its notebook does it, with the book's package (PyPI
``llms-from-scratch``): GPT_CONFIG_124M with a 256-token context, the-verdict split 90/10,
batch 2, AdamW lr 4e-4 and weight decay 0.1, 10 epochs, evaluation every 5 steps over 5 batches,
a 50-token greedy sample after each epoch, seed 123, on the CPU.

    python bench/book_ch05.py --text data/raw/verdict/the-verdict.txt --bpe data/raw/gpt2 --out book.json

``--bpe`` names a folder holding GPT-2's encoder.json and vocab.bpe: they are placed in a private
tiktoken cache, so that the book's ``tiktoken.get_encoding("gpt2")`` runs offline, unchanged.
Writes the evaluation points and the time from the process's start to the end of training.
"""

import time

STARTED = time.perf_counter()  # before the imports: the book's run pays for them too

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

TIKTOKEN_FILES = {  # where tiktoken fetches GPT-2's BPE files; its cache names each by the URL's sha1
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def offline_tiktoken(bpe_dir: Path) -> None:
    cache = Path(tempfile.mkdtemp(prefix="book-tiktoken-"))
    for name, url in TIKTOKEN_FILES.items():
        shutil.copyfile(bpe_dir / name, cache / hashlib.sha1(url.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", type=Path, required=True, help="the-verdict.txt")
    ap.add_argument("--bpe", type=Path, required=True, help="folder with encoder.json and vocab.bpe")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the points and times")
    args = ap.parse_args()
    offline_tiktoken(args.bpe)

    import tiktoken
    import torch
    from llms_from_scratch.ch02 import create_dataloader_v1
    from llms_from_scratch.ch04 import GPTModel
    from llms_from_scratch.ch05 import train_model_simple

    imported = time.perf_counter()
    GPT_CONFIG_124M = {
        "vocab_size": 50257,
        "context_length": 256,
        "emb_dim": 768,
        "n_heads": 12,
        "n_layers": 12,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }
    text_data = args.text.read_text(encoding="utf-8")
    tokenizer = tiktoken.get_encoding("gpt2")
    split_idx = int(0.90 * len(text_data))
    train_data, val_data = text_data[:split_idx], text_data[split_idx:]
    torch.manual_seed(123)
    train_loader = create_dataloader_v1(
        train_data, batch_size=2, max_length=256, stride=256, drop_last=True, shuffle=True, num_workers=0
    )
    val_loader = create_dataloader_v1(
        val_data, batch_size=2, max_length=256, stride=256, drop_last=False, shuffle=False, num_workers=0
    )
    device = torch.device("cpu")
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    train_start = time.perf_counter()
    train_losses, val_losses, tokens_seen = train_model_simple(
        model,
        train_loader,
        val_loader,
        optimizer,
        device,
        num_epochs=10,
        eval_freq=5,
        eval_iter=5,
        start_context="Every effort moves you",
        tokenizer=tokenizer,
    )
    done = time.perf_counter()
    points = [
        {"step": 5 * i, "train_loss": t, "val_loss": v, "tokens_seen": n}
        for i, (t, v, n) in enumerate(zip(train_losses, val_losses, tokens_seen))
    ]
    times = {"imports": imported - STARTED, "set-up": train_start - imported, "training": done - train_start}
    args.out.write_text(json.dumps({"points": points, "seconds": times}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
