"""The training loop's checkpoints (scratchgpt.book.train.Checkpointer) in a run's store
(scratchgpt.formats.checkpoint.Checkpoints): the model, the optimizer, the loop's progress (its
place in the epoch, that epoch's order, what it logged) and the state of every RNG, so a rerun
with the same fingerprint (params, data, code) resumes from the last checkpoint written, draws
the same random numbers as an uninterrupted run and ends with the same metrics; a different
fingerprint starts afresh.

A due checkpoint is written when that keeps the time spent writing checkpoints within
``checkpoint_share`` of the run (a 2 GB checkpoint after every 30-second epoch would otherwise
cost a sixth of it). In a ``torchrun`` job rank 0 decides, for every rank, and writes.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
import torch

from scratchgpt.book.train import Progress
from scratchgpt.plumbing.distributed import Dist


class CheckpointStore(Protocol):
    """Where a run's state is saved and found again (scratchgpt.formats.checkpoint.Checkpoints):
    ``load`` returns only a state saved by this very run (same fingerprint), or None."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuples(state["python"]))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class Checkpointing:
    """Checkpoints of one run in ``store``, written within ``share`` of its time by rank 0 of
    ``dist``."""

    def __init__(self, store: CheckpointStore, share: float = 1.0, dist: Dist | None = None):
        self.store, self.share, self.dist = store, share, dist or Dist()
        self.last_cost: float | None = None  # seconds the last checkpoint took to write
        self.writing = 0.0  # seconds all of them took
        self.started = time.perf_counter()

    def __str__(self) -> str:
        return str(self.store)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress | None:
        """The run starts: its last state, if any, loaded into ``model``, ``optimizer`` and the
        RNGs; its progress."""
        self.last_cost, self.writing, self.started = None, 0.0, time.perf_counter()
        saved = self.store.load()
        if saved is None:
            return None
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**saved["progress"])
        set_rng_state(saved["rng"])
        return progress

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
        """A checkpoint is due: rank 0 saves the whole state when the budget allows
        (:meth:`within_budget`); every rank waits for it."""
        if not self.dist.agree(self.within_budget(model, optimizer)):
            return
        if self.dist.is_main:
            start = time.perf_counter()
            self.store.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "progress": asdict(progress),
                    "rng": rng_state(),
                }
            )
            self.last_cost = time.perf_counter() - start
            self.writing += self.last_cost
        self.dist.barrier()

    def within_budget(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Whether writing a checkpoint now keeps all of this run's checkpoint writing within
        ``share`` of its time. A write is estimated to cost what the last one did, or before any,
        the state's size at 250 MB/s."""
        if self.share >= 1:
            return True
        cost = self.last_cost
        if cost is None:
            state = [*model.parameters(), *(t for s in optimizer.state.values() for t in s.values())]
            cost = sum(t.numel() * t.element_size() for t in state if torch.is_tensor(t)) / 250e6
        elapsed = time.perf_counter() - self.started
        return self.writing + cost <= self.share * (elapsed + cost)
