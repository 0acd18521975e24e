"""The spam classifier: the book's data split, padding, the head's reading position, frozen
weights, bad input, and the finetune_classifier stage end to end on a tiny model."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from scratchgpt.book import classify
from scratchgpt.book.classify import (
    DataError,
    Head,
    SpamDataset,
    head_logits,
    prepare_splits,
    read_sms,
    scores,
    to_classifier,
)
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.book.train import TrainConfig, seed_everything
from scratchgpt.book.train import train as run_training
from scratchgpt.cli import main as cli
from scratchgpt.formats.checkpoint import Checkpoints
from scratchgpt.formats.modeldir import load_classifier, save_model, save_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.params import load_params

TINY = GPTConfig(vocab_size=50257, context_length=48, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def tok(mirror):
    return GPT2Tokenizer(mirror / "gpt2")


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
        TrainConfig(epochs=1, batch_size=4, lr=1e-2, eval_freq=100, eval_iter=1),
        loss_fn=classify.loss_fn("last"),
        device=torch.device("cpu"),
        checkpoints=Checkpoints(tmp_path, "x"),
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
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
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
    assert saved["test_accuracy"] == summary["test_accuracy"] and saved["steps"] == 6
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
    shown, p, text = capsys.readouterr().out.strip().split("\t")
    assert shown in ("spam", "not spam") and text == "See you at lunch" and 0.5 <= float(p) <= 1
