"""``scratchgpt serve`` over HTTP on 127.0.0.1, talked to with the official ``openai`` client:
routes, streaming, sampling, concurrent streams against solo runs, every bounded error, the
judge of ``evaluate`` against a served model."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
import torch

from scratchgpt.book.classify import Head, classify
from scratchgpt.book.generate import generate
from scratchgpt.book.instruct import format_input
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.cli import main as cli
from scratchgpt.formats.modeldir import load_model, save_model, save_tokenizer
from scratchgpt.plumbing.judge import Judge, JudgeSettings, judge_each
from scratchgpt.serve.api import create_app
from scratchgpt.serve.models import open_model
from scratchgpt.serve.server import Background, make_server

ROOT = Path(__file__).resolve().parents[2]


def tiny(folder: Path, tok, context_length=256, **meta) -> Path:
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    torch.manual_seed(0)
    save_model(GPTModel(cfg).eval(), folder, metadata={"tokenizer": save_tokenizer(tok, folder), **meta})
    return folder


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory, tok):
    return tiny(tmp_path_factory.mktemp("serve") / "instruct", tok, instruct={"format": "alpaca"})


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory, tok):
    return tiny(tmp_path_factory.mktemp("serve") / "pretrained", tok)


@contextlib.contextmanager
def serving(folder, header_timeout=10.0, body_timeout=30.0, **kw):
    served = open_model(folder, torch.device("cpu"), **kw)
    server = make_server(
        create_app(served), port=0, header_timeout=header_timeout, body_timeout=body_timeout, log_level="warning"
    )
    try:
        with Background(server) as url:
            yield url, served
    finally:
        if served.engine is not None:
            served.engine.stop()


@pytest.fixture(scope="module")
def instruct(instruct_dir):
    with serving(instruct_dir) as (url, served):
        yield url, served


def client(url, key="none"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def alpaca(instruction: str) -> str:
    return format_input({"instruction": instruction, "input": ""}) + "\n\n### Response:\n"


def solo_answer(model, tok, instruction, max_tokens):
    """What `scratchgpt chat --greedy` shows: the answer up to the next ### section, trimmed."""
    new = generate(model, [tok.encode(alpaca(instruction), allow_special=False)], max_tokens, eos_id=tok.eot_id)[0]
    text = tok.decode([t for t in new if t != tok.eot_id]).lstrip()
    return text.split("###")[0].rstrip()


# ---------------------------------------------------------------------------------------------
# Routes


def test_models_lists_the_folder(instruct):
    url, served = instruct
    models = client(url).models.list()
    assert [m.id for m in models.data] == ["instruct"]
    assert client(url).models.retrieve("instruct").owned_by == "scratchgpt"


def test_chat_greedy_answers_as_scratchgpt_chat(instruct, instruct_dir, tok, monkeypatch, capsys):
    url, _ = instruct
    model = load_model(instruct_dir)
    questions = ["Name a color", "What is 2 + 2?"]
    for q in questions:
        reply = client(url).chat.completions.create(
            model="instruct", messages=[{"role": "user", "content": q}], temperature=0, max_tokens=12
        )
        assert reply.choices[0].message.content == solo_answer(model, tok, q, 12)
        assert reply.choices[0].finish_reason in ("stop", "length")
        prompt_len = len(tok.encode(alpaca(q), allow_special=False))
        assert reply.usage.prompt_tokens == prompt_len
        assert reply.usage.total_tokens == prompt_len + reply.usage.completion_tokens
    # the same answers from the command line
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("\n".join(questions) + "\n"))
    assert cli(["chat", "--model", str(instruct_dir), "--max-new-tokens", "12", "--greedy"]) == 0
    printed = capsys.readouterr().out.split("\n\n")
    assert [p.strip() for p in printed] == [solo_answer(model, tok, q, 12) for q in questions]


def test_completion_greedy_equals_scratchgpt_generate(plain_dir, capsys):
    prompt = "Every effort moves you"
    assert cli(["generate", "--model", str(plain_dir), "--prompt", prompt, "--greedy", "--max-new-tokens", "20"]) == 0
    printed = capsys.readouterr().out
    with serving(plain_dir) as (url, _):
        reply = client(url).completions.create(model="pretrained", prompt=prompt, temperature=0, max_tokens=20)
        by_ids = client(url).completions.create(
            model="pretrained", prompt=[6109, 3626, 6100, 345], temperature=0, max_tokens=20
        )
    assert printed == prompt + reply.choices[0].text + "\n"
    assert by_ids.choices[0].text == reply.choices[0].text  # the same prompt as token ids
    assert reply.usage.completion_tokens == 20 and reply.choices[0].finish_reason == "length"


