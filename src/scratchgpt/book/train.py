"""The training loop of chapter 5 (with appendix D's warm-up, cosine decay and clipping), made
resumable, distributed and observable.

- Batches are drawn exactly as the book's shuffled ``DataLoader`` draws them after
  ``torch.manual_seed``: the same random numbers are consumed in the same order (also by each
  evaluation, which iterates fresh loaders like the book's ``calc_loss_loader``), so the run
  sees the book's batch order and dropout masks, and an epoch can resume mid-way.
- A checkpoint (model, optimizer, data position, RNG states, logged history) is due every
  ``checkpoint_every`` steps, at each epoch's end and at the last step; it is written when that
  keeps the time spent writing checkpoints within ``checkpoint_share`` of the run (a 2 GB
  checkpoint after every 30-second epoch would otherwise cost a sixth of it). A rerun with the
  same fingerprint (params, data, code) resumes from the last one written and ends with the same
  metrics as an uninterrupted run; a different fingerprint starts afresh.
- A non-finite loss stops the run with a clear error; the last good checkpoint is kept.
- ``torchrun --nproc_per_node N`` runs DistributedDataParallel (gloo on CPU, nccl on CUDA):
  each rank takes every N-th window of the shared order; rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scratchgpt.book.settings import TrainConfig
from scratchgpt.device import autocast, pick_device
from scratchgpt.errors import PipelineError

log = logging.getLogger(__name__)


class NonFiniteLoss(PipelineError, RuntimeError):
    """A loss or a weight became NaN or infinite; the last good checkpoint is kept, nothing of
    the diverged state is saved or logged."""


class TooLittleData(PipelineError, ValueError):
    """Fewer training samples than one optimizer step needs."""


def first_non_finite(model: torch.nn.Module) -> str | None:
    """The name of the first parameter that holds a NaN or an infinity, if any."""
    return next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)


# ---------------------------------------------------------------------------------------------
# Learning rate


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Appendix D: the learning rate of optimizer step ``step`` (0-based): linear warm-up from
    ``initial_lr`` to ``lr`` over ``warmup_steps``, then constant, or cosine decay to ``min_lr``
    by ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.initial_lr + step * (cfg.lr - cfg.initial_lr) / cfg.warmup_steps
    if not cfg.cosine:
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Randomness


def seed_everything(seed: int) -> None:
    """One seed for torch (CPU and CUDA), numpy and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


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


