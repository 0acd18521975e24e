"""One log format and level for stages and the command; third-party chatter kept out."""

import logging
import subprocess
import sys

import pytest

from scratchgpt.plumbing import logs
from scratchgpt.plumbing.live import collapse_eot


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


def test_epoch_samples_in_the_log_show_a_run_of_end_tokens_once():
    """A model that ends its texts repeats <|endoftext|>: the log shows each run once with its
    count (samples.json keeps the text whole)."""
    sample = "Every effort<|endoftext|><|endoftext|>\n<|endoftext|> the end<|endoftext|>"
    assert collapse_eot(repr(sample)) == "'Every effort<|endoftext|>×3 the end<|endoftext|>'"
    assert collapse_eot("no end token") == "no end token"
