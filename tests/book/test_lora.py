"""LoRA (appendix E): adapters start as a no-op, only they train, merged equals unmerged, saving
adapters alone loads to the same model, and the book's trainable-parameter count."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from scratchgpt.book import classify
from scratchgpt.book.classify import to_classifier
from scratchgpt.book.lora import LoRALinear, apply_lora, lora_parameters, merge_lora
from scratchgpt.book.model import PRESETS, GPTConfig, GPTModel
from scratchgpt.book.train import TrainConfig, lm_loss, seed_everything
from scratchgpt.book.train import train as run_training
from scratchgpt.formats.checkpoint import Checkpoints
from scratchgpt.formats.modeldir import load_classifier, load_model, save_adapters, save_model
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)


def logits(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (2, 12), generator=g)
    with torch.no_grad():
        return model.eval()(ids)


def randomize_adapters(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.B.normal_(0, 0.05)
    return model


def test_the_books_trainable_parameter_count():
    """GPT-2 124M, a 2-class head, rank 16 on every linear layer of the blocks and the head."""
    with torch.device("meta"):
        model = to_classifier(GPTModel(PRESETS["gpt2-small"]), seed=None)
        apply_lora(model, rank=16, alpha=16)
    assert lora_parameters(model) == 2_666_528
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2_666_528


def test_adapters_start_as_a_no_op():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    before = logits(model)
    apply_lora(model, rank=4, alpha=8)
    assert torch.equal(logits(model), before)
    assert all(isinstance(b.att.qkv, LoRALinear) for b in model.trf_blocks)
    assert model.trf_blocks[0].att.qkv.A.shape == (3, 24, 4) and model.trf_blocks[0].att.qkv.B.shape == (3, 4, 24)


@pytest.mark.parametrize("targets", [["attention"], ["feed_forward", "head"], ["attention", "feed_forward", "head"]])
def test_merged_equals_unmerged(targets):
    torch.manual_seed(0)
    model = randomize_adapters(apply_lora(GPTModel(TINY), rank=3, alpha=6, targets=targets))
    adapted = logits(model)
    assert not torch.allclose(adapted, logits(GPTModel(TINY))), "the adapters do something"
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert set(merged.state_dict()) == set(GPTModel(TINY).state_dict())
    torch.testing.assert_close(logits(merged), adapted, atol=1e-5, rtol=1e-5)


def test_only_adapters_change_in_a_step(tmp_path):
    torch.manual_seed(0)
    model = apply_lora(GPTModel(TINY), rank=2, alpha=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    data = [(torch.randint(0, 97, (8,)), torch.randint(0, 97, (8,))) for _ in range(8)]
    seed_everything(0)
    run_training(
        model,
        data,
        data,
        TrainConfig(epochs=1, batch_size=4, lr=1e-2, eval_freq=100, eval_iter=1),
        loss_fn=lm_loss,
        device=torch.device("cpu"),
        checkpoints=Checkpoints(tmp_path, "x"),
    )
    for name, p in model.named_parameters():
        if name.endswith(".A"):
            continue  # A moves only once B has (its gradient is zero while B is)
        assert torch.equal(before[name], p.detach()) != (name in trainable), name
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n.endswith(".A"))


def test_train_head_option():
    model = apply_lora(to_classifier(GPTModel(TINY.replace(vocab_size=97))), rank=2, alpha=2, train_head=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"out_head.base.weight", "out_head.base.bias"} <= trainable


@pytest.mark.parametrize("classifier", [False, True])
def test_adapters_alone_load_to_the_merged_model(tmp_path, classifier):
    torch.manual_seed(0)
    base = GPTModel(TINY)
    save_model(base, tmp_path / "base")
    model = load_model(tmp_path / "base")
    if classifier:
        model = to_classifier(model, trainable="all")
    randomize_adapters(apply_lora(model, rank=3, alpha=3))
    save_adapters(
        model,
        tmp_path / "adapters",
        tmp_path / "base",
        {"rank": 3, "alpha": 3, "targets": ["attention", "feed_forward", "head"]},
    )
    saved = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert saved == ["adapters.safetensors", "config.json"]
    config = json.loads((tmp_path / "adapters" / "config.json").read_text())
    assert config["lora"]["base"]["path"] == "../base"
    expected = logits(merge_lora(model))
    save_model(model, tmp_path / "merged")
    torch.testing.assert_close(logits(load_model(tmp_path / "adapters")), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(load_model(tmp_path / "merged")), expected, atol=0, rtol=0)
    save_model(GPTModel(TINY), tmp_path / "base")  # the base changes under the adapters
    with pytest.raises(Exception, match="has changed since the adapters were trained"):
        load_model(tmp_path / "adapters")


def test_classifier_stage_with_lora(tmp_path, monkeypatch, mirror, run_stage):
    from scratchgpt.book.tokenizer import GPT2Tokenizer
    from scratchgpt.formats.modeldir import save_tokenizer

    monkeypatch.chdir(tmp_path)
    paths.raw("spam").mkdir(parents=True)
    shutil.copy(mirror / "SMSSpamCollection", paths.raw("spam") / "SMSSpamCollection")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    save_model(GPTModel(cfg), paths.BASE, {"tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.BASE)})
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
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
    assert sorted(p.name for p in paths.CLASSIFIER.iterdir()) == ["adapters.safetensors", "config.json", "tokenizer"]
    model, tokenizer, head = load_classifier(paths.CLASSIFIER)
    assert classify.classify("Free entry to win a prize", model, tokenizer, head)[0] in ("ham", "spam")
