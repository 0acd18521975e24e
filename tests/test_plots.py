"""The charts dvc.yaml defines for people (top-level ``plots:``, templates in .dvc/plots/), checked
on what DVC makes of them: ``dvc plots show/diff --json`` on a scratch copy of the repository's
dvc.yaml with small curves, the page DVC writes with .dvc/plots-template.html, and (marker
``browser``) the page itself in headless Chromium."""

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
from scratchgpt.plumbing import vega as page_template

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "classifier", "instruct", "dpo")  # book order: chapters 5, 6, 7 and 7's DPO
TEMPLATE = ROOT / ".dvc" / "plots-template.html"


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


def test_each_run_has_a_legend_entry_of_its_own(repo):
    """In `dvc plots diff` the runs' curves differ by dash (and, on a chart of one quantity, by colour
    too); each legend draws line symbols, so the run legend shows each run's dash. Vega-Lite's
    default for a line with points is a filled dot, drawn with no stroke: the same black dot for
    every run."""
    work, env = repo
    write_curves(work, shift=-1.0)
    plots = shown(work, env, "diff")
    lines = {i: p[0]["content"] for i, p in plots.items() if p[0]["type"] == "vega" and "encoding" in p[0]["content"]}
    assert len(lines) == 15 and "Classifier confusion" not in lines, sorted(lines)
    for plot_id, content in lines.items():
        assert content["mark"]["type"] == "line", plot_id
        encoding = content["encoding"]
        dash = encoding["strokeDash"]
        assert dash["field"] == "rev", plot_id
        dashes = [tuple(d) for d in dash["scale"]["range"]]
        assert dashes[0] == (1, 0) and len(set(dashes)) == len(dashes) >= 2, (
            plot_id,
            "a solid line, then distinct dashes",
        )
        assert dash["legend"]["symbolType"] == "stroke", (plot_id, "the run legend draws lines, not dots")
        color = encoding["color"]
        assert color["legend"]["symbolType"] == "stroke", (plot_id, "the colour legend draws lines")
        if color["field"] == "rev":  # log, lr: one legend, each run's colour and dash
            assert dash["title"] == color["title"] and dash.get("sort", "x") == color.get("sort", "y"), plot_id
        else:  # overlay, responses: colour is the quantity; the run legend's lines need a stroke of their own
            stroke = dash["legend"]["encode"]["symbols"]["update"]["stroke"]["value"]
            assert stroke not in ("transparent", "white", "#fff", "#ffffff"), (plot_id, stroke)


def test_the_confusion_matrix_prints_its_counts(repo):
    """A count in every cell, always (DVC's own confusion template prints them only behind a
    "showValues" checkbox); one panel per run in show and diff alike."""
    work, env = repo
    write_curves(work, shift=-1.0)
    for command in ("show", "diff"):
        plot = shown(work, env, command)["Classifier confusion"][0]
        content = plot["content"]
        assert content["facet"]["column"]["field"] == "rev"
        spec = content["spec"]
        count = next(t for t in spec["transform"] if "aggregate" in t)
        assert count["aggregate"] == [{"op": "count", "as": "count"}] and "rev" in count["groupby"]
        text = [layer for layer in spec["layer"] if layer["mark"] == "text" or layer["mark"].get("type") == "text"]
        assert len(text) == 1 and text[0]["encoding"]["text"] == {"field": "count", "type": "quantitative"}, command
        params = content.get("params", []) + spec.get("params", [])
        assert not [p for p in params if "bind" in p], (command, "no control on the page")
        revs = {r["rev"] for r in plot["anchor_definitions"]["<DVC_METRIC_DATA>"]}
        assert revs == ({"workspace"} if command == "show" else {"HEAD", "workspace"})


def test_a_learning_rate_chart_fits_its_axis_to_the_rates(repo):
    """A constant rate (finetune_instruct's default) would draw on the chart's top border on an axis
    from zero; fitted to the data (padded), it draws mid-chart, labelled by its value."""
    work, env = repo
    rates = [i for i, props in plot_definitions() if props is not None and props["template"] == "lr"]
    assert rates == ["Pretraining learning rate", "Instruction learning rate"]
    plots = shown(work, env, "show")
    for plot_id in rates:
        scale = plots[plot_id][0]["content"]["encoding"]["y"]["scale"]
        assert scale["zero"] is False and scale["padding"] > 0 and "domain" not in scale, (plot_id, scale)


