"""The training loop of chapter 5, with appendix D's warm-up, cosine decay and gradient clipping.

Batches and evaluations draw the random numbers the book's DataLoaders draw
(scratchgpt.book.loader), so a run sees the book's batch order and dropout masks. A non-finite
loss or weight stops it with a clear error. What the book's loop leaves out comes in with its
:class:`Setup`: a :class:`Checkpointer` saves the state when a checkpoint is due (every
``checkpoint_every`` steps, at each epoch's end and at the last step) and gives it back when the
run starts again (scratchgpt.plumbing.checkpointing), even mid-epoch; the processes of a
DistributedDataParallel job (scratchgpt.plumbing.distributed) each take every N-th window of the
shared order, and rank 0 logs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scratchgpt.book.loader import CollateFn, Evaluator, LossFn, Measures, batches, collate, epoch_order
from scratchgpt.book.settings import TrainConfig
from scratchgpt.device import autocast
from scratchgpt.errors import PipelineError

log = logging.getLogger(__name__)


class NonFiniteLoss(PipelineError, RuntimeError):
    """A loss or a weight became NaN or infinite: nothing of the diverged state is saved or logged."""


class TooLittleData(PipelineError, ValueError):
    """Fewer training samples than one optimizer step needs."""


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


class Checkpointer(Protocol):
    """Saves the loop's state when due; loads it back when the run starts again (plumbing.checkpointing)."""

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress | None: ...

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None: ...


EpochEnd = Callable[[torch.nn.Module, Evaluator], dict[str, Any]]


@dataclass(frozen=True)
class Setup:
    """What :func:`train` works with besides the model and the data."""

    cfg: TrainConfig
    loss_fn: LossFn
    device: torch.device
    epoch_end: EpochEnd | None = None  # what each finished epoch reports (a text sample, accuracies)
    collate_fn: CollateFn | None = None  # samples → batch (default: stacked)
    measures: Measures | None = None  # names (the first "loss") and a measure: what evaluations log
    hooks: Hooks = field(default_factory=Hooks)
    checkpoints: Checkpointer | None = None
    rank: int = 0  # this process's, of the world_size that train together
    world_size: int = 1


def train(model: torch.nn.Module, train_data: Dataset, val_data: Dataset, setup: Setup) -> Progress:
    """Train ``model`` (built after ``seed_everything``) on batches of ``train_data`` samples.

    Only parameters with ``requires_grad`` are optimized. After optimizer step s (0-based) with
    s % eval_freq == 0, the model is evaluated (the book's evaluate_model) and the point logged.
    """
    run = _Run(model, train_data, val_data, setup)
    cfg, progress = setup.cfg, run.restore()
    with run.timed("evaluation"):
        run.measure_untrained()
    run.model.train()
    bar = tqdm(
        total=run.total_steps, initial=progress.step, desc="training", unit="step", disable=not run.is_main or None
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
                if run.is_main:
                    bar.set_postfix(train=f"{point['train_loss']:.3f}", val=f"{point['val_loss']:.3f}")
            epoch_done = progress.micro >= run.micro_per_epoch
            last = epoch_done or progress.step >= run.total_steps  # of the epoch or of the run
            if last:
                with run.timed("epoch ends"):
                    run.end_of_epoch(epoch_done)
            if last or (cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0):
                with run.timed("checkpoints"):
                    run.checkpoint()
            setup.hooks.after_step(progress)
            if epoch_done:
                break
    bar.close()
    run.core.eval()
    run.check_weights()
    elapsed, steps = time.perf_counter() - started, progress.step - steps_at_start
    if steps and run.is_main:
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in run.seconds.items())
        speed = (progress.tokens_seen - tokens_at_start) / elapsed
        log.info("%d steps in %.0fs (%.0f tokens/s); time in %s", steps, elapsed, speed, parts)
    return progress


