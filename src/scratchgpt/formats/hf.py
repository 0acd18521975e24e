"""Hugging Face GPT-2 folders both ways: :func:`import_hf` writes our model directory from one
(config.json, safetensors or pytorch_model.bin, vocab.json + merges.txt or tokenizer.json),
:func:`export_hf` writes one that ``transformers.GPT2LMHeadModel.from_pretrained`` loads
(layout: :mod:`scratchgpt.formats.gpt2`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from scratchgpt.book.model import GPTConfig, GPTModel, model_from_state
from scratchgpt.book.tokenizer import GPT2_EOT_ID, GPT2_FILES, GPT2Tokenizer
from scratchgpt.files import atomic_dir, write_bytes, write_json
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
from scratchgpt.formats.modeldir import TOKENIZER_DIR, load_model

log = logging.getLogger(__name__)


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
        raise WeightsError(f'{path}: model_type {json.dumps(cfg.get("model_type"))} is not supported, only "gpt2"')
    problems = []
    activation = cfg.get("activation_function", "gelu_new")
    if activation not in HF_TANH_GELUS:
        problems.append(f'activation_function {json.dumps(activation)} (only "gelu_new")')
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


def export_hf(model_dir: PathLike, out_dir: PathLike, load: Callable[[Path], GPTModel] = load_model) -> Path:
    """Write our model directory as a Hugging Face GPT-2 folder (config.json, model.safetensors,
    and vocab.json + merges.txt when the model uses GPT-2's tokenizer); return ``out_dir``.

    ``transformers.GPT2LMHeadModel.from_pretrained(out_dir)`` then gives the same logits. ``load``
    reads the model: its own weights by default; for LoRA adapters saved alone, pass
    :func:`scratchgpt.formats.finetuned.load_finetuned`.
    """
    model_dir = Path(model_dir)
    try:
        model = load(model_dir)
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
