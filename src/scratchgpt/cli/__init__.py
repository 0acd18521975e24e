"""The ``scratchgpt`` command (also ``python -m scratchgpt``): what a person runs outside ``dvc``.

    scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
    scratchgpt chat --model models/instruct
    scratchgpt classify --model models/classifier "You are a winner!"
    scratchgpt serve --model models/instruct [--host 127.0.0.1] [--port 8000]
    scratchgpt experiments list | show NAME | run NAME [--queue]
    scratchgpt weights download 124M ~/gpt2-124M | convert SRC OUT | export-hf MODEL OUT
    scratchgpt params [FILE]

The parser is here, with the light argument types of ``common``; each command runs in a module
of its own, ``scratchgpt.cli.<command>``, whose ``run(args)`` returns the exit status. That module,
with torch, the model code or DVC, is imported only when its command runs, so that ``--help``
answers at once (tests/test_cli.py checks it imports none of them). Bad arguments end in one
line, ``scratchgpt <command>: error: argument --option: ...``, and exit status 2; a failure while
running ends in one line and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from scratchgpt.book.settings import PRECISIONS
from scratchgpt.cli.common import (
    GPT2_SIZES,
    Formatter,
    Parser,
    classifier,
    columns,
    device,
    language_model,
    model_dir,
    natural,
    port,
    positive_float,
    positive_int,
    temperature,
    top_p,
)

# Chapter 5's sampling (section 5.3): what generate and chat do unless told --greedy.
BOOK_TEMPERATURE, BOOK_TOP_K = 1.4, 25

# Each command, in --help's order, with its help; scratchgpt.cli.<command> runs it.
COMMANDS = {
    "generate": "Continue a prompt with a language model, streaming the text as it comes.",
    "chat": "Talk to an instruction model with the book's Alpaca prompt, streaming each answer.",
    "classify": "Label each text (or each line of stdin) with the classifier: label, probability, text.",
    "serve": "Serve a model folder over an OpenAI-compatible HTTP API (chat and text completions, streaming; "
    "classify for a classifier), concurrent requests decoded together.",
    "weights": "Download OpenAI's GPT-2 checkpoints, convert them or Hugging Face folders into model directories, "
    "export a model directory to Hugging Face's layout.",
    "experiments": "The book's runs, named in experiments/: list them, show one, run one as a DVC experiment of "
    "only the stages it reproduces.",
    "metrics": "Every metric of the workspace, a block per metrics file of dvc.yaml, in the terminal's width (at "
    "most 120 columns).",
    "compare": "The workspace's metrics against the committed ones: equal, float noise (within --rtol, as another "
    "CPU's SIMD units give) or different; with the CPU's name and SIMD flags.",
    "params": "Check the whole of params.yaml: every section and the rules across them (a stage checks only the "
    "sections it reads). Prints each problem by its full key.",
}

CHAT_EPILOG = """\
Each instruction is wrapped in the book's Alpaca prompt ("Below is an instruction that describes a
task. ...", "### Instruction:", then "### Response:"). The answer streams as it is generated (with
a KV cache) and ends at <|endoftext|>, at the next "###" section or after --max-new-tokens.

Typed at a terminal, the conversation is kept: earlier turns stay in the prompt, each as its
"### Instruction:" and "### Response:", and the oldest are dropped when the prompt and
--max-new-tokens new tokens would not fit the model's context window. /reset forgets them;
/quit, /exit, exit, quit, Ctrl-D or Ctrl-C at the prompt end; Ctrl-C during an answer stops it;
/help lists the commands. An empty answer is said so in one line on stderr.

When stdin is not a terminal, each non-empty line is an instruction answered on its own (no
history unless --history); the answers are printed with no prompts, a blank line between two:

  echo "Name a color" | scratchgpt chat --model models/instruct

Input is read as UTF-8: bytes that are not UTF-8 are read as U+FFFD (the replacement character),
with a one-line warning when they come from a pipe or file.
"""

SERVE_EPILOG = """\
Routes: GET /v1/models; POST /v1/chat/completions (the messages as the book's Alpaca prompt) and
POST /v1/completions (a raw prompt) for a language model, with max_tokens, temperature, top_p,
top_k, stop, seed and stream; POST /v1/classify for a classifier. Try it with the openai client:

  scratchgpt serve --model models/instruct &
  python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='-');
  print(c.chat.completions.create(model='instruct', messages=[{'role': 'user', 'content': 'Hi'}]))"

