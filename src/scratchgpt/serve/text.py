"""From requests to prompt ids and from new ids back to text: the chat messages as the book's
Alpaca prompt, and the decoded continuation as it streams, cut at a stop string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scratchgpt.book.instruct import INTRO, format_example

SECTION = "###"  # the Alpaca prompt's section marker: an instruction model's answer ends before it


class PromptError(ValueError):
    """A conversation that cannot become a prompt; ``param`` names the request field."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


def conversation_prompt(turns: Sequence[tuple[str, str]], instruction: str, intro: str = INTRO) -> str:
    """A conversation in the book's Alpaca prompt: the introduction once, each earlier turn as
    ``### Instruction:`` / ``### Response:`` with its answer, then ``instruction`` and an open
    ``### Response:`` (what ``scratchgpt chat`` sends). ``intro`` replaces the introduction line
    (a chat's system message)."""
    entries = [{"instruction": q, "input": "", "output": a} for q, a in turns]
    entries.append({"instruction": instruction, "input": "", "output": ""})
    parts = [format_example(e).removeprefix(INTRO + "\n\n") for e in entries]
    return "\n\n".join([intro, *parts])


def chat_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """The Alpaca prompt of ``(role, content)`` messages.

    - System (or developer) messages, joined by blank lines, replace the introduction line
      ("Below is an instruction ...").
    - Each user message is an ``### Instruction:``; an assistant message after it is its
      ``### Response:`` (a user message with no answer gets an empty one; an assistant message
      with no question before it is refused).
    - The last message must be the user's: the prompt ends with an open ``### Response:``.
    """
    system = [content for role, content in messages if role in ("system", "developer")]
    talk = [(role, content) for role, content in messages if role not in ("system", "developer")]
    if not talk or talk[-1][0] != "user":
        raise PromptError("the last message (system messages aside) must be the user's")
    turns: list[tuple[str, str]] = []
    question: str | None = None
    for i, (role, content) in enumerate(talk[:-1]):
        if role == "user":
            if question is not None:
                turns.append((question, ""))
            question = content
        elif role == "assistant":
            if question is None:
                raise PromptError(f"message {i}: an assistant message must answer a user message")
            turns.append((question, content))
            question = None
        else:
            raise PromptError(f"message {i}: role {role!r} is not one of system, developer, user, assistant")
    if question is not None:
        turns.append((question, ""))
    intro = "\n\n".join(system) if system else INTRO
    return conversation_prompt(turns, talk[-1][1], intro)


class Continuation:
    """The text of the new ids so far, shown up to what is certain: a trailing half UTF-8
    character, and a tail that could begin a stop string, wait for more. With ``trim`` the text
    is an answer: leading whitespace is dropped and trailing whitespace waits for more text (it
    is dropped at the end), as ``scratchgpt chat`` shows an answer after ``### Response:``."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = (), trim: bool = False) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.trim = trim
        self.ids: list[int] = []
        self.shown = ""
        self.stopped = False

    def _text(self) -> str:
        text = self.tokenizer.decode(self.ids)
        return text.lstrip() if self.trim else text

    def add(self, token: int) -> str:
        """The new text that ``token`` makes certain ("" if none); sets ``stopped`` when a stop
        string appears (the text ends before it)."""
        self.ids.append(token)
        text = self._text()
        cut = min((at for at in (text.find(s) for s in self.stops) if at >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._advance(self._end(text[:cut]))
        text = text.rstrip("\ufffd")
        hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        return self._advance(self._end(text[: len(text) - hold]))

    def finish(self) -> str:
        """What was held back, when the ids end without a stop string."""
        if self.stopped:
            return ""
        return self._advance(self._end(self._text()))

    def _end(self, text: str) -> str:
        return text.rstrip() if self.trim else text

    def _advance(self, text: str) -> str:
        if not text.startswith(self.shown) or len(text) <= len(self.shown):
            return ""
        new, self.shown = text[len(self.shown) :], text
        return new
