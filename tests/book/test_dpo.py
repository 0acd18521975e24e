"""Chapter 7's DPO (scratchgpt.book.dpo): the book's collate, log-probabilities and loss, the
starting point (policy = reference: loss ln 2, rewards 0), and training that moves the margin."""

import copy
import math

import pytest
import torch

from scratchgpt.book.dpo import (
    MEASURES,
    PREFERENCE_KEYS,
    Collate,
    Keyed,
    Objective,
    PreferenceDataset,
    dpo_loss,
    response_logprobs,
    response_text,
    sequence_logprobs,
)
from scratchgpt.book.instruct import EntryError, format_input, load_entries, split_entries
from scratchgpt.book.loader import Evaluator, seed_everything
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.settings import TrainConfig
from scratchgpt.book.train import Setup, train

TINY = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def test_collate_pads_both_sides_to_one_length_and_masks_the_prompt():
    prompt, chosen, rejected = [1, 2, 3], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 8]
    c, r, cm, rm = Collate()([(prompt, chosen, rejected)])
    assert c.tolist() == [[1, 2, 3, 4, 5, 6, 7, 50256]]  # the longer side + 1
    assert r.tolist() == [[1, 2, 3, 4, 5, 8, 50256, 50256]]
    # the prompt and the two tokens after it are off, and so is the padding
    assert cm.tolist() == [[False] * 5 + [True, True, False]]
    assert rm.tolist() == [[False] * 5 + [True, False, False]]
    c, r, cm, rm = Collate(mask_prompt=False, allowed_max_length=4)([(prompt, chosen, rejected)])
    assert c.tolist() == [[1, 2, 3, 4]] and cm.tolist() == [[True] * 4] and rm.tolist() == [[True] * 4]


def test_a_pair_without_a_response_token_after_truncation_is_found():
    prompt, chosen, rejected = list(range(10)), list(range(14)), list(range(13))
    assert Collate().has_response((prompt, chosen, rejected))
    assert not Collate(allowed_max_length=12).has_response((prompt, chosen, rejected))  # all within prompt + 2
    assert Collate(allowed_max_length=13).has_response((prompt, chosen, rejected))
    assert Collate(mask_prompt=False, allowed_max_length=3).has_response((prompt, chosen, rejected))


def test_sequence_logprobs_is_the_mean_over_the_selected_next_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = sequence_logprobs(logits, ids, mask)
    for b in range(2):
        picked = [
            torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item() for t in range(1, 5) if mask[b, t]
        ]  # the logits at t-1 predict token t
        assert got[b].item() == pytest.approx(sum(picked) / len(picked), abs=1e-6)


def test_dpo_loss_and_rewards():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    for i in range(2):
        z = 0.5 * ((pc[i] - pr[i]) - (rc[i] - rr[i]))
        assert losses[i].item() == pytest.approx(math.log1p(math.exp(-z.item())))
    assert chosen.tolist() == [0.5, 0.0] and rejected.tolist() == [-0.5, 0.5]
    same, zero, _ = dpo_loss(pc, pr, pc, pr, beta=0.1)
    assert torch.allclose(same, torch.full((2,), math.log(2))) and zero.abs().max() == 0


@pytest.fixture(scope="module")
def pairs(mirror, tok):
    entries = load_entries(mirror / "instruction-data-with-preference.json", PREFERENCE_KEYS)
    return entries, PreferenceDataset(entries[:24], tok)


def test_the_preference_file_splits_into_chapter_7s_test_entries(mirror, pairs):
    entries, _ = pairs
    assert len(entries) == 1100
    _, _, test = split_entries(entries)
    _, _, instruct_test = split_entries(load_entries(mirror / "instruction-data.json"))
    assert len(test) == 110
    assert [(e["instruction"], e["input"], e["output"]) for e in test] == [
        (e["instruction"], e["input"], e["output"]) for e in instruct_test
    ]


