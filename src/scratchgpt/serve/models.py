"""A model folder made ready to serve: a language model with its running engine, or a
classifier."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scratchgpt.formats.classifier import load_classifier
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.modeldir import CONFIG_FILE, load_tokenizer, read_model_config
from scratchgpt.serve.api import Served
from scratchgpt.serve.engine import Engine


def open_model(
    directory: str | os.PathLike[str],
    device: torch.device,
    precision: str = "fp32",
    *,
    name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 32,
    max_tokens: int = 512,
    api_key: str | None = None,
) -> Served:
    """``directory``'s model on ``device`` (bf16 weights with ``precision: bf16``); a language
    model's engine starts in a daemon thread (``served.engine.stop()`` ends it)."""
    _, extra = read_model_config(directory)
    label = name or Path(directory).resolve().name
    created = int((Path(directory) / CONFIG_FILE).stat().st_mtime)
    dtype = torch.bfloat16 if precision == "bf16" else None
    if extra.get("classifier"):
        model, tokenizer, head = load_classifier(directory, device)
        model = model.to(dtype) if dtype else model
        return Served(label, model.eval(), tokenizer, created, head=head, api_key=api_key)
    model = load_finetuned(directory, device=device)
    model = model.to(dtype) if dtype else model
    engine = Engine(model, max_batch=max_batch, max_queue=max_queue)
    engine.start()
    return Served(
        label,
        model,
        load_tokenizer(directory),
        created,
        engine=engine,
        instruct="instruct" in extra,
        max_tokens=max_tokens,
        api_key=api_key,
    )
