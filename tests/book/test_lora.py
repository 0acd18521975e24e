"""LoRA (scratchgpt.book.lora, the book's appendix E): adapters start as a no-op, only they train,
merged equals unmerged, and the book's trainable-parameter count."""

import pytest
import torch

from fakes import logits, randomize_adapters
from scratchgpt.book.classify import to_classifier
from scratchgpt.book.loader import lm_loss, seed_everything
from scratchgpt.book.lora import LoRALinear, apply_lora, lora_parameters, merge_lora
from scratchgpt.book.model import PRESETS, GPTConfig, GPTModel
from scratchgpt.book.train import Setup, TrainConfig
from scratchgpt.book.train import train as run_training
from scratchgpt.formats.checkpoint import Checkpoints
from scratchgpt.plumbing.checkpointing import Checkpointing

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)


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
        Setup(
            TrainConfig(epochs=1, batch_size=4, lr=1e-2, eval_freq=100, eval_iter=1),
            lm_loss,
            torch.device("cpu"),
            checkpoints=Checkpointing(Checkpoints(tmp_path, "x")),
        ),
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
