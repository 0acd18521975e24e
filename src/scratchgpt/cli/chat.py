"""``scratchgpt chat``: talk to an instruction model with the book's Alpaca prompt, streaming
each answer; at a terminal the conversation is kept, from a pipe each line is answered alone."""

from __future__ import annotations

import argparse
import json
import readline  # noqa: F401 (line editing and history for input())
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from scratchgpt.cli.common import CONFIG_FILE, stdin_lines
from scratchgpt.cli.generation import context_note, load_language_model, new_text, sampling
from scratchgpt.serve.text import SECTION, conversation_prompt

QUIT = ("/quit", "/exit")  # and, typed at a terminal, plain exit or quit
HELP = "/reset forgets the conversation; /quit, /exit, exit, quit or Ctrl-D ends; Ctrl-C stops an answer; /help: this"
EMPTY = (
    "(no answer: the model ended at once or went straight on to a next ### section; "
    "`scratchgpt experiments run book-ch07` finetunes GPT-2 medium as the book does, a model that answers)"
)


def dropped_note(n: int) -> str:
    """What to say when the ``n`` oldest turns are left out of the prompt."""
    if n == 1:
        return "(the oldest turn no longer fits the context and was left out)"
    return f"(the oldest {n} turns no longer fit the context and were left out)"


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
        return conversation_prompt(turns, instruction)

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
        self.dropped = 0


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
    typed: bool = False,
) -> None:
    """Answer each line; ``/reset`` forgets the conversation, ``/quit`` or ``/exit`` (and, when
    ``typed`` at a terminal, ``exit`` or ``quit``) ends it, ``/help`` lists these. ``note`` hears
    of an empty answer, of turns left out and of the commands; ``between`` is written between two
    answers."""
    say = note or (lambda text: None)
    answered = False
    for line in lines:
        instruction = line.strip()
        if not instruction:
            continue
        if instruction in QUIT or (typed and instruction.lower() in ("exit", "quit")):
            return
        if instruction == "/help":
            say(HELP)
            continue
        if instruction == "/reset":
            conv.reset()
            say("(history cleared)")
            continue
        if answered and between:
            write(between)
        answered = True
        answer = _answer(conv, instruction, reply, write)
        if not answer:
            say(EMPTY)
        if conv.dropped:
            say(dropped_note(conv.dropped))
        conv.add(instruction, answer)


def _typed_lines() -> Iterator[str]:
    """What the person types, until Ctrl-D or Ctrl-C."""
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        yield line


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    model, tokenizer, _, generator = load_language_model(args)
    config = json.loads((Path(args.model) / CONFIG_FILE).read_text(encoding="utf-8"))
    interactive = sys.stdin.isatty()
    keep_history = interactive if args.history is None else args.history
    conv = Conversation(tokenizer, model.config.context_length, args.max_new_tokens, keep_history)
    options = sampling(args, tokenizer, generator)

    def reply(ids: list[int]) -> Iterator[str]:
        context_note(ids, model.config.context_length)
        return new_text(model, tokenizer, ids, args.max_new_tokens, **options)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if "instruct" not in config:
        print(f"note: {args.model} was not finetuned on instructions; it continues the prompt", file=sys.stderr)
    if not interactive:  # a blank line between answers, which may span lines
        converse(conv, reply, stdin_lines(args.parser.prog), write, note=_note, between="\n")
        return 0
    if hasattr(sys.stdin, "reconfigure"):  # typed bytes that are not UTF-8 become U+FFFD too
        sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    print(
        f"{args.model}: {model.config.context_length}-token context, "
        f"{'history kept' if keep_history else 'no history'}. /help lists the commands; /quit or Ctrl-D ends.",
        file=sys.stderr,
    )
    lines = _typed_lines()
    while True:
        try:
            converse(conv, reply, lines, write, note=_note, typed=True)
            return 0
        except KeyboardInterrupt:  # during an answer: drop it, ask again
            print("\n(interrupted)", file=sys.stderr)
