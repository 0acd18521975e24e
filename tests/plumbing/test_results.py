"""Named experiments' snapshots: what an experiment ref reproduced, copied into a git-tracked
file the report reads, and chapter 5's figure drawn from it."""

import json
import subprocess

import matplotlib.image
import pytest
import yaml

from scratchgpt import cli
from scratchgpt.book.printed import CH05_LOSSES
from scratchgpt.files import write_json, write_text
from scratchgpt.plumbing import figures, results


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def tsv(key, rows):
    return f"step\t{key}\n" + "".join(f"{s}\t{v}\n" for s, v in rows)


def ch05_curves(offset=0.0):
    """The book's 18 points as our TSV rows (plus ``offset``), tokens seen as the book counts."""
    return {
        "train_loss": [(s, t + offset) for s, t, _ in CH05_LOSSES],
        "val_loss": [(s, v + offset) for s, _, v in CH05_LOSSES],
        "tokens_seen": [(s, 512 * (s + 1)) for s, _, _ in CH05_LOSSES],
    }


@pytest.fixture
def repo(tmp_path):
    """A git repository with a baseline commit and an experiment ref named book-ch05 on top of it
    that reran pretrain (and left finetune_classifier as it was), as `dvc exp run` leaves them."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")

    def commit(lock, params, metrics, curves):
        write_text(tmp_path / "dvc.lock", yaml.safe_dump({"schema": "2.0", "stages": lock}))
        write_text(tmp_path / "params.yaml", yaml.safe_dump(params))
        for path, value in metrics.items():
            write_json(tmp_path / path, value)
        for key, rows in curves.items():
            write_text(tmp_path / "metrics/pretrain/plots/metrics" / f"{key}.tsv", tsv(key, rows))
        git(tmp_path, "add", "-A")
        git(tmp_path, "commit", "-qm", "c")

    pretrain_outs = [{"path": "metrics/pretrain/metrics.json"}, {"path": "metrics/pretrain/plots/metrics"}]
    classifier = {"outs": [{"path": "metrics/classifier/metrics.json", "md5": "c"}]}
    commit(
        {"pretrain": {"outs": pretrain_outs, "md5": "a"}, "finetune_classifier": classifier},
        {"model": {"emb_dim": 192}},
        {"metrics/pretrain/metrics.json": {"final_val_loss": 6.1}, "metrics/classifier/metrics.json": {"x": 1}},
        {"train_loss": [(0, 10.0)]},
    )
    commit(
        {"pretrain": {"outs": pretrain_outs, "md5": "b"}, "finetune_classifier": classifier},
        {"model": {"emb_dim": 768}},
        {"metrics/pretrain/metrics.json": {"final_val_loss": 6.526, "steps": 90}},
        ch05_curves(),
    )
    git(tmp_path, "update-ref", "refs/exps/ab/cdef/book-ch05", "HEAD")
    git(tmp_path, "reset", "-q", "--hard", "HEAD~1")  # the workspace is back at the baseline
    return tmp_path


def test_snapshot_round_trip(repo):
    path = results.snapshot("book-ch05", repo)
    assert path == repo / "metrics" / "experiments" / "book-ch05.json"
    snap = results.load_snapshot("book-ch05", repo / "metrics" / "experiments")
    assert snap["experiment"] == "book-ch05"
    assert snap["stages"] == ["pretrain"]  # the classifier's lock entry did not change
    assert snap["params"] == {"model": {"emb_dim": 768}}
    assert results.stage_metrics(snap, "pretrain") == {"final_val_loss": 6.526, "steps": 90}
    assert "metrics/classifier/metrics.json" not in snap["metrics"]
    assert results.curve(snap, "pretrain", "val_loss") == [(s, v) for s, _, v in CH05_LOSSES]
    assert results.curve(snap, "pretrain", "tokens_seen")[-1] == (85, 512 * 86)
    assert json.loads(path.read_text())["commit"] == git(repo, "rev-parse", "refs/exps/ab/cdef/book-ch05").strip()


def test_missing_experiment_and_snapshot(repo, tmp_path):
    with pytest.raises(results.ResultsError, match="no experiment named 'book-ch07'"):
        results.snapshot("book-ch07", repo)
    assert results.load_snapshot("book-ch05", tmp_path / "none") is None  # not run yet
    write_text(tmp_path / "bad" / "book-ch05.json", "{}")
    with pytest.raises(results.ResultsError, match="book-ch05.json: missing key"):
        results.load_snapshot("book-ch05", tmp_path / "bad")


def test_bad_tsv_names_the_file_and_line():
    with pytest.raises(results.ResultsError, match=r"x.tsv: line 3"):
        results.read_tsv("step\tv\n0\t1.0\nzero\tone\n", "x.tsv")


def snapshot_of(curves):
    return {
        "experiment": "book-ch05",
        "stages": ["pretrain"],
        "params": {},
        "metrics": {},
        "curves": {f"metrics/pretrain/plots/metrics/{k}.tsv": [list(r) for r in v] for k, v in curves.items()},
    }


def test_figure_command_writes_both_series(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_json(results.snapshot_path("book-ch05"), snapshot_of(ch05_curves(offset=0.05)))
    assert cli.main(["experiments", "figure", "book-ch05", "out/fig.png"]) == 0
    image = matplotlib.image.imread(tmp_path / "out" / "fig.png")
    assert image.shape[0] > 500 and image.shape[1] > 800
    assert capsys.readouterr().out.strip() == "out/fig.png"


def test_overlay_has_both_series_and_a_legend_off_the_curves():
    c = ch05_curves(offset=0.05)
    fig = figures.book_overlay_figure(
        {"train_loss": c["train_loss"], "val_loss": c["val_loss"]}, c["tokens_seen"], CH05_LOSSES, "t"
    )
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {
        "ours: training loss",
        "ours: validation loss",
        "the book: training loss",
        "the book: validation loss",
    }
    assert list(lines["the book: validation loss"].get_ydata()) == [v for _, _, v in CH05_LOSSES]
    assert list(lines["ours: training loss"].get_xdata()) == [512 * (s + 1) for s, _, _ in CH05_LOSSES]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = (fig.legends[0] if fig.legends else ax.get_legend()).get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert not legend.overlaps(axes), "the legend must not cover the curves"


def test_figure_without_a_snapshot_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["experiments", "figure", "book-ch05", "x.png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics/experiments/book-ch05.json: no snapshot" in err
    write_json(results.snapshot_path("book-ch05"), snapshot_of({"train_loss": [(0, 1.0)], "val_loss": [(0, 1.0)]}))
    assert cli.main(["experiments", "figure", "book-ch05", "x.png"]) == 1
    assert "experiment book-ch05: no tokens_seen points" in capsys.readouterr().err
