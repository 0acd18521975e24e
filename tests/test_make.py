"""README's two commands: on a machine without .venv, `make repro` and `make test` create it and
install what each needs first (checked with `make -n`, which prints the recipe without running it)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["repro", "test", "setup"])
def test_a_fresh_clone_gets_its_venv_first(target, tmp_path):
    venv = tmp_path / "no-venv-yet"
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    steps = done.stdout
    assert f"-m venv {venv}" in steps
    assert "pip install --quiet -r requirements.txt" in steps
    assert "pip install --quiet --no-deps -e ." in steps
    # the pipeline installs no test tool (nor TensorFlow); the tests install them
    assert ("pip install --quiet -r requirements-dev.txt" in steps) == (target != "repro")
    if target != "setup":
        assert steps.index("-m venv") < steps.index({"repro": "dvc repro", "test": "-m pytest"}[target])
