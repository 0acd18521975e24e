"""The LLM judge, against fake chat servers on 127.0.0.1 (Ollama's /api/chat and an
OpenAI-compatible /v1/chat/completions), well-behaved and hostile: slow, trickling, garbage,
429/5xx, oversized, compressed, dropping the connection, or not there at all."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import socket
import time

import pytest

from fakes import Answer, FakeOllama, FakeOpenAI, chat, completion, streamed
from scratchgpt.book.scoring import (
    judge_prompt,
)
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.http import HttpClient, SourceFailed, check_remote_url
from scratchgpt.plumbing.judge import (
    MAX_REPLY_BYTES,
    Judge,
    JudgeSettings,
    judge_each,
    judge_from_params,
    judge_responses,
    openai_content,
    reply_content,
)
from scratchgpt.plumbing.sections.download import HttpParams
from scratchgpt.plumbing.sections.evaluate import EvaluateParams, judge_url_problem


def judge_at(url, model, client=None, api_key=None, **settings):
    return Judge(JudgeSettings(url, model, **settings), client, api_key=api_key)


def test_the_judge_settings_are_the_evaluate_sections_judge_keys():
    """One object carries evaluate.judge_* from the stage to the request: its fields are those
    keys, and where params has a default, it is the same."""
    fields = {f.name: f.default for f in dataclasses.fields(JudgeSettings)}
    keys = {k.removeprefix("judge_"): v for k, v in EvaluateParams.model_fields.items() if k.startswith("judge_")}
    assert set(fields) == set(keys) - {"timeout"}  # the timeout is the HTTP client's
    for name, field in keys.items():
        if fields.get(name, dataclasses.MISSING) is not dataclasses.MISSING and not field.is_required():
            assert fields[name] == field.default, name


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
    return judge_at(ollama.url, "llama3", client)


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
    judge_at(ollama.url, "phi3", client, seed=7, temperature=0.5, num_ctx=4096).score("p")
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
    assert judge_at(ollama.url, "m", client).score("p") is None
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
    with pytest.raises(PipelineError, match=r"evaluate\.judge_url: .*needs evaluate\.judge_allow_http: true"):
        judge_at("http://example.com/api/chat", "m")


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
        judge_responses(judge_at(url, "m", client), [ITEM] * 2)
    assert url in str(info.value) and "connection failed" in str(info.value)


def test_score_swallows_failure(ollama, judge):
    ollama.script(Answer(status=404))
    assert judge.score("p") is None
    with pytest.raises(SourceFailed, match="404"):
        judge.ask("p")


def test_judge_from_params(ollama, client, caplog):
    caplog.set_level(logging.INFO, logger="scratchgpt.plumbing.judge")
    assert judge_from_params(None) is None
    assert judge_from_params(JudgeSettings("", "llama3")) is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["no judge configured (evaluate.judge_url); skipping the judge"] * 2
    judge = judge_from_params(JudgeSettings(ollama.url, "llama3", num_ctx=1024), client)
    assert isinstance(judge, Judge) and judge.url == ollama.url and judge.options["num_ctx"] == 1024


# ---------------------------------------------------------------------------------------------
# The URL policy: https anywhere, plain http to this machine, elsewhere only when allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://judge.lan:8000/v1/chat/completions",
        "http://192.168.1.20:11434/api/chat",
        "http://localhost.example.com/api/chat",
        "http://127.0.0.1.example.com/api/chat",
        "http://user:pw@10.0.0.5/api/chat",
    ],
)
def test_plain_http_elsewhere_needs_judge_allow_http(url):
    assert "evaluate.judge_allow_http: true" in judge_url_problem(url, allow_http=False)
    assert judge_url_problem(url, allow_http=True) is None
    with pytest.raises(SourceFailed, match="not https"):
        check_remote_url(url)
    check_remote_url(url, allow_http=True)  # the client lets it through when allowed
    judge = judge_at(url, "m", api="openai", allow_http=True)
    assert judge.client.allow_http


@pytest.mark.parametrize(
    "url", ["https://api.example.com/v1/chat/completions", "http://127.0.0.1:11434/api/chat", "http://localhost/x"]
)
def test_https_and_loopback_need_nothing(url):
    assert judge_url_problem(url, allow_http=False) is None


@pytest.mark.parametrize("url", ["ftp://judge.lan/api/chat", "judge.lan/api/chat", "http:///api/chat"])
def test_not_an_http_url(url):
    assert judge_url_problem(url, allow_http=True).startswith("must be an http:// or https:// URL")


# ---------------------------------------------------------------------------------------------
# The OpenAI-compatible API


@pytest.fixture
def openai():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def ojudge(openai, client):
    return judge_at(openai.url, "qwen2.5-7b", client, api="openai")


def test_openai_reply_shapes():
    assert openai_content(completion("85").body) == "85"
    assert reply_content(completion("85").body, "openai") == "85"
    assert reply_content(completion("85").body, "ollama") is None  # the other protocol's shape
    assert reply_content(chat("85").body, "openai") is None
    assert openai_content(b'{"choices": []}') is None
    assert openai_content(b'{"choices": [{"text": "85"}]}') is None  # the legacy completions shape
    assert openai_content(completion(None).body) is None  # e.g. a refusal
    assert openai_content(b'{"error": {"message": "model not found", "type": "invalid_request_error"}}') is None
    assert openai_content(b"<html>502 Bad Gateway</html>") is None
    assert openai_content(b"[1, 2]") is None
    assert openai_content(completion("8").body + b"\n" + completion("5").body) is None  # two objects


def test_openai_request_and_reply(openai, ojudge):
    openai.script(completion("85"))
    assert ojudge.score("How good is it?") == 85
    assert openai.bodies == [
        {
            "model": "qwen2.5-7b",
            "messages": [{"role": "user", "content": "How good is it?"}],
            "temperature": 0.0,
            "seed": 123,
            "max_tokens": 16,
            "stream": False,
        }
    ]
    assert "Authorization" not in openai.headers[0]  # no key configured


def test_openai_options_are_passed(openai, client):
    openai.script(completion("1"))
    judge_at(openai.url, "m", client, api="openai", seed=7, temperature=0.5, max_tokens=4).score("p")
    assert {k: openai.bodies[0][k] for k in ("seed", "temperature", "max_tokens")} == {
        "seed": 7,
        "temperature": 0.5,
        "max_tokens": 4,
    }


def test_openai_scores_and_garbage(openai, ojudge):
    openai.script(
        completion("80"),
        Answer(b"<html>oops</html>", content_type="text/html"),  # not JSON
        Answer(b'{"id": "x", "object": "chat.completion"}'),  # JSON without choices
        completion("Score: 85"),  # not a bare score
        Answer(b'{"error": {"message": "overloaded"}}'),  # an error object with status 200
        completion("40"),
    )
    assert judge_responses(ojudge, [ITEM] * 6) == {"judge_score": 60.0, "judge_scored": 2, "judge_unscored": 4}
    assert len(openai.bodies) == 6  # garbage is not retried
    assert openai.bodies[0]["messages"][0]["content"] == judge_prompt(*ITEM)


def test_openai_wrong_path_is_an_http_error(openai, client):
    openai.script(completion("1"))
    judge = judge_at(openai.url.replace("/v1/chat/completions", "/api/chat"), "m", client, api="openai")
    with pytest.raises(SourceFailed, match="HTTP 404"):
        judge.ask("p")


# ---------------------------------------------------------------------------------------------
# The API key: sent as a Bearer token, never written anywhere

KEY = "sk-test-5f0c1e2d9a8b7c6d"


def test_api_key_from_the_named_variable(openai, client, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    judge = judge_from_params(JudgeSettings(openai.url, "m", api="openai", api_key_env="MY_JUDGE_KEY"), client)
    openai.script(completion("70"))
    assert judge.score("p") == 70
    assert openai.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "MY_JUDGE_KEY" in caplog.text and KEY not in caplog.text
    assert KEY not in repr(judge) and KEY not in json.dumps(judge.payload("p"))


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_key_no_header(openai, client, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SCRATCHGPT_JUDGE_API_KEY", raising=False)
    else:
        monkeypatch.setenv("SCRATCHGPT_JUDGE_API_KEY", value)
    openai.script(completion("70"))
    assert judge_from_params(JudgeSettings(openai.url, "m", api="openai"), client).score("p") == 70
    assert "Authorization" not in openai.headers[0]


def test_key_ignored_without_a_variable_name(openai, client, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_JUDGE_API_KEY", KEY)
    openai.script(completion("70"))
    judge_from_params(JudgeSettings(openai.url, "m", api="openai", api_key_env=None), client).score("p")
    assert "Authorization" not in openai.headers[0]


def echo(status: int, template: str) -> Answer:
    return Answer(template.replace("KEY", KEY).encode(), status=status)


def test_a_server_echoing_the_key_never_gets_it_logged_or_raised(openai, client, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SCRATCHGPT_JUDGE_API_KEY", KEY)
    judge = judge_from_params(JudgeSettings(openai.url, "m", api="openai"), client)
    openai.script(
        echo(401, '{"error": {"message": "Incorrect API key provided: KEY"}}'),
        echo(200, '{"choices": [{"message": {"content": "your key is KEY"}}]}'),  # not a score: logged
        echo(200, "<html>KEY</html>"),  # not JSON: logged
        echo(200, '{"error": "bad key KEY"}'),  # an error: logged
        echo(403, "forbidden for KEY"),
    )
    with pytest.raises(SourceFailed) as info:
        judge.ask("p")
    message = str(info.value)
    assert "HTTP 401" in message and "***" in message and "$SCRATCHGPT_JUDGE_API_KEY" in message
    assert KEY not in message
    assert [judge.score("p") for _ in range(4)] == [None] * 4
    assert len(caplog.records) > 4 and KEY not in caplog.text and "***" in caplog.text


# ---------------------------------------------------------------------------------------------
# Hostile or broken servers, in both protocols: what each does to one response and to the run

SERVERS = {"ollama": (FakeOllama, chat), "openai": (FakeOpenAI, completion)}


@pytest.fixture(params=sorted(SERVERS))
def hostile(request, sleeps):
    """(fake server, reply maker, judge) for each protocol, with a 0.5 s timeout and 1 retry."""
    server, reply = SERVERS[request.param]
    client = HttpClient(HttpParams(connect_timeout=1, read_timeout=0.5, retries=1, backoff=0.25), sleep=sleeps)
    with server() as fake:
        yield fake, reply, judge_at(fake.url, "m", client, api=request.param)


def test_429_and_5xx_are_retried_honouring_retry_after(hostile, sleeps):
    fake, reply, judge = hostile
    fake.script(Answer(b"slow down", status=429, headers={"Retry-After": "7"}), reply("55"))
    assert judge.score("p") == 55
    fake.script(Answer(b"", status=503), reply("65"))
    assert judge.score("p") == 65
    assert sleeps == [7, 0.25]  # Retry-After, then the backoff
    assert len(fake.bodies) == 4


def test_a_server_always_failing_ends_the_run(hostile, sleeps):
    fake, _, judge = hostile
    fake.script(Answer(b"", status=429, headers={"Retry-After": "2"}))
    with pytest.raises(PipelineError, match="could not be reached .*HTTP 429.*gave up after 2 tries"):
        judge_responses(judge, [ITEM] * 5)
    assert len(fake.bodies) == 3 * 2 and sleeps == [2, 2, 2]


def test_a_slow_server_times_out_then_is_unscored(hostile, caplog):
    fake, reply, judge = hostile
    slow = Answer(reply("90").body, delay=1.0)
    fake.script(reply("90"), slow, slow, reply("30"))
    caplog.set_level(logging.WARNING)
    assert judge_each(judge, [ITEM] * 3) == [90, None, 30]  # the slow one tried twice
    assert len(fake.bodies) == 4 and "timed out" in caplog.text


def test_a_trickling_server_hits_the_deadline(hostile):
    fake, reply, judge = hostile
    # every byte well within the read timeout, the whole reply far beyond it
    fake.script(Answer(reply("90").body + b" " * 40, trickle=0.05))
    start = time.monotonic()
    with pytest.raises(SourceFailed, match="timed out"):
        judge.ask("p")
    assert time.monotonic() - start < 2.5  # 2 tries of about 0.5 s, not 2 x 6 s
    assert len(fake.bodies) == 2


def test_an_oversized_reply_is_not_read(hostile, caplog):
    fake, reply, judge = hostile
    padded = reply("90").body[:-1] + b" " * MAX_REPLY_BYTES + b"}"  # valid JSON, saying 90
    fake.script(Answer(padded))
    caplog.set_level(logging.WARNING, logger="scratchgpt.plumbing.judge")
    assert judge.score("p") is None
    assert "over 1048576 bytes" in caplog.text and len(fake.bodies) == 1


def test_a_compressed_reply_is_refused(hostile, caplog):
    fake, reply, judge = hostile
    fake.script(Answer(gzip.compress(reply("90").body), headers={"Content-Encoding": "gzip"}))
    caplog.set_level(logging.WARNING, logger="scratchgpt.plumbing.judge")
    assert judge.score("p") is None
    assert "'gzip'-encoded reply" in caplog.text


def test_a_dropped_connection_is_retried(hostile):
    fake, reply, judge = hostile
    fake.script(Answer(drop=True), reply("45"))
    assert judge.score("p") == 45 and len(fake.bodies) == 2


def test_nobody_listening_ends_the_run(hostile):
    _, _, judge = hostile
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge.url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with pytest.raises(PipelineError, match="could not be reached .*connection failed"):
        judge_responses(judge, [ITEM] * 4)
