"""The finetune_classifier stage (stages/finetune_classifier.py) end to end on tiny models: the
model, metrics and plots it writes, the `classify` command on its model, and LoRA adapters saved
alone."""

import json
import re
import shutil

import pytest
import torch

from committed import committed
from conftest import load_stage
from scratchgpt.book import classify
from scratchgpt.book.classify import Head
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.cli import main as cli
from scratchgpt.errors import PipelineError
from scratchgpt.formats.classifier import load_classifier
from scratchgpt.formats.modeldir import save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params

TINY = GPTConfig(vocab_size=50257, context_length=48, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture
def stage_dir(tmp_path, monkeypatch, mirror, tok):
    """A working directory holding what finetune_classifier reads: the raw file and models/base."""
    monkeypatch.chdir(tmp_path)
    paths.raw("spam").mkdir(parents=True)
    shutil.copy(mirror / "SMSSpamCollection", paths.raw("spam") / "SMSSpamCollection")
    torch.manual_seed(0)
    save_model(GPTModel(TINY), paths.BASE, {"tokenizer": save_tokenizer(tok, paths.BASE)})
    return tmp_path


def test_stage_writes_model_metrics_and_plots(stage_dir, capsys, run_stage):
    params = load_params(committed("params.yaml"))
    clf = params.classifier.model_copy(
        update=dict(
            epochs=2,
            max_steps=6,
            batch_size=4,
            eval_freq=2,
            eval_iter=2,
            max_length=24,
            checkpoint_every=0,
            device="cpu",
        )
    )
    summary = run_stage("finetune_classifier", params.model_copy(update={"classifier": clf}))
    for split in ("train", "val", "test"):
        for key in ("accuracy", "loss", "precision", "recall", "f1"):
            assert 0 <= summary[f"{split}_{key}"] <= (1 if key != "loss" else 10), (split, key)
    saved = json.loads((paths.METRICS / "classifier" / "metrics.json").read_text())
    assert saved == summary and saved["steps"] == 6, "the metrics file holds the measured results, not the last step"
    confusion = json.loads((paths.METRICS / "classifier" / "confusion.json").read_text())
    assert len(confusion) == 300 and set(confusion[0]) == {"actual", "predicted"}
    tsv = paths.METRICS / "classifier" / "plots" / "metrics"
    assert sorted(p.name for p in tsv.iterdir()) == sorted(
        f"{k}.tsv"
        for k in [
            "train_loss",
            "val_loss",
            "examples_seen",
            "train_accuracy",
            "val_accuracy",
            "train_loss_epoch",
            "val_loss_epoch",
        ]
    )
    for name in ("loss.png", "accuracy.png"):
        assert (paths.PLOTS / "classifier" / name).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    model, tokenizer, head = load_classifier(paths.CLASSIFIER)
    assert head == Head(max_length=24)
    label, prob = classify.classify("WINNER!! Claim your free prize now", model, tokenizer, head)
    assert label in ("ham", "spam") and 0.5 <= prob <= 1
    assert cli(["classify", "--model", str(paths.CLASSIFIER), "See you at lunch"]) == 0
    shown, p, text = re.fullmatch(r"(spam|not spam) +([0-9.]+)  (.*)", capsys.readouterr().out.strip()).groups()
    assert text == "See you at lunch" and 0.5 <= float(p) <= 1


def test_classifier_stage_with_lora(tmp_path, monkeypatch, mirror, run_stage):
    monkeypatch.chdir(tmp_path)
    paths.raw("spam").mkdir(parents=True)
    shutil.copy(mirror / "SMSSpamCollection", paths.raw("spam") / "SMSSpamCollection")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    save_model(GPTModel(cfg), paths.BASE, {"tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.BASE)})
    params = load_params(committed("params.yaml"))
    lora = params.classifier.lora.model_copy(update={"rank": 2, "save": "adapters"})
    clf = params.classifier.model_copy(
        update=dict(
            method="lora",
            lora=lora,
            epochs=1,
            max_steps=4,
            batch_size=4,
            eval_freq=2,
            eval_iter=1,
            max_length=16,
            checkpoint_every=0,
            device="cpu",
        )
    )
    summary = run_stage("finetune_classifier", params.model_copy(update={"classifier": clf}))
    per_block = 2 * (3 * (16 + 16) + (16 + 16) + (16 + 64) + (64 + 16))
    assert summary["trainable_parameters"] == 2 * per_block + 2 * (16 + 2)
    assert json.loads((paths.METRICS / "classifier" / "memory.json").read_text())["peak_memory_mb"] > 0
    assert sorted(p.name for p in paths.CLASSIFIER.iterdir()) == [
        "adapters.safetensors",
        "config.json",
        "manifest.json",
        "tokenizer",
    ]
    model, tokenizer, head = load_classifier(paths.CLASSIFIER)
    assert classify.classify("Free entry to win a prize", model, tokenizer, head)[0] in ("ham", "spam")


STAGE = load_stage("finetune_classifier")


def test_max_length_beyond_the_base_models_context_is_refused_by_name(tmp_path):
    """classifier.max_length is checked against the base model's context at the stage's start
    (params check it only for init.source pretrained, whose context params know)."""
    save_model(GPTModel(GPTConfig(vocab_size=50, context_length=16, emb_dim=8, n_heads=2, n_layers=1)), tmp_path)
    STAGE.check_max_length(16, tmp_path)
    STAGE.check_max_length(0, tmp_path)  # 0: the longest message, cut to the context
    with pytest.raises(
        PipelineError, match=r"classifier.max_length: must be <= the base model's context length \(16, "
    ):
        STAGE.check_max_length(17, tmp_path)


def _bf16_params(**changes):
    params = load_params(committed("params.yaml"))
    settings = dict(
        epochs=1, max_steps=3, batch_size=4, eval_freq=2, eval_iter=1, max_length=16, checkpoint_every=0, device="cpu"
    )
    clf = params.classifier.model_copy(update={**settings, "precision": "bf16", **changes})
    return params.model_copy(update={"classifier": clf})


def test_bf16_is_refused_in_one_line_on_a_cpu_without_fast_bf16(stage_dir, monkeypatch, run_stage):
    monkeypatch.setattr("scratchgpt.device.cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(PipelineError) as refused:
        run_stage("finetune_classifier", _bf16_params())
    assert "precision bf16: this CPU" in str(refused.value) and "use fp32 on this device" in str(refused.value)
    assert not paths.CLASSIFIER.exists() and not (paths.METRICS / "classifier").exists(), "nothing half-written"


def test_bf16_classifier_trains_and_its_folder_says_so(stage_dir, monkeypatch, capsys, run_stage):
    monkeypatch.setattr("scratchgpt.device.cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    summary = run_stage("finetune_classifier", _bf16_params())
    assert summary["steps"] == 3 and 0 <= summary["test_accuracy"] <= 1
    config = json.loads((paths.CLASSIFIER / "config.json").read_text())
    assert config["precision"] == "bf16"
    model, tokenizer, head = load_classifier(paths.CLASSIFIER)
    assert next(model.parameters()).dtype == torch.float32, "saved as fp32 master weights"
    capsys.readouterr()
    assert cli(["classify", "--precision", "bf16", "--model", str(paths.CLASSIFIER), "See you at lunch"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("See you at lunch")
    monkeypatch.setattr("scratchgpt.device.cpu_flags", lambda: {"avx2"})
    with pytest.raises(SystemExit) as refused:
        cli(["classify", "--precision", "bf16", "--model", str(paths.CLASSIFIER), "hi"])
    assert refused.value.code == 1
    assert "use fp32 on this device" in capsys.readouterr().err


def test_an_fp32_folder_has_no_precision_entry(stage_dir, run_stage):
    run_stage("finetune_classifier", _bf16_params(precision="fp32"))
    assert "precision" not in json.loads((paths.CLASSIFIER / "config.json").read_text())
