"""The GPT model (scratchgpt.book.model): the book's golden ids, parameter counts, equality with a
plain reference implementation built after the same seed, dropout, causality, config checks and
presets."""

import pytest
import torch
from book_reference import PlainGPT

from scratchgpt.book.model import PRESETS, GPTConfig, GPTModel

TINY = GPTConfig(vocab_size=101, context_length=24, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.1)


def test_golden_ids_of_the_books_chapter_4(mirror):
    from scratchgpt.book.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer(mirror / "gpt2")
    torch.manual_seed(123)
    model = GPTModel(PRESETS["book-124m"]).eval()
    idx = torch.tensor([tok.encode("Hello, I am")])
    with torch.no_grad():
        for _ in range(10):  # the book's generate_text_simple
            logits = model(idx[:, -model.config.context_length :])[:, -1, :]
            idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    assert idx[0].tolist() == [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062, 34657]


def test_parameter_counts_of_the_124m_config():
    with torch.device("meta"):
        untied = GPTModel(PRESETS["book-124m"])
        tied = GPTModel(PRESETS["book-124m"].replace(tie_weights=True))
    assert untied.num_parameters() == 163_009_536
    assert tied.num_parameters() == 124_412_160
    with torch.device("meta"):
        gpt2 = {name: GPTModel(PRESETS[name]).num_parameters() for name in ("gpt2-small", "gpt2-medium")}
    assert gpt2 == {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168}


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_same_weights_and_logits_as_a_plain_reference(qkv_bias):
    cfg = TINY.replace(qkv_bias=qkv_bias)
    torch.manual_seed(7)
    ours = GPTModel(cfg).eval()
    torch.manual_seed(7)
    ref = PlainGPT(cfg).eval()
    d = cfg.emb_dim
    assert torch.equal(ours.tok_emb.weight, ref.tok_emb.weight)
    for mine, theirs in zip(ours.trf_blocks, ref.blocks):
        qkv = mine.att.qkv.weight
        assert torch.equal(qkv[:d], theirs.att.W_query.weight)
        assert torch.equal(qkv[d : 2 * d], theirs.att.W_key.weight)
        assert torch.equal(qkv[2 * d :], theirs.att.W_value.weight)
        if qkv_bias:
            assert torch.equal(mine.att.qkv.bias[d : 2 * d], theirs.att.W_key.bias)
        assert torch.equal(mine.ff.proj.weight, theirs.fc2.weight)
    assert torch.equal(ours.out_head.weight, ref.out_head.weight)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx), atol=1e-5, rtol=1e-5)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    idx = torch.randint(0, TINY.vocab_size, (2, 10))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_output_shape_and_context_limit():
    model = GPTModel(TINY)
    assert model(torch.zeros(2, 24, dtype=torch.long)).shape == (2, 24, 101)
    with pytest.raises(ValueError, match="25 tokens exceed the context length 24"):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_causality():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    a = torch.randint(0, 101, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 101
    with torch.no_grad():
        torch.testing.assert_close(model(a)[:, :8], model(b)[:, :8])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(emb_dim=30), "emb_dim must be divisible by n_heads (4), got 30"),
        (dict(n_layers=0), "n_layers must be a positive integer, got 0"),
        (dict(drop_rate=1.0), "drop_rate must be in [0, 1), got 1.0"),
        (dict(qkv_bias="yes"), "qkv_bias must be true or false, got 'yes'"),
    ],
)
def test_invalid_configs_are_rejected(change, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TINY.replace(**change)


def test_presets():
    assert PRESETS["book-124m"] == GPTConfig(50257, 1024, 768, 12, 12, 0.1, False, False)
    medium = PRESETS["gpt2-medium"]
    assert (medium.emb_dim, medium.n_layers, medium.n_heads, medium.qkv_bias) == (1024, 24, 16, True)
    assert (PRESETS["gpt2-large"].emb_dim, PRESETS["gpt2-xl"].n_layers) == (1280, 48)


def test_tied_model_starts_near_uniform_loss():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=5000, context_length=16, emb_dim=64, n_heads=4, n_layers=2, tie_weights=True))
    idx = torch.randint(0, 5000, (4, 16))
    loss = torch.nn.functional.cross_entropy(model.eval()(idx).flatten(0, 1), idx.flatten())
    assert abs(loss.item() - torch.log(torch.tensor(5000.0)).item()) < 0.5


def test_last_only_logits():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    idx = torch.randint(0, 101, (3, 10))
    with torch.no_grad():
        full, last = model(idx), model(idx, last_only=True)
    assert last.shape == (3, 1, 101)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=1e-5)
