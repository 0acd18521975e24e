"""The ``scratchgpt`` command (also ``python -m scratchgpt``): what a person runs outside ``dvc``.

    scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
    scratchgpt chat --model models/instruct
    scratchgpt classify --model models/classifier "You are a winner!"
    scratchgpt experiments list | show NAME | run NAME [--queue]
    scratchgpt weights download 124M ~/gpt2-124M | convert SRC OUT | export-hf MODEL OUT

``--help`` answers at once: torch, the model code and DVC are imported inside the command that
needs them (tests/test_layout.py allows it for this file only). Bad arguments end in one line,
``scratchgpt <command>: error: argument --option: ...``, and exit status 2; a failure while
running ends in one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# formats.modeldir.CONFIG_FILE, read here without importing torch (tests/test_cli.py checks they agree)
CONFIG_FILE = "config.json"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
SECTION = "###"  # the Alpaca prompt's section marker: an answer ends before the next one
# weights download: formats.openai_download.OPENAI_PRESETS, named without importing torch (a test checks)
GPT2_SIZES = ("124M", "355M", "774M", "1558M")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is what --help prints)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, _columns())))


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def fail(args: argparse.Namespace, message: str) -> int:
    """A failure while running: one line, exit status 1."""
    one_line = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"{args.parser.prog}: error: {one_line}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# Argument types: each refuses a bad value with the reason, argparse names the option


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def temperature(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 is greedy), got {text}")
    return value


def top_p(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _model_config(text: str) -> dict[str, Any]:
    path = Path(text) / CONFIG_FILE
    if not path.is_file():
        what = "no such directory" if not Path(text).exists() else f"no {CONFIG_FILE}, not a model directory"
        raise argparse.ArgumentTypeError(f"{text}: {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise argparse.ArgumentTypeError(f'{path}: not a scratchgpt model config (no "model" section)')
    return data


def _is_classifier(config: dict[str, Any]) -> bool:
    return bool(config["model"].get("n_classes")) or "classifier" in config


def language_model(text: str) -> str:
    """A model directory that predicts the next token (not a classifier)."""
    config = _model_config(text)
    if _is_classifier(config):
        n = config["model"].get("n_classes") or len(config.get("classifier", {}).get("labels", []))
        raise argparse.ArgumentTypeError(
            f"{text} is a classifier ({n}-class head), not a language model: use models/instruct or "
            "models/pretrained here, and `scratchgpt classify` for the classifier"
        )
    return text


def classifier(text: str) -> str:
    if not _is_classifier(_model_config(text)):
        raise argparse.ArgumentTypeError(f"{text} is not a classifier (no classification head in {CONFIG_FILE})")
    return text


# ---------------------------------------------------------------------------------------------
# Loading a model for generation (generate, chat)


def _load_language_model(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, device and sampling generator, or SystemExit with one line."""
    import torch

    from scratchgpt.device import pick_device
    from scratchgpt.errors import PipelineError
    from scratchgpt.formats.finetuned import load_finetuned
    from scratchgpt.formats.modeldir import load_tokenizer
    from scratchgpt.plumbing.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        where = pick_device(args.device)
    except (ValueError, RuntimeError) as e:
        args.parser.error(f"argument --device: {e}")
    try:
        model = load_finetuned(args.model, device=where)
        tokenizer = load_tokenizer(args.model)
    except (OSError, ValueError, PipelineError) as e:
        raise SystemExit(fail(args, str(e))) from None
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=where)
        generator.manual_seed(args.seed)
    return model, tokenizer, where, generator


def _sampling(args: argparse.Namespace, tokenizer: Any, generator: Any) -> dict[str, Any]:
    return dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        use_cache=not getattr(args, "no_cache", False),
        eos_id=None if getattr(args, "no_eos", False) else tokenizer.eot_id,
        generator=generator,
    )


