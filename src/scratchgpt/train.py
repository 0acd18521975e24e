"""The training loop of chapter 5 (with appendix D's warm-up, cosine decay and clipping), made
resumable, distributed and observable.

- Batches are drawn exactly as the book's shuffled ``DataLoader`` draws them after
  ``torch.manual_seed``: the same random numbers are consumed in the same order (also by each
  evaluation, which iterates fresh loaders like the book's ``calc_loss_loader``), so the run
  sees the book's batch order and dropout masks, and an epoch can resume mid-way.
- A checkpoint (model, optimizer, data position, RNG states, logged history) is written
  atomically every ``checkpoint_every`` steps and at each epoch's end. A rerun with the same
  fingerprint (params, data, code) resumes from it and ends with the same metrics as an
  uninterrupted run; a different fingerprint starts afresh.
- A non-finite loss stops the run with a clear error; the last good checkpoint is kept.
- ``torchrun --nproc_per_node N`` runs DistributedDataParallel (gloo on CPU, nccl on CUDA):
  each rank takes every N-th window of the shared order; rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .device import autocast
from .errors import PipelineError
from .files import HashingWriter, sha256_file, temp_path, write_json

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINT_POINTER = "checkpoint.json"


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


@dataclass(frozen=True)
class Schedule:
    """Appendix D: linear warm-up from ``initial_lr`` to ``lr`` over ``warmup_steps``, then
    constant, or cosine decay to ``min_lr`` by ``total_steps``."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    initial_lr: float = 0.0
    cosine: bool = False
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.initial_lr + step * (self.lr - self.initial_lr) / self.warmup_steps
        if not self.cosine:
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


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


def collate(dataset: Dataset, indices: Sequence[int], device: torch.device, collate_fn: CollateFn | None = None) -> Batch:
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


