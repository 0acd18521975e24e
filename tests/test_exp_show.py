"""`make exp-show`: the `dvc exp show` invocation that fits a 120-column terminal, run on a scratch
git repository holding the repository's params.yaml and metrics files and two saved
experiments that changed one param."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from committed import committed
from scratch_repo import DVC, init_repo, repo_env, sh

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = {  # one measured result per stage that trains or scores
    "final_val_loss": "metrics/pretrain/metrics.json",
    "test_accuracy": "metrics/classifier/metrics.json",
    "finetuned_val_loss": "metrics/instruct/metrics.json",
    "instruct_rouge_l": "metrics/evaluate.json",
}


def exp_show_command() -> list[str]:
    """The command `make exp-show` runs, as make expands it."""
    out = subprocess.run(["make", "-n", "-s", "-f", str(ROOT / "Makefile"), "exp-show"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout.replace("\\\n", " "))


def metrics_files() -> list[str]:
    """Every metrics file dvc.yaml declares (prepare's foreach expanded over params.yaml)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    corpora = yaml.safe_load((committed("params.yaml")).read_text())["prepare"]["corpora"]
    files = []
    for stage in stages.values():
        for entry in stage.get("do", stage).get("metrics", []):
            name = next(iter(entry)) if isinstance(entry, dict) else entry
            files += [name.replace("${key}", c) for c in corpora] if "${key}" in name else [name]
    return files


def test_the_headline_keys_name_one_file_each():
    """A key in one metrics file only shows as its bare name (DVC prefixes the file otherwise),
    and the --keep pattern is exactly the headline."""
    where: dict[str, list[str]] = {}
    for name in metrics_files():
        for key in json.loads(committed(name).read_text()):
            where.setdefault(key, []).append(name)
    assert {key: where.get(key) for key in HEADLINE} == {key: [file] for key, file in HEADLINE.items()}
    cmd = exp_show_command()
    keep = cmd[cmd.index("--keep") + 1]
    assert keep == f"(Experiment|{'|'.join(HEADLINE)})$"


def test_exp_show_fits_120_columns(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("params.yaml", *metrics_files()):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(committed(name), work / name)
    # The repository's metrics files and params without its stages (`dvc exp save` would need
    # every stage's dependencies and outputs).
    (work / "dvc.yaml").write_text(yaml.safe_dump({"metrics": metrics_files(), "params": ["params.yaml"]}))
    env = repo_env(COLUMNS="120")
    init_repo(work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "baseline"], work, env)
    for name, lr in (("lr-3e-4", 3e-4), ("lr-1e-3", 1e-3)):  # two experiments, one changed param
        params = yaml.safe_load((committed("params.yaml")).read_text())
        params["classifier"]["lr"] = lr
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for key, file in HEADLINE.items():
            values = json.loads((ROOT / file).read_text())
            values[key] = round(values[key] * lr * 1000, 6)  # every stage's result differs
            (work / file).write_text(json.dumps(values))
        sh([*DVC, "exp", "save", "-n", name], work, env)

    table = sh(exp_show_command(), work, env)
    lines = table.strip("\n").splitlines()
    assert max(len(line) for line in lines) <= 120, table
    assert "…" not in table, f"a column collapsed:\n{table}"
    header = next(line for line in lines if "Experiment" in line).split()
    assert header[0] == "Experiment" and set(header[1:5]) == set(HEADLINE), table
    assert header[5:] == ["classifier.lr"], table
    row = next(line for line in lines if "lr-3e-4" in line)
    accuracy = json.loads((ROOT / HEADLINE["test_accuracy"]).read_text())["test_accuracy"]
    assert "0.0003" in row and f"{round(accuracy * 0.3, 5):g}" in row, table


@pytest.mark.parametrize("doc", ["docs/pipeline.md"])
def test_the_docs_show_the_same_command(doc):
    text = (ROOT / doc).read_text()
    shown = re.search(r"^dvc exp show --only-changed .*$", text, re.M)
    assert shown, f"{doc}: no `dvc exp show --only-changed ...` line"
    assert shlex.split(shown.group(0)) == [a for a in exp_show_command() if a != "--no-pager"]
