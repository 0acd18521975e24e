"""Scratch git + DVC repositories for tests that run DVC itself (plots, exp show, the pipeline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DVC = [sys.executable, "-m", "dvc"]


def sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> str:
    """Run ``cmd`` in ``cwd``; its stdout, or a failed assertion with both streams."""
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def repo_env(**extra: str) -> dict[str, str]:
    """The environment: this interpreter's dvc first on PATH, a git identity, and ``extra``."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **extra,
    }


def init_repo(work: Path, env: dict[str, str]) -> None:
    """git init + dvc init (no analytics) in ``work``."""
    sh(["git", "init", "-q"], work, env)
    sh([*DVC, "init", "-q"], work, env)
    sh([*DVC, "config", "core.analytics", "false"], work, env)
