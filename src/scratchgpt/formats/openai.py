"""OpenAI's GPT-2 TensorFlow checkpoints (chapter 5): the seven files downloaded (primary, backup,
then the mirror; sizes and hashes checked; broken transfers resumed) and converted into a
model directory (layout: :mod:`scratchgpt.formats.gpt2`). TensorFlow is imported only here and
only when a checkpoint is read.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from scratchgpt.book.model import PRESETS, GPTConfig, GPTModel, model_from_state
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
from scratchgpt.plumbing.download import fetch_file, file_dest
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.params import FileParams

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Download of OpenAI's checkpoint files

OPENAI_BASE_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",
)
OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
OPENAI_PRESETS = {"124M": "gpt2-small", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
MIRROR_FOLDER = "gpt2-models"
DATA_FILE = "model.ckpt.data-00000-of-00001"
GPT2_TOKENIZER_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
_SAME_SIZE = {"checkpoint": 77, "encoder.json": 1042301, "vocab.bpe": 456318}
_SIZES_BY_MODEL = {
    "124M": {"hparams.json": 90, "model.ckpt.index": 5215, "model.ckpt.meta": 471155},
    "355M": {"hparams.json": 91, "model.ckpt.index": 10399, "model.ckpt.meta": 926519},
}


@functools.cache
def parameter_count(preset: str) -> int:
    """Distinct parameters of a preset (the tied head counted once), without allocating them."""
    with torch.device("meta"):
        return GPTModel(PRESETS[preset]).num_parameters()


def expected_size(size: str, name: str) -> int | None:
    """Bytes of one checkpoint file, where known; the data file holds every parameter as float32."""
    if name in _SAME_SIZE:
        return _SAME_SIZE[name]
    if name == DATA_FILE:
        return 4 * parameter_count(OPENAI_PRESETS[size])
    return _SIZES_BY_MODEL.get(size, {}).get(name)


def openai_file_specs(size: str, base_urls: Sequence[str] = OPENAI_BASE_URLS) -> list[FileParams]:
    """What :func:`download.fetch_file` needs for each of the seven files of one model size.

    Each file is tried at ``<base>/<size>/<file>`` for every base URL in order, then the mirror
    under ``gpt2-models/<size>/<file>``.
    """
    if size not in OPENAI_PRESETS:
        raise WeightsError(f"unknown GPT-2 size {size!r}; expected one of: {', '.join(OPENAI_PRESETS)}")
    return [
        FileParams(
            name=f"{MIRROR_FOLDER}/{size}/{name}",
            urls=[f"{base.rstrip('/')}/{size}/{name}" for base in base_urls],
            size=expected_size(size, name),
            sha256=GPT2_TOKENIZER_SHA256.get(name),
        )
        for name in OPENAI_FILES
    ]


def download_openai(
    size: str,
    dest_dir: PathLike,
    client: HttpClient | None = None,
    mirror: str | None = None,
    *,
    base_urls: Sequence[str] = OPENAI_BASE_URLS,
    names: Sequence[str] | None = None,
) -> Path:
    """Fetch OpenAI's GPT-2 checkpoint of ``size`` ("124M", ...) into ``dest_dir``; return it.

    ``names`` picks some of the seven files (say only encoder.json and vocab.bpe). Files already
    present and verified are kept; each file lands whole (a broken transfer waits in a hidden
    partial file that the next call resumes). Raises :class:`download.DownloadError` listing
    every source when a file cannot be had.
    """
    specs = openai_file_specs(size, base_urls)
    if names is not None:
        unknown = sorted(set(names) - set(OPENAI_FILES))
        if unknown:
            raise WeightsError(f"not a GPT-2 checkpoint file: {', '.join(unknown)}")
        specs = [s for s in specs if PurePosixPath(s.name).name in names]
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    client = client or HttpClient()
    for spec in specs:
        target = file_dest(dest, spec)
        log.info("%s: %s", target, fetch_file(spec, target, client, mirror, resume=True))
    return dest


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
