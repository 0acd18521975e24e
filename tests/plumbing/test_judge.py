"""The LLM judge, against a fake Ollama chat server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from fakes import Answer, FakeOllama, chat, streamed
from scratchgpt.book.scoring import (
    judge_prompt,
)
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.http import HttpClient, SourceFailed
from scratchgpt.plumbing.judge import (
    Judge,
    judge_each,
    judge_from_params,
    judge_responses,
    reply_content,
)
from scratchgpt.plumbing.params import HttpParams

# ---------------------------------------------------------------------------------------------
# ROUGE-L


def test_reply_content_shapes():
    assert reply_content(b'{"message": {"role": "assistant", "content": "7"}, "done": true}') == "7"
    stream = b'{"message": {"content": "4"}, "done": false}\n{"message": {"content": "2"}, "done": true}\n'
    assert reply_content(stream) == "42"
    cut = b'{"message": {"content": "4"}, "done": false}\n{"message": {"content": "2"}, "done": false}'
    assert reply_content(cut) is None  # a stream that never said "done"
    assert reply_content(b"<html>oops</html>") is None
    assert reply_content(b'{"response": "85"}') is None
    assert reply_content(b'{"error": "model \\"x\\" not found"}') is None
    assert reply_content(b"\xff\xfe") is None


# ---------------------------------------------------------------------------------------------
# a fake Ollama server


@pytest.fixture
def ollama():
    fake = FakeOllama()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture
def client(sleeps):
    return HttpClient(HttpParams(connect_timeout=2, read_timeout=2, retries=2, backoff=0), sleep=sleeps)


@pytest.fixture
def judge(ollama, client):
    return Judge(ollama.url, "llama3", client)


ITEM = ("### Instruction:\nName a color.", "Blue.", "Red.")


def test_judge_normal_reply_and_request_body(ollama, judge):
    ollama.script(chat("85"))
    assert judge.score("How good is it?") == 85
    assert ollama.bodies == [
        {
            "model": "llama3",
            "messages": [{"role": "user", "content": "How good is it?"}],
            "options": {"seed": 123, "temperature": 0.0, "num_ctx": 2048},
            "stream": False,
        }
    ]


def test_judge_options_are_passed(ollama, client):
    ollama.script(chat("1"))
    Judge(ollama.url, "phi3", client, seed=7, temperature=0.5, num_ctx=4096).score("p")
    assert ollama.bodies[0]["model"] == "phi3"
    assert ollama.bodies[0]["options"] == {"seed": 7, "temperature": 0.5, "num_ctx": 4096}


def test_judge_streamed_reply(ollama, judge):
    ollama.script(streamed("7", "3"))
    assert judge.score("p") == 73


def test_judge_retries_http_500(ollama, judge, sleeps):
    ollama.script(Answer(b"busy", status=500), chat("60"))
    assert judge.score("p") == 60
    assert len(ollama.bodies) == 2 and ollama.bodies[0] == ollama.bodies[1]
    assert sleeps == [0]


def test_judge_timeout_is_unscored_after_retries(ollama, sleeps, caplog):
    client = HttpClient(HttpParams(connect_timeout=2, read_timeout=0.05, retries=1, backoff=0), sleep=sleeps)
    ollama.script(Answer(json.dumps({"message": {"content": "90"}}).encode(), delay=0.4))
    caplog.set_level(logging.WARNING, logger="scratchgpt.plumbing.judge")
    assert Judge(ollama.url, "m", client).score("p") is None
    assert len(ollama.bodies) == 2 and sleeps == [0]
    assert any("timed out" in r.getMessage() for r in caplog.records)


def test_judge_reply_not_a_number_is_unscored(ollama, judge, caplog):
    ollama.script(chat("I would rate this response highly."))
    caplog.set_level(logging.WARNING, logger="scratchgpt.plumbing.judge")
    assert judge.score("p") is None
    assert any("rate this response" in r.getMessage() for r in caplog.records)


def test_judge_reply_not_json_is_unscored(ollama, judge):
    ollama.script(Answer(b"<html>hello</html>", content_type="text/html"))
    assert judge.score("p") is None


def test_judge_refuses_plain_http_elsewhere():
    with pytest.raises(PipelineError, match="not https"):
        Judge("http://example.com/api/chat", "m")


def test_judge_responses_mean_and_counts(ollama, judge):
    ollama.script(
        chat("80"),
        Answer(b"", status=404),  # fails at once, no retry
        chat("not sure"),
        streamed("9", "0"),
        Answer(b"busy", status=503),  # retried ...
        chat("40"),  # ... and then scored
    )
    summary = judge_responses(judge, [ITEM] * 5)
    assert summary == {"judge_score": pytest.approx((80 + 90 + 40) / 3), "judge_scored": 3, "judge_unscored": 2}
    assert len(ollama.bodies) == 6
    assert ollama.bodies[0]["messages"][0]["content"] == judge_prompt(*ITEM)


def test_judge_responses_nothing_scored_is_not_an_error(ollama, judge):
    ollama.script(chat("great"))
    assert judge_responses(judge, [ITEM] * 2) == {"judge_score": None, "judge_scored": 0, "judge_unscored": 2}


def test_judge_each_late_failure_only_unscores(ollama, judge):
    ollama.script(chat("50"), Answer(status=400))
    assert judge_each(judge, [ITEM] * 4) == [50, None, None, None]


def test_every_request_failing_raises(ollama, judge, sleeps):
    ollama.script(Answer(b"down", status=500))
    with pytest.raises(PipelineError, match="could not be reached") as info:
        judge_responses(judge, [ITEM] * 10)
    assert ollama.url in str(info.value) and "HTTP 500" in str(info.value)
    assert len(ollama.bodies) == 3 * 3  # gave up after the first 3 items, each tried 1 + 2 retries


def test_every_request_failing_raises_with_fewer_items(ollama, judge):
    ollama.script(Answer(b"", status=404))
    with pytest.raises(PipelineError, match="only request failed"):
        judge_responses(judge, [ITEM])


def test_unreachable_port_raises(client):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/chat"
    with pytest.raises(PipelineError, match="could not be reached") as info:
        judge_responses(Judge(url, "m", client), [ITEM] * 2)
    assert url in str(info.value) and "connection failed" in str(info.value)


def test_score_swallows_failure(ollama, judge):
    ollama.script(Answer(status=404))
    assert judge.score("p") is None
    with pytest.raises(SourceFailed, match="404"):
        judge.ask("p")


def test_judge_from_params(ollama, client, caplog):
    caplog.set_level(logging.INFO, logger="scratchgpt.plumbing.judge")
    assert judge_from_params(None, "llama3") is None
    assert judge_from_params("", "llama3") is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["no judge configured (evaluate.judge_url); skipping the judge"] * 2
    judge = judge_from_params(ollama.url, "llama3", client, num_ctx=1024)
    assert isinstance(judge, Judge) and judge.url == ollama.url and judge.options["num_ctx"] == 1024
