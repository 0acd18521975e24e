"""The charts dvc.yaml defines for people (top-level ``plots:``, templates in .dvc/plots/), checked
on what DVC makes of them: ``dvc plots show/diff --json`` on a scratch copy of the repository's
dvc.yaml with small curves, and (marker ``browser``) the page itself in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from committed import committed
from scratch_repo import DVC, init_repo, repo_env, sh

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "classifier", "instruct", "dpo")  # book order: chapters 5, 6, 7 and 7's DPO


def plot_definitions() -> list[tuple[str, dict | None]]:
    """(id, properties) of dvc.yaml's top-level plots in order; properties None for an image."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return [(p, None) if isinstance(p, str) else next(iter(p.items())) for p in plots]


def write_curves(work: Path, shift: float = 0.0) -> None:
    """Three rows in every TSV the plots name (columns: step and the field), a confusion list and
    a PNG for every image plot."""
    png = (ROOT / "docs" / "book-ch05-loss.png").read_bytes()
    for plot_id, props in plot_definitions():
        if props is None:
            (work / plot_id).parent.mkdir(parents=True, exist_ok=True)
            (work / plot_id).write_bytes(png)
            continue
        sources = dict(props["y"]) | (props["x"] if isinstance(props["x"], dict) else {})
        for file, field in sources.items():
            path = work / file
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".json":
                rows = [{"actual": a, "predicted": p} for a, p in [("spam", "spam"), ("ham", "spam"), ("ham", "ham")]]
                path.write_text(json.dumps(rows))
                continue
            values = {
                "lr": [1e-5, 1e-3, 1e-4],
                "val_perplexity": [54000.0, 2000.0, 450.0],
                "tokens_seen": [0, 25600, 51200],
                "examples_seen": [0, 400, 800],
            }.get(field, [10.0 + shift, 7.0 + shift, 6.0 + shift + 0.5 * field.startswith("val")])
            path.write_text(f"step\t{field}\n" + "".join(f"{10 * i}\t{v}\n" for i, v in enumerate(values)))


@pytest.fixture
def repo(tmp_path):
    """dvc.yaml, params.yaml and the plot templates of the repository, with small curves, in git."""
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(committed(name), work / name)
    env = repo_env()
    init_repo(work, env)
    shutil.copytree(ROOT / ".dvc" / "plots", work / ".dvc" / "plots")
    shutil.copy(ROOT / ".dvc" / "plots-template.html", work / ".dvc" / "plots-template.html")
    sh([*DVC, "config", "plots.html_template", "plots-template.html"], work, env)
    write_curves(work)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "curves"], work, env)
    return work, env


def shown(work: Path, env: dict, *args: str) -> dict:
    return json.loads(sh([*DVC, "plots", *args, "--json", "--split", "-o", "page"], work, env))["data"]


