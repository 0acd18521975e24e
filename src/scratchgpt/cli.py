"""The ``scratchgpt`` command (also ``python -m scratchgpt``): what a person runs outside ``dvc``.

scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
scratchgpt classify --model models/classifier "You are a winner!"
scratchgpt weights download 124M ~/gpt2-124M | convert SRC OUT | export-hf MODEL OUT
scratchgpt experiments list | args NAME | run NAME [dvc exp run options]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys

import torch

from scratchgpt.book.classify import classify
from scratchgpt.book.generate import stream
from scratchgpt.device import pick_device
from scratchgpt.errors import PipelineError
from scratchgpt.formats.convert import convert
from scratchgpt.formats.hf import export_hf
from scratchgpt.formats.modeldir import load_classifier, load_model, load_tokenizer
from scratchgpt.formats.openai import OPENAI_BASE_URLS, OPENAI_PRESETS, download_openai
from scratchgpt.plumbing.allocator import tune_cpu_allocator
from scratchgpt.plumbing.download import mirror_from_env
from scratchgpt.plumbing.experiments import names, set_args
from scratchgpt.plumbing.params_file import ParamsError


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# generate


def generate_command(args: argparse.Namespace) -> int:
    """Continue a prompt, streaming the text as it comes."""
    tune_cpu_allocator()
    try:
        device = pick_device(args.device)
        model = load_model(args.model, device=device)
        tokenizer = load_tokenizer(args.model)
    except (FileNotFoundError, ValueError) as e:
        return _error(str(e))
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(args.seed)
    ids = tokenizer.encode(args.prompt)
    if len(ids) > model.config.context_length:
        print(
            f"note: the prompt has {len(ids)} tokens; only the last {model.config.context_length} are seen",
            file=sys.stderr,
        )
    printed = tokenizer.decode(ids)
    sys.stdout.write(printed)
    sys.stdout.flush()
    options = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        use_cache=not args.no_cache,
        eos_id=None if args.no_eos else tokenizer.eot_id,
        generator=generator,
    )
    try:
        for next_ids, _ in stream(model, [ids], args.max_new_tokens, **options):
            ids.append(int(next_ids[0]))
            text = tokenizer.decode(ids).rstrip("\ufffd")  # hold back half a UTF-8 character
            if text.startswith(printed) and len(text) > len(printed):
                sys.stdout.write(text[len(printed) :])
                sys.stdout.flush()
                printed = text
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    sys.stdout.write("\n")
    return 0


# ---------------------------------------------------------------------------------------------
# classify


def classify_command(args: argparse.Namespace) -> int:
    """Label each text (or each line of stdin) as spam or not spam."""
    try:
        model, tokenizer, head = load_classifier(args.model)
    except (FileNotFoundError, ValueError) as e:
        return _error(str(e))
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in texts:
        label, prob = classify(text, model, tokenizer, head)
        shown = "spam" if label == "spam" else "not spam"
        print(f"{shown}\t{prob:.3f}\t{text}")
    return 0


# ---------------------------------------------------------------------------------------------
# weights


def weights_command(args: argparse.Namespace) -> int:
    """Download OpenAI's checkpoints, convert them or Hugging Face folders, export to Hugging Face."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "convert":
            out = convert(args.src, args.out, bpe_dir=args.bpe_dir, with_tokenizer=not args.no_tokenizer)
        elif args.action == "export-hf":
            out = export_hf(args.model, args.out)
        else:
            mirror = args.mirror or mirror_from_env()
            out = download_openai(args.size, args.out, mirror=mirror, base_urls=args.base_urls or OPENAI_BASE_URLS)
    except (PipelineError, OSError) as e:
        return _error("; ".join(line.strip() for line in str(e).splitlines() if line.strip()))
    print(out)
    return 0


# ---------------------------------------------------------------------------------------------
# experiments


def experiments_command(args: argparse.Namespace) -> int:
    """The named experiments of experiments/: list them, show their -S arguments, run one."""
    if args.action == "list":
        print("\n".join(names()))
        return 0
    try:
        set_arguments = set_args(args.name)
    except ParamsError as e:
        return _error(str(e))
    if args.action == "args":
        print(shlex.join(set_arguments))
        return 0
    cmd = ["dvc", "exp", "run", "-n", args.name, *set_arguments, *args.dvc_options]
    print("+", shlex.join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


# ---------------------------------------------------------------------------------------------
# The parser


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scratchgpt", description="Build a Large Language Model (From Scratch): tools.")
    sub = ap.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help=generate_command.__doc__, description=generate_command.__doc__)
    gen.add_argument("--model", required=True, help="a model directory (config.json + model.safetensors)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None, help="fixes sampling")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole window each step")
    gen.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")
    gen.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    gen.set_defaults(func=generate_command)

    clf = sub.add_parser("classify", help=classify_command.__doc__, description=classify_command.__doc__)
    clf.add_argument("--model", required=True, help="a classifier directory (models/classifier)")
    clf.add_argument("texts", nargs="*", help="texts to label; none: read one per line from stdin")
    clf.set_defaults(func=classify_command)

    weights = sub.add_parser("weights", help=weights_command.__doc__, description=weights_command.__doc__)
    actions = weights.add_subparsers(dest="action", required=True)
    conv = actions.add_parser("convert", help="OpenAI TF checkpoint or Hugging Face GPT-2 folder → model directory")
    conv.add_argument("src", help="folder with hparams.json + model.ckpt.*, or config.json + model.safetensors")
    conv.add_argument("out", help="the model directory to write")
    conv.add_argument("--bpe-dir", help="folder with encoder.json + vocab.bpe (default: those in SRC)")
    conv.add_argument("--no-tokenizer", action="store_true", help="save no tokenizer")
    exp = actions.add_parser("export-hf", help="model directory → Hugging Face GPT-2 folder")
    exp.add_argument("model", help="our model directory")
    exp.add_argument("out", help="the folder to write")
    down = actions.add_parser("download", help="OpenAI's checkpoint files of one size")
    down.add_argument("size", help=", ".join(OPENAI_PRESETS))
    down.add_argument("out", help="folder for the seven files")
    down.add_argument("--mirror", default=None, help="folder or URL tried last (default: $SCRATCHGPT_MIRROR)")
    down.add_argument(
        "--base-url",
        action="append",
        dest="base_urls",
        metavar="URL",
        help="fetch <URL>/<SIZE>/<file> instead of OpenAI's and the backup (repeat for more)",
    )
    weights.set_defaults(func=weights_command)

    ex = sub.add_parser("experiments", help=experiments_command.__doc__, description=experiments_command.__doc__)
    ex_actions = ex.add_subparsers(dest="action", required=True)
    ex_actions.add_parser("list", help="the experiment names")
    ex_args = ex_actions.add_parser("args", help="the checked -S arguments of one experiment")
    ex_args.add_argument("name")
    ex_run = ex_actions.add_parser("run", help="dvc exp run -n NAME with its -S arguments")
    ex_run.add_argument("name")
    ex_run.add_argument("dvc_options", nargs=argparse.REMAINDER, help="passed on to dvc exp run")
    ex.set_defaults(func=experiments_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
