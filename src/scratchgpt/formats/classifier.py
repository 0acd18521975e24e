"""The classifier's model directory (chapter 6): the model, its tokenizer and the description of
its classification head, whether saved merged or as LoRA adapters. Apart from
:mod:`scratchgpt.formats.finetuned`, so that the classifier's code is a dep of only the stages
that classify.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scratchgpt.book.classify import Head
from scratchgpt.book.model import GPTModel
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.modeldir import CONFIG_FILE, ModelError, load_tokenizer, read_model_config


def load_classifier(
    model_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[GPTModel, Any, Head]:
    """Model, tokenizer and head description of a classifier directory."""
    config, extra = read_model_config(model_dir)
    if not config.n_classes or "classifier" not in extra:
        raise ValueError(f"{model_dir} is not a classifier (no classification head in config.json)")
    try:
        head = Head.from_dict(extra["classifier"])
    except (TypeError, KeyError, ValueError) as e:
        raise ModelError(f"{Path(model_dir) / CONFIG_FILE}: classifier: not a head description ({e!r})") from None
    if head.max_length is not None and not 1 <= head.max_length <= config.context_length:
        raise ModelError(
            f"{Path(model_dir) / CONFIG_FILE}: classifier.max_length must be in [1, model.context_length "
            f"({config.context_length})], got {head.max_length}"
        )
    return load_finetuned(model_dir, device=device), load_tokenizer(model_dir), head