def test_the_charts_for_people(repo):
    work, env = repo
    plots = shown(work, env, "show")
    ids = list(plots)
    assert ids == [plot_id for plot_id, _ in plot_definitions()], "every definition drawn, in dvc.yaml's order"
    assert not [i for i in ids if i.startswith("metrics/")], "no raw per-file chart of the DVCLive folders"
    order = [next(s for s in STAGES if f"/{s}/" in json.dumps([i, props])) for i, props in plot_definitions()]
    assert order == sorted(order, key=STAGES.index), f"book order: {order}"

    images = [i for i in ids if plots[i][0]["type"] == "image"]
    assert sorted(images) == sorted(
        [
            "plots/pretrain/loss.png",
            "plots/classifier/loss.png",
            "plots/classifier/accuracy.png",
            "plots/instruct/loss.png",
            "plots/dpo/loss.png",
            "plots/dpo/reward-margins.png",
        ]
    )
    vega = {i: p[0] for i, p in plots.items() if p[0]["type"] == "vega"}
    assert "Classifier confusion" in vega and vega["Classifier confusion"]["content"]["facet"]
    for plot_id, plot in vega.items():
        words = plot["anchor_definitions"]
        for anchor in ("<DVC_METRIC_TITLE>", "<DVC_METRIC_X_LABEL>", "<DVC_METRIC_Y_LABEL>"):
            label = words[anchor]
            assert re.fullmatch(r"[A-Za-z][A-Za-z ,:()'-]+", label) and "_" not in label, (plot_id, anchor, label)

    overlays = [i for i in vega if "loss" in i.lower() or "accuracy" in i.lower() or "margin" in i.lower()]
    assert len(overlays) == 10
    for plot_id in overlays:
        plot = vega[plot_id]
        rows = plot["anchor_definitions"]["<DVC_METRIC_DATA>"]
        fields = sorted({r["field"] for r in rows})
        assert len(fields) == 2 and fields[0].startswith("train_") and fields[1].startswith("val_"), (plot_id, fields)
        encoding = plot["content"]["encoding"]
        assert encoding["color"]["field"] == "split" and encoding["strokeDash"]["field"] == "rev"
        assert "'training'" in plot["content"]["transform"][0]["calculate"]
    by_amount = {i: vega[i]["content"]["encoding"]["x"]["field"] for i in overlays if " by " in i}
    assert by_amount == {
        "Pretraining loss by tokens seen": "tokens_seen",
        "Classifier loss by examples seen": "examples_seen",
        "Instruction loss by tokens seen": "tokens_seen",
    }

    rewards = vega["DPO rewards"]
    fields = {r["field"] for r in rewards["anchor_definitions"]["<DVC_METRIC_DATA>"]}
    assert fields == {"val_chosen_reward", "val_rejected_reward"}
    assert rewards["content"]["encoding"]["color"]["field"] == "response"
    assert rewards["content"]["encoding"]["strokeDash"]["field"] == "rev"

    perplexity = [i for i in vega if "perplexity" in i.lower()]
    assert perplexity == ["Pretraining perplexity", "Instruction perplexity"]
    for plot_id in perplexity:
        assert vega[plot_id]["content"]["encoding"]["y"]["scale"]["type"] == "log"
    rates = [i for i in vega if "learning rate" in i]
    assert rates == ["Pretraining learning rate", "Instruction learning rate"]
    for plot_id in rates:
        y = vega[plot_id]["content"]["encoding"]["y"]
        assert y["axis"]["format"] == "~e", "1e-4 must not read 0"


def test_a_diff_overlays_both_runs_of_the_changed_stage(repo):
    work, env = repo
    write_curves(work, shift=-1.0)  # the workspace: another run, every loss one lower
    plots = shown(work, env, "diff")  # HEAD against the workspace
    rows = plots["Pretraining loss"][0]["anchor_definitions"]["<DVC_METRIC_DATA>"]
    runs = {(r["rev"], r["field"]) for r in rows}
    assert runs == {(rev, f) for rev in ("HEAD", "workspace") for f in ("train_loss", "val_loss")}
    assert sorted(plots["Pretraining loss"][0]["revisions"]) == ["HEAD", "workspace"]
    assert list(plots) == [plot_id for plot_id, _ in plot_definitions()], "dvc.yaml's order, changed or not"
    head = [float(r["dvc_inferred_y_value"]) for r in rows if r["rev"] == "HEAD" and r["field"] == "val_loss"]
    now = [float(r["dvc_inferred_y_value"]) for r in rows if r["rev"] == "workspace" and r["field"] == "val_loss"]
    assert [a - b for a, b in zip(head, now)] == [1.0, 1.0, 1.0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_the_page_draws_every_chart(repo, request, tmp_path):
    """`make plots-screenshot` on the scratch copy; then the same page's DOM after its scripts ran:
    one drawn chart per vega plot, no script error, and a screenshot that is not blank."""
    if CHROMIUM is None:
        if "browser" in (request.config.getoption("markexpr") or ""):
            pytest.fail("chromium is not on PATH (Debian: apt-get install chromium)")
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")
    from PIL import Image

    work, env = repo
    page = tmp_path / "page"
    sh(["make", "-f", str(ROOT / "Makefile"), "plots-screenshot", f"PLOTS_PAGE={page}"], work, env)
    shot = page / "screenshot.png"
    image = Image.open(shot).convert("L")
    assert image.size[0] >= 1000 and image.size[1] >= 2000, image.size
    dark = sum(image.histogram()[:200])
    assert dark > 0.01 * image.size[0] * image.size[1], f"{shot}: mostly blank"

    vega = [i for i, props in plot_definitions() if props is not None]
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (page / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "error" in line.lower()]
    assert not errors, "\n".join(errors)
    drawn = re.findall(r'<div id="([^"]+)"[^>]*class="vega-embed', run.stdout)
    assert len(drawn) == len(vega), (drawn, vega)
    assert run.stdout.count('class="marks"') == len(vega), "a canvas per chart"