Requests that arrive while others decode join the running batch (up to --max-batch rows); up to
--max-queue more wait, past that the answer is 429. docs/serving.md has the details.
"""

TOP_EPILOG = """\
examples:
  scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
  scratchgpt chat --model models/instruct
  scratchgpt classify --model models/classifier "You are a winner!" "See you at 6?"
  scratchgpt serve --model models/instruct
  scratchgpt metrics
  scratchgpt experiments list
  scratchgpt experiments run book-ch05
  scratchgpt weights download 124M gpt2-124M

`scratchgpt COMMAND --help` describes each command.
"""


def command_module(command: str) -> str:
    """The module that runs ``command``."""
    return f"{__name__}.{command}"


def _sampling_options(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=max_new_tokens,
        metavar="N",
        help="stop after N new tokens (>= 1; default %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=temperature,
        default=BOOK_TEMPERATURE,
        metavar="T",
        help="sample from the probabilities divided by T (finite, >= 0; default %(default)s with top-k "
        f"{BOOK_TOP_K}: chapter 5's sampling, which does not loop as the most likely token does); 0 is greedy",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=BOOK_TOP_K,
        metavar="K",
        help="sample among the K likeliest tokens (>= 1; default %(default)s)",
    )
    p.add_argument(
        "--greedy",
        action="store_true",
        help="the most likely token each step, no sampling (as the book's reproductions; overrides the "
        "sampling options)",
    )
    p.add_argument(
        "--top-p",
        type=top_p,
        default=None,
        metavar="P",
        help="sample among the likeliest tokens whose probability reaches P (0 < P <= 1)",
    )
    p.add_argument("--seed", type=int, default=None, help="fixes the sampling (default: unseeded)")
    _device_options(p)


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (CUDA, else Apple's mps, else the CPU), cpu, mps, cuda or cuda:N (default %(default)s)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or bf16 weights where the device has fast bf16 (CUDA, mps, a CPU with AMX or "
        "AVX-512 BF16): half the bytes to read per token (default %(default)s)",
    )


def _actions(command: argparse.ArgumentParser) -> Callable[[str, str], argparse.ArgumentParser]:
    """A function that adds an action (``scratchgpt COMMAND ACTION``) to ``command``."""
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help, formatter_class=Formatter)
        p.set_defaults(parser=p)
        return p

    return add


def parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="scratchgpt",
        description="Build a Large Language Model (From Scratch): the tools outside `dvc`.",
        epilog=TOP_EPILOG,
        formatter_class=Formatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        doc = COMMANDS[name]
        text = textwrap.fill(doc, width=min(100, max(60, columns())))
        p = sub.add_parser(name, help=doc, description=text, formatter_class=Formatter, **kw)
        p.set_defaults(parser=p)
        return p

    gen = command("generate")
    gen.add_argument("--model", required=True, type=language_model, help="a model directory, e.g. models/pretrained")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    _sampling_options(gen, max_new_tokens=50)
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole window each step (the book's way)")
    gen.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")

    chat = command("chat", epilog=CHAT_EPILOG)
    chat.add_argument(
        "--model", required=True, type=language_model, help="an instruction model directory, e.g. models/instruct"
    )
    _sampling_options(chat, max_new_tokens=64)
    chat.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep earlier turns in the prompt (default: at a terminal yes, from a pipe no)",
    )

    clf = command("classify")
    clf.add_argument("--model", required=True, type=classifier, help="a classifier directory, e.g. models/classifier")
    clf.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (none: each UTF-8 line of stdin)")
    _device_options(clf)

    srv = command("serve", epilog=SERVE_EPILOG)
    srv.add_argument(
        "--model", required=True, type=model_dir, help="a model directory: models/instruct, models/classifier, ..."
    )
    srv.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default %(default)s: this machine only)"
    )
    srv.add_argument("--port", type=port, default=8000, help="the port (default %(default)s; 0 picks a free one)")
    srv.add_argument("--name", default=None, help="the model's id in the API (default: the folder's name)")
    srv.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help="require `Authorization: Bearer KEY`, KEY read from environment variable NAME (never logged)",
    )
    srv.add_argument(
        "--max-batch", type=positive_int, default=8, metavar="N", help="rows decoded together (default %(default)s)"
    )
    srv.add_argument(
        "--max-queue",
        type=natural,
        default=32,
        metavar="N",
        help="requests waiting for a row; past that 429 (default %(default)s)",
    )
    srv.add_argument(
        "--max-tokens",
        type=positive_int,
        default=512,
        metavar="N",
        help="the most new tokens a request may ask for (default %(default)s)",
    )
    srv.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send its request headers (default %(default)s)",
    )
    _device_options(srv)

    weights = command("weights")
    action = _actions(weights)

    down = action("download", "OpenAI's seven checkpoint files of one GPT-2 size into a folder")
    down.add_argument("size", help=f"the GPT-2 size: {', '.join(GPT2_SIZES)}")
    down.add_argument("out", help="the folder for the seven files")
    down.add_argument("--mirror", default=None, help="a folder or URL tried last (default: $SCRATCHGPT_MIRROR)")
    down.add_argument(
        "--base-url",
        action="append",
        dest="base_urls",
        metavar="URL",
        help="fetch <URL>/<SIZE>/<file> instead of OpenAI's and the backup (repeat for more)",
    )
    conv = action("convert", "OpenAI TF checkpoint or Hugging Face GPT-2 folder → a model directory")
    conv.add_argument("src", help="a folder with hparams.json + model.ckpt.*, or config.json + model.safetensors")
    conv.add_argument("out", help="the model directory to write")
    conv.add_argument("--bpe-dir", help="a folder with encoder.json + vocab.bpe (default: those in SRC)")
    conv.add_argument("--no-tokenizer", action="store_true", help="save no tokenizer")
    export = action("export-hf", "a model directory → a Hugging Face GPT-2 folder")
    export.add_argument("model", help="our model directory")
    export.add_argument("out", help="the folder to write")

    ex = command("experiments")
    ex_action = _actions(ex)

    ex_action("list", "each experiment: name, target stages, a one-line description, the time it takes")
    ex_show = ex_action("show", "one experiment: description, stages, the params it changes (old → new), its command")
    ex_show.add_argument("name", help="an experiment of experiments/, e.g. book-ch05")
    ex_args = ex_action("args", "the -S arguments alone, checked against params.yaml (for scripts)")
    ex_args.add_argument("name", help="an experiment of experiments/")
    ex_run = ex_action(
        "run", "dvc exp run -n NAME -S key=value ... STAGES: only the target stages and what they need upstream"
    )
    ex_run.add_argument("--queue", action="store_true", help="queue it (dvc exp run --queue; then dvc queue start)")
    ex_run.add_argument("name", help="an experiment of experiments/, e.g. book-ch05")
    ex_run.add_argument("dvc_options", nargs=argparse.REMAINDER, help="more options passed on to dvc exp run")
    ex_snap = ex_action(
        "snapshot",
        "copy the newest run of experiment NAME into metrics/experiments/NAME.json (git-tracked): the report's "
        "like-for-like row (run does it after a run that is not queued)",
    )
    ex_snap.add_argument("name", help="an experiment that has run, e.g. book-ch05")
    ex_fig = ex_action("figure", "chapter 5's loss curves of a snapshot against the book's 18 printed points")
    ex_fig.add_argument("name", help="a snapshotted pretraining experiment, e.g. book-ch05")
    ex_fig.add_argument("out", metavar="PNG", help="where to write the figure, e.g. docs/book-ch05-loss.png")

    metrics = command("metrics")
    metrics.add_argument(
        "--width", type=positive_int, default=None, help="columns to fill (default: the terminal's, at most 120)"
    )

    compare = command("compare")
    compare.add_argument("--rev", default="HEAD", help="the commit whose metrics to compare with (default %(default)s)")
    compare.add_argument(
        "--rtol", type=float, default=1e-3, help="the relative difference still called noise (default %(default)s)"
    )

    params = command("params")
    params.add_argument("file", nargs="?", default="params.yaml", help="the params file (default %(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return importlib.import_module(command_module(args.command)).run(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `scratchgpt classify ... | head -1`
        sys.stderr.close()
        return 0
