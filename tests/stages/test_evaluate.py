"""The evaluate stage end to end on tiny models: classifier and instruction metrics, the judge
skipped without a URL and used with one (fake Ollama and OpenAI-compatible servers on 127.0.0.1),
its API key kept out of every output, and the judge's params checked before anything runs."""

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from committed import committed
from fakes import Answer, FakeOllama, FakeOpenAI, chat, completion
from scratchgpt.book.classify import Head, to_classifier
from scratchgpt.book.instruct import EntryError
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.scoring import rouge_l_f1
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.errors import PipelineError
from scratchgpt.files import write_json
from scratchgpt.formats.modeldir import save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params, validate
from scratchgpt.plumbing.params_file import ParamsError

CFG = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
ENTRIES = [
    {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5.", "model_response": "It is 7."},
]

# the DPO model's answers to the same entries
DPO_ENTRIES = [{**e, "model_response": e["output"]} for e in ENTRIES]


@pytest.fixture
def stage_dir(tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    tok = GPT2Tokenizer(mirror / "gpt2")
    torch.manual_seed(0)
    classifier = to_classifier(GPTModel(CFG), trainable="all")
    save_model(
        classifier,
        paths.CLASSIFIER,
        {"tokenizer": save_tokenizer(tok, paths.CLASSIFIER), "classifier": Head(max_length=20).to_dict()},
    )
    paths.SPAM.mkdir(parents=True)
    (paths.SPAM / "test.csv").write_text("Label,Text\n0,See you soon\n1,WIN a free prize now\n0,Lunch at 12?\n")
    save_model(
        GPTModel(CFG.replace(tie_weights=True)), paths.INSTRUCT, {"tokenizer": save_tokenizer(tok, paths.INSTRUCT)}
    )
    write_json(
        paths.INSTRUCT_DATA / "test.json", [{k: e[k] for k in ("instruction", "input", "output")} for e in ENTRIES]
    )
    write_json(paths.INSTRUCT_DATA / "test-responses.json", ENTRIES)
    torch.manual_seed(1)
    save_model(GPTModel(CFG.replace(tie_weights=True)), paths.DPO, {"tokenizer": save_tokenizer(tok, paths.DPO)})
    write_json(paths.DPO_DATA / "test-responses.json", DPO_ENTRIES)
    return tmp_path


def params(http=None, **evaluate):
    p = load_params(committed("params.yaml"))
    download = p.download.model_copy(update={"http": p.download.http.model_copy(update=http or {})})
    return p.model_copy(update={"evaluate": p.evaluate.model_copy(update=evaluate), "download": download})


def test_metrics_without_a_judge(stage_dir, caplog, run_stage):
    caplog.set_level("INFO")
    metrics = run_stage("evaluate", params())
    assert metrics["instruct_exact_match"] == 0.5
    assert metrics["instruct_rouge_l"] == pytest.approx((1.0 + rouge_l_f1("The sum is 5.", "It is 7.")) / 2)
    assert metrics["instruct_responses"] == 2 and metrics["instruct_test_perplexity"] > 1
    assert 0 <= metrics["classifier_test_accuracy"] <= 1
    assert "instruct_judge_score" not in metrics and "skipping the judge" in caplog.text
    assert json.loads((paths.METRICS / "evaluate.json").read_text()) == metrics
    per_item = json.loads((paths.DATA / "evaluate" / "instruct-scores.json").read_text())
    assert [x["exact_match"] for x in per_item] == [True, False]
    # the DPO model, scored the same way on the same entries
    assert metrics["dpo_exact_match"] == 1.0 and metrics["dpo_rouge_l"] == 1.0 and metrics["dpo_responses"] == 2
    assert metrics["dpo_test_loss"] != metrics["instruct_test_loss"]  # another model
    assert [x["exact_match"] for x in json.loads((paths.EVALUATE_DATA / "dpo-scores.json").read_text())] == [True] * 2


def test_metrics_with_a_judge(stage_dir, run_stage):
    fake = FakeOllama()
    fake.thread.start()
    try:
        fake.script(chat("90"), chat("not sure"), chat("70"), chat("80"))
        metrics = run_stage("evaluate", params(judge_url=fake.url, judge_model="llama3"))
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
    assert (
        metrics["instruct_judge_score"] == 90
        and metrics["instruct_judge_scored"] == 1
        and metrics["instruct_judge_unscored"] == 1
    )
    assert fake.bodies[0]["model"] == "llama3"
    assert "score the model response `Blue.`" in fake.bodies[0]["messages"][0]["content"]
    per_item = json.loads((paths.DATA / "evaluate" / "instruct-scores.json").read_text())
    assert [x["judge_score"] for x in per_item] == [90, None]
    assert metrics["dpo_judge_score"] == 75 and metrics["dpo_judge_scored"] == 2
    assert "score the model response `The sum is 5.`" in fake.bodies[3]["messages"][0]["content"]


def test_responses_without_model_response_are_named(stage_dir, run_stage):
    write_json(
        paths.INSTRUCT_DATA / "test-responses.json",
        [ENTRIES[0], {k: ENTRIES[1][k] for k in ("instruction", "input", "output")}],
    )
    with pytest.raises(EntryError, match="entry 1: missing key 'model_response'"):
        run_stage("evaluate", params())


KEY = "sk-stage-0123456789abcdef"


def test_openai_judge_with_an_api_key_that_no_output_holds(stage_dir, run_stage, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SCRATCHGPT_JUDGE_API_KEY", KEY)
    p = params({"backoff": 0.0}, judge_api="openai", judge_model="gpt-4o-mini")
    with FakeOpenAI() as fake:
        fake.script(Answer(b'{"error": {"message": "bad key ' + KEY.encode() + b'"}}', status=500), completion("75"))
        fake.answers.append(completion(f"{KEY}"))  # a reply echoing the key: unscored, logged masked
        fake.answers += [completion("60"), completion("50")]  # the DPO model's two responses
        metrics = run_stage(
            "evaluate", p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"judge_url": fake.url})})
        )
    assert (
        metrics["instruct_judge_score"] == 75
        and metrics["instruct_judge_scored"] == 1
        and metrics["instruct_judge_unscored"] == 1
    )
    assert {h["Authorization"] for h in fake.headers} == {f"Bearer {KEY}"}
    assert fake.bodies[0]["model"] == "gpt-4o-mini" and fake.bodies[0]["max_tokens"] == 16
    written = {f: f.read_bytes() for f in Path(".").rglob("*") if f.is_file() and not f.is_symlink()}
    assert b"judge_score" in written[paths.METRICS / "evaluate.json"]
    assert b"judge_score" in written[paths.EVALUATE_DATA / "instruct-scores.json"]
    assert [f for f, data in written.items() if KEY.encode() in data] == []  # outputs, the stage's records
    assert KEY not in caplog.text and KEY not in "".join(capsys.readouterr())
    assert KEY not in p.model_dump_json()  # params (and so dvc.lock) hold only the variable's name
    assert p.evaluate.judge_api_key_env == "SCRATCHGPT_JUDGE_API_KEY"


