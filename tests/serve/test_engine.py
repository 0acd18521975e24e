"""Continuous batching (scratchgpt.serve.engine) and the text side (scratchgpt.serve.text), without HTTP."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
import torch

from scratchgpt.book.generate import generate
from scratchgpt.book.instruct import INTRO, format_input
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.serve.engine import Engine, QueueFull, Request
from scratchgpt.serve.text import Continuation, PromptError, chat_prompt

CFG = GPTConfig(vocab_size=97, context_length=48, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return GPTModel(CFG).eval()


class Running:
    """An engine in its thread; ``collect(request)`` gathers its ids and finish reason. The
    engine holds the model in its decoding layout while it runs: reference ids are computed
    before or after, never beside it."""

    def __init__(self, model, **kw):
        self.engine = Engine(model, **kw)
        self.thread = threading.Thread(target=self.engine.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.engine.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def request(self, prompt, max_tokens, **kw):
        events = queue.Queue()
        r = Request(prompt=list(prompt), max_tokens=max_tokens, emit=lambda t, reason: events.put((t, reason)), **kw)
        r.events = events
        return r

    @staticmethod
    def collect(r, timeout=30):
        ids = []
        while True:
            token, reason = r.events.get(timeout=timeout)
            if token is None:
                return ids, reason
            ids.append(token)


def prompts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(1, 97, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def test_one_request_decodes_what_generate_gives(model):
    prompt = prompts(1)[0]
    with Running(model) as run:
        r = run.request(prompt, 20)
        run.engine.submit(r)
        ids, reason = run.collect(r)
    assert ids == generate(model, [prompt], 20)[0]
    assert reason == "length"


def test_requests_joining_a_running_batch_get_their_solo_ids(model):
    """Eight prompts of different lengths; half are submitted while the first half decode, so
    they join a running batch at different positions; each gets the ids it gets alone."""
    ps = prompts(8, seed=3)
    solo = [generate(model, [p], 24)[0] for p in ps]
    with Running(model, max_batch=8) as run:
        first = [run.request(p, 24) for p in ps[:4]]
        for r in first:
            run.engine.submit(r)
        got = {}
        # wait for a few tokens of the first, then bring in the rest
        token, _ = first[0].events.get(timeout=30)
        got[0] = [token]
        later = [run.request(p, 24) for p in ps[4:]]
        for r in later:
            run.engine.submit(r)
        results = [run.collect(r) for r in first + later]
    results[0] = (got[0] + results[0][0], results[0][1])
    assert [ids for ids, _ in results] == solo
    assert run.engine.rows_decoded > run.engine.steps  # rows were decoded together


def test_a_row_that_ends_at_eos_leaves_and_the_others_go_on(model):
    ps = prompts(3, seed=5)
    # an eos id that one of the rows produces early: its first greedy token
    eos = generate(model, [ps[1]], 1)[0][0]
    solo = [generate(model, [p], 16, eos_id=eos)[0] for p in ps]
    with Running(model) as run:
        rs = [run.request(p, 16, eos_id=eos) for p in ps]
        for r in rs:
            run.engine.submit(r)
        results = [run.collect(r) for r in rs]
    for (ids, reason), expected in zip(results, solo):
        assert ids + ([eos] if reason == "stop" else []) == expected
    assert results[1] == ([], "stop")


def test_cancelled_rows_leave_at_the_next_step(model):
    """A request cancelled (from any thread) after its third token gets no fourth: no step is
    spent on it after the one that was running."""
    expected = generate(model, [prompts(1)[0]], 30)[0]  # before the engine holds the model
    with Running(model, max_batch=2) as run:
        other = run.request(prompts(1)[0], 30)
        long = run.request(prompts(1, seed=1)[0], 30)

        seen = []

        def emit(token, reason, events=long.events):
            events.put((token, reason))
            seen.append(token)
            if len(seen) == 3:
                long.cancel()

        long.emit = emit
        run.engine.submit(long)
        run.engine.submit(other)
        ids, reason = run.collect(long)
        assert reason == "cancelled" and len(ids) == 3
        assert run.collect(other)[0] == expected  # the other row went on
        assert run.engine.load() == (0, 0)


def test_a_full_queue_refuses(model):
    with Running(model, max_batch=1, max_queue=1) as run:
        gate = threading.Event()
        a = run.request([1, 2, 3], 40)
        a.emit = lambda t, reason, e=a.events: (gate.wait(10), e.put((t, reason)))  # hold the engine
        run.engine.submit(a)
        run.engine.submit(run.request([1], 5))  # waits
        try:
            with pytest.raises(QueueFull, match="1 decoding and 1 waiting|0 decoding and 2 waiting"):
                run.engine.submit(run.request([2], 5))
        finally:
            gate.set()


def test_prompts_that_do_not_fit_are_refused(model):
    engine = Engine(model)
    with pytest.raises(ValueError, match="exceed the context length 48"):
        engine.submit(Request(prompt=[1] * 40, max_tokens=9, emit=lambda *a: None))
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit(Request(prompt=[], max_tokens=1, emit=lambda *a: None))


def test_seeded_sampling_repeats_and_a_failure_ends_only_its_request(model):
    expected = generate(model, [[5, 6]], 4)[0]
    with Running(model) as run:
        runs = []
        for seed in (7, 7, 8):
            r = run.request([5, 6, 7], 12, temperature=1.0, seed=seed)
            run.engine.submit(r)
            runs.append(run.collect(r)[0])
        assert runs[0] == runs[1] != runs[2]
        bad = run.request([5, 6], 4, temperature=-1.0)  # out of range: sampling raises
        run.engine.submit(bad)
        ids, reason = run.collect(bad)
        assert reason.startswith("error: ValueError: temperature must be >= 0")
        ok = run.request([5, 6], 4)
        run.engine.submit(ok)
        assert run.collect(ok) == (expected, "length")


# ---------------------------------------------------------------------------------------------
# Text


class Chars:
    """One id per character."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


