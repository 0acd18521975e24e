"""The training loop: the book's batch order, schedules, resume equal to an uninterrupted run,
fresh starts on other settings, divergence, and 2-process DDP on the CPU."""

import dataclasses
import logging
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from book_reference import book_training_loop
from torch.utils.data import DataLoader

from scratchgpt.book import loader
from scratchgpt.book.loader import epoch_order, lm_loss, seed_everything
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.shards import TokenWindows
from scratchgpt.book.train import Hooks, NonFiniteLoss, Setup, TrainConfig, learning_rate
from scratchgpt.book.train import train as run_training
from scratchgpt.formats.checkpoint import Checkpoints, load_checkpoint
from scratchgpt.plumbing.checkpointing import Checkpointing

CFG = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)
TRAIN = TrainConfig(epochs=3, batch_size=4, lr=3e-3, eval_freq=4, eval_iter=2, checkpoint_every=3, seed=5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    # A learnable stream: mostly counting up mod 50, with some noise.
    ids = (np.arange(2400) + (rng.random(2400) < 0.1) * rng.integers(0, 50, 2400)) % 50
    ids[:2000].astype(np.uint16).tofile(folder / "train.bin")
    ids[2000:].astype(np.uint16).tofile(folder / "val.bin")
    train = TokenWindows(folder / "train.bin", "uint16", 8, 8)
    val = TokenWindows(folder / "val.bin", "uint16", 8, 8)
    return train, val


def setup(cfg: TrainConfig, store=None, **pieces) -> Setup:
    """The loop's setup on the CPU with the language-model loss, checkpoints in ``store`` if any."""
    checkpoints = Checkpointing(store, cfg.checkpoint_share) if store is not None else None
    return Setup(cfg, lm_loss, torch.device("cpu"), checkpoints=checkpoints, **pieces)


def run(data, ckpt: Path, cfg: TrainConfig = TRAIN, hooks=None, fp="fp"):
    seed_everything(cfg.seed)
    model = GPTModel(CFG)
    progress = run_training(
        model,
        *data,
        setup(cfg, Checkpoints(ckpt, fp), epoch_end=lambda m, ev: {"text": "sample"}, hooks=hooks or Hooks()),
    )
    return model, progress


def test_schedule():
    def constant(step):
        return learning_rate(TrainConfig(epochs=1, batch_size=1, lr=1e-3), step, 100)

    assert constant(0) == constant(99) == 1e-3
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1e-3, warmup_steps=10, initial_lr=1e-5, cosine=True, min_lr=1e-4)

    def warm(step):
        return learning_rate(cfg, step, 100)

    assert warm(0) == pytest.approx(1e-5)
    assert warm(5) == pytest.approx(1e-5 + 5 * (1e-3 - 1e-5) / 10)
    assert warm(10) == pytest.approx(1e-3)
    assert warm(55) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert warm(100) == pytest.approx(1e-4)


@pytest.mark.parametrize("shuffle", [True, False])
def test_epoch_order_is_the_dataloaders(shuffle):
    torch.manual_seed(123)
    torch.rand(5)
    loader = DataLoader(list(range(37)), batch_size=4, shuffle=shuffle)
    expected = [i for batch in loader for i in batch.tolist()]
    after_loader = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(5)
    assert epoch_order(37, shuffle) == expected
    assert torch.equal(torch.rand(3), after_loader), "the global RNG must advance as the DataLoader's did"


