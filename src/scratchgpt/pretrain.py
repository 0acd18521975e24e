"""Pretraining (chapter 5) as the pipeline runs it: shards in, a model directory, DVCLive
metrics and curves, text samples and the book's loss figure out.

Outputs (paths relative to the repository root):

- ``models/pretrained/``: config.json, model.safetensors and tokenizer/ (self-contained)
- ``metrics/pretrain/``: DVCLive summary (metrics.json) and per-evaluation curves (plots/)
- ``metrics/pretrain/samples.json``: the text sample written after each epoch
- ``plots/pretrain/loss.png``: loss against epochs and tokens seen

The resume checkpoint (model, optimizer, data position, RNG states) lives in the cache, keyed by
the run's fingerprint (:mod:`scratchgpt.resume`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from . import paths
from .config import Params
from .stage import Stage
from .files import atomic_dir
from .generate import generate_text
from .live import LiveLogger, perplexity
from .model import GPTConfig, GPTModel, save_model
from .plots import plot_losses
from .shards import Shards, ShardError
from .tokenizer import save_tokenizer
from .train import (
    Evaluator,
    Progress,
    TrainConfig,
    init_distributed,
    lm_loss,
    seed_everything,
    train,
)

log = logging.getLogger(__name__)

METRICS_DIR = paths.METRICS / "pretrain"
PLOT = paths.PLOTS / "pretrain" / "loss.png"


def load_data(params: Params) -> tuple[list[Shards], ConcatDataset, ConcatDataset]:
    p = params.pretrain
    shards = [Shards(paths.shards(name)) for name in p.corpora]
    vocab = max(s.meta["vocab_size"] for s in shards)
    if vocab > params.model.vocab_size:
        raise ShardError(f"model.vocab_size is {params.model.vocab_size} but the corpora's vocabulary has {vocab} ids")
    train_data = ConcatDataset([s.windows("train", p.max_length, p.stride) for s in shards])
    val_data = ConcatDataset([s.windows("val", p.max_length, p.stride) for s in shards])
    return shards, train_data, val_data


def run(st: Stage) -> Progress:
    params = st.params
    p = params.pretrain
    dist_info, device = init_distributed(p.device)
    shards, train_data, val_data = load_data(params)
    tokenizer = shards[0].tokenizer(paths.raw(params.prepare.bpe_dataset))
    config = GPTConfig(**params.model.model_dump())
    seed_everything(p.seed)
    model = GPTModel(config).to(device)
    if dist_info.is_main:
        log.info(
            "model: %s parameters; data: %d training and %d validation windows of %d tokens on %s",
            f"{model.num_parameters():,}", len(train_data), len(val_data), p.max_length, device,
        )  # fmt: skip
    run_fp = st.fingerprint(exclude=("pretrain.device", "pretrain.checkpoint_every"), extra=[dist_info.world_size])
    logger = None
    if dist_info.is_main:
        logger = LiveLogger(
            st.out(METRICS_DIR), ["train_loss", "val_loss", "lr", "tokens_seen"], epochs_file="samples.json",
            derived={"val_perplexity": lambda point: perplexity(point["val_loss"])},
            echo=lambda entry: f"epoch {entry['epoch']} sample: {entry['text']!r}",
        )  # fmt: skip

    def sample(m: torch.nn.Module, _: Evaluator) -> dict[str, Any]:
        text = generate_text(m, tokenizer, p.sample_prompt, p.sample_tokens, eos_id=None) if p.sample_tokens else ""
        return {"text": text}

    with st.resume_dir(run_fp) as checkpoints:
        progress = train(
            model, train_data, val_data, TrainConfig.from_params(p), loss_fn=lm_loss, device=device,
            checkpoint_dir=checkpoints, run_fingerprint=run_fp, epoch_end=sample,
            hooks=logger.hooks() if logger else None, dist_info=dist_info,
        )  # fmt: skip
    if logger:
        evaluator = Evaluator(model, {"val": val_data}, p.batch_size, lm_loss, device)
        final_val = evaluator.loss("val", None, draw=False)
        logger.finish({
            "untrained_val_loss": progress.untrained_val_loss,
            "final_val_loss": final_val,
            "final_val_perplexity": perplexity(final_val),
            "steps": progress.step,
            "parameters": model.num_parameters(),
        })  # fmt: skip
        plot_losses(progress.history, st.out(PLOT), title=f"pretraining: {', '.join(p.corpora)}")
        with atomic_dir(st.out(paths.PRETRAINED)) as staging:
            meta = {"tokenizer": save_tokenizer(tokenizer, staging), "trained_on": list(p.corpora), "steps": progress.step}
            save_model(model, staging, metadata=meta)
        log.info("untrained val loss %.3f → final %.3f", progress.untrained_val_loss, final_val)
    dist_info.barrier()
    return progress
