"""The one-page report: every metric of the pipeline, the figures, sample generations, an
attention heat map of a sample sentence, and our numbers beside the book's.

``report/index.html`` is self-contained (figures inlined as data URIs, no scripts, no network);
``report/summary.md`` holds the same tables for a terminal or a pull request.

Beside the book, each row says whether the run is like for like: a run is when every setting
that the chapter's named experiment (``experiments/book-chNN.yaml``) changes has the book's value
in it; otherwise the row says how it differs. The default run's settings are params.yaml's; a
named experiment's come from its snapshot (:mod:`scratchgpt.plumbing.results`), so its row
appears once the experiment has been run and snapshotted.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from scratchgpt.book import printed
from scratchgpt.book.model import GPTModel, attention_weights
from scratchgpt.formats.modeldir import load_model, load_tokenizer, read_model_config
from scratchgpt.plumbing import experiments, figures, paths, plots, results
from scratchgpt.plumbing.pipeline import ParamsView

FIGURES = [
    ("Pretraining loss", paths.PLOTS / "pretrain" / "loss.png"),
    ("Spam classifier loss", paths.PLOTS / "classifier" / "loss.png"),
    ("Spam classifier accuracy", paths.PLOTS / "classifier" / "accuracy.png"),
    ("Instruction finetuning loss", paths.PLOTS / "instruct" / "loss.png"),
    ("Preference tuning (DPO) loss", paths.PLOTS / "dpo" / "loss.png"),
    ("Preference tuning (DPO) reward margins", paths.PLOTS / "dpo" / "reward-margins.png"),
]
METRIC_FILES = {
    "pretrain": paths.METRICS / "pretrain" / "metrics.json",
    "init": paths.METRICS / "init.json",
    "classifier": paths.METRICS / "classifier" / "metrics.json",
    "instruct": paths.METRICS / "instruct" / "metrics.json",
    "dpo": paths.METRICS / "dpo" / "metrics.json",
    "evaluate": paths.METRICS / "evaluate.json",
}
CH05_FIGURE = "book-ch05-loss.png"  # in the report folder, when book-ch05 has been snapshotted
CH05_ALSO = ("book-ch05-bf16",)  # snapshots drawn as thin lines in that figure, when present
MISSING = object()

Settings = Callable[[str], Any]  # a dotted params key -> its value in a run, or MISSING


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def collect(experiment_names: Sequence[str] = ()) -> dict[str, Any]:
    """Every metrics file (None where a stage has not run), samples, test responses and the
    snapshots of ``experiment_names`` (None where not run)."""
    data: dict[str, Any] = {name: _read_json(path) for name, path in METRIC_FILES.items()}
    data["prepare"] = {p.stem: _read_json(p) for p in sorted((paths.METRICS / "prepare").glob("*.json"))}
    data["pretrain_samples"] = _read_json(paths.METRICS / "pretrain" / "samples.json") or []
    data["instruct_samples"] = _read_json(paths.METRICS / "instruct" / "samples.json") or []
    data["responses"] = _read_json(paths.INSTRUCT_DATA / "test-responses.json") or []
    data["dpo_responses"] = _read_json(paths.DPO_DATA / "test-responses.json") or []
    data["experiments"] = {name: results.load_snapshot(name) for name in experiment_names}
    return data


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if percent else f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# ---------------------------------------------------------------------------------------------
# settings: like for like or not


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return getattr(value, "value", value) if not isinstance(value, (str, int, float, bool, list, dict)) else value


def lookup(tree: Any, dotted: str) -> Any:
    """The value of a dotted params key in a params dict, a stage's ParamsView or a params
    model; MISSING when a dict or model lacks it (a ParamsView raises for an undeclared key)."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, ParamsView):
            node = node[part]
        elif isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        else:
            return MISSING
    return _plain(node)


def book_settings(experiment: str, folder: Path = experiments.EXPERIMENTS_DIR) -> dict[str, Any]:
    """The params keys and values that experiment ``experiment`` sets: the book's settings."""
    return experiments.overrides(experiment, folder)