def init_distributed(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; pick this rank's device."""
    from .device import pick_device

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
# Checkpoints


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``folder`` so that a reader only ever finds a complete, verified one.

    The file's sha256 is computed while it is written; it is fsynced and renamed into place as
    ``checkpoint-<sha>.pt``, then ``checkpoint.json`` (written atomically) points at it with the
    full digest; older checkpoint files go last. A crash at any point leaves the previous
    pointer and its file. The bytes depend only on ``payload`` (no file name inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".checkpoint.pt.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    tmp = temp_path(folder / "checkpoint.pt")
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            torch.save(payload, writer)
            f.flush()
            os.fsync(f.fileno())
        digest = writer.sha256.hexdigest()
        final = folder / f"checkpoint-{digest[:16]}.pt"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(folder / CHECKPOINT_POINTER, {"format": CHECKPOINT_FORMAT, "file": final.name, "sha256": digest})
    for old in folder.glob("checkpoint-*.pt"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The checkpoint :func:`save_checkpoint` last completed in ``folder``, or None when there is
    none or it fails its sha256 (then it is never loaded: training starts afresh)."""
    pointer = folder / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
        path = folder / info["file"]
        expected = info["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        log.warning("ignoring %s: unreadable (%s)", pointer, e)
        return None
    if not path.is_file() or sha256_file(path) != expected:
        log.warning("ignoring checkpoint %s: missing or not matching its sha256 (corrupt); starting afresh", path)
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file that passed its checksum but cannot be read: still never trusted
        log.warning("ignoring unreadable checkpoint %s (%s)", path, e)
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring checkpoint %s: unknown format", path)
        return None
    return payload


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    warmup_steps: int = 0
    initial_lr: float = 0.0
    cosine: bool = False
    min_lr: float = 0.0
    grad_clip: float = 0.0
    grad_accum: int = 1
    eval_freq: int = 5
    eval_iter: int = 5
    checkpoint_every: int = 0
    max_steps: int = 0
    seed: int = 123

    @classmethod
    def from_params(cls, section: Any) -> "TrainConfig":
        """The loop's settings from a params section (scratchgpt.config.TrainingParams)."""
        values = section.model_dump()
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


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


LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
Measure = Callable[[torch.nn.Module, Batch], tuple[Sequence[float], int]]


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

    def __init__(self, model: torch.nn.Module, data: dict[str, Dataset], batch_size: int, loss_fn: LossFn,
                 device: torch.device, collate_fn: CollateFn | None = None):  # fmt: skip
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


def train(
    model: torch.nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn,
    device: torch.device,
    checkpoint_dir: Path,
    run_fingerprint: str,
    epoch_end: Callable[[torch.nn.Module, Evaluator], dict[str, Any]] | None = None,
    hooks: Hooks | None = None,
    dist_info: Dist | None = None,
    collate_fn: CollateFn | None = None,
) -> Progress:
    """Train ``model`` (built after ``seed_everything``) on batches of ``train_data`` samples.

    Only parameters with ``requires_grad`` are optimized. After optimizer step s (0-based) with
    s % eval_freq == 0, the loss over the first ``eval_iter`` batches of a freshly shuffled
    training pass and of the validation data is logged (the book's evaluate_model);
    ``epoch_end(model, evaluator)`` adds what each finished epoch reports (a text sample,
    accuracies).
    """
    hooks = hooks or Hooks()
    dist_info = dist_info or Dist()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    core = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    evaluator = Evaluator(core, {"train": train_data, "val": val_data}, cfg.batch_size, loss_fn, device, collate_fn)

    n_train = len(train_data)
    per_rank = cfg.batch_size * dist_info.world_size
    micro_per_epoch = (n_train // per_rank) // cfg.grad_accum * cfg.grad_accum
    steps_per_epoch = micro_per_epoch // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TooLittleData(
            f"{n_train} training samples are too few for one step of batch_size {cfg.batch_size} × "
            f"{dist_info.world_size} process(es) × grad_accum {cfg.grad_accum}"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    schedule = Schedule(cfg.lr, total_steps, cfg.warmup_steps, cfg.initial_lr, cfg.cosine, cfg.min_lr)

    progress = Progress()
    saved = load_checkpoint(checkpoint_dir)
    if saved is not None and saved.get("fingerprint") == run_fingerprint:
        core.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**saved["progress"])
        set_rng_state(saved["rng"])
        log.info("resuming from %s at step %d (epoch %d)", checkpoint_dir, progress.step, progress.epoch + 1)
    elif saved is not None:
        log.info("ignoring the checkpoint in %s: it belongs to other params, data or code", checkpoint_dir)
    if dist_info.is_main:
        for point in progress.history:
            hooks.on_eval(point)
        for entry in progress.epochs:
            hooks.on_epoch(entry)

    def diverged(what: str) -> NonFiniteLoss:
        return NonFiniteLoss(
            f"training diverged: {what} after {progress.step} optimizer step(s) (epoch {progress.epoch + 1}); nothing "
            f"of this run is saved, the last good checkpoint stays in {checkpoint_dir}. Lower the learning rate or "
            "enable grad_clip."
        )

    def check_weights() -> None:
        name = first_non_finite(core)
        if name is not None:
            raise diverged(f"parameter {name} is no longer finite")

    def checkpoint() -> None:
        check_weights()
        if dist_info.is_main:
            save_checkpoint(checkpoint_dir, {
                "format": CHECKPOINT_FORMAT, "fingerprint": run_fingerprint,
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": asdict(progress), "rng": rng_state(),
            })  # fmt: skip
        dist_info.barrier()

    if progress.untrained_val_loss is None:
        core.eval()
        progress.untrained_val_loss = evaluator.loss("val", cfg.eval_iter, draw=False)  # outside the book's stream

    model.train()
    bar = tqdm(total=total_steps, initial=progress.step, desc="training", unit="step", disable=None if dist_info.is_main else True)
    started, steps_at_start, tokens_at_start = time.perf_counter(), progress.step, progress.tokens_seen
    while not progress.complete:
        if progress.micro == 0:
            progress.epoch_order = epoch_order(n_train, shuffle=True)
        order = progress.epoch_order[: micro_per_epoch * per_rank]
        mine = batches(order[dist_info.rank :: dist_info.world_size], cfg.batch_size, drop_last=True)
        while progress.micro < micro_per_epoch and progress.step < total_steps:
            lr = schedule(progress.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            for k in range(cfg.grad_accum):
                batch = collate(train_data, mine[progress.micro + k], device, collate_fn)
                sync = k == cfg.grad_accum - 1 or not dist_info.enabled
                with contextlib.nullcontext() if sync else model.no_sync():
                    loss = loss_fn(model, batch)
                    if not torch.isfinite(loss):
                        raise diverged(f"the training loss is {loss.item()}")
                    (loss / cfg.grad_accum).backward()
                progress.tokens_seen += batch[0].numel() * dist_info.world_size
                progress.examples_seen += batch[0].shape[0] * dist_info.world_size
            if cfg.grad_clip > 0 and progress.step >= cfg.warmup_steps:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            progress.micro += cfg.grad_accum
            global_step = progress.step
            progress.step += 1
            bar.update(1)
            if global_step % cfg.eval_freq == 0:
                core.eval()
                train_loss, val_loss = evaluator.loss("train", cfg.eval_iter), evaluator.loss("val", cfg.eval_iter)
                core.train()
                if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                    raise diverged(f"the evaluation losses are {train_loss} (training) and {val_loss} (validation)")
                point = {
                    "step": global_step, "epoch": progress.epoch + progress.micro / micro_per_epoch,
                    "tokens_seen": progress.tokens_seen, "examples_seen": progress.examples_seen, "lr": lr,
                    "train_loss": train_loss, "val_loss": val_loss,
                }  # fmt: skip
                progress.history.append(point)
                if dist_info.is_main:
                    hooks.on_eval(point)
                    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                    log.info("Ep %d (Step %06d): Train loss %.3f, Val loss %.3f", progress.epoch + 1, global_step,
                             train_loss, val_loss)  # fmt: skip
            epoch_done = progress.micro >= micro_per_epoch
            if epoch_done or progress.step >= total_steps:
                if epoch_end is not None:
                    core.eval()
                    entry = {"epoch": progress.epoch + 1, "step": progress.step, **epoch_end(core, evaluator)}
                    core.train()
                    progress.epochs.append(entry)
                    if dist_info.is_main:
                        hooks.on_epoch(entry)
                if epoch_done:
                    progress.epoch, progress.micro = progress.epoch + 1, 0
                progress.complete = progress.epoch >= cfg.epochs or progress.step >= total_steps
                checkpoint()
            elif cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                checkpoint()
            hooks.after_step(progress)
            if epoch_done:
                break
    bar.close()
    core.eval()
    check_weights()
    elapsed = time.perf_counter() - started
    if progress.step > steps_at_start and dist_info.is_main:
        log.info("%d steps in %.0fs (%.0f tokens/s)", progress.step - steps_at_start, elapsed,
                 (progress.tokens_seen - tokens_at_start) / elapsed)  # fmt: skip
    return progress