WORDS = Chars()


def test_stop_strings_cut_the_text_and_a_possible_start_waits():
    c = Continuation(WORDS, stops=["###"])
    shown = [c.add(WORDS.encode(w)[0]) for w in ["a", "b", "#", "#"]]
    assert shown == ["a", "b", "", ""] and not c.stopped
    assert c.add(WORDS.encode("#")[0]) == "" and c.stopped
    assert c.shown == "ab"
    c = Continuation(WORDS, stops=["###"])
    for w in ["a", "#", "x"]:
        c.add(WORDS.encode(w)[0])
    assert c.shown == "a#x" and c.finish() == ""


def test_an_answer_is_trimmed_as_chat_shows_it():
    c = Continuation(WORDS, stops=["###"], trim=True)
    out = "".join(c.add(WORDS.encode(w)[0]) for w in ["\n", "a", " ", "\n"]) + c.finish()
    assert out == "a"


def test_chat_messages_become_the_books_prompt():
    assert chat_prompt([("user", "Name a color")]) == format_input({"instruction": "Name a color", "input": ""}) + (
        "\n\n### Response:\n"
    )
    text = chat_prompt([("system", "Be brief."), ("user", "q1"), ("assistant", "a1"), ("user", "q2")])
    assert text == "Be brief.\n\n### Instruction:\nq1\n\n### Response:\na1\n\n### Instruction:\nq2\n\n### Response:\n"
    assert INTRO not in text
    with pytest.raises(PromptError, match="last message"):
        chat_prompt([("user", "q"), ("assistant", "a")])
    with pytest.raises(PromptError, match="must answer a user message"):
        chat_prompt([("assistant", "a"), ("user", "q")])


def test_the_benchmark_table_is_the_same_in_both_docs():
    """docs/serving.md and docs/performance.md show bench/serve.py's rows: the same rows."""
    root = Path(__file__).resolve().parents[2]

    def rows(name):
        text = (root / "docs" / name).read_text(encoding="utf-8")
        table = text[text.index("| clients | tokens/s |") :].split("\n\n")[0]
        return table.splitlines()

    assert rows("serving.md") == rows("performance.md")
    assert len(rows("serving.md")) == 5