# ---------------------------------------------------------------------------------------------
# Distributed


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def agree(self, decision: bool) -> bool:
        """Rank 0's ``decision``, on every rank (a decision that reads the clock may differ)."""
        if not self.enabled:
            return decision
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        flag = torch.tensor([int(decision)], device=on)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def init_distributed(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return Dist(rank, world, local), device


# ---------------------------------------------------------------------------------------------
# Settings and state


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro: int = 0  # micro-batches of this epoch done
    epoch_order: list[int] = field(default_factory=list)
    tokens_seen: int = 0
    examples_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one entry per finished epoch
    untrained_val_loss: float | None = None
    complete: bool = False


@dataclass
class Hooks:
    """Callbacks of the loop: logging on rank 0 and a per-step probe for tests."""

    on_eval: Callable[[dict[str, float]], None] = lambda point: None
    on_epoch: Callable[[dict[str, Any]], None] = lambda entry: None
    after_step: Callable[[Progress], None] = lambda progress: None


class CheckpointStore(Protocol):
    """Where a run's state is saved and found again (scratchgpt.formats.checkpoint.Checkpoints):
    ``load`` returns only a state saved by this very run (same fingerprint), or None."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
Measure = Callable[[torch.nn.Module, Batch], tuple[Sequence[float], int]]
Measures = tuple[Sequence[str], Measure]  # what an evaluation measures: names, and sums per batch
EpochEnd = Callable[[torch.nn.Module, "Evaluator"], dict[str, Any]]


def lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy of (input, target) windows."""
    x, y = batch
    with autocast(x.device):
        logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


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
    ):
        self.model, self.data, self.batch_size, self.loss_fn, self.device = model, data, batch_size, loss_fn, device
        self.collate_fn = collate_fn

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
        for indices in chosen:
            sums, n = measure(self.model, collate(dataset, indices, self.device, self.collate_fn))
            totals = [t + v for t, v in zip(totals, sums)] if totals else list(sums)
            count += n
        return [t / count for t in totals] if count else [float("nan")]

    def loss(self, split: str, n_batches: int | None, draw: bool = True) -> float:
        """Mean of the per-batch mean losses (the book's calc_loss_loader)."""
        return self.measure(split, n_batches, lambda m, b: ([self.loss_fn(m, b).item()], 1), draw)[0]


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    model: torch.nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn,
    device: torch.device,
    checkpoints: CheckpointStore | None = None,
    epoch_end: EpochEnd | None = None,
    hooks: Hooks | None = None,
    dist_info: Dist | None = None,
    collate_fn: CollateFn | None = None,
    measures: Measures | None = None,
) -> Progress:
    """Train ``model`` (built after ``seed_everything``) on batches of ``train_data`` samples.

    Only parameters with ``requires_grad`` are optimized. After optimizer step s (0-based) with
    s % eval_freq == 0, the loss over the first ``eval_iter`` batches of a freshly shuffled
    training pass and of the validation data is logged (the book's evaluate_model); with
    ``measures`` (names, measure) the evaluation logs each name's per-batch mean instead, as
    train_<name> and val_<name>, the first name being "loss" (chapter 7's DPO: rewards too);
    ``epoch_end(model, evaluator)`` adds what each finished epoch reports (a text sample,
    accuracies). A state is saved as the module's docstring says (``checkpoint_share``).
    """
    run = _Run(
        model,
        train_data,
        val_data,
        cfg,
        loss_fn,
        device,
        checkpoints,
        epoch_end,
        hooks or Hooks(),
        dist_info or Dist(),
        collate_fn,
        measures,
    )
    progress = run.restore()
    with run.timed("evaluation"):
        run.measure_untrained()
    run.model.train()
    bar = tqdm(
        total=run.total_steps,
        initial=progress.step,
        desc="training",
        unit="step",
        disable=None if run.dist.is_main else True,
    )
    started, steps_at_start, tokens_at_start = time.perf_counter(), progress.step, progress.tokens_seen
    while not progress.complete:
        mine = run.my_batches()
        while progress.micro < run.micro_per_epoch and progress.step < run.total_steps:
            with run.timed("steps"):
                step, lr = run.step(mine)
            bar.update(1)
            if step % cfg.eval_freq == 0:
                with run.timed("evaluation"):
                    point = run.evaluate(step, lr)
                if run.dist.is_main:
                    bar.set_postfix(train=f"{point['train_loss']:.3f}", val=f"{point['val_loss']:.3f}")
            epoch_done = progress.micro >= run.micro_per_epoch
            if epoch_done or progress.step >= run.total_steps:
                with run.timed("epoch ends"):
                    run.end_of_epoch(epoch_done)
                with run.timed("checkpoints"):
                    run.checkpoint()
            elif cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                with run.timed("checkpoints"):
                    run.checkpoint()
            run.hooks.after_step(progress)
            if epoch_done:
                break
    bar.close()
    run.core.eval()
    run.check_weights()
    elapsed = time.perf_counter() - started
    if progress.step > steps_at_start and run.dist.is_main:
        log.info(
            "%d steps in %.0fs (%.0f tokens/s); time in %s",
            progress.step - steps_at_start,
            elapsed,
            (progress.tokens_seen - tokens_at_start) / elapsed,
            ", ".join(f"{name} {seconds:.1f}s" for name, seconds in run.seconds.items()),
        )
    return progress


