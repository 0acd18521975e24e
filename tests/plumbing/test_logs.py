"""One log format and level for stages and the command; third-party chatter kept out."""

import logging
import subprocess
import sys

import pytest

from scratchgpt.plumbing import logs


@pytest.fixture
def fresh_root(monkeypatch):
    """configure() on a root logger without handlers, as in a new process; restored afterwards."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    absl = logging.getLogger("absl")
    monkeypatch.setattr(absl, "level", absl.level)
    return root


def test_level_from_the_environment(monkeypatch, fresh_root):
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    assert logs.configure() == logging.INFO
    assert logging.getLogger("absl").level == logging.WARNING
    fresh_root.handlers = []
    monkeypatch.setenv(logs.LEVEL_ENV, "debug")
    assert logs.configure() == logging.DEBUG
    assert fresh_root.level == logging.DEBUG


def test_a_wrong_level_is_one_line(monkeypatch):
    monkeypatch.setenv(logs.LEVEL_ENV, "loud")
    with pytest.raises(SystemExit, match="SCRATCHGPT_LOG_LEVEL=loud: expected one of debug"):
        logs.configure()


def test_rouge_scores_without_absl_chatter():
    """rouge-score logs "Using default tokenizer." through absl at INFO on every scorer it builds."""
    code = (
        "from scratchgpt.plumbing import logs; logs.configure();"
        "from scratchgpt.book.scoring import rouge_l_f1; print(round(rouge_l_f1('a cat sat', 'a cat sat'), 3))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1.0"
    assert done.stderr == ""
