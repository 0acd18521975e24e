"""The finetune_dpo stage (stages/finetune_dpo.py) end to end on a tiny instruction model: the
preference split (chapter 7's test entries), the starting point, training, curves, figures, the
model and the responses to the test split."""

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from committed import committed
from scratchgpt.book.instruct import EntryError, load_entries, split_entries
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.book.train import TooLittleData
from scratchgpt.files import write_json
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.modeldir import load_model, save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def instruction_model(mirror, context_length):
    """A tiny models/instruct (random weights) with the GPT-2 tokenizer and the Alpaca format."""
    if paths.INSTRUCT.exists():
        shutil.rmtree(paths.INSTRUCT)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    meta = {
        "tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.INSTRUCT),
        "instruct": {"format": "alpaca"},
    }
    save_model(GPTModel(cfg), paths.INSTRUCT, meta)


@pytest.fixture
def stage_dir(tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    paths.raw("preferences").mkdir(parents=True)
    name = "instruction-data-with-preference.json"
    shutil.copy(mirror / name, paths.raw("preferences") / name)
    _, _, test = split_entries(load_entries(mirror / "instruction-data.json"))
    paths.INSTRUCT_DATA.mkdir(parents=True)
    write_json(paths.INSTRUCT_DATA / "test.json", test)
    instruction_model(mirror, context_length=64)
    return tmp_path


def tiny(**changes):
    params = load_params(committed("params.yaml"))
    settings = dict(
        max_steps=6,
        batch_size=4,
        eval_freq=2,
        eval_iter=1,
        response_tokens=4,
        checkpoint_every=0,
        device="cpu",
        lr=1e-3,
    )
    return params.model_copy(update={"dpo": params.dpo.model_copy(update=settings | changes)})


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_stage_trains_against_the_frozen_instruction_model(stage_dir, run_stage):
    summary = run_stage("finetune_dpo", tiny())
    # before the first update the policy is the reference
    assert summary["dpo_initial_val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["dpo_initial_train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["dpo_initial_val_reward_margin"] == 0.0
    assert summary["dpo_steps"] == 6 and summary["dpo_tokens_seen"] > 0
    assert summary["dpo_val_loss"] < math.log(2) and summary["dpo_val_reward_margin"] > 0
    assert 0 <= summary["dpo_val_reward_accuracy"] <= 1
    assert json.loads((paths.METRICS / "dpo" / "metrics.json").read_text()) == summary
    for name, n in (("train", 935), ("val", 55), ("test", 110)):
        part = json.loads((paths.DPO_DATA / f"{name}.json").read_text())
        assert len(part) == n and set(part[0]) == {"instruction", "input", "output", "chosen", "rejected"}
    responses = json.loads((paths.DPO_DATA / "test-responses.json").read_text())
    assert len(responses) == 110 and all(isinstance(r["model_response"], str) for r in responses)
    assert [r["instruction"] for r in responses] == [
        e["instruction"] for e in json.loads((paths.INSTRUCT_DATA / "test.json").read_text())
    ]
    curves = paths.METRICS / "dpo" / "plots" / "metrics"
    for name in ("loss", "chosen_reward", "rejected_reward", "reward_accuracy", "reward_margin"):
        for split in ("train", "val"):
            rows = read_tsv(curves / f"{split}_{name}.tsv")
            assert [int(r["step"]) for r in rows] == [0, 2, 4], name
    margins, chosen, rejected = (
        read_tsv(curves / f"val_{k}.tsv") for k in ("reward_margin", "chosen_reward", "rejected_reward")
    )
    for m, c, r in zip(margins, chosen, rejected):
        assert float(m["val_reward_margin"]) == pytest.approx(
            float(c["val_chosen_reward"]) - float(r["val_rejected_reward"])
        )
    assert (paths.PLOTS / "dpo" / "loss.png").is_file() and (paths.PLOTS / "dpo" / "reward-margins.png").is_file()
    assert len(json.loads((paths.METRICS / "dpo" / "samples.json").read_text())) == 1
    model = load_model(paths.DPO)
    start = load_model(paths.INSTRUCT)
    assert model.config == start.config
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.state_dict().values()))


def test_lora_trains_adapters_and_saves_them_beside_the_instruction_model(stage_dir, run_stage):
    params = tiny(method="lora")
    adapters = params.dpo.lora.model_copy(update={"save": "adapters", "rank": 2, "targets": ["attention"]})
    params = params.model_copy(update={"dpo": params.dpo.model_copy(update={"lora": adapters})})
    summary = run_stage("finetune_dpo", params)
    assert summary["dpo_trainable_parameters"] == 4 * 2 * (16 + 16)  # q, k, v, out: A 16×2 and B 2×16 each
    config = json.loads((paths.DPO / "config.json").read_text())
    assert config["lora"]["base"]["path"] == "../instruct"
    assert load_finetuned(paths.DPO).config == load_model(paths.INSTRUCT).config


def test_a_preference_file_that_is_not_chapter_7s_is_refused(stage_dir, run_stage):
    path = paths.raw("preferences") / "instruction-data-with-preference.json"
    entries = json.loads(path.read_text())
    entries[940]["instruction"] = "Something else."  # a test entry (935 + 5)
    path.write_text(json.dumps(entries))
    params = tiny()
    files = params.download.datasets["preferences"].files
    # the digest check comes first: give the changed file its own digest
    from scratchgpt.files import sha256_file

    changed = [f.model_copy(update={"sha256": sha256_file(path), "size": path.stat().st_size}) for f in files]
    datasets = dict(params.download.datasets)
    datasets["preferences"] = datasets["preferences"].model_copy(update={"files": changed})
    params = params.model_copy(update={"download": params.download.model_copy(update={"datasets": datasets})})
    with pytest.raises(EntryError, match=r"not chapter 7's .* first difference at test entry 5"):
        run_stage("finetune_dpo", params)
    assert not paths.DPO.exists()


def test_pairs_without_a_response_token_in_the_context_are_left_out(stage_dir, run_stage, mirror, caplog):
    instruction_model(mirror, context_length=44)
    caplog.set_level("WARNING")
    summary = run_stage("finetune_dpo", tiny())
    left_out = re.search(
        r"train: (\d+) of 935 pairs keep no response token within 44 tokens and are left out", caplog.text
    )
    assert left_out, caplog.text
    assert summary["dpo_pairs"] == 935 - int(left_out.group(1)) > 0
    assert summary["dpo_initial_val_loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_no_pair_within_the_context_is_a_clear_error(stage_dir, run_stage, mirror):
    instruction_model(mirror, context_length=24)
    with pytest.raises(TooLittleData, match=r"train: none of the 935 pairs keeps a response token within 24 tokens"):
        run_stage("finetune_dpo", tiny())
    assert not paths.DPO.exists() and not paths.DPO_DATA.exists()
