"""The finetune_instruct stage (stages/finetune_instruct.py) end to end on a tiny model: the book's
split written out, training, the model, and the responses to the test split."""

import json
import shutil

import pytest
import torch

from committed import committed
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.formats.modeldir import load_model, save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params


@pytest.fixture
def stage_dir(tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    paths.raw("instructions").mkdir(parents=True)
    shutil.copy(mirror / "instruction-data.json", paths.raw("instructions") / "instruction-data.json")
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, tie_weights=True
    )
    save_model(GPTModel(cfg), paths.BASE, {"tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.BASE)})
    return tmp_path


def test_stage_trains_and_answers_the_test_split(stage_dir, run_stage):
    params = load_params(committed("params.yaml"))
    ins = params.instruct.model_copy(
        update=dict(
            max_steps=4, batch_size=4, eval_freq=2, eval_iter=1, response_tokens=5, checkpoint_every=0, device="cpu"
        )
    )
    summary = run_stage("finetune_instruct", params.model_copy(update={"instruct": ins}))
    assert summary["steps"] == 4 and summary["initial_val_loss"] > 0 and summary["finetuned_val_loss"] > 0
    for name, n in (("train", 935), ("val", 55), ("test", 110)):
        assert len(json.loads((paths.INSTRUCT_DATA / f"{name}.json").read_text())) == n
    responses = json.loads((paths.INSTRUCT_DATA / "test-responses.json").read_text())
    assert len(responses) == 110
    assert all(set(r) == {"instruction", "input", "output", "model_response"} for r in responses)
    assert all(isinstance(r["model_response"], str) for r in responses)
    assert responses[0]["instruction"] == json.loads((paths.INSTRUCT_DATA / "test.json").read_text())[0]["instruction"]
    summary_file = json.loads((paths.METRICS / "instruct" / "metrics.json").read_text())
    assert summary_file == summary, "the metrics file holds the measured results, not DVCLive's last step"
    assert load_model(paths.INSTRUCT).config.context_length == 64
    assert (paths.PLOTS / "instruct" / "loss.png").is_file()
