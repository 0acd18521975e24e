"""What the parser and the commands share, with light imports only (``scratchgpt --help`` loads
this): the one-line error parser and its help layout, the argument types (each refuses a bad
value with the reason, argparse names the option), ``fail`` and stdin read as UTF-8."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scratchgpt.plumbing.dvc_lock import dvc_running

# formats.modeldir.CONFIG_FILE, read here without importing torch (tests/test_cli.py checks they agree)
CONFIG_FILE = "config.json"
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# weights download: formats.openai_download.OPENAI_PRESETS, named without importing torch (a test checks)
GPT2_SIZES = ("124M", "355M", "774M", "1558M")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is what --help prints)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, columns())))


def columns() -> int:
    """The terminal's width ($COLUMNS first), or 100 when output goes to a pipe or file."""
    return shutil.get_terminal_size((100, 24)).columns


def fail(args: argparse.Namespace, message: str) -> int:
    """A failure while running: one line, exit status 1."""
    one_line = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"{args.parser.prog}: error: {one_line}", file=sys.stderr)
    return 1


def stdin_lines(prog: str) -> Iterator[str]:
    """The lines of stdin read as UTF-8 whatever the locale; bytes that are not UTF-8 become
    U+FFFD, with one line of warning on stderr (the first time)."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # already text (a test's StringIO)
        yield from sys.stdin
        return
    warned = False
    for number, raw in enumerate(binary, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            if not warned:
                warned = True
                print(
                    f"{prog}: warning: stdin is not UTF-8 (line {number} first); "
                    "bytes that cannot be decoded are read as U+FFFD",
                    file=sys.stderr,
                    flush=True,
                )
            yield raw.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Argument types


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def natural(text: str) -> int:
    return _whole_number(text, 0)


def port(text: str) -> int:
    value = natural(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {value}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def temperature(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 is greedy), got {text}")
    return value


def top_p(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {text!r}")
    return text


def missing_output_hint(text: str) -> str:
    """Why a model folder of this workspace may be missing: DVC removes a stage's outputs while
    it reruns the stage and puts the new ones in place when it succeeds."""
    holder = dvc_running()
    if holder:
        return (
            f"; DVC is at work here ({holder}) and removes a stage's outputs until the stage succeeds: "
            f"try again when it is done, or `dvc checkout {text}` brings back the last one built"
        )
    return "; `make repro` (or `dvc repro`) builds the pipeline's models" if Path("dvc.yaml").is_file() else ""


def model_config(text: str) -> dict[str, Any]:
    """The config of model directory ``text``, or the reason it is not one."""
    path = Path(text) / CONFIG_FILE
    if not path.is_file():
        what = "no such directory" if not Path(text).exists() else f"no {CONFIG_FILE}, not a model directory"
        raise argparse.ArgumentTypeError(f"{text}: {what}{missing_output_hint(text)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise argparse.ArgumentTypeError(f'{path}: not a scratchgpt model config (no "model" section)')
    return data


def model_dir(text: str) -> str:
    """Any model directory: a language model or a classifier."""
    model_config(text)
    return text


def _is_classifier(config: dict[str, Any]) -> bool:
    return bool(config["model"].get("n_classes")) or "classifier" in config


def language_model(text: str) -> str:
    """A model directory that predicts the next token (not a classifier)."""
    config = model_config(text)
    if _is_classifier(config):
        n = config["model"].get("n_classes") or len(config.get("classifier", {}).get("labels", []))
        raise argparse.ArgumentTypeError(
            f"{text} is a classifier ({n}-class head), not a language model: use models/instruct or "
            "models/pretrained here, and `scratchgpt classify` for the classifier"
        )
    return text


def classifier(text: str) -> str:
    if not _is_classifier(model_config(text)):
        raise argparse.ArgumentTypeError(f"{text} is not a classifier (no classification head in {CONFIG_FILE})")
    return text