class _Run:
    """The state one call of :func:`train` works on, and its named steps."""

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        val_data: Dataset,
        cfg: TrainConfig,
        loss_fn: LossFn,
        device: torch.device,
        checkpoints: CheckpointStore | None,
        epoch_end: EpochEnd | None,
        hooks: Hooks,
        dist_info: Dist,
        collate_fn: CollateFn | None,
        measures: Measures | None = None,
    ):
        if measures is not None and (not measures[0] or measures[0][0] != "loss"):
            raise ValueError(f"measures: the first name must be 'loss', got {list(measures[0])}")
        self.measures = measures
        self.cfg, self.loss_fn, self.device, self.checkpoints = cfg, loss_fn, device, checkpoints
        self.epoch_end, self.hooks, self.dist, self.collate_fn = epoch_end, hooks, dist_info, collate_fn
        self.train_data = train_data
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.core = self.model = model
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.evaluator = Evaluator(
            model, {"train": train_data, "val": val_data}, cfg.batch_size, loss_fn, device, collate_fn
        )
        self.per_rank = cfg.batch_size * dist_info.world_size
        self.micro_per_epoch = (len(train_data) // self.per_rank) // cfg.grad_accum * cfg.grad_accum
        steps_per_epoch = self.micro_per_epoch // cfg.grad_accum
        if steps_per_epoch == 0:
            raise TooLittleData(
                f"{len(train_data)} training samples are too few for one step of batch_size {cfg.batch_size} × "
                f"{dist_info.world_size} process(es) × grad_accum {cfg.grad_accum}"
            )
        self.total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.progress = Progress()
        self.seconds: dict[str, float] = {}  # wall time per part of the loop, for the log
        self.last_checkpoint_cost: float | None = None  # seconds the last checkpoint took to write
        self.checkpoint_writing = 0.0  # seconds all of them took
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def restore(self) -> Progress:
        """Continue from this run's last checkpoint, if any, and replay what it had logged."""
        saved = self.checkpoints.load() if self.checkpoints is not None else None
        if saved is not None:
            self.core.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.progress = Progress(**saved["progress"])
            set_rng_state(saved["rng"])
            log.info(
                "resuming from %s at step %d of %d (epoch %d)",
                self.checkpoints,
                self.progress.step,
                self.total_steps,
                self.progress.epoch + 1,
            )
        if self.dist.is_main:
            for point in self.progress.history:
                self.hooks.on_eval(point)
            for entry in self.progress.epochs:
                self.hooks.on_epoch(entry)
        return self.progress

    def measure_untrained(self) -> None:
        """The validation loss before training, read in order (outside the book's random stream)."""
        if self.progress.untrained_val_loss is None:
            self.core.eval()
            self.progress.untrained_val_loss = self.evaluator.loss("val", self.cfg.eval_iter, draw=False)

    def my_batches(self) -> list[list[int]]:
        """This rank's batches of the epoch: every world_size-th sample of the shared order."""
        progress = self.progress
        if progress.micro == 0:
            progress.epoch_order = epoch_order(len(self.train_data), shuffle=True)
        order = progress.epoch_order[: self.micro_per_epoch * self.per_rank]
        return batches(order[self.dist.rank :: self.dist.world_size], self.cfg.batch_size, drop_last=True)

    def step(self, mine: list[list[int]]) -> tuple[int, float]:
        """One optimizer step over grad_accum micro-batches; returns its (0-based) number and lr."""
        cfg, progress, world = self.cfg, self.progress, self.dist.world_size
        lr = learning_rate(cfg, progress.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for k in range(cfg.grad_accum):
            batch = collate(self.train_data, mine[progress.micro + k], self.device, self.collate_fn)
            sync = k == cfg.grad_accum - 1 or not self.dist.enabled
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss = self.loss_fn(self.model, batch)
                if not torch.isfinite(loss):
                    raise self.diverged(f"the training loss is {loss.item()}")
                (loss / cfg.grad_accum).backward()
            progress.tokens_seen += batch[0].numel() * world
            progress.examples_seen += batch[0].shape[0] * world
        if cfg.grad_clip > 0 and progress.step >= cfg.warmup_steps:
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.optimizer.step()
        progress.micro += cfg.grad_accum
        progress.step += 1
        return progress.step - 1, lr

    def evaluate(self, step: int, lr: float) -> dict[str, float]:
        """The book's evaluate_model: training and validation loss over eval_iter batches."""
        progress, n = self.progress, self.cfg.eval_iter
        self.core.eval()
        values: dict[str, float] = {}
        for split in ("train", "val"):
            if self.measures is None:
                values[f"{split}_loss"] = self.evaluator.loss(split, n)
            else:
                names, measure = self.measures
                values |= {f"{split}_{k}": v for k, v in zip(names, self.evaluator.measure(split, n, measure))}
        self.core.train()
        train_loss, val_loss = values["train_loss"], values["val_loss"]
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise self.diverged(f"the evaluation losses are {train_loss} (training) and {val_loss} (validation)")
        point = {
            "step": step,
            "epoch": progress.epoch + progress.micro / self.micro_per_epoch,
            "tokens_seen": progress.tokens_seen,
            "examples_seen": progress.examples_seen,
            "lr": lr,
            **values,
        }
        progress.history.append(point)
        if self.dist.is_main:
            self.hooks.on_eval(point)
            log.info(
                "Ep %d (Step %06d): Train loss %.3f, Val loss %.3f", progress.epoch + 1, step, train_loss, val_loss
            )
        return point

    def end_of_epoch(self, epoch_done: bool) -> None:
        """What an epoch's end (or the run's last step) reports; then the next epoch, or done."""
        progress = self.progress
        if self.epoch_end is not None:
            self.core.eval()
            entry = {"epoch": progress.epoch + 1, "step": progress.step, **self.epoch_end(self.core, self.evaluator)}
            self.core.train()
            progress.epochs.append(entry)
            if self.dist.is_main:
                self.hooks.on_epoch(entry)
        if epoch_done:
            progress.epoch, progress.micro = progress.epoch + 1, 0
        progress.complete = progress.epoch >= self.cfg.epochs or progress.step >= self.total_steps

    def checkpoint(self) -> None:
        """A checkpoint is due: check the weights, then save the whole state (rank 0) when the
        budget allows (:meth:`within_budget`)."""
        self.check_weights()
        if self.checkpoints is None or not self.dist.agree(self.within_budget()):
            return
        if self.dist.is_main:
            start = time.perf_counter()
            self.checkpoints.save(
                {
                    "model": self.core.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "progress": asdict(self.progress),
                    "rng": rng_state(),
                }
            )
            self.last_checkpoint_cost = time.perf_counter() - start
            self.checkpoint_writing += self.last_checkpoint_cost
        self.dist.barrier()

    def within_budget(self) -> bool:
        """Whether writing a checkpoint now keeps all of this run's checkpoint writing within
        ``checkpoint_share`` of its time. A write is estimated to cost what the last one did, or
        before any, the state's size at 250 MB/s."""
        share = self.cfg.checkpoint_share
        if share >= 1:
            return True
        cost = self.last_checkpoint_cost
        if cost is None:
            state = [*self.core.parameters(), *(t for s in self.optimizer.state.values() for t in s.values())]
            cost = sum(t.numel() * t.element_size() for t in state if torch.is_tensor(t)) / 250e6
        elapsed = time.perf_counter() - self.started
        return self.checkpoint_writing + cost <= share * (elapsed + cost)

    def check_weights(self) -> None:
        name = first_non_finite(self.core)
        if name is not None:
            raise self.diverged(f"parameter {name} is no longer finite")

    def diverged(self, what: str) -> NonFiniteLoss:
        progress = self.progress
        kept = f"the last good checkpoint stays in {self.checkpoints}" if self.checkpoints else "no checkpoint is kept"
        return NonFiniteLoss(
            f"training diverged: {what} after {progress.step} optimizer step(s) (epoch {progress.epoch + 1}); nothing "
            f"of this run is saved, {kept}. Lower the learning rate or enable grad_clip."
        )