def test_streaming_sends_openais_chunks_and_done(instruct):
    url, _ = instruct
    c = client(url)
    whole = c.chat.completions.create(
        model="instruct", messages=[{"role": "user", "content": "Hi"}], temperature=0, max_tokens=16
    )
    chunks = list(
        c.chat.completions.create(
            model="instruct",
            messages=[{"role": "user", "content": "Hi"}],
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # the raw events end with [DONE]
    raw = requests.post(
        f"{url}/v1/completions",
        json={"model": "instruct", "prompt": "a", "max_tokens": 3, "stream": True, "temperature": 0},
        timeout=30,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_seeded_sampling_repeats(instruct):
    url, _ = instruct
    c = client(url)

    def sample(seed):
        return c.completions.create(model="instruct", prompt="Once", max_tokens=16, temperature=1.0, seed=seed)

    first, again, other = sample(11), sample(11), sample(12)
    assert first.choices[0].text == again.choices[0].text != other.choices[0].text


def test_stop_strings_end_the_text(instruct, instruct_dir, tok):
    url, _ = instruct
    full = client(url).completions.create(model="instruct", prompt="Once", max_tokens=24, temperature=0).choices[0]
    stop = full.text[5:8]
    assert len(stop) == 3 and stop in full.text
    cut = client(url).completions.create(model="instruct", prompt="Once", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == full.text[: full.text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_concurrent_streams_equal_solo_runs_and_share_steps(instruct_dir, tok):
    questions = [f"Question {i}: " + "why " * i for i in range(8)]
    model = load_model(instruct_dir)
    solo = [solo_answer(model, tok, q, 24) for q in questions]
    with serving(instruct_dir, max_batch=8) as (url, served):
        c = client(url)

        def ask(q):
            stream = c.chat.completions.create(
                model="instruct", messages=[{"role": "user", "content": q}], temperature=0, max_tokens=24, stream=True
            )
            return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, questions))
        engine = served.engine
    assert answers == solo
    assert engine.rows_decoded > engine.steps  # some steps decoded several rows


# ---------------------------------------------------------------------------------------------
# Errors: OpenAI's body, and the server goes on


def error(response):
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_bad_bodies_are_400_naming_the_field(instruct):
    url, _ = instruct
    post = f"{url}/v1/chat/completions"
    r = requests.post(post, data="{not json", headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "not valid JSON" in error(r)["message"]
    r = requests.post(
        post, json={"model": "instruct", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}
    )
    assert r.status_code == 400 and error(r)["param"] == "max_tokens"
    r = requests.post(post, json={"model": "instruct", "messages": "hello"}, timeout=10)
    assert r.status_code == 400 and error(r)["param"] == "messages"
    r = requests.post(post, json={"model": "instruct", "messages": [{"role": "robot", "content": "x"}]}, timeout=10)
    assert r.status_code == 400 and error(r)["param"].startswith("messages.0.role")
    r = requests.post(post, json=[1, 2], timeout=10)
    assert r.status_code == 400
    with pytest.raises(openai.BadRequestError, match="n: only 1 choice"):
        client(url).chat.completions.create(model="instruct", messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client(url).chat.completions.create(
            model="instruct", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    r = requests.get(f"{url}/v1/nothing", timeout=10)
    assert r.status_code == 404 and error(r)
    assert client(url).models.list().data  # still serving


def test_a_body_over_one_mib_is_413(instruct):
    url, _ = instruct
    big = json.dumps({"model": "instruct", "prompt": "x" * (1 << 20)})
    r = requests.post(f"{url}/v1/completions", data=big, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "at most 1048576" in error(r)["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"x" * 65536

    r = requests.post(f"{url}/v1/completions", data=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413


def test_prompts_and_max_tokens_past_the_limits_are_400_with_the_numbers(instruct, tok):
    url, _ = instruct
    c = client(url)
    with pytest.raises(openai.BadRequestError, match=r"the prompt has 300 tokens; this model's context holds 256"):
        c.completions.create(model="instruct", prompt=[11] * 300, max_tokens=1)
    with pytest.raises(
        openai.BadRequestError, match=r"prompt's 200 tokens \+ 100 new ones exceed the context length 256"
    ):
        c.completions.create(model="instruct", prompt=[11] * 200, max_tokens=100)
    with pytest.raises(openai.BadRequestError, match="over this server's limit of 512"):
        c.completions.create(model="instruct", prompt="x", max_tokens=600)
    with pytest.raises(openai.BadRequestError, match="token id 99999"):
        c.completions.create(model="instruct", prompt=[99999], max_tokens=1)


def test_an_unknown_model_is_404(instruct):
    url, _ = instruct
    with pytest.raises(openai.NotFoundError, match="'gpt-4o' is not served here"):
        client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_a_wrong_or_missing_key_is_401_and_never_logged(instruct_dir, monkeypatch, caplog):
    secret = "sk-test-4c2b1a"
    caplog.set_level(logging.DEBUG)
    with serving(instruct_dir, api_key=secret) as (url, _):
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").models.list()
        r = requests.get(f"{url}/v1/models", timeout=10)
        assert r.status_code == 401 and error(r)["code"] == "invalid_api_key"
        assert client(url, key=secret).models.list().data[0].id == "instruct"
        client(url, key=secret).completions.create(model="instruct", prompt="x", max_tokens=2)
    assert secret not in caplog.text


def test_a_full_queue_is_429_with_retry_after(instruct_dir):
    with serving(instruct_dir, max_batch=1, max_queue=0) as (url, served):
        stream = client(url).completions.create(
            model="instruct", prompt="x", max_tokens=200, temperature=0, stream=True
        )
        next(iter(stream))  # the one row is busy
        r = requests.post(
            f"{url}/v1/completions", json={"model": "instruct", "prompt": "y", "max_tokens": 2}, timeout=10
        )
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and error(r)["code"] == "queue_full"
        stream.close()


def test_a_client_that_disconnects_mid_stream_frees_its_row(instruct_dir):
    with serving(instruct_dir, max_batch=2) as (url, served):
        engine = served.engine
        r = requests.post(
            f"{url}/v1/completions",
            json={"model": "instruct", "prompt": "x", "max_tokens": 240, "temperature": 0, "stream": True},
            stream=True,
            timeout=30,
        )
        lines = r.iter_lines()
        next(lines)
        assert engine.load()[0] == 1
        r.close()  # the client goes
        deadline = time.monotonic() + 10
        while engine.load() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.load() == (0, 0)
        decoded = engine.rows_decoded
        time.sleep(0.3)
        assert engine.rows_decoded == decoded < 239  # no step spent on it since
        # a non-streaming request whose client leaves is dropped too
        with socket.create_connection(served_address(url)) as s:
            body = json.dumps({"model": "instruct", "prompt": "x", "max_tokens": 240, "temperature": 0}).encode()
            s.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while engine.load()[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
        deadline = time.monotonic() + 10
        while engine.load() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.load() == (0, 0)
        assert client(url).models.list().data


def served_address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_a_slow_client_is_timed_out(instruct_dir):
    with serving(instruct_dir, header_timeout=0.5) as (url, _):
        with socket.create_connection(served_address(url)) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            s.settimeout(5)
            start = time.monotonic()
            assert s.recv(100) == b""  # closed by the server
            assert time.monotonic() - start < 3
        with socket.create_connection(served_address(url)) as s:  # nothing sent at all
            s.settimeout(5)
            assert s.recv(100) == b""
        assert client(url).models.list().data
    with serving(instruct_dir, body_timeout=0.5) as (url, _):
        with socket.create_connection(served_address(url)) as s:  # headers, then half the body
            s.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model": ')
            s.settimeout(5)
            reply = s.recv(1000)
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5s" in reply
        assert client(url).models.list().data


# ---------------------------------------------------------------------------------------------
# Classifiers


def test_a_classifier_serves_classify_and_refuses_completions(tmp_path, tok):
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, n_classes=2)
    torch.manual_seed(0)
    folder = tmp_path / "classifier"
    head = Head(("ham", "spam"), "last_non_pad", tok.eot_id, 32)
    model = GPTModel(cfg).eval()
    save_model(model, folder, metadata={"tokenizer": save_tokenizer(tok, folder), "classifier": head.to_dict()})
    texts = ["You are a winner!", "See you at 6?"]
    with serving(folder) as (url, _):
        r = requests.post(f"{url}/v1/classify", json={"model": "classifier", "input": texts}, timeout=30)
        assert r.status_code == 200
        expected = [classify(t, model, tok, head) for t in texts]
        assert [(d["label"], pytest.approx(d["probability"])) for d in r.json()["data"]] == expected
        with pytest.raises(openai.BadRequestError, match="is a classifier"):
            client(url).chat.completions.create(model="classifier", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("ask", [True, False], ids=["after-a-request", "idle"])
def test_serve_command_starts_and_answers(instruct_dir, ask):
    """`scratchgpt serve` as a user runs it: a free port, the URL in its log, a chat answer, Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scratchgpt", "serve", "--model", str(instruct_dir), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in proc.stderr:
            if "Uvicorn running on" in line:
                url = line.split("running on ")[1].split()[0]
                break
        assert url, "no URL printed"
        if ask:
            reply = client(url).chat.completions.create(
                model="instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            assert reply.object == "chat.completion"
    finally:
        proc.send_signal(2)
        rest = proc.stderr.read()
        proc.wait(30)
    assert proc.returncode == 130  # Ctrl-C's status, after uvicorn's graceful shutdown
    assert "Traceback" not in rest and "Finished server process" in rest
    assert "terminate called" not in rest  # the engine's thread ended before the interpreter did


# ---------------------------------------------------------------------------------------------
# The judge of `evaluate` against a served model


def forty_two(folder: Path, tok) -> Path:
    """A model that answers "42" to anything: its one block adds nothing (all zeros), so each
    next token depends only on the last one; every token's embedding points one way (→ "42"),
    "42"'s another (→ end of text)."""
    cfg = GPTConfig(vocab_size=50257, context_length=512, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0)
    model = GPTModel(cfg).eval()
    answer = tok.encode("42")
    assert len(answer) == 1
    with torch.no_grad():
        for p in model.trf_blocks.parameters():
            p.zero_()
        model.pos_emb.weight.zero_()
        model.tok_emb.weight.zero_()
        model.tok_emb.weight[:, 0] = 1.0
        model.tok_emb.weight[answer[0]] = 0.0
        model.tok_emb.weight[answer[0], 1] = 1.0
        model.out_head.weight.zero_()
        ln = model.final_norm
        model.out_head.weight[answer[0]] = 10 * ln(model.tok_emb.weight[0])
        model.out_head.weight[tok.eot_id] = 10 * ln(model.tok_emb.weight[answer[0]])
    save_model(model, folder, metadata={"tokenizer": save_tokenizer(tok, folder), "instruct": {"format": "alpaca"}})
    return folder


def test_the_judge_of_evaluate_scores_through_a_served_model(tmp_path, tok):
    judge_dir = forty_two(tmp_path / "judge", tok)
    items = [("Name a color", "Red.", "Blue."), ("What is 2 + 2?", "4", "5")]
    with serving(judge_dir) as (url, served):
        settings = JudgeSettings(url=f"{url}/v1/chat/completions", model="judge", api="openai", api_key_env=None)
        scores = judge_each(Judge(settings), items)
        assert served.engine.rows_decoded >= 2  # the replies were generated by the served model
    assert scores == [42, 42]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "argument --port: must be in [0, 65535], got 70000"),
        (["--max-queue", "-1"], "argument --max-queue: must be >= 0, got -1"),
        (["--timeout", "0"], "argument --timeout: must be > 0, got 0"),
        (["--api-key-env", "SCRATCHGPT_TEST_UNSET_KEY"], "environment variable SCRATCHGPT_TEST_UNSET_KEY is not set"),
    ],
)
def test_bad_serve_arguments_end_in_one_line(instruct_dir, monkeypatch, capsys, args, message):
    monkeypatch.delenv("SCRATCHGPT_TEST_UNSET_KEY", raising=False)
    with pytest.raises(SystemExit) as e:
        cli(["serve", "--model", str(instruct_dir), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
