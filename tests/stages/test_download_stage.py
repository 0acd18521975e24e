"""The download stage as a real process against a hostile server on 127.0.0.1: however it ends
(an error, a body past its cap, the deadline, SIGTERM), data/raw/<dataset> keeps its previous
complete copy and nothing partial is left anywhere in the working folder."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from committed import committed
from scratchgpt.plumbing import paths
from scripted_server import Reply

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = b"the previous complete copy\n"


@pytest.fixture
def work(tmp_path):
    """A working folder with the pipeline's code and a previous copy of data/raw/verdict."""
    for code in ("stages", "src"):
        (tmp_path / code).symlink_to(ROOT / code)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / paths.raw("verdict")).mkdir(parents=True)
    (tmp_path / paths.raw("verdict") / "the-verdict.txt").write_bytes(PREVIOUS)
    return tmp_path


def start(work: Path, url: str, **http) -> subprocess.Popen:
    params = yaml.safe_load((committed("params.yaml")).read_text())
    params["download"]["http"].update(http)
    params["download"]["datasets"]["verdict"]["files"][0].update(urls=[url], size=20_479)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHGPT_MIRROR"}  # the hostile server or nothing
    env["TQDM_DISABLE"] = "1"
    return subprocess.Popen(
        [sys.executable, "stages/download.py", "verdict"], cwd=work, env=env, stderr=subprocess.PIPE, text=True
    )


def partial_leftovers(work: Path) -> list[str]:
    return sorted(
        str(p.relative_to(work))
        for p in work.rglob("*")
        if ".partial" in p.name or p.name.endswith((".tmp", ".old")) or p.parent.name == "staging"
    )


@pytest.mark.parametrize("end", ["error", "cap", "deadline", "sigterm"])
def test_however_the_stage_ends_the_previous_copy_stays_and_nothing_partial(server, work, end):
    verdict = b"x" * 20_479  # any body: none of these ends delivers a whole verified file
    reply = {
        "error": Reply(status=404),
        "cap": Reply(verdict, repeat=1000, length=False),
        "deadline": Reply(verdict, trickle=0.2),
        "sigterm": Reply(verdict, trickle=0.2),
    }[end]
    url = server.route("/the-verdict.txt", reply)
    proc = start(work, url, retries=0, read_timeout=2, total_timeout=1.5)
    if end == "sigterm":
        deadline = time.monotonic() + 30
        while not server.hits("/the-verdict.txt") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if end == "sigterm":
        assert proc.returncode == 143, stderr[-2000:]
        assert last.startswith("download@verdict: interrupted (SIGTERM); nothing of this run was kept"), last
    else:
        assert proc.returncode == 1, stderr[-2000:]
        expected = {
            "error": "HTTP 404",
            "cap": "body passed 20479 bytes (the declared size of the-verdict.txt)",
            "deadline": "not complete after total_timeout 1.5 s",
        }[end]
        assert expected in stderr, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert os.listdir(work / paths.raw("verdict")) == ["the-verdict.txt"]
    assert (work / paths.raw("verdict") / "the-verdict.txt").read_bytes() == PREVIOUS
    assert partial_leftovers(work) == []
