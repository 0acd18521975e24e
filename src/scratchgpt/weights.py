"""OpenAI's GPT-2 weights (chapter 5) and Hugging Face interop.

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

* **Ours** (:mod:`scratchgpt.model`): ``nn.Linear`` weights are ``[out, in]``, so every
  convolution weight above is transposed; the fused ``att.qkv`` rows are query | key | value
  exactly like c_attn's columns, with the heads contiguous inside each.

:func:`download_openai` fetches the seven checkpoint files (primary, backup, then the mirror;
sizes and hashes checked; broken transfers resumed), :func:`convert_tf_checkpoint` and
:func:`import_hf` write a model directory, :func:`export_hf` writes a folder that
``transformers.GPT2LMHeadModel.from_pretrained`` loads. Everything is float32. Command line::

    python -m scratchgpt.weights download 124M data/gpt2-124M
    python -m scratchgpt.weights convert data/gpt2-124M models/gpt2-small
    python -m scratchgpt.weights export-hf models/gpt2-small hf/gpt2-small
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import FileParams
from .download import HttpClient, fetch_file, file_dest, mirror_from_env
from .errors import PipelineError
from .files import atomic_dir, write_bytes, write_json
from .model import MODEL_FORMAT, PRESETS, GPTConfig, GPTModel, load_model, model_from_state, save_model
from .tokenizer import GPT2_EOT_ID, GPT2_FILES, TOKENIZER_DIR, GPT2Tokenizer, save_tokenizer

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class WeightsError(PipelineError, ValueError):
    """A checkpoint that cannot be read or converted; the message says which file or tensor."""


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
        fetch_file(spec, target, client, mirror, resume=True)
    return dest


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
        raise WeightsError("reading OpenAI's checkpoint needs TensorFlow: pip install tensorflow-cpu") from None
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


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2 folder → model directory

HF_PREFIX = "transformer."
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers
HF_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the same tanh approximation
HF_MARKER = "scratchgpt"  # our extra config.json key: what HF's config cannot say


def config_from_hf(path: Path) -> GPTConfig:
    """Our config for a Hugging Face GPT-2 config.json; anything our model cannot do is refused."""
    cfg = read_json(path)
    if cfg.get("model_type") != "gpt2":
        raise WeightsError(f"{path}: model_type {json.dumps(cfg.get('model_type'))} is not supported, only \"gpt2\"")
    problems = []
    activation = cfg.get("activation_function", "gelu_new")
    if activation not in HF_TANH_GELUS:
        problems.append(f"activation_function {json.dumps(activation)} (only \"gelu_new\")")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        problems.append(f"layer_norm_epsilon {json.dumps(eps)} (only 1e-05)")
    n_embd = cfg.get("n_embd", 768)
    if cfg.get("n_inner") not in (None, 4 * n_embd):
        problems.append(f"n_inner {json.dumps(cfg['n_inner'])} (only null or 4 * n_embd = {4 * n_embd})")
    for key, supported in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if cfg.get(key, supported) != supported:
            problems.append(f"{key} {json.dumps(cfg[key])} (only {json.dumps(supported)})")
    if problems:
        raise WeightsError(f"{path}: unsupported GPT-2 settings: {'; '.join(problems)}")
    marker = cfg.get(HF_MARKER) if isinstance(cfg.get(HF_MARKER), dict) else {}
    return make_config(
        str(path),
        vocab_size=cfg.get("vocab_size", 50257),
        context_length=cfg.get("n_positions", cfg.get("n_ctx", 1024)),
        emb_dim=n_embd,
        n_heads=cfg.get("n_head", 12),
        n_layers=cfg.get("n_layer", 12),
        drop_rate=marker["drop_rate"] if "drop_rate" in marker else hf_drop_rate(cfg),
        qkv_bias=marker.get("qkv_bias", True),
        tie_weights=cfg.get("tie_word_embeddings", True),
    )


def hf_drop_rate(cfg: dict[str, Any]) -> float:
    """Our single dropout rate from HF's three (the largest when they differ)."""
    rates = {key: cfg.get(key, 0.1) for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop")}
    if len(set(rates.values())) > 1:
        log.warning("dropout rates differ (%s); using the largest for every dropout", rates)
    return float(max(rates.values()))


def hf_weight_files(hf_dir: Path) -> list[Path]:
    """The weight files of a HF folder: safetensors (maybe sharded), else pytorch_model.bin."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (hf_dir / single).is_file():
            return [hf_dir / single]
        if (hf_dir / index).is_file():
            weight_map = read_json(hf_dir / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise WeightsError(f"{hf_dir / index}: no weight_map")
            names = sorted(set(weight_map.values()))
            if not all(isinstance(n, str) and n == PurePosixPath(n).name for n in names):
                raise WeightsError(f"{hf_dir / index}: weight files must be file names in the folder")
            return [hf_dir / name for name in names]
    raise WeightsError(f"{hf_dir}: no model.safetensors or pytorch_model.bin (other formats are not read)")


def read_hf_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of the weight files, names without the "transformer." prefix.

    Only safetensors, or a PyTorch file through ``torch.load(weights_only=True)``: nothing
    else is ever unpickled.
    """
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        for name, tensor in read_weight_file(path).items():
            tensors[name.removeprefix(HF_PREFIX)] = tensor
    return tensors


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path} not found")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {name: f.get_tensor(name) for name in f.keys()}
        except Exception as e:  # safetensors raises its own SafetensorError, or OSError
            raise WeightsError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    if path.suffix == ".bin":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as e:  # UnpicklingError for anything but plain tensors, or a bad zip
            raise WeightsError(
                f"{path}: refused or unreadable; only plain tensors are loaded, never pickled objects ({first_line(e)})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: expected a state dict of tensors")
        return state
    raise WeightsError(f"{path}: unknown weight file type (only .safetensors and .bin)")


