"""The one-page report: every metric of the pipeline, the figures, sample generations, an
attention heat map of a sample sentence, and our numbers beside the book's.

``report/index.html`` is self-contained (figures inlined as data URIs, no scripts, no network);
``report/summary.md`` holds the same tables for a terminal or a pull request.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from scratchgpt.book.model import attention_weights
from scratchgpt.book.printed import CH05_LOSSES
from scratchgpt.files import atomic_dir, write_text
from scratchgpt.formats.modeldir import load_model, load_tokenizer
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.plots import plot_attention

log = logging.getLogger(__name__)

REPORT_DIR = paths.REPORT
FIGURES = [
    ("Pretraining loss", paths.PLOTS / "pretrain" / "loss.png"),
    ("Spam classifier loss", paths.PLOTS / "classifier" / "loss.png"),
    ("Spam classifier accuracy", paths.PLOTS / "classifier" / "accuracy.png"),
    ("Instruction finetuning loss", paths.PLOTS / "instruct" / "loss.png"),
]
METRIC_FILES = {
    "pretrain": paths.METRICS / "pretrain" / "metrics.json",
    "init": paths.METRICS / "init.json",
    "classifier": paths.METRICS / "classifier" / "metrics.json",
    "instruct": paths.METRICS / "instruct" / "metrics.json",
    "evaluate": paths.METRICS / "evaluate.json",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def collect() -> dict[str, Any]:
    """Every metrics file (None where a stage has not run), samples and test responses."""
    data: dict[str, Any] = {name: _read_json(path) for name, path in METRIC_FILES.items()}
    data["prepare"] = {p.stem: _read_json(p) for p in sorted((paths.METRICS / "prepare").glob("*.json"))}
    data["pretrain_samples"] = _read_json(paths.METRICS / "pretrain" / "samples.json") or []
    data["instruct_samples"] = _read_json(paths.METRICS / "instruct" / "samples.json") or []
    data["responses"] = _read_json(paths.INSTRUCT_DATA / "test-responses.json") or []
    return data


def _get(data: dict[str, Any], section: str, key: str) -> Any:
    return (data.get(section) or {}).get(key)


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if percent else f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def comparison(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, the book, ours, note) rows; the notes say where the settings differ."""
    source = _get(data, "init", "source") or "?"
    clf = lambda k: _fmt(_get(data, "classifier", k), percent=True)  # noqa: E731
    judge = _get(data, "evaluate", "judge_score")
    return [
        (
            "Ch. 5 pretraining: final train / val loss",
            "{1:.3f} / {2:.3f}".format(*CH05_LOSSES[-1]),
            f"{_fmt(_get(data, 'pretrain', 'train_loss'))} / {_fmt(_get(data, 'pretrain', 'val_loss'))}",
            "default params: a small model on the-verdict + WikiText; experiments/book-ch05 reproduces "
            "the book's 18 points exactly",
        ),
        (
            "Ch. 6 spam classifier: train / val / test accuracy",
            "97.21% / 97.32% / 95.67%",
            f"{clf('train_accuracy')} / {clf('val_accuracy')} / {clf('test_accuracy')}",
            f"book: GPT-2 124M, last block trained; ours: init.source={source}",
        ),
        (
            "Ch. 7 instructions: train / val loss before finetuning",
            "3.826 / 3.762",
            f"{_fmt(_get(data, 'instruct', 'initial_train_loss'))} / "
            f"{_fmt(_get(data, 'instruct', 'initial_val_loss'))}",
            f"book: GPT-2 355M; ours: init.source={source}",
        ),
        (
            "Ch. 7 instructions: val loss after finetuning",
            "0.657",
            _fmt(_get(data, "instruct", "final_val_loss")),
            "ours: the whole validation split",
        ),
        (
            "Ch. 7 judge score (0–100)",
            "about 50 (Llama 3 8B)",
            _fmt(judge) if judge is not None else "not run",
            "set evaluate.judge_url to run the judge",
        ),
    ]


def metric_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, metric, value) for every number in every metrics file."""
    rows = []
    for corpus, values in (data.get("prepare") or {}).items():
        rows += [(f"prepare@{corpus}", k, _fmt(v)) for k, v in (values or {}).items()]
    for section in METRIC_FILES:
        values = data.get(section)
        if values is None:
            rows.append((section, "(stage not run)", "—"))
            continue
        rows += [(section, k, _fmt(v)) for k, v in values.items()]
    return rows


def attention_figure(model_dir: Path, text: str, out: Path) -> Path | None:
    """Heat maps of the last layer's heads for ``text`` under the model in ``model_dir``."""

    if not (model_dir / "config.json").is_file():
        return None
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    ids = tokenizer.encode(text, allow_special=False)[: model.config.context_length]
    weights = attention_weights(model, torch.tensor([ids])).numpy()
    tokens = [tokenizer.decode([i]) for i in ids]
    plot_attention(weights, tokens, out, title=f"{model_dir.name}: last layer's attention, per head")
    return out


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 520px; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.5em; }
.note { color: #666; font-size: 0.85em; }
"""


def _table(header: list[str], rows: list[tuple[str, ...]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{html.escape(str(c))}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(data: dict[str, Any], figures: list[tuple[str, Path]], samples: int = 3) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>scratchgpt report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>scratchgpt report</h1>",
        "<p class=note>Built by the <code>report</code> stage from the pipeline's metrics files.</p>",
        "<h2>Ours beside the book</h2>",
        _table(["", "the book", "ours", "note"], comparison(data)),
        "<h2>Figures</h2>",
    ]
    for caption, path in figures:
        parts.append(
            f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Samples</h2>")
    if data["pretrain_samples"]:
        last = data["pretrain_samples"][-1]
        parts.append(
            f"<p>Pretrained model, greedy, after epoch {last['epoch']}:</p><pre>{html.escape(last['text'])}</pre>"
        )
    for entry in data["responses"][:samples]:
        parts.append(
            f"<p><b>Instruction:</b> {html.escape(entry['instruction'])}"
            + (f"<br><b>Input:</b> {html.escape(entry['input'])}" if entry["input"] else "")
            + f"<br><b>Reference:</b> {html.escape(entry['output'])}"
            f"<br><b>Model:</b> {html.escape(entry['model_response'])}</p>"
        )
    parts += ["<h2>Every metric</h2>", _table(["stage", "metric", "value"], metric_rows(data), {2}), "</body></html>"]
    return "\n".join(parts)


def render_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# scratchgpt report",
        "",
        "## Ours beside the book",
        "",
        "| | the book | ours | note |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in comparison(data)]
    lines += ["", "## Every metric", "", "| stage | metric | value |", "| --- | --- | ---: |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in metric_rows(data)]
    return "\n".join(lines) + "\n"


def build(
    out_dir: str | os.PathLike[str] = REPORT_DIR, attention_text: str = "Every effort moves you", samples: int = 3
) -> Path:
    """Write index.html, summary.md and attention.png into ``out_dir`` (replaced whole)."""

    out_dir = Path(out_dir)
    data = collect()
    with atomic_dir(out_dir) as staging:
        figures = [(caption, path) for caption, path in FIGURES if path.is_file()]
        attention = attention_figure(paths.PRETRAINED, attention_text, staging / "attention.png")
        if attention is not None:
            figures.append((f"Attention of the pretrained model's last layer: “{attention_text}”", attention))
        write_text(staging / "index.html", render_html(data, figures, samples))
        write_text(staging / "summary.md", render_markdown(data))
    log.info("report written to %s", out_dir / "index.html")
    return out_dir / "index.html"