def new_text(
    model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int, with_prompt: bool = False, **options: Any
) -> Iterator[str]:
    """The decoded continuation of ``ids`` (after the prompt's own text with ``with_prompt``) after
    each new token; end-of-text left out, half a UTF-8 character held back."""
    from scratchgpt.book.generate import stream

    new: list[int] = []
    for next_ids, _ in stream(model, [ids], max_new_tokens, **options):
        token = int(next_ids[0])
        if token == options.get("eos_id"):
            break
        new.append(token)
        yield tokenizer.decode(ids + new if with_prompt else new).rstrip("\ufffd")


def _context_note(ids: list[int], context_length: int) -> None:
    if len(ids) > context_length:
        print(f"note: the prompt has {len(ids)} tokens; the model sees the last {context_length}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# generate


def generate_command(args: argparse.Namespace) -> int:
    """Continue a prompt with a language model, streaming the text as it comes."""
    model, tokenizer, _, generator = _load_language_model(args)
    ids = tokenizer.encode(args.prompt)
    _context_note(ids, model.config.context_length)
    shown = tokenizer.decode(ids)
    sys.stdout.write(shown)
    sys.stdout.flush()
    options = _sampling(args, tokenizer, generator)
    for text in new_text(model, tokenizer, ids, args.max_new_tokens, with_prompt=True, **options):
        if text.startswith(shown) and len(text) > len(shown):
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    sys.stdout.write("\n")
    return 0


# ---------------------------------------------------------------------------------------------
# chat


def answer_so_far(text: str) -> tuple[str, bool]:
    """What of a generated answer to show, and whether it is complete: it ends before the next
    ``###`` section marker; trailing ``#`` and whitespace wait until more text comes."""
    text = text.lstrip()
    at = text.find(SECTION)
    if at >= 0:
        return text[:at].rstrip(), True
    return text.rstrip("#").rstrip(), False


class Conversation:
    """The book's Alpaca prompt over a conversation: the introduction once, then each earlier turn
    as ``### Instruction:`` / ``### Response:``, then the new instruction and ``### Response:``.
    Earlier turns are dropped, oldest first, while the prompt and ``max_new_tokens`` new tokens do
    not fit in the model's context window."""

    def __init__(self, tokenizer: Any, context_length: int, max_new_tokens: int, keep_history: bool) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_new_tokens = max_new_tokens
        self.keep_history = keep_history
        self.turns: list[tuple[str, str]] = []
        self.dropped = 0  # turns of the last prompt left out for lack of room

    @staticmethod
    def text(turns: list[tuple[str, str]], instruction: str) -> str:
        from scratchgpt.book.instruct import INTRO, format_example

        entries = [{"instruction": q, "input": "", "output": a} for q, a in turns]
        entries.append({"instruction": instruction, "input": "", "output": ""})
        parts = [format_example(entries[0])]
        parts += [format_example(e).removeprefix(INTRO + "\n\n") for e in entries[1:]]
        return "\n\n".join(parts)

    def prompt_ids(self, instruction: str) -> list[int]:
        turns = list(self.turns) if self.keep_history else []
        while True:
            ids = self.tokenizer.encode(self.text(turns, instruction), allow_special=False)
            if not turns or len(ids) + self.max_new_tokens <= self.context_length:
                self.dropped = len(self.turns) - len(turns) if self.keep_history else 0
                return ids
            turns.pop(0)

    def add(self, instruction: str, answer: str) -> None:
        if self.keep_history:
            self.turns.append((instruction, answer))

    def reset(self) -> None:
        self.turns.clear()


def _answer(conv: Conversation, instruction: str, reply: Callable[[list[int]], Iterable[str]], write) -> str:
    """Stream the answer to ``instruction``; return it whole."""
    shown, last = "", ""
    for text in reply(conv.prompt_ids(instruction)):
        last = text
        final, done = answer_so_far(text)
        if done:
            break
        if final.startswith(shown) and len(final) > len(shown):
            write(final[len(shown) :])
            shown = final
    else:
        final = last.strip()  # it ended without a next section: all of it
    if final.startswith(shown) and len(final) > len(shown):
        write(final[len(shown) :])
    write("\n")
    return final


def converse(
    conv: Conversation,
    reply: Callable[[list[int]], Iterable[str]],
    lines: Iterable[str],
    write,
    note: Callable[[str], None] | None = None,
    between: str = "",
) -> None:
    """Answer each line; ``/reset`` forgets the conversation, ``/quit`` ends it. ``note`` hears
    of an empty answer; ``between`` is written between two answers."""
    answered = False
    for line in lines:
        instruction = line.strip()
        if not instruction:
            continue
        if instruction == "/quit":
            return
        if instruction == "/reset":
            conv.reset()
            continue
        if answered and between:
            write(between)
        answered = True
        answer = _answer(conv, instruction, reply, write)
        if not answer and note:
            note("(no answer: the model ended it or went straight on to a next ### section)")
        conv.add(instruction, answer)


def stdin_lines(prog: str) -> Iterator[str]:
    """The lines of stdin read as UTF-8 whatever the locale; bytes that are not UTF-8 become
    U+FFFD, with one line of warning on stderr (the first time)."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # already text (a test's StringIO)
        yield from sys.stdin
        return
    warned = False
    for number, raw in enumerate(binary, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            if not warned:
                warned = True
                print(
                    f"{prog}: warning: stdin is not UTF-8 (line {number} first); "
                    "bytes that cannot be decoded are read as U+FFFD",
                    file=sys.stderr,
                    flush=True,
                )
            yield raw.decode("utf-8", "replace")


def _typed_lines(conv: Conversation) -> Iterator[str]:
    """What the person types, until /quit, Ctrl-D or Ctrl-C."""
    import readline  # noqa: F401 (line editing and history for input())

    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if line.strip() == "/reset":
            print("(history cleared)", file=sys.stderr)
        yield line
        if conv.dropped:
            print(f"(the oldest {conv.dropped} turns no longer fit the context and were left out)", file=sys.stderr)


def chat_command(args: argparse.Namespace) -> int:
    """Talk to an instruction model with the book's Alpaca prompt, streaming each answer."""
    model, tokenizer, _, generator = _load_language_model(args)
    config = json.loads((Path(args.model) / CONFIG_FILE).read_text(encoding="utf-8"))
    interactive = sys.stdin.isatty()
    keep_history = interactive if args.history is None else args.history
    conv = Conversation(tokenizer, model.config.context_length, args.max_new_tokens, keep_history)
    options = _sampling(args, tokenizer, generator)

    def reply(ids: list[int]) -> Iterator[str]:
        _context_note(ids, model.config.context_length)
        return new_text(model, tokenizer, ids, args.max_new_tokens, **options)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if "instruct" not in config:
        print(f"note: {args.model} was not finetuned on instructions; it continues the prompt", file=sys.stderr)
    if not interactive:  # a blank line between answers, which may span lines
        converse(conv, reply, stdin_lines(args.parser.prog), write, between="\n")
        return 0
    if hasattr(sys.stdin, "reconfigure"):  # typed bytes that are not UTF-8 become U+FFFD too
        sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    print(
        f"{args.model}: {model.config.context_length}-token context, "
        f"{'history kept' if keep_history else 'no history'}. /reset forgets, /quit or Ctrl-D ends.",
        file=sys.stderr,
    )
    lines = _typed_lines(conv)
    while True:
        try:
            converse(conv, reply, lines, write, note=lambda text: print(text, file=sys.stderr))
            return 0
        except KeyboardInterrupt:  # during an answer: drop it, ask again
            print("\n(interrupted)", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# classify


def classify_command(args: argparse.Namespace) -> int:
    """Label each text (or each line of stdin) with the classifier: label, probability, text."""
    from scratchgpt.book.classify import classify
    from scratchgpt.errors import PipelineError
    from scratchgpt.formats.classifier import load_classifier

    if not args.texts and sys.stdin.isatty():
        args.parser.error("give the texts as arguments, or one per line on stdin")
    try:
        model, tokenizer, head = load_classifier(args.model)
    except (OSError, ValueError, PipelineError) as e:
        return fail(args, str(e))
    names = {"ham": "not spam"}
    width = max(len(names.get(label, label)) for label in head.labels)
    texts = args.texts or (line.rstrip("\n") for line in stdin_lines(args.parser.prog) if line.strip())
    for text in texts:
        label, prob = classify(text, model, tokenizer, head)
        print(f"{names.get(label, label):<{width}}  {prob:.3f}  {text}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# weights


def weights_command(args: argparse.Namespace) -> int:
    """Download OpenAI's GPT-2 checkpoints, convert them or Hugging Face folders into model
    directories, export a model directory to Hugging Face's layout."""
    from scratchgpt.errors import PipelineError
    from scratchgpt.formats.convert import convert
    from scratchgpt.formats.finetuned import load_finetuned
    from scratchgpt.formats.hf import export_hf
    from scratchgpt.formats.openai_download import OPENAI_BASE_URLS, download_openai
    from scratchgpt.plumbing import logs
    from scratchgpt.plumbing.download import mirror_from_env

    logs.configure()
    try:
        if args.action == "convert":
            out = convert(args.src, args.out, bpe_dir=args.bpe_dir, with_tokenizer=not args.no_tokenizer)
        elif args.action == "export-hf":
            out = export_hf(args.model, args.out, load=load_finetuned)
        else:
            mirror = args.mirror or mirror_from_env()
            out = download_openai(args.size, args.out, mirror=mirror, base_urls=args.base_urls or OPENAI_BASE_URLS)
    except (PipelineError, OSError) as e:
        return fail(args, str(e))
    print(out)
    return 0


# ---------------------------------------------------------------------------------------------
# experiments


def experiments_command(args: argparse.Namespace) -> int:
    """The book's runs, named in experiments/: list them, show one, run one as a DVC experiment
    of only the stages it reproduces."""
    from scratchgpt.plumbing import experiments as ex
    from scratchgpt.plumbing.params_file import ParamsError

    if args.action in ("snapshot", "figure"):
        return _results(args)
    try:
        if args.action == "list":
            rows = [ex.load(name) for name in ex.names()]
            if not rows:
                return fail(args, f"no experiment files in {ex.EXPERIMENTS_DIR}/")
            table = [("NAME", "STAGES", "DESCRIPTION", "TIME")]
            table += [(e.name, " ".join(e.stages), e.summary, e.time) for e in rows]
            widths = [max(len(r[i]) for r in table) for i in range(3)]
            for row in table:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
            return 0
        experiment = ex.load(args.name)
        changed = ex.changes(experiment)
    except ParamsError as e:
        return fail(args, str(e))
    if args.action == "args":
        print(shlex.join(ex.set_args(experiment)))
        return 0
    if args.action == "show":
        upstream = [s for s in ex.upstream(experiment.stages) if s not in experiment.stages]
        wrap = textwrap.TextWrapper(width=100, subsequent_indent=" " * 9)
        print(f"{experiment.name} ({experiment.path})\n")
        print(textwrap.fill(experiment.description, width=100) + "\n")
        print(wrap.fill(f"time:    {experiment.time}"))
        if experiment.extends:
            print(f"extends: {experiment.extends} (its params first, then this file's)")
        print(f"stages:  {' '.join(experiment.stages)}")
        print(wrap.fill(f"         and, where their inputs changed, upstream: {', '.join(upstream) or 'none'}"))
        print("params:  params.yaml → this experiment")
        width = max(len(key) for key, _, _ in changed)
        for key, old, new in changed:
            print(f"  {key:<{width}}  {ex.describe_value(old)} → {ex.describe_value(new)}")
        print(f"run:     {shlex.join(ex.run_command(experiment, []))}")
        return 0
    options = (["--queue"] if args.queue else []) + args.dvc_options
    if not {"--queue", "--temp"} & set(options):  # those run in a folder of their own
        holder = ex.dvc_running()
        if holder is not None:
            return fail(args, ex.busy_message(experiment.name, holder))
    cmd = ex.run_command(experiment, options)
    print("+", shlex.join(cmd), file=sys.stderr)
    # The venv's dvc and python first, so that stage commands (`python stages/...`) find them.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        code = subprocess.call(cmd, env=env)
    except FileNotFoundError:
        return fail(args, "dvc not found: activate the project's virtual environment (source .venv/bin/activate)")
    if code != 0:
        return code
    if args.queue or "--queue" in args.dvc_options:
        print(f"when it has run: scratchgpt experiments snapshot {args.name}  (the report's row)", file=sys.stderr)
        return 0
    return _results(argparse.Namespace(**{**vars(args), "action": "snapshot"}))


def _results(args: argparse.Namespace) -> int:
    """snapshot: the newest experiment NAME into metrics/experiments/NAME.json (what the report
    reads); figure: chapter 5's curves of that snapshot against the book's points."""
    from scratchgpt.errors import PipelineError
    from scratchgpt.plumbing import results

    try:
        if args.action == "snapshot":
            print(results.snapshot(args.name))
            return 0
        data = results.load_snapshot(args.name)
        if data is None:
            path = results.snapshot_path(args.name)
            return fail(args, f"{path}: no snapshot; run `scratchgpt experiments snapshot {args.name}` after the run")
        print(results.ch05_figure(data, args.out))
        return 0
    except PipelineError as e:
        return fail(args, str(e))


# ---------------------------------------------------------------------------------------------
# The parser


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
        default=0.0,
        metavar="T",
        help="0 picks the most likely token (greedy, the default); above 0 samples from the "
        "probabilities divided by T (finite, >= 0)",
    )
    p.add_argument(
        "--top-k", type=positive_int, default=None, metavar="K", help="sample among the K likeliest tokens (>= 1)"
    )
    p.add_argument(
        "--top-p",
        type=top_p,
        default=None,
        metavar="P",
        help="sample among the likeliest tokens whose probability reaches P (0 < P <= 1)",
    )
    p.add_argument("--seed", type=int, default=None, help="fixes the sampling (default: unseeded)")
    p.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default %(default)s)",
    )


