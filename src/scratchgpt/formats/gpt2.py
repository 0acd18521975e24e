"""GPT-2's weights in three layouts, and the one table of tensor names that maps them.

Three layouts hold the same numbers:

* **OpenAI's TensorFlow checkpoint** (what the book downloads): ``hparams.json`` (n_vocab, n_ctx,
  n_embd, n_head, n_layer), ``model.ckpt.{index,meta,data-00000-of-00001}`` and ``checkpoint``
  (TF1 Saver format), plus the tokenizer files ``encoder.json`` and ``vocab.bpe``. Variables::

      model/wte [V, d]                 model/wpe [ctx, d]
      model/h{i}/ln_1/{g, b} [d]       model/h{i}/ln_2/{g, b} [d]
      model/h{i}/attn/c_attn/w [1, d, 3d]   b [3d]     (query | key | value)
      model/h{i}/attn/c_proj/w [1, d, d]    b [d]
      model/h{i}/mlp/c_fc/w    [1, d, 4d]   b [4d]
      model/h{i}/mlp/c_proj/w  [1, 4d, d]   b [d]
      model/ln_f/{g, b} [d]            (no output head: it is tied to wte)

  The ``w`` are 1x1 convolutions, ``[1, in, out]``.

* **Hugging Face GPT-2** (openai-community/gpt2): ``config.json`` (model_type "gpt2", n_embd,
  n_layer, n_head, n_positions, vocab_size, ...), ``model.safetensors`` (or sharded with
  ``model.safetensors.index.json``, or ``pytorch_model.bin``), tokenizer ``vocab.json`` +
  ``merges.txt`` (the same content as encoder.json + vocab.bpe). Tensors, with or without a
  ``transformer.`` prefix: ``wte.weight``, ``wpe.weight``, ``h.{i}.ln_1.{weight,bias}``,
  ``h.{i}.attn.c_attn.{weight [d, 3d], bias}``, ``h.{i}.attn.c_proj.*``, ``h.{i}.ln_2.*``,
  ``h.{i}.mlp.c_fc.*``, ``h.{i}.mlp.c_proj.*``, ``ln_f.*`` and, when the head is not tied,
  ``lm_head.weight``. Its ``Conv1D`` weights are ``[in, out]``: the TF ones without the 1.

* **Ours** (:mod:`scratchgpt.book.model`): ``nn.Linear`` weights are ``[out, in]``, so every
  convolution weight above is transposed; the fused ``att.qkv`` rows are query | key | value
  exactly like c_attn's columns, with the heads contiguous inside each.

:mod:`scratchgpt.formats.openai` reads the first, :mod:`scratchgpt.formats.hf` the second
both ways, :mod:`scratchgpt.formats.convert` tells them apart. Everything is float32.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2_FILES, GPT2Tokenizer
from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir
from scratchgpt.formats.modeldir import save_model, save_tokenizer

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class WeightsError(PipelineError, ValueError):
    """A checkpoint that cannot be read or converted; the message says which file or tensor."""


# ---------------------------------------------------------------------------------------------
# One table of names for the three layouts


@dataclass(frozen=True)
class TensorNames:
    """One tensor under its three names; ``conv`` ones are transposed between layouts."""

    ours: str
    hf: str  # without the "transformer." prefix
    tf: str
    conv: bool = False


def tensor_table(config: GPTConfig) -> list[TensorNames]:
    """Every tensor of a GPT-2 checkpoint (qkv biases included, even for qkv_bias=False)."""
    table = [
        TensorNames("tok_emb.weight", "wte.weight", "model/wte"),
        TensorNames("pos_emb.weight", "wpe.weight", "model/wpe"),
    ]
    for i in range(config.n_layers):
        ours, hf, tf = f"trf_blocks.{i}.", f"h.{i}.", f"model/h{i}/"
        for our_mod, mod, conv in (
            ("norm1", "ln_1", False),
            ("att.qkv", "attn.c_attn", True),
            ("att.out_proj", "attn.c_proj", True),
            ("norm2", "ln_2", False),
            ("ff.fc", "mlp.c_fc", True),
            ("ff.proj", "mlp.c_proj", True),
        ):
            tf_mod = tf + mod.replace(".", "/")
            weight, bias = ("w", "b") if conv else ("g", "b")
            table.append(TensorNames(f"{ours}{our_mod}.weight", f"{hf}{mod}.weight", f"{tf_mod}/{weight}", conv))
            table.append(TensorNames(f"{ours}{our_mod}.bias", f"{hf}{mod}.bias", f"{tf_mod}/{bias}"))
    table.append(TensorNames("final_norm.weight", "ln_f.weight", "model/ln_f/g"))
    table.append(TensorNames("final_norm.bias", "ln_f.bias", "model/ln_f/b"))
    return table


def our_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor of our model, from a model on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = GPTModel(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_shape(what: str, got: Sequence[int], expected: Sequence[int]) -> None:
    if tuple(got) != tuple(expected):
        raise WeightsError(f"{what}: shape {list(got)} does not match the config, expected {list(expected)}")


def write_model_dir(
    model: GPTModel, out_dir: PathLike, tokenizer: GPT2Tokenizer | None, source: dict[str, Any]
) -> Path:
    """Write a model directory atomically; ``tokenizer`` is saved beside it unless None."""
    out = Path(out_dir)
    with atomic_dir(out) as staging:
        metadata: dict[str, Any] = {}
        if tokenizer is not None:
            metadata["tokenizer"] = save_tokenizer(tokenizer, staging)
        metadata["source"] = source
        save_model(model, staging, metadata=metadata)
    return out


def gpt2_tokenizer(bpe_dir: Path, config: GPTConfig, hint: str) -> GPT2Tokenizer:
    """GPT-2's BPE from ``bpe_dir``, checked to fit the model's vocabulary."""
    missing = [name for name in GPT2_FILES if not (bpe_dir / name).is_file()]
    if missing:
        raise WeightsError(f"{bpe_dir}: no {' or '.join(missing)} (GPT-2's tokenizer); {hint}")
    try:
        tokenizer = GPT2Tokenizer(bpe_dir)
    except (AssertionError, ValueError, KeyError) as e:
        raise WeightsError(f"{bpe_dir}: encoder.json and vocab.bpe are not a GPT-2 BPE ({first_line(e)})") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise WeightsError(
            f"the model has {config.vocab_size} token embeddings, "
            f"fewer than the {tokenizer.vocab_size} tokens of GPT-2's tokenizer"
        )
    return tokenizer


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def make_config(where: str, **fields: Any) -> GPTConfig:
    try:
        return GPTConfig(**fields)
    except ValueError as e:
        raise WeightsError(f"{where}: {e}") from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
