import os
import sys
from pathlib import Path

import pytest

from scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the book's reference model lives with the benchmarks


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
