"""The report: every metric and figure on one self-contained page, the book's numbers beside
ours, stages not run marked as such."""

import re

import pytest
import torch

from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.files import write_json
from scratchgpt.formats.modeldir import save_model, save_tokenizer
from scratchgpt.plumbing import paths, report
from scratchgpt.plumbing.plots import plot_losses


@pytest.fixture
def workdir(tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    write_json(paths.METRICS / "prepare" / "verdict.json", {"train_tokens": 4612, "val_tokens": 534})
    write_json(paths.METRICS / "pretrain" / "metrics.json", {"train_loss": 5.5, "val_loss": 6.25, "steps": 150})
    write_json(
        paths.METRICS / "pretrain" / "samples.json", [{"epoch": 1, "step": 150, "text": "Every effort <moves> you"}]
    )
    write_json(paths.METRICS / "init.json", {"source": "pretrained", "parameters": 1000})
    write_json(
        paths.METRICS / "classifier" / "metrics.json",
        {"train_accuracy": 1.0, "val_accuracy": 0.953, "test_accuracy": 0.95},
    )
    write_json(
        paths.INSTRUCT_DATA / "test-responses.json",
        [{"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Red & blue."}],
    )
    history = [{"epoch": 0.1 * i, "tokens_seen": 100 * i, "train_loss": 9 - i, "val_loss": 9.5 - i} for i in range(5)]
    plot_losses(history, paths.PLOTS / "pretrain" / "loss.png")
    cfg = GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    torch.manual_seed(0)
    save_model(
        GPTModel(cfg), paths.PRETRAINED, {"tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.PRETRAINED)}
    )
    return tmp_path


def test_report_is_self_contained_and_complete(workdir):
    index = report.build()
    page = index.read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", page), "the page must not load anything from the network"
    assert page.count('src="data:image/png;base64,') == 2  # the pretraining loss and the attention map
    assert "97.21% / 97.32% / 95.67%" in page and "100.00% / 95.30% / 95.00%" in page
    assert "5.500 / 6.250" in page and "0.391 / 6.452" in page
    assert "Every effort &lt;moves&gt; you" in page and "Red &amp; blue." in page
    assert "(stage not run)" in page  # instruct and evaluate
    assert (index.parent / "attention.png").read_bytes()[:4] == b"\x89PNG"
    summary = (index.parent / "summary.md").read_text()
    assert (
        "| Ch. 6 spam classifier: train / val / test accuracy | 97.21% / 97.32% / 95.67% | 100.00% / 95.30% / 95.00% |"
        in summary
    )
    assert "| prepare@verdict | train_tokens | 4,612 |" in summary


def test_report_without_models_or_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = report.build().read_text()
    assert "not run" in page and "<img" not in page
