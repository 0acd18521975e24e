"""The spam classifier (scratchgpt.book.classify): the book's data split, padding, the head's
reading position, frozen weights, bad input and scores."""

import pandas as pd
import pytest
import torch

from scratchgpt.book import classify
from scratchgpt.book.classify import (
    DataError,
    SpamDataset,
    head_logits,
    prepare_splits,
    read_sms,
    scores,
    to_classifier,
)
from scratchgpt.book.loader import seed_everything
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.train import Setup, TrainConfig
from scratchgpt.book.train import train as run_training
from scratchgpt.formats.checkpoint import Checkpoints
from scratchgpt.plumbing.checkpointing import Checkpointing

TINY = GPTConfig(vocab_size=50257, context_length=48, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


def test_read_as_the_book_reads_it(mirror):
    df = read_sms(mirror / "SMSSpamCollection")
    assert len(df) == 5572
    assert df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}
    book = pd.read_csv(mirror / "SMSSpamCollection", sep="\t", header=None, names=["Label", "Text"])
    assert df.equals(book)
    every_line = read_sms(mirror / "SMSSpamCollection", quoting="none")
    assert len(every_line) == 5574
    assert every_line["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}


def test_balance_and_split_are_the_books(mirror, tmp_path):
    df = read_sms(mirror / "SMSSpamCollection")
    balanced = classify.balance(df, seed=123)
    assert list(balanced.index[:5]) == [4307, 4138, 4831, 4461, 5440]
    counts = prepare_splits(mirror / "SMSSpamCollection", tmp_path)
    assert counts == {"messages": 5572, "ham": 4825, "spam": 747, "train": 1045, "validation": 149, "test": 300}
    train = pd.read_csv(tmp_path / "train.csv")
    assert list(train.columns) == ["Label", "Text"] and set(train["Label"]) == {0, 1}
    parts = [pd.read_csv(tmp_path / f"{n}.csv") for n in ("train", "validation", "test")]
    assert sum(int(p["Label"].sum()) for p in parts) == 747  # every spam message, once
    assert len(set().union(*(set(p["Text"]) for p in parts))) <= 1494


@pytest.mark.parametrize(
    "line, message",
    [
        ("hamm\tHello there", "label must be 'ham' or 'spam', got 'hamm'"),
        ("ham\tone\ttwo", "expected 2 tab-separated fields (label, text), got 3"),
        ("spam", "expected 2 tab-separated fields (label, text), got 1"),
        ("ham\t   ", "empty message"),
    ],
)
def test_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "SMSSpamCollection"
    path.write_text(f"ham\tfine\nspam\tWIN a prize\n{line}\nham\tok\n")
    with pytest.raises(DataError, match=f"SMSSpamCollection:3: {message}".replace("(", r"\(").replace(")", r"\)")):
        read_sms(path)


def test_bad_csv_row_in_a_split_is_named(tmp_path, tok):
    path = tmp_path / "train.csv"
    path.write_text('Label,Text\n0,hello\n1,"multi\nline spam"\n2,odd label\n')
    with pytest.raises(DataError, match=r"train.csv:5: expected a label 0 or 1 and a text"):
        SpamDataset(path, tok)
    path.write_text("Text,Label\nhello,0\n")
    with pytest.raises(DataError, match=r"train.csv:1: expected the header Label,Text"):
        SpamDataset(path, tok)


def test_padding_and_truncation(tmp_path, tok):
    path = tmp_path / "s.csv"
    path.write_text("Label,Text\n0,Hi\n1,Win a brand new car now\n0,See you at the station tonight then\n")
    lengths = [len(tok.encode(t)) for t in ("Hi", "Win a brand new car now", "See you at the station tonight then")]
    ds = SpamDataset(path, tok)
    assert ds.max_length == max(lengths)
    x, y = ds[0]
    assert x.tolist() == tok.encode("Hi") + [50256] * (max(lengths) - 1) and y.item() == 0
    short = SpamDataset(path, tok, max_length=4)
    assert [short[i][0].tolist() for i in range(3)][2] == tok.encode("See you at the station tonight then")[:4]
    assert all(len(short[i][0]) == 4 for i in range(3))


def test_head_reads_the_last_real_token():
    torch.manual_seed(0)
    model = to_classifier(GPTModel(TINY), trainable="all").eval()
    texts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    padded = torch.tensor([t + [50256] * (5 - len(t)) for t in texts])
    with torch.no_grad():
        batch = head_logits(model, padded, "last_non_pad")
        for i, t in enumerate(texts):
            alone = model(torch.tensor([t]))[0, -1]
            torch.testing.assert_close(batch[i], alone, atol=1e-5, rtol=0)
        final = head_logits(model, padded, "last")
        torch.testing.assert_close(final, model(padded)[:, -1])
    assert not torch.allclose(batch[1], final[1]), "the final position is padding for the short text"


def test_only_chosen_weights_train(tmp_path):
    torch.manual_seed(0)
    model = to_classifier(GPTModel(TINY), trainable="last_blocks", blocks=1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n, _ in model.named_parameters() if n.startswith(("trf_blocks.1.", "final_norm.", "out_head."))
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = [(torch.randint(0, 50257, (12,)), torch.tensor(i % 2)) for i in range(8)]
    seed_everything(1)
    run_training(
        model,
        data,
        data,
        Setup(
            TrainConfig(epochs=1, batch_size=4, lr=1e-2, eval_freq=100, eval_iter=1),
            classify.loss_fn("last"),
            torch.device("cpu"),
            checkpoints=Checkpointing(Checkpoints(tmp_path, "x")),
        ),
    )
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trained), name
    head_only = {n for n, p in to_classifier(GPTModel(TINY), trainable="head").named_parameters() if p.requires_grad}
    assert head_only == {"out_head.weight", "out_head.bias"}
    assert all(p.requires_grad for p in to_classifier(GPTModel(TINY), trainable="all").parameters())


def test_head_is_made_after_the_seed():
    a = to_classifier(GPTModel(TINY), seed=123).out_head.weight
    b = to_classifier(GPTModel(TINY), seed=123).out_head.weight
    torch.manual_seed(123)
    assert torch.equal(a, b) and torch.equal(a, torch.nn.Linear(16, 2).weight)


def test_scores():
    s = scores([1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1, 0, 1])
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (3, 1, 1, 3)
    assert s["accuracy"] == 0.75 and s["precision"] == 0.75 and s["recall"] == 0.75 and s["f1"] == 0.75
