"""The report: every metric and figure on one self-contained page, the book's numbers beside
ours with each row marked like for like or not from the run's settings, named experiments'
snapshots as the like-for-like rows, stages not run marked as such."""

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from committed import committed
from conftest import load_stage
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.printed import CH05_LOSSES
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.files import write_json
from scratchgpt.formats.modeldir import save_model, save_tokenizer
from scratchgpt.plumbing import experiments, figures, paths, report, results
from scratchgpt.plumbing.params_file import read_yaml
from scratchgpt.plumbing.plots import plot_losses

build = load_stage("report").build  # the stage's steps: stages/report.py

ROOT = Path(__file__).resolve().parents[2]
PARAMS = read_yaml(committed("params.yaml"))


def settings_of(params):
    return lambda key: report.lookup(params, key)


def book_params(name):
    return experiments.apply(PARAMS, experiments.overrides(name, ROOT / "experiments"), name)


def ch05_snapshot(offset=0.0):
    rows = {
        "train_loss": [[s, t + offset] for s, t, _ in CH05_LOSSES],
        "val_loss": [[s, v + offset] for s, _, v in CH05_LOSSES],
        "tokens_seen": [[s, 512 * (s + 1)] for s, _, _ in CH05_LOSSES],
    }
    return {
        "experiment": "book-ch05",
        "stages": ["pretrain"],
        "params": book_params("book-ch05"),
        "metrics": {"metrics/pretrain/metrics.json": {"final_val_loss": 6.526, "steps": 90, "parameters": 162419712}},
        "curves": {f"metrics/pretrain/plots/metrics/{k}.tsv": v for k, v in rows.items()},
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "experiments", "experiments")
    for name in ("dvc.yaml", "params.yaml"):  # experiments name their stages, checked against dvc.yaml
        shutil.copy(committed(name), name)
    write_json(paths.METRICS / "prepare" / "verdict.json", {"train_tokens": 4612, "val_tokens": 534})
    write_json(
        paths.METRICS / "pretrain" / "metrics.json",
        {"untrained_val_loss": 10.9, "final_val_loss": 6.125, "steps": 150},
    )
    write_json(
        paths.METRICS / "instruct" / "metrics.json",
        {"initial_train_loss": 8.75, "initial_val_loss": 8.8125, "finetuned_val_loss": 3.625},
    )
    write_json(
        paths.METRICS / "pretrain" / "samples.json", [{"epoch": 1, "step": 150, "text": "Every effort <moves> you"}]
    )
    write_json(
        paths.METRICS / "classifier" / "metrics.json",
        {"train_accuracy": 1.0, "val_accuracy": 0.953, "test_accuracy": 0.95},
    )
    write_json(
        paths.INSTRUCT_DATA / "test-responses.json",
        [
            {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Red & blue."},
            {"instruction": "Name a cat.", "input": "", "output": "Tom.", "model_response": "###:\n###:"},
            {"instruction": "Name a dog.", "input": "", "output": "Rex.", "model_response": "### Response:\n###"},
        ],
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
    index = build(settings=settings_of(PARAMS))
    page = index.read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", page), "the page must not load anything from the network"
    assert page.count('src="data:image/png;base64,') == 2  # the pretraining loss and the attention map
    assert "97.21% / 97.32% / 95.67%" in page and "100.00% / 95.30% / 95.00%" in page
    assert "final_val_loss 6.125 after step 150" in page  # README's headline, not the last evaluation
    assert "8.750 / 8.812 → finetuned_val_loss 3.625" in page  # the instruction model's own key
    assert "val 6.452, train 0.391 at step 85" in page
    assert "Every effort &lt;moves&gt; you" in page and "Red &amp; blue." in page
    assert "<pre>###:\n###:</pre>" in page  # answers verbatim, lines kept
    assert "2 of 3 test responses hold no word" in page and "learned the format, not the answers" in page
    assert "(no metrics file: stage not run)" in page  # instruct and evaluate
    assert "<code>scratchgpt experiments run book-ch05</code>" in page  # not run yet: how to
    assert (index.parent / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert not (index.parent / report.CH05_FIGURE).exists()
    summary = (index.parent / "summary.md").read_text()
    assert "| Ch. 6 spam classifier: train / val / test accuracy | default run (params.yaml) | no: " in summary
    assert "| 97.21% / 97.32% / 95.67% | 100.00% / 95.30% / 95.00% |" in summary
    assert "| prepare@verdict | train_tokens | 4,612 |" in summary


def test_like_for_like_from_settings():
    chapter = report.CHAPTERS[0]
    book = report.book_settings(chapter.experiment, ROOT / "experiments")
    empty = report.Run("r", settings_of(book_params("book-ch05")), lambda s: {}, lambda s, k: [])
    row = report.chapter_row(chapter, empty, book, None)
    assert (row.like, row.differs) == ("yes", [])
    changed = experiments.apply(book_params("book-ch05"), {"pretrain.lr": 0.001}, "t")
    row = report.chapter_row(chapter, report.Run("r", settings_of(changed), lambda s: {}, lambda s, k: []), book, None)
    assert row.like == "no" and row.differs == ["pretrain.lr: 0.001 (book: 0.0004)"]
    default = report.Run("r", settings_of(PARAMS), lambda s: {"steps": 150, "parameters": 11_451_456}, lambda s, k: [])
    row = report.chapter_row(chapter, default, book, None)
    assert row.like == "no" and row.why.startswith("ours: 150 steps, 11.5M parameters; the book: GPT-2 124M")
    assert "model.emb_dim: 192 (book: 768)" in row.differs


def test_the_bf16_snapshot_is_drawn_beside_chapter_5(workdir):
    """With book-ch05-bf16 snapshotted too, the chapter 5 figure carries its curves as thin lines."""
    write_json(results.snapshot_path("book-ch05"), ch05_snapshot())
    bf16 = ch05_snapshot(offset=0.005) | {"experiment": "book-ch05-bf16", "params": book_params("book-ch05-bf16")}
    write_json(results.snapshot_path("book-ch05-bf16"), bf16)
    page = build(settings=settings_of(PARAMS)).read_text()
    assert "thin lines: experiment book-ch05-bf16" in page


def test_snapshot_is_the_like_for_like_row(workdir):
    write_json(results.snapshot_path("book-ch05"), ch05_snapshot())
    page = build(settings=settings_of(PARAMS)).read_text()
    rows = report.comparison(report.collect(["book-ch05"]), settings_of(PARAMS))
    row = next(r for r in rows if r.run == "experiment book-ch05")
    assert row.like == "yes" and row.why == "every setting of experiments/book-ch05.yaml"
    assert row.ours == "val 6.452, train 0.391 at step 85; final_val_loss 6.526 after step 90"
    assert row.note == "18 of the book's 18 evaluation points equal ours to 3 decimals"
    assert page.count('src="data:image/png;base64,') == 3  # + chapter 5's overlay
    assert (workdir / "report" / report.CH05_FIGURE).read_bytes()[:4] == b"\x89PNG"
    write_json(results.snapshot_path("book-ch05"), ch05_snapshot(offset=0.01))
    rows = report.comparison(report.collect(["book-ch05"]), settings_of(PARAMS))
    assert next(r for r in rows if r.run == "experiment book-ch05").note.startswith("0 of the book's 18")


def test_preference_tuning_section(workdir):
    write_json(
        paths.METRICS / "dpo" / "metrics.json",
        {
            "dpo_initial_train_loss": 0.6931471805599453,
            "dpo_initial_val_loss": 0.6931471805599453,
            "dpo_initial_val_reward_margin": 0.0,
            "dpo_val_loss": 0.61,
            "dpo_val_chosen_reward": 0.25,
            "dpo_val_rejected_reward": -0.5,
            "dpo_val_reward_margin": 0.75,
            "dpo_val_reward_accuracy": 0.8,
            "dpo_steps": 116,
            "dpo_parameters": 11_451_456,
        },
    )
    write_json(
        paths.METRICS / "evaluate.json",
        {"instruct_test_loss": 3.5, "instruct_rouge_l": 0.25, "dpo_test_loss": 3.75, "dpo_rouge_l": 0.5},
    )
    curves = paths.METRICS / "dpo" / "plots" / "metrics"
    curves.mkdir(parents=True)
    for key, value in {
        "train_loss": 0.6925,
        "val_loss": 0.693,
        "train_reward_margin": 0.02,
        "val_reward_margin": 0.004,
    }.items():
        (curves / f"{key}.tsv").write_text(f"step\t{key}\n0\t{value}\n5\t0.1\n")
    responses = [
        {"instruction": "Name a cat.", "input": "", "output": "Tom.", "model_response": "Felix, <the> cat."},
        {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Green."},
    ]
    write_json(paths.DPO_DATA / "test-responses.json", responses)
    page = build(settings=settings_of(PARAMS), samples=2).read_text()
    assert "<h2>Preference tuning (DPO)</h2>" in page
    # the book's first evaluation beside ours, read from the workspace's curves
    rows = report.comparison(report.collect(), settings_of(PARAMS))
    row = next(r for r in rows if r.what.startswith("Ch. 7 preference tuning") and r.run.startswith("default"))
    assert row.book == "0.692 / 0.693, margins 0.014 / 0.006"
    assert row.ours == "0.693 / 0.693, margins 0.020 / 0.004 (before: 0.693 / 0.693)"
    assert row.like == "no" and row.why.startswith("ours: 116 steps, 11.5M parameters; the book: GPT-2 medium")
    validation, test = report.dpo_tables(report.collect())
    assert ("DPO loss", "0.693", "0.610") in validation
    assert ("reward margin (chosen − rejected)", "0.000", "0.750") in validation
    assert test == [("test loss", "3.500", "3.750", "+0.250"), ("ROUGE-L F1", "0.250", "0.500", "+0.250")]
    # both models' answers to the same entries, matched by instruction, not by position
    pairs = report.side_by_side(report.collect(), 2)
    assert [(p["model_response"], p["dpo_response"]) for p in pairs] == [
        ("Red & blue.", "Green."),
        ("###:\n###:", "Felix, <the> cat."),
    ]
    assert "Felix, &lt;the&gt; cat." in page
    assert "0 of 2 DPO test responses hold no word (0 are empty)." in page
    assert "## Preference tuning (DPO)" in (workdir / "report" / "summary.md").read_text()


def test_report_without_models_or_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "experiments", "experiments")
    for name in ("dvc.yaml", "params.yaml"):  # experiments name their stages, checked against dvc.yaml
        shutil.copy(committed(name), name)
    page = build().read_text()
    assert "not run" in page and "<img" not in page


def test_answers_without_words():
    assert not report.has_words("###:\n### Response:\n###")
    assert report.has_words("### Response:\nBlue.") and report.has_words("42")
    assert report.answers_note([]) is None
    many = [{"model_response": "###:"}] * 2 + [{"model_response": "Blue"}]
    assert "learned the format" in report.answers_note(many)
    assert "learned the format" not in report.answers_note(many[1:])


def test_attention_map_is_legible():
    tokens = ["Every", " effort", " moves", " you"]
    weights = np.tril(np.full((4, 4), 0.25))
    fig = figures.attention_figure(weights, tokens, "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Every", "effort", "moves", "you"]
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 11
    assert len(fig.axes) == 2  # the map and its colorbar
    assert sum(1 for t in ax.texts if t.get_text() == "0.25") == 10  # the lower triangle, annotated
    assert figures.token_label("\n") == "\\n" and figures.token_label("  ") == "␣"
    with pytest.raises(ValueError, match="for 3 tokens"):
        figures.attention_figure(weights, tokens[:3], "t")


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH")
def test_report_in_a_browser(workdir, tmp_path):
    """The page as Chromium draws it: the like-for-like marks show (the "no" cells' orange and
    the snapshot row's green), and the figures are drawn, not broken images."""
    write_json(results.snapshot_path("book-ch05"), ch05_snapshot())
    index = build(settings=settings_of(PARAMS))
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            index.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)

    def shows(rgb):
        return bool((np.abs(pixels - np.array(rgb)).sum(axis=-1) <= 3).any())

    assert shows((0xFF, 0xF3, 0xE0)), "no row marked 'no' (orange) on the page"
    assert shows((0xE8, 0xF5, 0xE9)), "no row marked 'yes' (green) on the page"
    assert shows((0xFD, 0xE7, 0x25)), "no attention map (viridis yellow) on the page"
