"""README's walkthrough as a new user types it, in a fresh clone, then the whole default suite in
that clone with the experiment still applied (slow: ``pytest -m slow tests/test_walkthrough.py``).

The clone is of the committed tree (``git clone``), run with this checkout's virtual
environment (``VENV``; the clone's requirement files are dated back so that ``make`` installs
nothing into it, which would repoint its editable install at the clone) and the clone's own
sources first on ``PYTHONPATH``. Its DVC cache is this checkout's when there is one, so download
and prepare come from DVC's run cache; the training stages were seen to run again, so
``make repro`` takes about the whole DAG's time (README's timing table), and the test about that
plus the suite's.

The commands are read from README, so the two cannot drift apart:
- the first block of "Experiments with DVC" up to its queued sweep (the sweep's
  ``dvc exp apply <name>`` and the remote at ``/mnt`` are placeholders, not commands to type);
- the ``scratchgpt`` commands of the "After `make repro`" paragraph (chat with an instruction piped in).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scratch_repo import repo_env, sh

ROOT = Path(__file__).resolve().parents[1]


def section(readme: str, heading: str) -> str:
    start = readme.index(heading)
    end = readme.find("\n## ", start + len(heading))
    return readme[start : end if end != -1 else len(readme)]


def walkthrough_commands(readme: str) -> list[str]:
    """The commands of the first bash block under "Experiments with DVC", each without its
    comment, up to the queued sweep."""
    block = section(readme, "## Experiments with DVC").split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        if line.startswith("# a small sweep"):
            break
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def after_repro_commands(readme: str) -> list[str]:
    """The ``scratchgpt`` commands the "After `make repro`" paragraph shows, as one line each."""
    paragraph = readme[readme.index("**After `make repro`**") :].split("\n\n", 1)[0]
    spans = re.findall(r"`(scratchgpt [^`]+)`", paragraph.replace("\n", " "))
    return [span for span in spans if span.split()[1] in ("classify", "generate", "chat")]


def test_readme_commands_are_found():
    """The extraction itself: the walkthrough holds an experiment and the commands that compare it
    (make compare before the experiment: after it, a changed metric is a real change, exit 1)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = walkthrough_commands(readme)
    assert commands[0] == "make repro" or commands[0] == "dvc repro"
    assert "dvc exp run -S classifier.lr=3e-4" in commands and "make exp-show" in commands
    assert commands.index("make compare") < commands.index("dvc exp run -S classifier.lr=3e-4")
    assert not any("<" in c or "/mnt" in c for c in commands), "only commands that run as typed"
    assert {c.split()[1] for c in after_repro_commands(readme)} == {"classify", "generate", "chat"}


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_walkthrough_then_the_suite(tmp_path, mirror):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        os.utime(clone / name, (0, 0))  # older than the venv's stamps: make installs nothing into it
    env = repo_env(  # COLUMNS: a 120-column terminal (DVC's tables assume 80 columns in a pipe)
        VENV=str(ROOT / ".venv"), PYTHONPATH=str(clone / "src"), SCRATCHGPT_MIRROR=str(mirror), COLUMNS="120"
    )
    if (ROOT / ".dvc" / "cache").is_dir():
        sh([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], clone, env)

    def typed(command: str, stdin: str | None = None, timeout: float = 3600) -> str:
        run = subprocess.run(
            command, shell=True, cwd=clone, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        assert run.returncode == 0, (
            f"`{command}` failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
        )
        return run.stdout

    typed("make repro")
    for command in walkthrough_commands(readme):
        out = typed(command)
        if command == "make exp-show":
            assert "classifier.lr" in out and max(map(len, out.splitlines())) <= 120
    numstat = sh(["git", "diff", "--numstat", "params.yaml"], clone, env).split()
    assert numstat[:2] == ["1", "1"], "one -S changes one line of params.yaml"

    for command in after_repro_commands(readme):
        out = typed(command, stdin="Name a color\n" if " chat " in f"{command} " else None, timeout=300)
        if " generate " in command:
            words = re.findall(r"[A-Za-z']+", out)
            assert "<unk>" not in out and "@-@" not in out
            assert len(set(words)) > len(words) / 3, f"a repeated word, not text: {out!r}"

    # the suite, with the experiment still applied in the clone's workspace
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=5400,
    )
    assert suite.returncode == 0, suite.stdout[-6000:] + suite.stderr[-2000:]
