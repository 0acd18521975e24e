"""Stage pretrain (chapters 4–5): a GPT trained from scratch on the shards of params
pretrain.corpora.

Writes models/pretrained/ (config.json, model.safetensors, tokenizer/), DVCLive metrics and
curves under metrics/pretrain/ with the text sample of each epoch (samples.json), and the book's
loss figure plots/pretrain/loss.png. The resume checkpoint lives in the cache, keyed by the run's
fingerprint (scratchgpt.plumbing.resume).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from scratchgpt.book.generate import generate_text
from scratchgpt.book.loader import Evaluator, lm_loss, seed_everything
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.shards import ShardError, Shards
from scratchgpt.files import atomic_dir
from scratchgpt.formats.modeldir import check_fits, save_model, save_tokenizer, size_keys
from scratchgpt.plumbing import paths, stage, training
from scratchgpt.plumbing.live import perplexity
from scratchgpt.plumbing.plots import plot_losses
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.prepare import PrepareParams
from scratchgpt.plumbing.sections.pretrain import PretrainParams

log = logging.getLogger("pretrain")


def load_data(params: Any) -> tuple[list[Shards], ConcatDataset, ConcatDataset]:
    """The corpora's shards and their training and validation windows, concatenated."""
    p = params.pretrain
    shards = [Shards(paths.shards(name)) for name in p.corpora]
    vocab = max(s.meta["vocab_size"] for s in shards)
    if vocab > params.model.vocab_size:
        raise ShardError(f"model.vocab_size is {params.model.vocab_size} but the corpora's vocabulary has {vocab} ids")
    train_data = ConcatDataset([s.windows("train", p.max_length, p.stride) for s in shards])
    val_data = ConcatDataset([s.windows("val", p.max_length, p.stride) for s in shards])
    return shards, train_data, val_data


def build_model(run: training.TrainingRun, model_params: Any, train_data: Any, val_data: Any) -> GPTModel:
    """The GPT of params' model section, seeded as the book seeds it, checked to fit first."""
    p = run.params
    seed_everything(p.seed)
    config = GPTConfig(**model_params.model_dump())
    keys = f"{size_keys(config, 'model.')}, pretrain.batch_size={p.batch_size}, pretrain.max_length={p.max_length}"
    check_fits(config, run.device, keys, p.batch_size, p.max_length)  # before anything is allocated
    model = GPTModel(config).to(run.device)
    if run.is_main:
        log.info(
            "model: %s parameters; data: %d training and %d validation windows of %d tokens on %s",
            f"{model.num_parameters():,}",
            len(train_data),
            len(val_data),
            p.max_length,
            run.device,
        )
    return model


def pretrain(run: training.TrainingRun, model: GPTModel, tokenizer: Any, train_data: Any, val_data: Any) -> Any:
    """Chapter 5's loop, with a sample of the prompt's continuation after each epoch."""
    p = run.params

    def sample(m: torch.nn.Module, _: Evaluator) -> dict[str, Any]:
        text = generate_text(m, tokenizer, p.sample_prompt, p.sample_tokens, eos_id=None) if p.sample_tokens else ""
        return {"text": text}

    return run.fit(
        model,
        train_data,
        val_data,
        loss_fn=lm_loss,
        curves=["train_loss", "val_loss", "lr", "tokens_seen"],
        epochs_file="samples.json",
        derived=training.VAL_PERPLEXITY,
        echo=lambda entry: f"epoch {entry['epoch']} sample: {entry['text']!r}",
        epoch_end=sample,
    )


def save(
    st: stage.Stage, run: training.TrainingRun, model: GPTModel, tokenizer: Any, progress: Any, val_data: Any
) -> dict[str, Any]:
    """The final validation loss over the whole split, the metrics, the figure and the model."""
    p = run.params
    final = Evaluator(model, {"val": val_data}, p.batch_size, lm_loss, run.device, precision=p.precision)
    final_val = final.loss("val", None, draw=False)
    summary = {
        "untrained_val_loss": progress.untrained_val_loss,
        "final_val_loss": final_val,
        "final_val_perplexity": perplexity(final_val),
        "steps": progress.step,
        "parameters": model.num_parameters(),
    }
    run.finish(summary)
    plot_losses(
        progress.history, st.out(paths.PLOTS / "pretrain" / "loss.png"), title=f"pretraining: {', '.join(p.corpora)}"
    )
    with atomic_dir(st.out(paths.PRETRAINED)) as staging:
        meta = {
            "tokenizer": save_tokenizer(tokenizer, staging),
            "trained_on": list(p.corpora),
            "steps": progress.step,
            **run.model_meta,
        }
        save_model(model, staging, metadata=meta)
    log.info("untrained val loss %.3f → final %.3f", progress.untrained_val_loss, final_val)
    return summary


def main(st: stage.Stage) -> dict[str, Any]:
    params = st.params
    run = training.start(st, "pretrain")
    shards, train_data, val_data = load_data(params)
    tokenizer = shards[0].tokenizer(paths.raw(params.prepare.bpe_dataset))
    model = build_model(run, params.model, train_data, val_data)
    progress = pretrain(run, model, tokenizer, train_data, val_data)
    summary = save(st, run, model, tokenizer, progress, val_data) if run.is_main else {}
    run.dist.barrier()
    return summary


if __name__ == "__main__":
    stage.run(main, ModelParams, PretrainParams, PrepareParams)
