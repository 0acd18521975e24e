"""The evaluate stage end to end on tiny models: classifier and instruction metrics, the judge
skipped without a URL and used with one (a fake Ollama server on 127.0.0.1)."""

import json
from pathlib import Path

import pytest
import torch

from fakes import FakeOllama, chat
from scratchgpt.book.classify import Head, to_classifier
from scratchgpt.book.instruct import EntryError
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.scoring import rouge_l_f1
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.files import write_json
from scratchgpt.formats.modeldir import save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params

CFG = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
ENTRIES = [
    {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5.", "model_response": "It is 7."},
]


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
    return tmp_path


def params(**evaluate):
    p = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return p.model_copy(update={"evaluate": p.evaluate.model_copy(update=evaluate)})


def test_metrics_without_a_judge(stage_dir, caplog, run_stage):
    caplog.set_level("INFO")
    metrics = run_stage("evaluate", params())
    assert metrics["instruct_exact_match"] == 0.5
    assert metrics["instruct_rouge_l"] == pytest.approx((1.0 + rouge_l_f1("The sum is 5.", "It is 7.")) / 2)
    assert metrics["instruct_responses"] == 2 and metrics["instruct_test_perplexity"] > 1
    assert 0 <= metrics["classifier_test_accuracy"] <= 1
    assert "judge_score" not in metrics and "skipping the judge" in caplog.text
    assert json.loads((paths.METRICS / "evaluate.json").read_text()) == metrics
    per_item = json.loads((paths.DATA / "evaluate" / "instruct-scores.json").read_text())
    assert [x["exact_match"] for x in per_item] == [True, False]


def test_metrics_with_a_judge(stage_dir, run_stage):
    fake = FakeOllama()
    fake.thread.start()
    try:
        fake.script(chat("90"), chat("not sure"))
        metrics = run_stage("evaluate", params(judge_url=fake.url, judge_model="llama3"))
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
    assert metrics["judge_score"] == 90 and metrics["judge_scored"] == 1 and metrics["judge_unscored"] == 1
    assert fake.bodies[0]["model"] == "llama3"
    assert "score the model response `Blue.`" in fake.bodies[0]["messages"][0]["content"]
    per_item = json.loads((paths.DATA / "evaluate" / "instruct-scores.json").read_text())
    assert [x["judge_score"] for x in per_item] == [90, None]


def test_responses_without_model_response_are_named(stage_dir, run_stage):
    write_json(
        paths.INSTRUCT_DATA / "test-responses.json",
        [ENTRIES[0], {k: ENTRIES[1][k] for k in ("instruction", "input", "output")}],
    )
    with pytest.raises(EntryError, match="entry 1: missing key 'model_response'"):
        run_stage("evaluate", params())