class Recording(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(i)
        return self.inner[i]


def test_same_batches_and_losses_as_the_books_loop(data, tmp_path):
    """Against chapter 5's loop on real DataLoaders: every sample read (training and evaluation
    batches) in the same order, and the same loss curve."""
    train, val = Recording(data[0]), Recording(data[1])
    seed_everything(TRAIN.seed)
    model = GPTModel(CFG)
    book_optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN.lr, weight_decay=TRAIN.weight_decay)
    loaders = (
        DataLoader(train, TRAIN.batch_size, shuffle=True, drop_last=True),
        DataLoader(val, TRAIN.batch_size, shuffle=False, drop_last=False),
    )
    book_train, book_val = book_training_loop(
        model, *loaders, book_optimizer, TRAIN.epochs, TRAIN.eval_freq, TRAIN.eval_iter
    )
    book_seen = (train.seen[:], val.seen[:])
    train.seen.clear()
    val.seen.clear()
    seed_everything(TRAIN.seed)
    model = GPTModel(CFG)
    progress = run_training(model, train, val, setup(TRAIN, Checkpoints(tmp_path, "x")))
    assert train.seen == book_seen[0]
    untrained_eval = min(TRAIN.eval_iter * TRAIN.batch_size, len(val))  # our extra first look at val
    assert val.seen[untrained_eval:] == book_seen[1]
    torch.testing.assert_close([p["train_loss"] for p in progress.history], book_train, atol=2e-4, rtol=0)
    torch.testing.assert_close([p["val_loss"] for p in progress.history], book_val, atol=2e-4, rtol=0)


def test_training_learns_and_logs_like_the_book(data, tmp_path):
    points = []
    model, progress = run(data, tmp_path / "ckpt", hooks=Hooks(on_eval=points.append))
    steps_per_epoch = len(data[0]) // TRAIN.batch_size
    assert progress.step == 3 * steps_per_epoch
    assert [p["step"] for p in progress.history] == list(range(0, progress.step, TRAIN.eval_freq))
    assert points == progress.history
    assert progress.tokens_seen == progress.step * TRAIN.batch_size * 8
    assert progress.history[-1]["val_loss"] < progress.untrained_val_loss - 1.0
    assert [(e["epoch"], e["text"]) for e in progress.epochs] == [(1, "sample"), (2, "sample"), (3, "sample")]
    assert progress.examples_seen == progress.step * TRAIN.batch_size
    assert progress.complete
    saved = load_checkpoint(tmp_path / "ckpt")
    assert saved["progress"]["complete"] and saved["fingerprint"] == "fp"


class Killed(Exception):
    """A run stopped from a hook, as a SIGKILL would stop it."""


def kill_at(step: int) -> Hooks:
    def after_step(progress):
        if progress.step == step:
            raise Killed

    return Hooks(after_step=after_step)


def test_resume_after_interruption_equals_uninterrupted_run(data, tmp_path):
    full_model, full = run(data, tmp_path / "a")
    with pytest.raises(Killed):  # mid-epoch, two steps after the checkpoint at step 9
        run(data, tmp_path / "b", hooks=kill_at(11))
    assert load_checkpoint(tmp_path / "b")["progress"]["step"] == 9
    with pytest.raises(Killed):  # again, after resuming
        run(data, tmp_path / "b", hooks=kill_at(20))
    replayed = []
    model, resumed = run(data, tmp_path / "b", hooks=Hooks(on_eval=replayed.append))
    assert resumed.history == full.history
    assert replayed == full.history, "the logger sees the whole history again"
    assert resumed.epochs == full.epochs and resumed.tokens_seen == full.tokens_seen
    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_trains_with_fp32_weights_and_resumes_as_if_never_stopped(data, tmp_path):
    cfg = dataclasses.replace(TRAIN, precision="bf16")
    fp32_model, fp32 = run(data, tmp_path / "fp32")
    full_model, full = run(data, tmp_path / "a", cfg)
    assert all(p.dtype == torch.float32 for p in full_model.parameters()), "master weights stay fp32"
    assert full.history[-1]["val_loss"] < full.history[0]["val_loss"] - 0.5, "it learns"
    assert full.history != fp32.history, "bf16 computes in bf16: other losses than fp32"
    assert abs(full.history[-1]["val_loss"] - fp32.history[-1]["val_loss"]) < 0.1
    with pytest.raises(Killed):
        run(data, tmp_path / "b", cfg, hooks=kill_at(11))
    model, resumed = run(data, tmp_path / "b", cfg)
    assert resumed.history == full.history
    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_says_where_the_run_stands(data, tmp_path, caplog):
    """Mid-run: the step and the epoch of the run's epochs; a run killed after its last
    checkpoint (all its steps done, the outputs not yet written): that only the end remains."""
    caplog.set_level(logging.INFO, logger="scratchgpt.book.train")
    with pytest.raises(Killed):
        run(data, tmp_path / "mid", hooks=kill_at(11))
    caplog.clear()
    run(data, tmp_path / "mid")
    assert re.search(rf"resuming from .* at step 9 of \d+ \(epoch 1 of {TRAIN.epochs}\)", caplog.text), caplog.text
    _, full = run(data, tmp_path / "end")
    caplog.clear()
    run(data, tmp_path / "end")  # its checkpoint is of the finished run
    expected = f"at step {full.step} of {full.step} (trained; the final evaluation remains)"
    assert expected in caplog.text, caplog.text


