"""OpenAI's GPT-2 TensorFlow checkpoints (chapter 5) converted into a model directory (layout:
:mod:`scratchgpt.formats.gpt2`; the download is :mod:`scratchgpt.formats.openai_download`).
TensorFlow is imported only here and only when a checkpoint is read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from scratchgpt.book.model import GPTConfig, model_from_state
from scratchgpt.formats.gpt2 import (
    PathLike,
    WeightsError,
    check_shape,
    first_line,
    gpt2_tokenizer,
    make_config,
    our_shapes,
    read_json,
    tensor_table,
    write_model_dir,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# OpenAI TensorFlow checkpoint → model directory


def config_from_hparams(path: Path) -> GPTConfig:
    """Our config for OpenAI's hparams.json: biases in qkv, tied head, no dropout."""
    hparams = read_json(path)
    keys = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
    missing = [k for k in keys if k not in hparams]
    if missing:
        raise WeightsError(f"{path}: missing {', '.join(missing)}")
    return make_config(
        str(path),
        vocab_size=hparams["n_vocab"],
        context_length=hparams["n_ctx"],
        emb_dim=hparams["n_embd"],
        n_heads=hparams["n_head"],
        n_layers=hparams["n_layer"],
        drop_rate=0.0,
        qkv_bias=True,
        tie_weights=True,
    )


def convert_tf_checkpoint(
    ckpt_dir: PathLike, out_dir: PathLike, *, bpe_dir: PathLike | None = None, with_tokenizer: bool = True
) -> Path:
    """Turn OpenAI's TensorFlow checkpoint in ``ckpt_dir`` into our model directory ``out_dir``.

    The tokenizer (encoder.json + vocab.bpe) comes from ``bpe_dir``, by default ``ckpt_dir``;
    ``with_tokenizer=False`` leaves it out (say for a checkpoint with a toy vocabulary).
    """
    ckpt_dir = Path(ckpt_dir)
    config = config_from_hparams(ckpt_dir / "hparams.json")
    tokenizer = None
    if with_tokenizer:
        tokenizer = gpt2_tokenizer(Path(bpe_dir or ckpt_dir), config, "pass bpe_dir, or with_tokenizer=False")
    state = read_tf_state(ckpt_dir, config)
    model = model_from_state(config, state)
    return write_model_dir(model, out_dir, tokenizer, {"kind": "openai-tf", "name": ckpt_dir.name})


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise WeightsError(
            "reading OpenAI's TensorFlow checkpoint needs TensorFlow: pip install 'scratchgpt[tensorflow]' "
            "(tensorflow-cpu); or take the same weights from the Hugging Face Hub, without TensorFlow: "
            "init.source hf:openai-community/gpt2 (docs/weights.md)"
        ) from None
    return tf


def read_tf_state(ckpt_dir: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from the checkpoint's variables, every shape checked before any is read."""
    tf = import_tensorflow()
    ckpt = tf.train.latest_checkpoint(str(ckpt_dir)) or str(ckpt_dir / "model.ckpt")
    try:
        available = dict(tf.train.list_variables(ckpt))
    except (tf.errors.OpError, ValueError) as e:
        raise WeightsError(f"{ckpt_dir}: cannot read the TensorFlow checkpoint {ckpt} ({first_line(e)})") from None
    table = tensor_table(config)
    shapes = our_shapes(config)
    for t in table:
        if t.tf not in available:
            raise WeightsError(f"{ckpt}: variable {t.tf} is missing")
        ours = shapes.get(t.ours, (3 * config.emb_dim,))  # a qkv bias is read even when unused
        check_shape(f"{ckpt}: variable {t.tf}", available[t.tf], (1, *ours[::-1]) if t.conv else ours)
    extra = sorted(set(available) - {t.tf for t in table})
    if extra:
        log.warning("%s: ignoring %d other variable(s): %s", ckpt, len(extra), ", ".join(extra[:5]))
    state = {}
    for t in table:
        try:
            array = tf.train.load_variable(ckpt, t.tf)
        except tf.errors.OpError as e:
            raise WeightsError(f"{ckpt}: cannot read variable {t.tf} ({first_line(e)})") from None
        tensor = torch.from_numpy(array).float()
        state[t.ours] = tensor[0].t().contiguous() if t.conv else tensor.contiguous()
    return state
