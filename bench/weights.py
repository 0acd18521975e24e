"""GPT-2 124M into a model directory, both ways ``init`` takes: OpenAI's TensorFlow checkpoint
(the book's path: TensorFlow imported, the checkpoint read) against a Hugging Face folder as the
Hub serves it (safetensors, no TensorFlow). Random weights of GPT-2 small's exact shapes; each
conversion runs in a fresh process, so the imports it needs are counted. The download itself
is left out: that time is the network's.

    python bench/weights.py [--mirror ../shared/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPT2_SMALL = dict(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)

CHILD = """
import json, sys, time
start = time.perf_counter()
if sys.argv[1] == "tf":
    from scratchgpt.formats.openai import convert_tf_checkpoint as convert
else:
    from scratchgpt.formats.hf import import_hf as convert
convert(sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed(kind: str, src: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(src), str(out)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", default=os.environ.get("SCRATCHGPT_MIRROR", "../shared/data"))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest is kept")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT / "tests"))
    import tensorflow as tf

    from fakes import openai_arrays, write_openai_checkpoint
    from scratchgpt.formats.hf import export_hf
    from scratchgpt.formats.openai import convert_tf_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tf_dir = write_openai_checkpoint(tf, tmp / "124M", GPT2_SMALL, openai_arrays(GPT2_SMALL))
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copy(Path(args.mirror) / "gpt2" / name, tf_dir / name)
        ours = convert_tf_checkpoint(tf_dir, tmp / "ours")
        hf_dir = export_hf(ours, tmp / "hf")  # config.json, model.safetensors, vocab.json, merges.txt
        print(f"model.safetensors: {(hf_dir / 'model.safetensors').stat().st_size / 1e6:.0f} MB")
        tf_s = min(timed("tf", tf_dir, tmp / "out") for _ in range(args.repeat))
        hf_s = min(timed("hf", hf_dir, tmp / "out") for _ in range(args.repeat))
    print(f"OpenAI TensorFlow checkpoint → model directory: {tf_s:.1f} s (best of {args.repeat}, imports included)")
    print(f"Hugging Face safetensors → model directory:     {hf_s:.1f} s ({tf_s / hf_s:.1f}x faster, no TensorFlow)")


if __name__ == "__main__":
    main()
