"""Metrics of a training stage through DVCLive (on rank 0): a TSV row per evaluation and per
epoch under ``<dir>/plots/metrics/``, the summary ``<dir>/metrics.json``, and the epoch entries
as JSON beside them. On resume the training loop replays the logged history, so the files end
exactly as an uninterrupted run leaves them.

While a run trains, ``metrics.json`` shows DVCLive's latest values (step, losses, lr: what
``dvc exp show`` of a running experiment displays); when it ends, the file holds the stage's
measured results only (``finish``): the curves' last points stay in the TSVs and would crowd
``dvc metrics show`` and ``dvc exp show``."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dvclive import Live

from scratchgpt.book.train import Hooks
from scratchgpt.files import NonFiniteValue, write_json


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


EOT = "<|endoftext|>"
_EOT_RUN = re.compile(r"(?:<\|endoftext\|>(?:\s|\\n)*){2,}")


def collapse_eot(text: str) -> str:
    """``text`` for a log line: each run of <|endoftext|> tokens (a model that has learned to end
    its texts repeats them) as one, with its count; the samples file keeps them all."""

    def one(match: re.Match[str]) -> str:
        return f"{EOT}×{match.group().count(EOT)} "

    return _EOT_RUN.sub(one, text)


class LiveLogger:
    """``eval_keys``/``epoch_keys`` of the loop's evaluation points and epoch entries become
    curves (x: optimizer step); ``derived`` adds computed curves (e.g. perplexity)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        eval_keys: Sequence[str],
        epoch_keys: Sequence[str] = (),
        epochs_file: str | None = None,
        derived: dict[str, Callable[[dict[str, Any]], float]] | None = None,
        echo: Callable[[dict[str, Any]], str] | None = None,
    ):

        self.dir = Path(directory)
        self.live = Live(dir=str(self.dir), dvcyaml=False, save_dvc_exp=False, report=None)
        self.eval_keys, self.epoch_keys = list(eval_keys), list(epoch_keys)
        self.epochs_file, self.derived, self.echo = epochs_file, derived or {}, echo
        self.entries: list[dict[str, Any]] = []

    def _check(self, values: dict[str, Any]) -> None:
        bad = [f"{k}={v}" for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise NonFiniteValue(f"{self.dir}: not logged, not finite: {', '.join(bad)}")

    def _log(self, step: int, values: dict[str, Any]) -> None:
        self._check(values)
        self.live.step = int(step)
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.make_summary()

    def on_eval(self, point: dict[str, Any]) -> None:
        values = {k: point[k] for k in self.eval_keys}
        values.update({k: f(point) for k, f in self.derived.items()})
        self._log(point["step"], values)

    def on_epoch(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        if self.epoch_keys:
            self._log(entry["step"], {k: entry[k] for k in self.epoch_keys})
        if self.echo:
            print(collapse_eot(self.echo(entry)), flush=True)
        if self.epochs_file:
            write_json(self.dir / self.epochs_file, self.entries)

    def hooks(self) -> Hooks:
        """The training loop's callbacks that log to this run."""
        return Hooks(on_eval=self.on_eval, on_epoch=self.on_epoch)

    def finish(self, summary: dict[str, Any]) -> None:
        """End the run; ``metrics.json`` becomes ``summary`` alone (DVCLive's own summary adds the
        last step's curve values and ``step``)."""
        self._check(summary)
        self.live.end()
        write_json(self.live.metrics_file, summary)