def test_other_fingerprint_starts_afresh(data, tmp_path):
    _, first = run(data, tmp_path / "c", fp="one")
    points = []
    _, second = run(data, tmp_path / "c", fp="two", hooks=Hooks(on_eval=points.append))
    assert second.history == first.history
    assert len(points) == len(first.history)  # trained again, not replayed from "one"


def test_corrupt_checkpoint_is_not_loaded(data, tmp_path):
    _, first = run(data, tmp_path / "d")
    (saved,) = (tmp_path / "d").glob("checkpoint-*.pt")
    blob = bytearray(saved.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # torch.load itself would not notice this
    saved.write_bytes(bytes(blob))
    assert load_checkpoint(tmp_path / "d") is None
    points = []
    _, again = run(data, tmp_path / "d", hooks=Hooks(on_eval=points.append))
    assert again.complete and len(points) == len(first.history), "trained afresh, not resumed"
    (tmp_path / "d" / "checkpoint.json").write_text("{")
    assert load_checkpoint(tmp_path / "d") is None


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    # the learning rate warms up from a sane value to an absurd one: good checkpoints first, then divergence
    cfg = TrainConfig(
        **{
            **TRAIN.__dict__,
            "lr": 1e9,
            "initial_lr": 1e-3,
            "warmup_steps": 40,
            "checkpoint_every": 1,
            "eval_freq": 1,
            "epochs": 1,
        }
    )
    points = []
    with pytest.raises(
        NonFiniteLoss,
        match=r"training diverged: the (training|evaluation) loss.* after (\d+) optimizer "
        r"step\(s\) \(epoch 1\); nothing of this run is saved, the last good "
        r"checkpoint stays in",
    ):
        run(data, tmp_path / "e", cfg=cfg, hooks=Hooks(on_eval=points.append))
    saved = load_checkpoint(tmp_path / "e")
    assert saved is not None and saved["progress"]["step"] >= 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert points and all(np.isfinite([p["train_loss"], p["val_loss"]]).all() for p in points), "no NaN is logged"


def test_weights_that_turn_infinite_are_never_saved(data, tmp_path):
    """A weight that is no longer finite when a checkpoint is due (here made so by the epoch-end
    callback, which runs just before it) stops the run; no checkpoint holds it."""

    def poison(model, evaluator):
        with torch.no_grad():
            model.trf_blocks[0].att.out_proj.weight[0, 0] = float("inf")
        return {}

    cfg = TrainConfig(**{**TRAIN.__dict__, "max_steps": 1, "epochs": 1})
    seed_everything(cfg.seed)
    with pytest.raises(NonFiniteLoss, match=r"parameter trf_blocks.0.att.out_proj.weight is no longer finite after 1 "):
        run_training(GPTModel(CFG), *data, setup(cfg, Checkpoints(tmp_path / "inf", "x"), epoch_end=poison))
    assert load_checkpoint(tmp_path / "inf") is None
    assert not list((tmp_path / "inf").glob("checkpoint-*.pt"))


def test_max_steps_and_accumulation(data, tmp_path):
    cfg = TrainConfig(**{**TRAIN.__dict__, "max_steps": 7, "grad_accum": 2})
    _, progress = run(data, tmp_path / "f", cfg=cfg)
    assert progress.step == 7
    assert progress.tokens_seen == 7 * 2 * TRAIN.batch_size * 8


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from scratchgpt.book.model import GPTConfig, GPTModel
    from scratchgpt.book.shards import TokenWindows
    from scratchgpt.book.loader import lm_loss, seed_everything
    from scratchgpt.book.train import Setup, TrainConfig
    from scratchgpt.book.train import train as run_training
    from scratchgpt.formats.checkpoint import Checkpoints
    from scratchgpt.plumbing.checkpointing import Checkpointing
    from scratchgpt.plumbing.distributed import init_distributed
    from pathlib import Path
    out, batch = Path(sys.argv[1]), int(sys.argv[2])
    dist_info, device = init_distributed("cpu")
    train = TokenWindows(out / "train.bin", "uint16", 8, 8)
    val = TokenWindows(out / "val.bin", "uint16", 8, 8)
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=3e-3, eval_freq=3, eval_iter=2, seed=5)
    seed_everything(cfg.seed)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))
    store = Checkpointing(Checkpoints(out / f"ckpt{dist_info.world_size}", "x"), cfg.checkpoint_share, dist_info)
    progress = run_training(model, train, val, Setup(cfg, lm_loss, device, checkpoints=store,
                                                     rank=dist_info.rank, world_size=dist_info.world_size))
    if dist_info.is_main:
        torch.save({"state": model.state_dict(), "steps": progress.step, "tokens": progress.tokens_seen},
                   out / f"result{dist_info.world_size}.pt")
    if dist_info.enabled:
        torch.distributed.destroy_process_group()
    """
)


def test_two_process_ddp_on_cpu_equals_one_process_with_the_global_batch(data, tmp_path):
    folder = Path(data[0].path).parent
    for name in ("train.bin", "val.bin"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for cmd in (torchrun + [str(script), str(tmp_path), "2"], [sys.executable, str(script), str(tmp_path), "4"]):
        run_ = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert run_.returncode == 0, run_.stderr[-3000:]
    two, one = torch.load(tmp_path / "result2.pt"), torch.load(tmp_path / "result1.pt")
    assert two["steps"] == one["steps"] > 0
    assert two["tokens"] == one["tokens"]
    for name, tensor in one["state"].items():
        torch.testing.assert_close(two["state"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)


class SlowStore:
    """A checkpoint store whose writes take 0.2 s, counting them."""

    def __init__(self):
        self.saved = 0

    def load(self):
        return None

    def save(self, state):
        time.sleep(0.2)
        self.saved += 1


@pytest.mark.parametrize("share", [1.0, 0.05])
def test_checkpoint_share_bounds_the_time_spent_writing(data, share):
    """30 steps with checkpoint_every 3: 10 checkpoints are due. With share 1 each is written;
    with 0.05 a write costing 0.2 s allows the next only after ~4 s more, longer than this whole
    run, so one or two are written. The weights come out the same either way."""
    cfg = dataclasses.replace(TRAIN, epochs=1, max_steps=30, checkpoint_share=share)
    seed_everything(cfg.seed)
    model, store = GPTModel(CFG), SlowStore()
    progress = run_training(model, *data, setup(cfg, store))
    assert progress.step == 30
    if share == 1.0:
        assert store.saved == 10
    else:
        assert 1 <= store.saved <= 2
    reference, _ = run(data, Path(tempfile.mkdtemp()), cfg=dataclasses.replace(cfg, checkpoint_share=1.0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_whole_split_is_evaluated_with_a_progress_bar(data, monkeypatch):
    """A final evaluation (every batch of a split) shows a bar at a terminal; the loop's
    evaluations of a few batches do not."""
    shown = []

    def spy(items, **options):
        shown.append((options["desc"], options["disable"]))
        return items

    monkeypatch.setattr(loader, "tqdm", spy)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0))
    evaluator = loader.Evaluator(model, {"val": data[1]}, 4, lm_loss, torch.device("cpu"))
    evaluator.loss("val", None, draw=False)
    evaluator.loss("val", 2, draw=False)
    assert shown == [("evaluating val", None), ("evaluating val", True)]