def test_an_unreachable_judge_stops_the_stage(stage_dir, run_stage):
    with FakeOllama() as fake:
        fake.script(Answer(b"", status=503))
        with pytest.raises(PipelineError, match="could not be reached"):
            run_stage("evaluate", params({"retries": 1, "backoff": 0.0}, judge_url=fake.url))
    assert not (paths.METRICS / "evaluate.json").exists()


def with_evaluate(**keys):
    data = yaml.safe_load((committed("params.yaml")).read_text())
    data["evaluate"] |= keys
    return data


def test_plain_http_to_another_host_needs_judge_allow_http():
    url = "http://judge.lan:8000/v1/chat/completions"
    with pytest.raises(ParamsError, match=r"evaluate\.judge_url: .*needs evaluate\.judge_allow_http: true"):
        validate(with_evaluate(judge_url=url))
    assert validate(with_evaluate(judge_url=url, judge_allow_http=True)).evaluate.judge_url == url
    assert (
        validate(with_evaluate(judge_url="https://api.example.com/v1/chat/completions")).evaluate.judge_api == "ollama"
    )


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"judge_api": "anthropic"}, "evaluate.judge_api"),
        ({"judge_api_key_env": "MY KEY"}, "evaluate.judge_api_key_env: must be the name of an environment variable"),
        ({"judge_api_key_env": "sk-abc123"}, "evaluate.judge_api_key_env"),
        ({"judge_allow_http": "yes"}, "evaluate.judge_allow_http"),
        ({"judge_url": "ftp://judge.lan/"}, "evaluate.judge_url: must be an http:// or https:// URL"),
        ({"judge_max_tokens": 0}, "evaluate.judge_max_tokens"),
        ({"judge_timeout": float("inf")}, "evaluate.judge_timeout"),
    ],
)
def test_bad_judge_params_are_named(keys, problem):
    with pytest.raises(ParamsError, match=problem.replace(".", r"\.")):
        validate(with_evaluate(**keys))
