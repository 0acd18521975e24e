"""How the stages and the ``scratchgpt`` command log: one format, a level from the environment,
and third-party loggers kept quiet.

``SCRATCHGPT_LOG_LEVEL=debug dvc repro`` shows what is hidden by default, e.g. every download
source that failed before the one that served a file.
"""

from __future__ import annotations

import logging
import os

LEVEL_ENV = "SCRATCHGPT_LOG_LEVEL"
FORMAT = "%(levelname)s %(name)s: %(message)s"
# Libraries that log at INFO what a user has no use for (rouge-score's absl: "Using default tokenizer.").
QUIET = ("absl",)


def level_from_env(default: int = logging.INFO) -> int:
    """The level named by $SCRATCHGPT_LOG_LEVEL (debug, info, warning, error), else ``default``."""
    name = os.environ.get(LEVEL_ENV, "").strip().upper()
    if not name:
        return default
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise SystemExit(f"error: {LEVEL_ENV}={name.lower()}: expected one of debug, info, warning, error")
    return level


def configure(default: int = logging.INFO) -> int:
    """Set up the root logger once for a process; returns the level in use."""
    level = level_from_env(default)
    logging.basicConfig(level=level, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return level