def differences(settings: Settings, book: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, ours, the book's) for each of the book's settings that the run does not share."""
    out = []
    for key, value in book.items():
        ours = settings(key)
        if ours is MISSING or _plain(ours) != _plain(value):
            out.append((key, "(none)" if ours is MISSING else ours, value))
    return out


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# ---------------------------------------------------------------------------------------------
# ours beside the book


@dataclasses.dataclass
class Run:
    """One run of the pipeline: the default one (params.yaml, the workspace's metrics) or a
    named experiment's snapshot."""

    label: str
    settings: Settings
    metrics: Callable[[str], dict[str, Any]]  # stage -> its metrics.json
    curve: Callable[[str, str], list[tuple[float, float]]]  # (stage, key) -> [(step, value)]


@dataclasses.dataclass
class Row:
    what: str
    run: str
    like: str  # "yes", "no" or "not run"
    why: str  # what the like-for-like verdict rests on
    differs: list[str]  # "key: ours (book: value)" per differing setting
    book: str
    ours: str
    note: str = ""


def _parameters(metrics: dict[str, Any], model_dir: Path | None = None, prefix: str = "") -> int | None:
    """The model's parameter count: the metrics' ``parameters`` (``<prefix>trainable_parameters``
    for a stage whose keys carry a prefix and that trains every weight), else counted from the
    model directory's config.json."""
    if isinstance(metrics.get(f"{prefix}parameters"), int):
        return metrics[f"{prefix}parameters"]
    if model_dir is not None and (model_dir / "config.json").is_file():
        config, _ = read_model_config(model_dir)
        with torch.device("meta"):
            return sum(p.numel() for p in GPTModel(config).parameters())
    return None


def _facts(metrics: dict[str, Any], model_dir: Path | None = None, prefix: str = "") -> str:
    parts = []
    if metrics.get(f"{prefix}steps") is not None:
        parts.append(f"{metrics[f'{prefix}steps']:,} steps")
    n = _parameters(metrics, model_dir, prefix)
    if n is not None:
        parts.append(f"{n / 1e6:.1f}M parameters")
    return ", ".join(parts) or "no metrics yet"


def _at(points: list[tuple[float, float]], step: int) -> float | None:
    return next((v for s, v in points if s == step), None)


def _ch05(run: Run) -> tuple[str, str, str]:
    last_step, book_train, book_val = printed.CH05_LOSSES[-1]
    m = run.metrics("pretrain")
    book = f"val {book_val:.3f}, train {book_train:.3f} at step {last_step} (its last evaluation)"
    final = f"final_val_loss {_fmt(m.get('final_val_loss'))} after step {_fmt(m.get('steps'))}"
    train, val = run.curve("pretrain", "train_loss"), run.curve("pretrain", "val_loss")
    if _at(val, last_step) is None:
        return book, final, "final_val_loss: the whole validation split after the last step"
    same = sum(
        1
        for step, t, v in printed.CH05_LOSSES
        if _at(train, step) is not None
        and round(_at(train, step), 3) == t
        and _at(val, step) is not None
        and round(_at(val, step), 3) == v
    )
    ours = f"val {_at(val, last_step):.3f}, train {_fmt(_at(train, last_step))} at step {last_step}; {final}"
    return book, ours, f"{same} of the book's {len(printed.CH05_LOSSES)} evaluation points equal ours to 3 decimals"


def _ch06(run: Run) -> tuple[str, str, str]:
    m = run.metrics("classifier")
    book = " / ".join(_fmt(v, percent=True) for v in printed.CH06_ACCURACY)
    ours = " / ".join(_fmt(m.get(f"{s}_accuracy"), percent=True) for s in ("train", "val", "test"))
    return book, ours, ""


def _ch07(run: Run) -> tuple[str, str, str]:
    m = run.metrics("instruct")
    (bt, bv), (_, after) = printed.CH07_LOSSES_BEFORE, printed.CH07_LOSSES_AFTER
    book = f"{bt:.3f} / {bv:.3f} → val {after:.3f}"
    ours = (
        f"{_fmt(m.get('initial_train_loss'))} / {_fmt(m.get('initial_val_loss'))} → "
        f"finetuned_val_loss {_fmt(m.get('finetuned_val_loss'))}"
    )
    return book, ours, "finetuned_val_loss: the whole validation split after the last step"


def _dpo(run: Run) -> tuple[str, str, str]:
    train, val, train_margin, val_margin = printed.CH07_DPO_FIRST_STEP
    book = f"{train:.3f} / {val:.3f}, margins {train_margin:.3f} / {val_margin:.3f}"
    first = [
        _at(run.curve("dpo", key), 0) for key in ("train_loss", "val_loss", "train_reward_margin", "val_reward_margin")
    ]
    m = run.metrics("dpo")
    start = f"before: {_fmt(m.get('dpo_initial_train_loss'))} / {_fmt(m.get('dpo_initial_val_loss'))}"
    if None in first:
        return book, f"{start}; no curve at step 0", "the curves of finetune_dpo start at step 0"
    ours = f"{first[0]:.3f} / {first[1]:.3f}, margins {first[2]:.3f} / {first[3]:.3f} ({start})"
    return book, ours, "after the first optimizer step; before it the policy is the reference (ln 2 = 0.693, margins 0)"


@dataclasses.dataclass(frozen=True)
class Chapter:
    what: str
    experiment: str  # the named experiment holding the book's settings
    stage: str  # the metrics folder of the stage it reproduces
    model_dir: Path | None
    book_run: str
    values: Callable[[Run], tuple[str, str, str]]  # (the book, ours, note)
    prefix: str = ""  # of the stage's metrics keys (finetune_dpo's: dpo_)


CHAPTERS = (
    Chapter("Ch. 5 pretraining: losses", "book-ch05", "pretrain", paths.PRETRAINED, printed.CH05_RUN, _ch05),
    Chapter(
        "Ch. 6 spam classifier: train / val / test accuracy", "book-ch06", "classifier", None, printed.CH06_RUN, _ch06
    ),
    Chapter(
        "Ch. 7 instructions: train / val loss before → val loss after finetuning",
        "book-ch07",
        "instruct",
        None,
        printed.CH07_RUN,
        _ch07,
    ),
    Chapter(
        "Ch. 7 preference tuning (DPO): train / val loss and reward margins after the first step",
        "book-ch07-dpo",
        "dpo",
        None,
        printed.CH07_DPO_RUN,
        _dpo,
        prefix="dpo_",
    ),
)


def workspace_curve(stage: str, key: str) -> list[tuple[float, float]]:
    """[(step, value)] of the DVCLive curve ``key`` of ``stage`` in the workspace ([] if none)."""
    path = paths.METRICS / stage / "plots" / "metrics" / f"{key}.tsv"
    if not path.is_file():
        return []
    return [(step, value) for step, value in results.read_tsv(path.read_text(encoding="utf-8"), str(path))]


def default_run(data: dict[str, Any], settings: Settings, curve: Callable[[str, str], list] | None = None) -> Run:
    return Run(
        "default run (params.yaml)",
        settings,
        lambda stage: data.get(stage) or {},
        curve or (lambda stage, key: []),
    )


def snapshot_run(snap: dict[str, Any]) -> Run:
    return Run(
        f"experiment {snap['experiment']}",
        lambda key: lookup(snap["params"], key),
        lambda stage: results.stage_metrics(snap, stage),
        lambda stage, key: results.curve(snap, stage, key),
    )


def chapter_row(chapter: Chapter, run: Run, book: dict[str, Any], model_dir: Path | None) -> Row:
    differ = differences(run.settings, book)
    book_value, ours, note = chapter.values(run)
    if differ:
        like = "no"
        why = f"ours: {_facts(run.metrics(chapter.stage), model_dir, chapter.prefix)}; the book: {chapter.book_run}"
    else:
        like, why = "yes", f"every setting of experiments/{chapter.experiment}.yaml"
    lines = [f"{key}: {_show(ours_)} (book: {_show(theirs)})" for key, ours_, theirs in differ]
    return Row(chapter.what, run.label, like, why, lines, book_value, ours, note)


def comparison(data: dict[str, Any], settings: Settings) -> list[Row]:
    """Per chapter: the default run's row, then the chapter's named experiment's (its numbers
    when snapshotted, else a row saying how to run it); then the judge."""
    rows = []
    for chapter in CHAPTERS:
        book = book_settings(chapter.experiment)
        rows.append(chapter_row(chapter, default_run(data, settings, workspace_curve), book, chapter.model_dir))
        snap = data["experiments"].get(chapter.experiment)
        if snap is not None:
            rows.append(chapter_row(chapter, snapshot_run(snap), book, None))
        else:
            book_value = chapter.values(default_run({}, settings))[0]
            rows.append(
                Row(
                    chapter.what,
                    f"experiment {chapter.experiment}",
                    "not run",
                    "the book's settings; no snapshot yet",
                    [],
                    book_value,
                    "—",
                    f"run `scratchgpt experiments run {chapter.experiment}` (it snapshots the results)",
                )
            )
    judge = (data.get("evaluate") or {}).get("instruct_judge_score")
    rows.append(
        Row(
            "Ch. 7 judge score (0–100)",
            "default run (params.yaml)",
            "—",
            "",
            [],
            printed.CH07_JUDGE,
            _fmt(judge) if judge is not None else "not run",
            "set evaluate.judge_url to run the judge",
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# samples


ALPACA_MARKERS = re.compile(r"###\s*(Instruction|Input|Response)?\s*:?")


def has_words(response: str) -> bool:
    """Whether a model response says anything beyond the prompt format's ``### ...:`` markers."""
    return bool(re.search(r"[^\W_]", ALPACA_MARKERS.sub("", response)))


def answers_note(responses: Sequence[dict[str, str]]) -> str | None:
    """What the test responses amount to, counted; None when there are none."""
    if not responses:
        return None
    empty = sum(1 for e in responses if not has_words(e["model_response"]))
    note = f"{empty} of {len(responses)} test responses hold no word, only the prompt format's “###” markers."
    if 2 * empty > len(responses):
        note += (
            " The instruction model has learned the format, not the answers; the default 11.5M model is too "
            "small for that. `scratchgpt experiments run book-ch07` (GPT-2 medium, as the book) gives real answers."
        )
    return note


# ---------------------------------------------------------------------------------------------
# preference tuning


DPO_VALIDATION = (  # (what, key before, key after) in metrics/dpo/metrics.json
    ("DPO loss", "dpo_initial_val_loss", "dpo_val_loss"),
    ("reward margin (chosen − rejected)", "dpo_initial_val_reward_margin", "dpo_val_reward_margin"),
    ("chosen reward", None, "dpo_val_chosen_reward"),
    ("rejected reward", None, "dpo_val_rejected_reward"),
    ("reward accuracy (chosen gains more)", None, "dpo_val_reward_accuracy"),
)
DPO_TEST = (  # (what, key in metrics/evaluate.json after instruct_ / dpo_)
    ("test loss", "test_loss"),
    ("test perplexity", "test_perplexity"),
    ("ROUGE-L F1", "rouge_l"),
    ("exact match", "exact_match"),
    ("judge score (0–100)", "judge_score"),
)


def dpo_tables(data: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """(validation pairs: what, before, after) and (test split: what, instruction model, DPO model,
    change); empty where finetune_dpo or evaluate has not run."""
    m, ev = data.get("dpo") or {}, data.get("evaluate") or {}
    validation = []
    if m:
        for what, before, after in DPO_VALIDATION:
            validation.append((what, _fmt(m.get(before)) if before else "—", _fmt(m.get(after))))
    test = []
    for what, key in DPO_TEST:
        a, b = ev.get(f"instruct_{key}"), ev.get(f"dpo_{key}")
        if a is None and b is None:
            continue
        change = f"{b - a:+.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "—"
        test.append((what, _fmt(a), _fmt(b), change))
    return validation, test


def dpo_answers_note(data: dict[str, Any]) -> str | None:
    """How many of the DPO model's test responses say anything; None when there are none."""
    responses = data.get("dpo_responses") or []
    if not responses:
        return None
    wordless = sum(1 for e in responses if not has_words(e["model_response"]))
    empty = sum(1 for e in responses if not e["model_response"].strip())
    return f"{wordless} of {len(responses)} DPO test responses hold no word ({empty} are empty)."


def side_by_side(data: dict[str, Any], n: int) -> list[dict[str, str]]:
    """The first ``n`` test entries with both models' responses (the same entries: chapter 7's)."""
    dpo = {(e["instruction"], e["input"]): e["model_response"] for e in data.get("dpo_responses") or []}
    out = []
    for entry in data["responses"]:
        key = (entry["instruction"], entry["input"])
        if key in dpo:
            out.append({**entry, "dpo_response": dpo[key]})
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------------------------
# figures


def attention_figure(model_dir: Path, text: str, out: Path) -> str | None:
    """The last layer's attention for ``text`` under the model in ``model_dir``, averaged over
    its heads, as a heat map at ``out``; returns its caption (None without a model)."""
    if not (model_dir / "config.json").is_file():
        return None
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    ids = tokenizer.encode(text, allow_special=False)[: model.config.context_length]
    weights = attention_weights(model, torch.tensor([ids]))
    heads, layers = weights.shape[0], model.config.n_layers
    tokens = [tokenizer.decode([i]) for i in ids]
    title = f"{model_dir}: layer {layers} of {layers}, mean of its {heads} heads"
    plots.save(figures.attention_figure(weights.mean(dim=0).numpy(), tokens, title), out)
    return (
        f"Attention of the pretrained model's last layer (layer {layers}), averaged over its {heads} heads, "
        f"for “{text}”: row i is how token i spreads its attention over the tokens up to it."
    )


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.yes { background: #e8f5e9; font-weight: bold; } td.no { background: #fff3e0; font-weight: bold; }
td.notrun { color: #777; } table.compare { width: 100%; } table.compare th[rowspan] { width: 13%; }
.why { font-weight: normal; font-size: 0.9em; color: #444; }
details { font-weight: normal; font-size: 0.85em; } details li { font-family: ui-monospace, monospace; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 540px; border: 1px solid #eee; } figure.wide img { max-width: 720px; }
figcaption { font-size: 0.85em; color: #555; max-width: 720px; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.5em; margin: 0.2em 0 0.8em; }
.note { color: #666; font-size: 0.85em; } .answer { margin-bottom: 1.2em; }
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


def _inline(text: str) -> str:
    """Escaped text with `backticked` commands as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _comparison_html(rows: list[Row]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("", "run", "like for like?", "the book", "ours", "note"))
    body = []
    for i, r in enumerate(rows):
        css = {"yes": "yes", "no": "no", "not run": "notrun"}.get(r.like, "")
        like = html.escape(r.like) + (f"<div class=why>{html.escape(r.why)}</div>" if r.why else "")
        if r.differs:
            items = "".join(f"<li>{html.escape(d)}</li>" for d in r.differs)
            like += f"<details><summary>{len(r.differs)} settings differ</summary><ul>{items}</ul></details>"
        first = i == 0 or rows[i - 1].what != r.what
        span = sum(1 for _ in _same_what(rows, i)) if first else 0
        cells = [f"<th rowspan={span}>{html.escape(r.what)}</th>"] if first else []
        cells += [
            f"<td>{html.escape(r.run)}</td>",
            f"<td class={css}>{like}</td>" if css else f"<td>{like}</td>",
            f"<td>{html.escape(r.book)}</td>",
            f"<td>{html.escape(r.ours)}</td>",
            f"<td>{_inline(r.note)}</td>",
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class=compare><tr>{head}</tr>{''.join(body)}</table>"


def _same_what(rows: list[Row], i: int):
    for r in rows[i:]:
        if r.what != rows[i].what:
            return
        yield r


def metric_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, metric, value) for every number in every metrics file."""
    rows = []
    for corpus, values in (data.get("prepare") or {}).items():
        rows += [(f"prepare@{corpus}", k, _fmt(v)) for k, v in (values or {}).items()]
    for section in METRIC_FILES:
        values = data.get(section)
        if values is None:
            rows.append((section, "(no metrics file: stage not run)", "—"))
            continue
        rows += [(section, k, _fmt(v)) for k, v in values.items()]
    return rows


def render_html(data: dict[str, Any], rows: list[Row], figures_: list[tuple[str, Path]], samples: int = 3) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>scratchgpt report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>scratchgpt report</h1>",
        "<p class=note>Built by the <code>report</code> stage from the pipeline's metrics files and the "
        "snapshots of named experiments (metrics/experiments/).</p>",
        "<h2>Ours beside the book</h2>",
        "<p class=note>A run is like for like when every setting of the chapter's named experiment "
        "(experiments/book-chNN.yaml, the book's settings) has the book's value in it.</p>",
        _comparison_html(rows),
        "<h2>Figures</h2>",
    ]
    for caption, path in figures_:
        wide = " class=wide" if path.name in ("attention.png", CH05_FIGURE) else ""
        parts.append(
            f'<figure{wide}><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Samples</h2>")
    if data["pretrain_samples"]:
        last = data["pretrain_samples"][-1]
        parts.append(
            f"<p>Pretrained model, greedy, after epoch {last['epoch']}:</p><pre>{html.escape(last['text'])}</pre>"
        )
    note = answers_note(data["responses"])
    if note:
        parts.append(
            f"<p><b>Instruction model on the test split.</b> {_inline(note)} "
            f"The first {samples}, as the model wrote them:</p>"
        )
    for entry in data["responses"][:samples]:
        parts.append(
            f"<div class=answer><b>Instruction:</b> {html.escape(entry['instruction'])}"
            + (f"<br><b>Input:</b> {html.escape(entry['input'])}" if entry["input"] else "")
            + f"<br><b>Reference:</b> {html.escape(entry['output'])}"
            f"<br><b>Model</b> (verbatim):<pre>{html.escape(entry['model_response']) or '(empty)'}</pre></div>"
        )
    parts += _dpo_html(data, samples)
    parts += ["<h2>Every metric</h2>", _table(["stage", "metric", "value"], metric_rows(data), {2}), "</body></html>"]
    return "\n".join(parts)


DPO_INTRO = (
    "finetune_dpo aligns the instruction model with Direct Preference Optimization on the same instructions, "
    "each with a chosen and a rejected response; a frozen copy of the instruction model is the reference. A "
    "reward is how much more log-probability (mean per response token) the tuned model gives a response than "
    "the reference does; before the first update every reward is 0 and the loss ln 2 = 0.693."
)


def _dpo_html(data: dict[str, Any], samples: int) -> list[str]:
    validation, test = dpo_tables(data)
    if not validation and not test:
        return []
    parts = ["<h2>Preference tuning (DPO)</h2>", f"<p class=note>{_inline(DPO_INTRO)}</p>"]
    if validation:
        parts += [
            "<p><b>Validation pairs</b> (before: the first evaluation batches; after: the whole split)</p>",
            _table(["", "before", "after"], validation, {1, 2}),
        ]
    if test:
        parts += [
            "<p><b>Chapter 7's test split</b> (the same 110 entries; <code>dvc metrics diff</code> shows the same "
            "numbers between runs)</p>",
            _table(["", "instruction model", "DPO model", "change"], test, {1, 2, 3}),
        ]
    pairs = side_by_side(data, samples)
    note = dpo_answers_note(data)
    if pairs:
        parts.append(f"<p>{note} The first {len(pairs)} test responses of both models, verbatim:</p>")
    for entry in pairs:
        parts.append(
            f"<div class=answer><b>Instruction:</b> {html.escape(entry['instruction'])}"
            + (f"<br><b>Input:</b> {html.escape(entry['input'])}" if entry["input"] else "")
            + f"<br><b>Reference:</b> {html.escape(entry['output'])}"
            f"<br><b>Instruction model:</b><pre>{html.escape(entry['model_response']) or '(empty)'}</pre>"
            f"<b>DPO model:</b><pre>{html.escape(entry['dpo_response']) or '(empty)'}</pre></div>"
        )
    return parts


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict[str, Any], rows: list[Row]) -> str:
    lines = [
        "# scratchgpt report",
        "",
        "## Ours beside the book",
        "",
        "| | run | like for like? | the book | ours | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        like = f"{r.like}: {r.why}" if r.why else r.like
        if r.differs:
            like += f"; {len(r.differs)} settings differ: " + ", ".join(d.split(":")[0] for d in r.differs)
        lines.append("| " + " | ".join(_cell(c) for c in (r.what, r.run, like, r.book, r.ours, r.note)) + " |")
    note = answers_note(data["responses"])
    if note:
        lines += ["", note]
    validation, test = dpo_tables(data)
    if validation or test:
        lines += ["", "## Preference tuning (DPO)", "", DPO_INTRO]
    if validation:
        lines += ["", "| validation pairs | before | after |", "| --- | ---: | ---: |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in validation]
    if test:
        lines += [
            "",
            "| chapter 7's test split | instruction model | DPO model | change |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in test]
    dpo_note = dpo_answers_note(data)
    if dpo_note:
        lines += ["", dpo_note]
    lines += ["", "## Every metric", "", "| stage | metric | value |", "| --- | --- | ---: |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in metric_rows(data)]
    return "\n".join(lines) + "\n"
