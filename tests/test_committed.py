"""The tests read params.yaml, dvc.lock and the tracked outputs as committed, never as a
user's experiment left them in the working copy (`dvc exp run -S classifier.lr=3e-4` rewrites
params.yaml; `dvc repro` rewrites dvc.lock and metrics/)."""

import re
import subprocess

import committed as committed_module
from committed import ROOT, committed

WORKSPACE_FILES = re.compile(r"""(ROOT|parents\[\d\])\s*/\s*["'](params\.yaml|dvc\.lock|metrics|plots|models|data)\b""")


def test_a_file_is_read_as_staged_not_as_the_working_copy_holds_it(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("classifier:\n  lr: 5.0e-05\n")
    subprocess.run([*git, "add", "params.yaml"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "params"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("classifier:\n  lr: 0.0003\n")  # what `dvc exp run -S` leaves
    monkeypatch.setattr(committed_module, "ROOT", repo)
    committed.cache_clear()
    try:
        assert committed("params.yaml").read_text() == "classifier:\n  lr: 5.0e-05\n"
    finally:
        committed.cache_clear()


def test_no_test_reads_the_working_copys_params_lock_or_outputs():
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name not in ("committed.py", "test_committed.py")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if WORKSPACE_FILES.search(line)
    ]
    assert not found, "read these with committed(...):\n" + "\n".join(found)
    assert WORKSPACE_FILES.search('load_params(ROOT / "params.yaml")')