class _Run:
    """The state one call of :func:`train` works on, and its named steps."""

    def __init__(self, model: torch.nn.Module, train_data: Dataset, val_data: Dataset, setup: Setup):
        cfg, world = setup.cfg, setup.world_size
        if setup.measures is not None and (not setup.measures[0] or setup.measures[0][0] != "loss"):
            raise ValueError(f"measures: the first name must be 'loss', got {list(setup.measures[0])}")
        self.setup, self.cfg, self.hooks, self.checkpoints = setup, cfg, setup.hooks, setup.checkpoints
        self.is_main, self.train_data = setup.rank == 0, train_data
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.core = self.model = model
        if world > 1:
            ids = [setup.device.index] if setup.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.evaluator = Evaluator(
            model,
            {"train": train_data, "val": val_data},
            cfg.batch_size,
            setup.loss_fn,
            setup.device,
            setup.collate_fn,
            cfg.precision,
        )
        self.per_rank = cfg.batch_size * world
        self.micro_per_epoch = (len(train_data) // self.per_rank) // cfg.grad_accum * cfg.grad_accum
        steps_per_epoch = self.micro_per_epoch // cfg.grad_accum
        if steps_per_epoch == 0:
            raise TooLittleData(
                f"{len(train_data)} training samples are too few for one step of batch_size {cfg.batch_size} × "
                f"{world} process(es) × grad_accum {cfg.grad_accum}"
            )
        self.total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.progress = Progress()
        self.seconds: dict[str, float] = {}  # wall time per part of the loop, for the log

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def restore(self) -> Progress:
        """Continue from this run's last checkpoint, if any, and replay what it had logged."""
        saved = self.checkpoints.restore(self.core, self.optimizer) if self.checkpoints is not None else None
        if saved is not None:
            self.progress, n = saved, self.cfg.epochs
            where = "trained; the final evaluation remains" if saved.complete else f"epoch {saved.epoch + 1} of {n}"
            log.info("resuming from %s at step %d of %d (%s)", self.checkpoints, saved.step, self.total_steps, where)
        if self.is_main:
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
        progress, setup = self.progress, self.setup
        if progress.micro == 0:
            progress.epoch_order = epoch_order(len(self.train_data), shuffle=True)
        order = progress.epoch_order[: self.micro_per_epoch * self.per_rank]
        return batches(order[setup.rank :: setup.world_size], self.cfg.batch_size, drop_last=True)

    def step(self, mine: list[list[int]]) -> tuple[int, float]:
        """One optimizer step over grad_accum micro-batches; returns its (0-based) number and lr."""
        cfg, progress, setup, world = self.cfg, self.progress, self.setup, self.setup.world_size
        lr = learning_rate(cfg, progress.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for k in range(cfg.grad_accum):
            batch = collate(self.train_data, mine[progress.micro + k], setup.device, setup.collate_fn)
            sync = k == cfg.grad_accum - 1 or world == 1
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with autocast(setup.device, cfg.precision):  # the forward pass; backward runs outside
                    loss = setup.loss_fn(self.model, batch)
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
        """The book's evaluate_model over eval_iter batches: checked, logged and kept in the history."""
        progress, values = self.progress, self.evaluator.evaluate(self.cfg.eval_iter, self.setup.measures)
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
        if self.is_main:
            self.hooks.on_eval(point)
            epoch = progress.epoch + 1
            log.info("Ep %d (Step %06d): Train loss %.3f, Val loss %.3f", epoch, step, train_loss, val_loss)
        return point

    def end_of_epoch(self, epoch_done: bool) -> None:
        """What an epoch's end (or the run's last step) reports; then the next epoch, or done."""
        progress, epoch_end = self.progress, self.setup.epoch_end
        if epoch_end is not None:
            self.core.eval()
            with autocast(self.setup.device, self.cfg.precision):
                entry = {"epoch": progress.epoch + 1, "step": progress.step, **epoch_end(self.core, self.evaluator)}
            self.core.train()
            progress.epochs.append(entry)
            if self.is_main:
                self.hooks.on_epoch(entry)
        if epoch_done:
            progress.epoch, progress.micro = progress.epoch + 1, 0
        progress.complete = progress.epoch >= self.cfg.epochs or progress.step >= self.total_steps

    def checkpoint(self) -> None:
        """A checkpoint is due: check the weights, then hand the state to the checkpointer."""
        self.check_weights()
        if self.checkpoints is not None:
            self.checkpoints.save(self.core, self.optimizer, self.progress)

    def check_weights(self) -> None:
        name = next((name for name, p in self.core.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if name is not None:
            raise self.diverged(f"parameter {name} is no longer finite")

    def diverged(self, what: str) -> NonFiniteLoss:
        progress = self.progress
        kept = f"the last good checkpoint stays in {self.checkpoints}" if self.checkpoints else "no checkpoint is kept"
        return NonFiniteLoss(
            f"training diverged: {what} after {progress.step} optimizer step(s) (epoch {progress.epoch + 1}); nothing "
            f"of this run is saved, {kept}. Lower the learning rate or enable grad_clip."
        )