def test_the_page_template_is_current():
    """.dvc/plots-template.html is what scratchgpt.plumbing.vega writes for dvc.yaml's plots today
    (after a change to either, `python -m scratchgpt.plumbing.vega --restyle`)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    ids = page_template.plot_ids(ROOT / "dvc.yaml")
    assert text == page_template.page(page_template.inlined_scripts(TEMPLATE), ids)
    assert "{plot_divs}" in text and "{refresh_tag}" in text and "cdn." not in text, "DVC's placeholders; offline"


def test_the_page_fits_the_figures_to_its_width():
    """DVC writes each image plot's boxes side by side at the images' full width (white-space:
    nowrap in the element's style attribute); the page lets them wrap and scales the images."""
    style = re.search(r"<style>(.*?)</style>", TEMPLATE.read_text(encoding="utf-8"), re.S).group(1)
    rules = {
        " ".join(selector.split()): body
        for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", style, flags=re.S))
    }
    assert "max-width: 100%" in rules[".plots img"] and "height: auto" in rules[".plots img"]
    image = next(body for selector, body in rules.items() if selector.startswith('.plots > [id$="_png"],'))
    assert "white-space: normal !important" in image and "min-width: 0" in image
    boxes = next(body for selector, body in rules.items() if selector.startswith('.plots > [id$="_png"] > div,'))
    assert "max-width: calc(100% - 16px)" in boxes


def css_order(page: str) -> dict[str, int]:
    """The CSS order the page gives each element id."""
    return {i: int(n) for i, n in re.findall(r'\.plots > \[id="([^"]+)"\] \{ order: (\d+); \}', page)}


def test_the_page_shows_the_plots_in_dvc_yamls_order(repo):
    """DVC writes the image plots last, sorted by folder (plots/classifier, dpo, instruct, pretrain);
    the page's CSS order puts every plot at its place in dvc.yaml: each stage's figures after its
    charts, the stages in book order."""
    work, env = repo
    write_curves(work, shift=-1.0)
    wanted = page_template.plot_ids(work / "dvc.yaml")
    for command in ("show", "diff"):
        sh([*DVC, "plots", command, "-o", f"page-{command}"], work, env)
        page = (work / f"page-{command}" / "index.html").read_text(encoding="utf-8")
        body = page[page.rindex("<body>") :]
        written = re.findall(r'<div\s+id\s*=\s*"([^"]+)"', body)
        assert sorted(written) == sorted(wanted), command
        order = css_order(page)
        shown_order = sorted(written, key=lambda i: order.get(i, 100000))
        assert shown_order == wanted, command
    images = [i for i in wanted if i.endswith("_png")]
    assert [next(s for s in STAGES if f"_{s}_" in i) for i in images] == [
        "pretrain",
        "classifier",
        "classifier",
        "instruct",
        "dpo",
        "dpo",
    ]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium(request) -> None:
    """Skip without chromium; fail under ``-m browser``, which asks for it."""
    if CHROMIUM is None:
        if "browser" in (request.config.getoption("markexpr") or ""):
            pytest.fail("chromium is not on PATH (Debian: apt-get install chromium)")
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")


def dump_dom(page: Path, profile: Path, width: int = 1400) -> subprocess.CompletedProcess:
    """``page`` loaded in headless Chromium (its scripts run), the DOM on stdout, the console on stderr."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={width},2000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.browser
def test_the_page_draws_every_chart(repo, request, tmp_path):
    """`make plots-screenshot` on the scratch copy; then the same page's DOM after its scripts ran:
    one drawn chart per vega plot, no script error, and a screenshot that is not blank."""
    need_chromium(request)
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
    run = dump_dom(page / "index.html", tmp_path / "profile")
    assert run.returncode == 0, run.stderr
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "error" in line.lower()]
    assert not errors, "\n".join(errors)
    drawn = re.findall(r'<div id="([^"]+)"[^>]*class="vega-embed', run.stdout)
    assert len(drawn) == len(vega), (drawn, vega)
    assert run.stdout.count('class="marks"') == len(vega), "a canvas per chart"


PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const box = (e) => e.getBoundingClientRect();
  const plots = [...document.querySelectorAll(".plots > div")].filter((d) => box(d).height > 0);
  plots.sort((a, b) => box(a).top - box(b).top || box(a).left - box(b).left);
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    width: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth,
    images: [...document.images].map((i) => [Math.round(box(i).left), Math.round(box(i).right), i.naturalWidth]),
    order: plots.map((d) => d.id),
  });
  document.body.appendChild(probe);
}, 500));
</script>"""


@pytest.mark.browser
def test_the_figures_fit_the_page_in_dvc_yamls_order(repo, request, tmp_path):
    """`dvc plots diff` of two runs in a 1400-pixel window: every figure (1050 pixels wide, two runs
    side by side) inside the page, nothing to scroll sideways, and the plots top to bottom in
    dvc.yaml's order."""
    need_chromium(request)
    work, env = repo
    write_curves(work, shift=-1.0)
    sh([*DVC, "plots", "diff", "-o", "page"], work, env)
    probed = work / "page" / "probe.html"
    probed.write_text((work / "page" / "index.html").read_text(encoding="utf-8") + PROBE, encoding="utf-8")
    run = dump_dom(probed, tmp_path / "profile", width=1400)
    assert run.returncode == 0, run.stderr
    found = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S).group(1))
    assert len(found["images"]) == 12, found["images"]  # 6 figures, 2 runs
    assert all(natural == 1050 for _, _, natural in found["images"]), "the images loaded"
    assert found["scrollWidth"] <= found["width"], found
    assert all(0 <= left and right <= found["width"] for left, right, _ in found["images"]), found
    assert found["order"] == page_template.plot_ids(work / "dvc.yaml")
