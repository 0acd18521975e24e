"""The repository's files as git's index holds them, for tests: never the working copy's
params.yaml, dvc.lock or outputs, which `dvc exp run -S`, `dvc repro` and `dvc exp apply`
rewrite. So the suite passes after any experiment a user ran (README's walkthrough included).

    committed("params.yaml")   # a read-only copy of the staged params.yaml

Outside a git checkout (an unpacked release) the files are read where they are.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="scratchgpt-committed-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def committed(name: str) -> Path:
    """A copy of the repository file ``name`` (a path relative to its root) as staged in git."""
    try:
        data = subprocess.run(["git", "show", f":{name}"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        if (ROOT / ".git").exists():
            raise FileNotFoundError(f"{name} is not in git's index") from None
        return ROOT / name
    path = _folder() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    return path