def state_from_hf(tensors: dict[str, torch.Tensor], config: GPTConfig, where: str) -> dict[str, torch.Tensor]:
    """Our state dict from HF's tensors (consumed as they are used, to keep one copy in memory)."""
    for name in [n for n in tensors if n.endswith(HF_BUFFERS)]:
        del tensors[name]
    shapes = our_shapes(config)
    state = {}
    for t in tensor_table(config):
        if t.hf not in tensors:
            raise WeightsError(f"{where}: tensor {t.hf} is missing")
        tensor = tensors.pop(t.hf)
        ours = shapes.get(t.ours, (3 * config.emb_dim,))
        check_shape(f"{where}: tensor {t.hf}", tensor.shape, ours[::-1] if t.conv else ours)
        if t.ours not in shapes:  # a qkv bias for a model without them: must be zero
            if torch.count_nonzero(tensor):
                raise WeightsError(f"{where}: tensor {t.hf} is not zero but config.json says qkv_bias false")
            continue
        tensor = tensor.float()
        state[t.ours] = tensor.t().contiguous() if t.conv else tensor.contiguous()
    head = tensors.pop("lm_head.weight", None)
    if not config.tie_weights:
        if head is None:
            raise WeightsError(f"{where}: tensor lm_head.weight is missing (tie_word_embeddings is false)")
        check_shape(f"{where}: tensor lm_head.weight", head.shape, shapes["out_head.weight"])
        state["out_head.weight"] = head.float().contiguous()
    if tensors:
        names = ", ".join(sorted(tensors)[:5])
        raise WeightsError(f"{where}: unexpected tensor(s) {names}; only GPT2LMHeadModel weights are read")
    return state


def import_hf(
    hf_dir: PathLike, out_dir: PathLike, *, bpe_dir: PathLike | None = None, with_tokenizer: bool = True
) -> Path:
    """Turn a Hugging Face GPT-2 folder into our model directory ``out_dir``.

    The tokenizer is the folder's vocab.json + merges.txt (else its tokenizer.json), saved as
    encoder.json + vocab.bpe. With ``bpe_dir`` (a folder holding encoder.json + vocab.bpe) those
    files are saved instead, once the folder's own tokenizer, if any, is found to be the same.
    """
    hf_dir = Path(hf_dir)
    config = config_from_hf(hf_dir / "config.json")
    files = hf_weight_files(hf_dir)
    with contextlib.ExitStack() as stack:
        tokenizer = hf_tokenizer(hf_dir, config, bpe_dir, stack) if with_tokenizer else None
        model = model_from_state(config, state_from_hf(read_hf_tensors(files), config, str(hf_dir)))
        return write_model_dir(model, out_dir, tokenizer, {"kind": "huggingface", "name": hf_dir.name})


