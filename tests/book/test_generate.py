"""Generation (scratchgpt.book.generate): the KV cache gives the ids of the uncached path (also
past the context window and for batches of prompts of different lengths), eos stops, the decoding
layout, sampling filters."""

import dataclasses
import math

import pytest
import torch

from scratchgpt.book import generate as gen
from scratchgpt.book.generate import generate, sample_next, top_k_filter, top_p_filter
from scratchgpt.book.model import GPTConfig, GPTModel

CFG = GPTConfig(vocab_size=61, context_length=12, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)
PROMPTS = [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]  # the last exceeds the window


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).double().eval()


def uncached_reference(model, prompt, n):
    """The book's generate_text_simple loop, greedy."""
    idx = torch.tensor([prompt])
    for _ in range(n):
        with torch.no_grad():
            logits = model(idx[:, -CFG.context_length :])[:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx[0, len(prompt) :].tolist()


def test_greedy_matches_the_books_loop(model):
    for prompt in PROMPTS:
        expected = uncached_reference(model, prompt, 30)
        assert generate(model, [prompt], 30, use_cache=False) == [expected]
        assert generate(model, [prompt], 30, use_cache=True) == [expected]


@pytest.mark.parametrize(
    "options",
    [dict(), dict(temperature=1.3), dict(temperature=1.0, top_k=5), dict(temperature=0.7, top_p=0.8)],
)
def test_cache_equals_no_cache_past_the_window(model, options):
    outs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(3)
        outs.append(generate(model, PROMPTS, 40, use_cache=use_cache, generator=g, **options))
    assert outs[0] == outs[1]
    assert all(len(o) == 40 for o in outs[0])
    assert max(len(p) for p in PROMPTS) + 40 > 2 * CFG.context_length


def test_batch_equals_one_prompt_at_a_time(model):
    batch = generate(model, PROMPTS, 25)
    assert batch == [generate(model, [p], 25)[0] for p in PROMPTS]


def test_eos_stops_only_its_row(model):
    free = generate(model, PROMPTS, 20)
    eos = free[0][4]  # the 5th token of the first row becomes "end of text"
    stopped = generate(model, PROMPTS, 20, eos_id=eos)
    assert stopped[0] == free[0][: free[0].index(eos) + 1]
    for row, full in zip(stopped[1:], free[1:]):
        assert row == (full[: full.index(eos) + 1] if eos in full else full)


def test_generation_leaves_training_mode_alone(model):
    model.train()
    generate(model, [[1, 2]], 3)
    assert model.training
    model.eval()


@pytest.fixture
def two_threads():
    """The split decoding product needs at least two threads, whatever the machine has."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_decode_layout_gives_the_same_products_and_restores_the_model(two_threads):
    torch.manual_seed(1)
    model = GPTModel(CFG).eval()  # fp32: the layout applies
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x1, x3, many = torch.randn(1, 1, 32), torch.randn(3, 1, 32), torch.randn(1, gen.DECODE_ROWS + 1, 32)
    with torch.no_grad():
        expected = [
            [torch.nn.functional.linear(x, m.weight, m.bias) for x in (x1, x3, many)]
            for m in layers
            if m.in_features == 32
        ]
        with gen.decode_layout(model):
            assert all(m.weight.stride(0) == 1 for m in layers), "weights held (in, out)"
            got = [[m(x) for x in (x1, x3, many)] for m in layers if m.in_features == 32]
    for e_row, g_row in zip(expected, got):
        for e, g in zip(e_row, g_row):
            assert g.shape == e.shape
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert all("forward" not in vars(m) and m.weight.is_contiguous() for m in layers)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_decode_layout_falls_back_when_gradients_are_wanted(two_threads):
    torch.manual_seed(1)
    model = GPTModel(CFG).eval()
    fc = model.trf_blocks[0].ff.fc
    x = torch.randn(1, 1, 32)
    with gen.decode_layout(model):
        y = fc(x)
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    assert fc.weight.grad is not None and fc.weight.grad.shape == fc.weight.shape


def test_cache_equals_no_cache_in_fp32(two_threads):
    """In fp32 the cached steps run through the decoding layout and its split products."""
    torch.manual_seed(2)
    model = GPTModel(dataclasses.replace(CFG, context_length=64)).eval()
    prompts = [[1, 2, 3], [5], [7, 8, 9, 10, 11]]
    cached = generate(model, prompts, 50, use_cache=True)
    assert cached == generate(model, prompts, 50, use_cache=False)


def test_empty_prompt_is_an_error(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], 3)


def test_top_k_on_hand_made_logits():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, 0.0, 9.0, 0.0, 1.0]])
    out = top_k_filter(logits, 2)
    inf = float("-inf")
    assert out.tolist() == [[inf, 5.0, inf, 4.0, inf], [inf, inf, 9.0, inf, 1.0]]
    ties = top_k_filter(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2)
    assert ties.tolist() == [[inf, 2.0, 2.0, inf]]


def test_top_p_on_hand_made_logits():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    inf = float("-inf")
    kept = lambda p: [x != inf for x in top_p_filter(logits, p)[0].tolist()]  # noqa: E731
    assert kept(0.5) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [True, False, True, False]
    assert kept(0.9) == [True, False, True, True]
    assert kept(0.99) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    out = top_p_filter(logits, 0.6)
    assert math.isclose(out[0, 2].item(), math.log(0.3), rel_tol=1e-6)


def test_sampling_respects_filters_and_seed():
    logits = torch.tensor([[0.0, 3.0, 2.9, -5.0, 1.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=g)
    assert set(picks.tolist()) == {1, 2}
    again = sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(picks, again)
    assert sample_next(logits[:1], temperature=0.0).item() == 1
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample_next(logits, temperature=-1)