def test_a_preference_entry_without_a_rejected_response_is_named(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[{"instruction": "a", "input": "", "output": "b", "chosen": "b"}]')
    with pytest.raises(EntryError, match=r"entry 0: missing key 'rejected'"):
        load_entries(path, PREFERENCE_KEYS)


def test_dataset_holds_the_books_texts(pairs, tok):
    entries, data = pairs
    prompt, chosen, rejected = data[0]
    text = format_input(entries[0])
    assert tok.decode(prompt) == text
    assert (
        tok.decode(chosen)
        == response_text(text, entries[0]["chosen"])
        == f"{text}\n\n### Response:\n" + (entries[0]["chosen"])
    )
    assert tok.decode(rejected).endswith(entries[0]["rejected"])


def test_before_the_first_update_the_loss_is_ln2_and_every_reward_zero(pairs):
    _, data = pairs
    torch.manual_seed(1)
    policy = GPTModel(TINY)
    objective = Objective(copy.deepcopy(policy), beta=0.1)
    batch = Collate(allowed_max_length=64)([data[i] for i in range(8)])
    losses, chosen, rejected = objective.terms(policy, batch)
    assert torch.equal(losses, torch.full_like(losses, math.log(2)))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0
    values, count = objective.measure(policy, batch)
    assert count == 1 and values[0] == pytest.approx(math.log(2), abs=1e-7) and values[1:3] == [0.0, 0.0]
    assert values[3] == 0.0  # a tie is not a win


def test_one_forward_over_both_sides_equals_the_books_two(pairs):
    _, data = pairs
    torch.manual_seed(2)
    policy, reference = GPTModel(TINY).eval(), GPTModel(TINY)
    batch = Collate(allowed_max_length=64)([data[i] for i in range(4)])
    chosen, rejected, chosen_mask, rejected_mask = batch
    separate = [
        sequence_logprobs(m(ids), ids, mask)
        for m in (policy, reference)
        for ids, mask in ((chosen, chosen_mask), (rejected, rejected_mask))
    ]
    expected = dpo_loss(*separate, beta=0.1)
    for got, want in zip(Objective(reference, 0.1).terms(policy, batch), expected):
        assert torch.allclose(got, want, atol=1e-5)  # log-probabilities near -11: float noise ~2e-6
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())


def test_training_raises_the_margin_and_lowers_the_loss(pairs):
    _, data = pairs
    seed_everything(3)
    policy = GPTModel(TINY)
    objective = Objective(copy.deepcopy(policy), beta=0.1)
    collate = Collate(allowed_max_length=64)
    train_data = torch.utils.data.Subset(data, range(16))
    cfg = TrainConfig(epochs=10, batch_size=4, lr=1e-2, weight_decay=0.0, eval_freq=5, eval_iter=2)
    progress = train(
        policy,
        train_data,
        train_data,
        Setup(
            cfg,
            objective.loss,
            torch.device("cpu"),
            collate_fn=collate,
            measures=(MEASURES, objective.measure),
        ),
    )
    first, last = progress.history[0], progress.history[-1]
    assert {f"{s}_{k}" for s in ("train", "val") for k in MEASURES} <= set(last)
    assert first["val_loss"] < math.log(2) + 1e-3  # measured after the first update
    assert last["val_loss"] < first["val_loss"] - 0.1
    assert last["val_chosen_reward"] - last["val_rejected_reward"] > 0.5
    assert last["val_reward_accuracy"] > 0.8
    # the evaluation's loss is the loop's loss
    evaluator = Evaluator(policy, {"val": train_data}, 4, objective.loss, torch.device("cpu"), collate)
    policy.eval()
    assert evaluator.loss("val", None, draw=False) == pytest.approx(
        evaluator.measure("val", None, objective.measure, draw=False)[0], abs=1e-6
    )