def hf_tokenizer(
    hf_dir: Path, config: GPTConfig, bpe_dir: PathLike | None, stack: contextlib.ExitStack
) -> GPT2Tokenizer:
    """GPT-2's tokenizer for a HF folder (its files staged in a folder that ``stack`` removes)."""
    bpe = read_hf_bpe(hf_dir)
    if bpe_dir is not None:
        tokenizer = gpt2_tokenizer(Path(bpe_dir), config, "bpe_dir must hold GPT-2's tokenizer files")
        if bpe is not None:
            check_same_bpe(bpe, hf_dir, Path(bpe_dir))
        return tokenizer
    if bpe is None:
        raise WeightsError(
            f"{hf_dir}: no vocab.json + merges.txt or tokenizer.json (GPT-2's tokenizer); pass bpe_dir, "
            "a folder holding encoder.json and vocab.bpe, or with_tokenizer=False"
        )
    return gpt2_tokenizer(stack.enter_context(staged_bpe(bpe)), config, "")


HF_TOKENIZER_FILES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}


Bpe = tuple[dict[str, int], list[tuple[str, str]]]  # vocabulary (token → id) and merges


def read_hf_bpe(hf_dir: Path) -> Bpe | None:
    """The HF folder's BPE: vocab.json + merges.txt, else tokenizer.json; None when it has neither."""
    if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        return read_vocab(hf_dir / "vocab.json"), read_merges(hf_dir / "merges.txt")
    if (hf_dir / "tokenizer.json").is_file():
        return read_tokenizer_json(hf_dir / "tokenizer.json")
    return None


def read_tokenizer_json(path: Path) -> Bpe:
    """Vocabulary and merges of a ``tokenizers`` BPE (what transformers 5 saves)."""
    model = read_json(path).get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise WeightsError(f"{path}: not a BPE tokenizer")
    vocab, merges = model.get("vocab"), model.get("merges")
    if not (isinstance(vocab, dict) and all(isinstance(v, int) for v in vocab.values()) and isinstance(merges, list)):
        raise WeightsError(f"{path}: model.vocab and model.merges are not a BPE's")
    pairs = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in merges]
    if not all(len(pair) == 2 and all(isinstance(t, str) for t in pair) for pair in pairs):
        raise WeightsError(f"{path}: model.merges must be pairs of tokens")
    return vocab, pairs  # type: ignore[return-value]


@contextlib.contextmanager
def staged_bpe(bpe: Bpe) -> Iterator[Path]:
    """A temporary folder with encoder.json + vocab.bpe holding ``bpe``, written the way OpenAI
    wrote them (so GPT-2's own tokenizer comes out byte for byte)."""
    vocab, merges = bpe
    with tempfile.TemporaryDirectory(prefix="scratchgpt-bpe-") as tmp:
        write_bytes(Path(tmp) / "encoder.json", json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1]))).encode())
        write_bytes(Path(tmp) / "vocab.bpe", ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode())
        yield Path(tmp)


def check_same_bpe(bpe: Bpe, hf_dir: Path, bpe_dir: Path) -> None:
    """The HF folder's tokenizer must be bpe_dir's."""
    if bpe[0] != read_vocab(bpe_dir / "encoder.json"):
        raise WeightsError(f"{hf_dir}: its tokenizer has not the same vocabulary as {bpe_dir / 'encoder.json'}")
    if bpe[1] != read_merges(bpe_dir / "vocab.bpe"):
        raise WeightsError(f"{hf_dir}: its tokenizer has not the same merges as {bpe_dir / 'vocab.bpe'}")


def read_vocab(path: Path) -> dict[str, int]:
    """A BPE vocabulary, token → id, however the JSON is laid out."""
    vocab = read_json(path)
    if not all(isinstance(v, int) for v in vocab.values()):
        raise WeightsError(f"{path}: not a BPE vocabulary (token → id)")
    return vocab


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The merges of a BPE, in order, without the ``#version`` line."""
    merges = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise WeightsError(f"{path}, line {n}: not a merge (two tokens)")
        merges.append((parts[0], parts[1]))
    return merges


# ---------------------------------------------------------------------------------------------
# Model directory → Hugging Face GPT-2 folder


