import os
import sys
from pathlib import Path

import pytest

from scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the book's reference model lives with the benchmarks


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Resume checkpoints and downloaded weights go to a scratch cache, never the user's."""
    os.environ["SCRATCHGPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def run_stage():
    """``run_stage(name, params, fn)``: ``fn(st)`` inside a session of the dvc.yaml stage ``name``
    (params restricted to what it declares, outputs committed when ``fn`` returns), run in the
    current folder with the repository's code linked into it."""
    from scratchgpt import stage

    def run(name, params, fn):
        for code in ("stages", "src"):  # deps (and so fingerprints) are read relative to the working folder
            if not Path(code).exists():
                Path(code).symlink_to(ROOT / code)
        with stage.session(name, params, dvc_yaml=ROOT / "dvc.yaml") as st:
            return fn(st)

    return run


@pytest.fixture
def server():
    with ScriptedServer() as s:
        yield s


class Sleeps(list):
    """A stand-in for time.sleep that records what the code under test would have waited."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only data mirror ($SCRATCHGPT_MIRROR, else ../shared/data beside the repo)."""
    path = Path(os.environ.get("SCRATCHGPT_MIRROR") or ROOT.parent / "shared" / "data").resolve()
    if not (path / "the-verdict.txt").is_file():
        message = f"no data mirror at {path}: set SCRATCHGPT_MIRROR to a folder holding the data files"
        if os.environ.get("SCRATCHGPT_REQUIRE_MIRROR"):
            pytest.fail(message)
        pytest.skip(message)
    return path