CHAT_EPILOG = """\
Each instruction is wrapped in the book's Alpaca prompt ("Below is an instruction that describes a
task. ...", "### Instruction:", then "### Response:"). The answer streams as it is generated (with
a KV cache) and ends at <|endoftext|>, at the next "###" section or after --max-new-tokens.

Typed at a terminal, the conversation is kept: earlier turns stay in the prompt, each as its
"### Instruction:" and "### Response:", and the oldest are dropped when the prompt and
--max-new-tokens new tokens would not fit the model's context window. /reset forgets them;
/quit, Ctrl-D or Ctrl-C at the prompt end; Ctrl-C during an answer stops it.

When stdin is not a terminal, each non-empty line is an instruction answered on its own (no
history unless --history); the answers are printed with no prompts, a blank line between two:

  echo "Name a color" | scratchgpt chat --model models/instruct

Input is read as UTF-8: bytes that are not UTF-8 are read as U+FFFD (the replacement character),
with a one-line warning when they come from a pipe or file.
"""

TOP_EPILOG = """\
examples:
  scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
  scratchgpt chat --model models/instruct
  scratchgpt classify --model models/classifier "You are a winner!" "See you at 6?"
  scratchgpt experiments list
  scratchgpt experiments run book-ch05
  scratchgpt weights download 124M gpt2-124M

`scratchgpt COMMAND --help` describes each command.
"""


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

    def command(name: str, func: Callable[[argparse.Namespace], int], **kw: Any) -> argparse.ArgumentParser:
        doc = " ".join(func.__doc__.split())
        text = textwrap.fill(doc, width=min(100, max(60, _columns())))
        p = sub.add_parser(name, help=doc, description=text, formatter_class=Formatter, **kw)
        p.set_defaults(func=func, parser=p)
        return p

    gen = command("generate", generate_command)
    gen.add_argument("--model", required=True, type=language_model, help="a model directory, e.g. models/pretrained")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    _sampling_options(gen, max_new_tokens=50)
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole window each step (the book's way)")
    gen.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")

    chat = command("chat", chat_command, epilog=CHAT_EPILOG)
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

    clf = command("classify", classify_command)
    clf.add_argument("--model", required=True, type=classifier, help="a classifier directory, e.g. models/classifier")
    clf.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (none: each UTF-8 line of stdin)")

    weights = command("weights", weights_command)
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

    ex = command("experiments", experiments_command)
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
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `scratchgpt classify ... | head -1`
        sys.stderr.close()
        return 0