def hf_config(config: GPTConfig, eos_id: int | None) -> dict[str, Any]:
    """config.json for ``transformers.GPT2LMHeadModel`` (plus our marker for a lossless way back)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.emb_dim,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
        "dtype": "float32",
        HF_MARKER: {"qkv_bias": config.qkv_bias, "drop_rate": config.drop_rate},
    }


def hf_state(model: GPTModel) -> dict[str, torch.Tensor]:
    """HF GPT2LMHeadModel tensors for our model (zero qkv biases when it has none)."""
    config = model.config
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {}
    for t in tensor_table(config):
        tensor = ours.get(t.ours)
        if tensor is None:  # qkv_bias=False
            tensor = torch.zeros(3 * config.emb_dim, dtype=ours["tok_emb.weight"].dtype)
        state[HF_PREFIX + t.hf] = (tensor.t() if t.conv else tensor).contiguous()
    if not config.tie_weights:
        state["lm_head.weight"] = ours["out_head.weight"].contiguous()
    return state


def export_hf(model_dir: PathLike, out_dir: PathLike) -> Path:
    """Write our model directory as a Hugging Face GPT-2 folder (config.json, model.safetensors,
    and vocab.json + merges.txt when the model uses GPT-2's tokenizer); return ``out_dir``.

    ``transformers.GPT2LMHeadModel.from_pretrained(out_dir)`` then gives the same logits.
    """
    model_dir = Path(model_dir)
    try:
        model = load_model(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise WeightsError(str(e)) from None
    bpe = model_dir / TOKENIZER_DIR
    has_bpe = all((bpe / name).is_file() for name in GPT2_FILES)
    out = Path(out_dir)
    with atomic_dir(out) as staging:
        save_file(hf_state(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        write_json(staging / "config.json", hf_config(model.config, GPT2_EOT_ID if has_bpe else None))
        if has_bpe:
            for ours, hf in HF_TOKENIZER_FILES.items():
                shutil.copyfile(bpe / ours, staging / hf)
            write_json(staging / "tokenizer_config.json", hf_tokenizer_config(model.config))
        elif bpe.is_dir():
            log.warning("%s: not GPT-2's tokenizer; only the weights are exported", bpe)
    return out


def hf_tokenizer_config(config: GPTConfig) -> dict[str, Any]:
    eot = "<|endoftext|>"
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": config.context_length,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "add_prefix_space": False,
    }


# ---------------------------------------------------------------------------------------------
# Either source


def detect(src: PathLike) -> str:
    """"tf" for an OpenAI TensorFlow checkpoint folder, "hf" for a Hugging Face one."""
    src = Path(src)
    if not src.is_dir():
        raise WeightsError(f"{src}: no such folder")
    if (src / "hparams.json").is_file() and ((src / "checkpoint").is_file() or any(src.glob("*.index"))):
        return "tf"
    config = src / "config.json"
    if config.is_file():
        data = read_json(config)
        if "model_type" in data:
            return "hf"
        if data.get("format") == MODEL_FORMAT and "model" in data:
            raise WeightsError(f"{src}: already a scratchgpt model directory")
    raise WeightsError(
        f"{src}: neither an OpenAI TensorFlow checkpoint (hparams.json, checkpoint, model.ckpt.*) "
        "nor a Hugging Face GPT-2 folder (config.json with model_type, model.safetensors)"
    )


def convert(src: PathLike, out_dir: PathLike, **options: Any) -> Path:
    """:func:`convert_tf_checkpoint` or :func:`import_hf`, whichever ``src`` needs."""
    if detect(src) == "tf":
        return convert_tf_checkpoint(src, out_dir, **options)
    return import_hf(src, out_dir, **options)


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m scratchgpt.weights", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="OpenAI TF checkpoint or Hugging Face GPT-2 folder → model directory")
    conv.add_argument("src", help="folder with hparams.json + model.ckpt.*, or config.json + model.safetensors")
    conv.add_argument("out", help="the model directory to write")
    conv.add_argument("--bpe-dir", help="folder with encoder.json + vocab.bpe (default: those in SRC)")
    conv.add_argument("--no-tokenizer", action="store_true", help="save no tokenizer")
    exp = sub.add_parser("export-hf", help="model directory → Hugging Face GPT-2 folder")
    exp.add_argument("model", help="our model directory")
    exp.add_argument("out", help="the folder to write")
    down = sub.add_parser("download", help="OpenAI's checkpoint files of one size")
    down.add_argument("size", help=", ".join(OPENAI_PRESETS))
    down.add_argument("out", help="folder for the seven files")
    down.add_argument("--mirror", default=None, help="folder or URL tried last (default: $SCRATCHGPT_MIRROR)")
    down.add_argument(
        "--base-url", action="append", dest="base_urls", metavar="URL",
        help="fetch <URL>/<SIZE>/<file> instead of OpenAI's and the backup (repeat for more)",
    )  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "convert":
            out = convert(args.src, args.out, bpe_dir=args.bpe_dir, with_tokenizer=not args.no_tokenizer)
        elif args.command == "export-hf":
            out = export_hf(args.model, args.out)
        else:
            mirror = args.mirror or mirror_from_env()
            out = download_openai(args.size, args.out, mirror=mirror, base_urls=args.base_urls or OPENAI_BASE_URLS)
    except (PipelineError, OSError) as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