def test_measures_must_start_with_the_loss(pairs):
    _, data = pairs
    policy = GPTModel(TINY)
    objective = Objective(copy.deepcopy(policy), beta=0.1)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="first name must be 'loss'"):
        train(
            policy,
            data,
            data,
            Setup(
                cfg,
                objective.loss,
                torch.device("cpu"),
                collate_fn=Collate(),
                measures=(("margin", "loss"), objective.measure),
            ),
        )


def test_the_head_on_the_selected_positions_only_gives_the_books_logprobs_and_gradients(pairs):
    _, data = pairs
    torch.manual_seed(4)
    model = GPTModel(TINY)
    chosen, _, mask, _ = Collate(allowed_max_length=64)([data[i] for i in range(6)])
    assert 0 < int(mask.sum()) < mask.numel()  # the prompt and the padding are left out
    books = sequence_logprobs(model(chosen), chosen, mask)
    (grad_books,) = torch.autograd.grad(books.sum(), model.tok_emb.weight)
    ours = response_logprobs(model, chosen, mask)
    (grad_ours,) = torch.autograd.grad(ours.sum(), model.tok_emb.weight)
    assert torch.allclose(ours, books, rtol=1e-5, atol=0)
    assert torch.allclose(grad_ours, grad_books, rtol=1e-4, atol=1e-7)
    with pytest.raises(AssertionError):  # the check can fail: another mask gives other values
        assert torch.allclose(response_logprobs(model, chosen, mask.roll(1, dims=1)), books, rtol=1e-5, atol=0)


def test_remembered_reference_values_equal_the_computed_ones_and_the_reference_never_runs_again(pairs):
    _, data = pairs
    torch.manual_seed(5)
    policy = GPTModel(TINY)
    reference = copy.deepcopy(policy)
    with torch.no_grad():  # a policy that has moved away from the reference
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    train_split = Keyed(torch.utils.data.Subset(data, range(12)))
    val_split = Keyed(torch.utils.data.Subset(data, range(12, 20)), first_key=12)
    collate = Collate(allowed_max_length=64)
    computed, cached = Objective(reference, beta=0.1), Objective(copy.deepcopy(reference), beta=0.1)
    cached.remember([train_split, val_split], collate, batch_size=5, device=torch.device("cpu"))
    assert cached.remembered is not None and cached.remembered.shape == (20, 2)
    assert bool(torch.isfinite(cached.remembered).all())
    cached.reference.forward = None  # it must not run again: every value comes from the table
    for split, picks in ((train_split, [7, 2, 11, 0]), (val_split, [3, 5, 1])):  # other batches than remember's
        batch = collate([split[i] for i in picks])
        assert batch[4].tolist() == [split.first_key + i for i in picks]
        unkeyed = batch[:4]
        for got, want in zip(cached.terms(policy, batch), computed.terms(policy, unkeyed)):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
        loss = cached.loss(policy, batch)
        assert loss.item() == pytest.approx(computed.loss(policy, unkeyed).item(), rel=1e-5)
        assert loss.requires_grad  # the policy's side still trains


def test_dpo_training_with_remembered_reference_values_follows_the_uncached_run(pairs):
    _, data = pairs
    collate = Collate(allowed_max_length=64)
    runs = []
    for remember in (False, True):
        seed_everything(6)
        policy = GPTModel(TINY)
        objective = Objective(copy.deepcopy(policy), beta=0.1)
        train_data = Keyed(torch.utils.data.Subset(data, range(16)))
        if remember:
            objective.remember([train_data], collate, batch_size=4, device=torch.device("cpu"))
        cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, weight_decay=0.0, eval_freq=2, eval_iter=2)
        setup = Setup(
            cfg, objective.loss, torch.device("cpu"), collate_fn=collate, measures=(MEASURES, objective.measure)
        )
        runs.append(train(policy, train_data, train_data, setup).history)
    uncached, cached = runs
    assert len(uncached) == len(cached) > 2
    for a, b in zip(uncached, cached):
        for key in ("train_loss", "val_loss", "val_chosen_reward", "val_rejected_reward"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
