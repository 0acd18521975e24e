"""What the training stages (pretrain, finetune_classifier, finetune_instruct, finetune_dpo) share around
the book's loop: this process's place in a ``torchrun`` job and its device, the run's
fingerprint and resume folder, DVCLive on rank 0, and the untracked memory figure.

A stage script reads::

    run = training.start(st, "classifier")       # processes, device, settings of params.classifier
    ...                                            # data and model: the stage's own
    progress = run.fit(model, train_data, val_data, loss_fn=..., curves=[...], epoch_end=...)
    if run.is_main:
        ...                                        # final measures, model directory, figures
        run.finish(summary)
    run.dist.barrier()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from scratchgpt.book.loader import CollateFn, LossFn, Measures
from scratchgpt.book.train import EpochEnd, Hooks, Progress, Setup, TrainConfig, train
from scratchgpt.device import check_precision, peak_memory_mb
from scratchgpt.files import write_json
from scratchgpt.formats.checkpoint import Checkpoints
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.checkpointing import Checkpointing
from scratchgpt.plumbing.distributed import Dist, init_distributed
from scratchgpt.plumbing.live import LiveLogger, perplexity
from scratchgpt.plumbing.stage import Stage

log = logging.getLogger(__name__)

# Params that never change what a run computes: left out of its fingerprint (the launcher's
# number of processes is in it as the world size).
NOT_IN_FINGERPRINT = ("device", "launcher", "checkpoint_every", "checkpoint_share")
# The curve the language-model stages derive from each evaluation's validation loss.
VAL_PERPLEXITY = {"val_perplexity": lambda point: perplexity(point["val_loss"])}


@dataclass
class TrainingRun:
    """One training stage's run: ``section`` names its params (``pretrain``, ``classifier``,
    ``instruct``, ``dpo``); its metrics go to ``metrics/<metrics>/``."""

    st: Stage
    section: str
    metrics: str
    dist: Dist
    device: torch.device
    logger: LiveLogger | None = field(default=None, init=False)

    @property
    def params(self) -> Any:
        """The stage's params section."""
        return getattr(self.st.params, self.section)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def precision(self) -> str:
        return self.params.precision

    @property
    def model_meta(self) -> dict[str, Any]:
        """What the model folder's metadata says of the run: its precision, when not fp32 (an fp32
        folder stays byte for byte what it was before bf16 existed)."""
        return {} if self.precision == "fp32" else {"precision": self.precision}

    @property
    def metrics_dir(self) -> Path:
        return paths.METRICS / self.metrics

    def fit(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        val_data: Dataset,
        *,
        loss_fn: LossFn,
        curves: Sequence[str],
        epoch_curves: Sequence[str] = (),
        epochs_file: str | None = None,
        derived: dict[str, Callable[[dict[str, Any]], float]] | None = None,
        echo: Callable[[dict[str, Any]], str] | None = None,
        epoch_end: EpochEnd | None = None,
        collate_fn: CollateFn | None = None,
        measures: Measures | None = None,
        fingerprint_exclude: Sequence[str] = (),
    ) -> Progress:
        """Train with the section's settings, resuming from this run's checkpoint when there is
        one; on rank 0 ``curves`` (keys of each evaluation) and ``epoch_curves`` (keys of each
        epoch entry) go to DVCLive, the epoch entries to ``epochs_file``."""
        exclude = [f"{self.section}.{key}" for key in (*NOT_IN_FINGERPRINT, *fingerprint_exclude)]
        fingerprint = self.st.fingerprint(exclude=exclude, extra=[self.dist.world_size])
        if self.is_main:
            self.logger = LiveLogger(
                self.st.out(self.metrics_dir), curves, epoch_curves, epochs_file=epochs_file, derived=derived, echo=echo
            )
        with self.st.resume_dir(fingerprint) as folder:
            cfg = TrainConfig.from_params(self.params)
            setup = Setup(
                cfg,
                loss_fn,
                self.device,
                epoch_end=epoch_end,
                collate_fn=collate_fn,
                measures=measures,
                hooks=self.logger.hooks() if self.logger else Hooks(),
                checkpoints=Checkpointing(Checkpoints(folder, fingerprint), cfg.checkpoint_share, self.dist),
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )
            return train(model, train_data, val_data, setup)

    def write_splits(self, folder: Path, parts: dict[str, list[Any]], what: str) -> None:
        """Rank 0: each split as ``<folder>/<name>.json`` (``folder`` as :meth:`Stage.out` gives it)
        and a line counting them."""
        if not self.is_main:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in parts.items():
            write_json(folder / f"{name}.json", part)
        log.info("%s: %s", what, ", ".join(f"{k} {len(v):,}" for k, v in parts.items()))

    def finish(self, summary: dict[str, Any], memory: bool = True) -> None:
        """Rank 0: the DVCLive summary; with ``memory`` the peak memory beside the metrics, in a
        file git and DVC do not track (it varies from run to run)."""
        assert self.logger is not None, "finish() is for rank 0 after fit()"
        self.logger.finish(summary)
        if memory:
            write_json(self.metrics_dir / "memory.json", {"peak_memory_mb": round(peak_memory_mb(self.device), 1)})


def start(st: Stage, section: str, metrics: str | None = None) -> TrainingRun:
    """Join the ``torchrun`` job if there is one and pick the device ``params.<section>.device`` asks
    for; refuse a precision the device would emulate."""
    p = getattr(st.params, section)
    dist_info, device = init_distributed(p.device)
    check_precision(p.precision, device)
    return TrainingRun(st, section, metrics or section, dist_info, device)
