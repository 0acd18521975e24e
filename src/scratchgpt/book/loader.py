"""What the book's DataLoaders do, without one, and the losses it measures over their batches.

The order in which a fresh DataLoader visits the samples is drawn from the global RNG with the
same numbers the DataLoader draws, so the book's batch order and dropout masks follow from
``torch.manual_seed`` (also across evaluations, which read fresh loaders); batches are made of
samples as its collate functions make them; a model is measured as chapter 5's calc_loss_batch,
calc_loss_loader and evaluate_model (and chapter 6's calc_accuracy_loader) measure it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scratchgpt.device import autocast


def seed_everything(seed: int) -> None:
    """One seed for torch (CPU and CUDA), numpy and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _draw_seed() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())


def epoch_order(n: int, shuffle: bool) -> list[int]:
    """The order in which a fresh ``DataLoader`` iterator (no generator, no workers) visits
    ``n`` samples, consuming the same numbers from the global RNG: a base seed, then for a
    RandomSampler the seed of its own generator."""
    _draw_seed()  # DataLoader iterator's base seed
    if not shuffle:
        return list(range(n))
    generator = torch.Generator()
    generator.manual_seed(_draw_seed())
    return torch.randperm(n, generator=generator).tolist()


def batches(order: Sequence[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    out = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out


Batch = tuple[torch.Tensor, ...]


CollateFn = Callable[[list[Any]], Batch]


def stack(samples: list[Any]) -> Batch:
    """Samples that are tuples of equal-shaped tensors, stacked."""
    return tuple(torch.stack(p) for p in zip(*samples))


def collate(
    dataset: Dataset, indices: Sequence[int], device: torch.device, collate_fn: CollateFn | None = None
) -> Batch:
    """The batch of samples ``dataset[i]``, made by ``collate_fn`` (default: stacked), on ``device``."""
    batch = (collate_fn or stack)([dataset[i] for i in indices])
    return tuple(t.to(device, non_blocking=True) for t in batch)


LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
Measure = Callable[[torch.nn.Module, Batch], tuple[Sequence[float], int]]
Measures = tuple[Sequence[str], Measure]  # what an evaluation measures: names, and sums per batch


def lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy of (input, target) windows (the book's calc_loss_batch)."""
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())


class Evaluator:
    """Measures a model on the first batches of fresh passes over the data, drawing the random
    numbers the book's DataLoaders draw (training data shuffled with drop_last, other splits
    in order), as its calc_loss_loader / calc_accuracy_loader do."""

    def __init__(
        self,
        model: torch.nn.Module,
        data: dict[str, Dataset],
        batch_size: int,
        loss_fn: LossFn,
        device: torch.device,
        collate_fn: CollateFn | None = None,
        precision: str = "fp32",
    ):
        self.model, self.data, self.batch_size, self.loss_fn, self.device = model, data, batch_size, loss_fn, device
        self.collate_fn, self.precision = collate_fn, precision

    @torch.no_grad()
    def measure(self, split: str, n_batches: int | None, measure: Measure, draw: bool = True) -> list[float]:
        """Totals of ``measure`` (sums, count) over the first ``n_batches`` batches of ``split``
        (all when None), each divided by the total count.

        ``draw``: consume random numbers like a fresh DataLoader iterator (False: leave the
        global RNG alone and read the split in order)."""
        dataset = self.data[split]
        shuffle = split == "train"
        order = epoch_order(len(dataset), shuffle) if draw else range(len(dataset))
        chosen = batches(order, self.batch_size, drop_last=shuffle)
        if n_batches is not None:
            chosen = chosen[:n_batches]
        totals: list[float] = []
        count = 0
        whole = n_batches is None and len(chosen) > 1  # a final evaluation: shown, it may take minutes
        with autocast(self.device, self.precision):  # one region: bf16 weight casts made once
            for indices in tqdm(
                chosen, desc=f"evaluating {split}", unit="batch", leave=False, disable=None if whole else True
            ):
                sums, n = measure(self.model, collate(dataset, indices, self.device, self.collate_fn))
                totals = [t + v for t, v in zip(totals, sums)] if totals else list(sums)
                count += n
        return [t / count for t in totals] if count else [float("nan")]

    def loss(self, split: str, n_batches: int | None, draw: bool = True) -> float:
        """Mean of the per-batch mean losses (the book's calc_loss_loader)."""
        return self.measure(split, n_batches, lambda m, b: ([self.loss_fn(m, b).item()], 1), draw)[0]

    def evaluate(self, n_batches: int, measures: Measures | None = None) -> dict[str, float]:
        """The book's evaluate_model: train_loss and val_loss over the first ``n_batches`` batches
        of fresh passes, the model in eval mode meanwhile; with ``measures`` (names, measure) each
        name's per-batch mean instead, as train_<name> and val_<name>."""
        self.model.eval()
        values: dict[str, float] = {}
        for split in ("train", "val"):
            if measures is None:
                values[f"{split}_loss"] = self.loss(split, n_batches)
            else:
                names, measure = measures
                values |= {f"{split}_{k}": v for k, v in zip(names, self.measure(split, n_batches, measure))}
        self.model.train()
        return values
