"""Model directories: what every stage that makes a model writes, and every consumer reads.

A model directory holds ``config.json`` (the :class:`~scratchgpt.book.model.GPTConfig`, the
tokenizer's description and other metadata, and the weights' sha256), ``model.safetensors``
and ``tokenizer/`` (the files that rebuild the tokenizer). A LoRA finetune saved as adapters
holds ``adapters.safetensors`` and a reference to its base model directory instead of
``model.safetensors`` (written and read by :mod:`scratchgpt.formats.finetuned`, with the
classifier's head). Never pickles.

``manifest.json``, written last, holds the sha256 of every other file of the folder: whatever
reads a model directory checks config.json and the tokenizer files against it (and the weights
against it and config.json), so a folder edited after it was written — a config's n_heads, a
tokenizer file, a file added — is an error naming the file, never a silently different model.
Every field of config.json is validated, and the memory the model needs is compared with what the
machine has, before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from scratchgpt import files
from scratchgpt.book.model import GPTConfig, GPTModel, model_from_state
from scratchgpt.book.tokenizer import (
    GPT2_FILES,
    GPT2_VOCAB_SIZE,
    GPT2Tokenizer,
    Tokenizer,
    WordTokenizer,
)
from scratchgpt.device import available_memory
from scratchgpt.errors import PipelineError
from scratchgpt.files import sha256_file, write_bytes, write_json
from scratchgpt.plumbing.paths import rebuild_hint

MODEL_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTERS_FILE = "adapters.safetensors"
TOKENIZER_DIR = "tokenizer"
MANIFEST_FILE = "manifest.json"
WEIGHT_FILES = (WEIGHTS_FILE, ADAPTERS_FILE)  # checked by their loaders, each hashed once


class ModelError(PipelineError, ValueError):
    """A model directory whose weights are corrupt or unreadable; the message names the file."""


class ModelFileMissing(ModelError, FileNotFoundError):
    """A file the model directory's manifest lists is not there."""


# ---------------------------------------------------------------------------------------------
# The manifest: a digest of every file


def write_manifest(directory: str | os.PathLike[str], known: dict[str, str] | None = None) -> dict[str, str]:
    """Write ``manifest.json``: the sha256 of every file of ``directory`` but itself, by its path
    relative to the folder (``known`` digests, of files just written, are not read back)."""
    directory = Path(directory)
    digests = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST_FILE:
            digests[name] = (known or {}).get(name) or sha256_file(path)
    write_json(directory / MANIFEST_FILE, {"format": MODEL_FORMAT, "sha256": digests})
    return digests


def _read_json(path: Path, hint: str = "") -> Any:
    """The JSON in ``path``; a ModelError naming the file (and ``hint``) when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not readable JSON ({e}){hint}") from None


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, str]:
    """The digests ``manifest.json`` records, by file."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(f"{path} not found: the folder's files are not covered by a digest; {rebuild_hint(path)}")
    data = _read_json(path, f"; {rebuild_hint(path)}")
    digests = data.get("sha256") if isinstance(data, dict) else None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ModelError(f"{path}: no sha256 mapping of file names to digests; {rebuild_hint(path)}")
    return digests


def verify_manifest(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file of ``directory`` against manifest.json: none missing, none added, each
    unchanged; the weight files are only checked to be there (their loaders hash them). Returns
    the manifest's digests."""
    directory = Path(directory)
    digests = read_manifest(directory)
    present = {
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE
    }
    for name in sorted(present - set(digests)):
        path = directory / name
        raise ModelError(f"{path}: not listed in {MANIFEST_FILE}, added after the model was written; remove it")
    for name, digest in digests.items():
        path = directory / name
        if name not in present:
            raise ModelFileMissing(f"{path} not found, but {MANIFEST_FILE} lists it; {rebuild_hint(path)}")
        if name not in WEIGHT_FILES and sha256_file(path) != digest:
            raise ModelError(
                f"{path} does not match its sha256 in {MANIFEST_FILE}: changed after the model was written; "
                f"{rebuild_hint(path)}"
            )
    return digests


def rewrite_config(directory: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Replace a model directory's config.json by ``data`` and record its new digest in the manifest
    (the other files' digests stay as they were checked)."""
    directory = Path(directory)
    digests = verify_manifest(directory)
    write_json(directory / CONFIG_FILE, data)
    digests[CONFIG_FILE] = sha256_file(directory / CONFIG_FILE)
    write_json(directory / MANIFEST_FILE, {"format": MODEL_FORMAT, "sha256": dict(sorted(digests.items()))})


# ---------------------------------------------------------------------------------------------
# Memory


def check_fits(config: GPTConfig, device: str | torch.device, what: str, batch_size: int = 0, seq_len: int = 0) -> int:
    """Raise a one-line ModelError naming ``what`` (the keys or file that set the model's size)
    when the model of ``config`` — to train on ``batch_size`` × ``seq_len`` tokens, or its
    weights alone — needs more memory than ``device`` has available; return the estimate."""
    device = torch.device(device)
    need = config.memory_estimate(batch_size, seq_len)
    have = available_memory(device)
    if need > have:
        doing = "to train" if batch_size else "for its weights"
        raise ModelError(
            f"{what}: needs ~{need / 1e9:.1f} GB {doing}, this machine has {have / 1e9:.1f} GB available "
            f"({device.type}); choose a smaller model"
        )
    return need


def size_keys(config: GPTConfig, prefix: str = "") -> str:
    """The config's fields that set its size, as ``key=value`` (for check_fits' messages)."""
    names = ("vocab_size", "context_length", "emb_dim", "n_layers")
    return ", ".join(f"{prefix}{name}={getattr(config, name)}" for name in names)


# ---------------------------------------------------------------------------------------------
# Model and weights


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` as a safetensors file (atomically, fsynced); return its sha256, taken from
    the bytes written rather than by reading the file back."""
    data = safetensors.torch.save(tensors, metadata=metadata)
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def save_model(model: GPTModel, directory: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        state.pop("out_head.weight")  # the same tensor as tok_emb.weight
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"{directory}: not saved, {name} holds NaN or infinite values")
    digest = write_safetensors(directory / WEIGHTS_FILE, state, metadata={"format": "pt"})
    config = {"format": MODEL_FORMAT, "model": model.config.to_dict(), **(metadata or {}), "weights_sha256": digest}
    write_json(directory / CONFIG_FILE, config)
    write_manifest(directory, known={WEIGHTS_FILE: digest})
    return directory


def read_model_config(directory: str | os.PathLike[str]) -> tuple[GPTConfig, dict[str, Any]]:
    """The GPTConfig of a model directory and the rest of its config.json, once the folder's
    files are found to match its manifest and every field of the config to be valid."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a model directory")
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT or not isinstance(data.get("model"), dict):
        found = data.get("format") if isinstance(data, dict) else None
        raise ValueError(f"{path}: not a scratchgpt model config (format {found!r})")
    verify_manifest(directory)
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    missing = sorted(fields - set(data["model"]))
    if missing:
        raise ModelError(f"{path}: model.{missing[0]}: required key is missing")
    try:
        config = GPTConfig.from_dict(data["model"])
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: {e}") from None
    extra = {k: v for k, v in data.items() if k not in ("format", "model")}
    check_vocab(path, config, tokenizer_size(extra.get("tokenizer")))
    return config, extra


def tokenizer_size(description: Any) -> int | None:
    """The vocabulary a tokenizer description (config.json's ``tokenizer``) names, if it does."""
    if not isinstance(description, dict):
        return None
    if description.get("kind") == "gpt2":
        return GPT2_VOCAB_SIZE
    size = description.get("vocab_size")
    return size if isinstance(size, int) else None


def check_vocab(path: Path, config: GPTConfig, n_vocab: int | None) -> None:
    """The model's token embeddings must cover every id of its tokenizer."""
    if n_vocab is not None and n_vocab > config.vocab_size:
        raise ModelError(
            f"{path}: model.vocab_size must cover the tokenizer's {n_vocab} tokens, got {config.vocab_size}"
        )


def load_model(directory: str | os.PathLike[str], device: str | torch.device = "cpu", verify: bool = True) -> GPTModel:
    """Build the model of a model directory and load its weights (safetensors only); a directory of
    LoRA adapters alone is :func:`scratchgpt.formats.finetuned.load_finetuned`'s.

    With ``verify`` the weights must match the sha256 recorded in config.json when they were
    saved: a corrupted file is an error naming it and what to run, never a silently wrong model."""
    config, extra = read_model_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if "lora" in extra and not weights.is_file():  # adapters saved alone, beside a base model
        raise ModelError(
            f"{directory}: LoRA adapters over a base model, no weights of its own; "
            "load it with scratchgpt.formats.finetuned.load_finetuned"
        )
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    recorded = {read_manifest(directory).get(WEIGHTS_FILE), extra.get("weights_sha256")}
    if verify and (len(recorded) != 1 or sha256_file(weights) not in recorded):
        raise ModelError(
            f"{weights} does not match the sha256 in config.json and {MANIFEST_FILE}: corrupt; {rebuild_hint(weights)}"
        )
    check_fits(config, device, f"{Path(directory) / CONFIG_FILE} ({size_keys(config, 'model.')})")
    try:
        state = load_file(str(weights), device=str(device))
    except SafetensorError as e:
        raise ModelError(f"{weights} is unreadable ({e}); {rebuild_hint(weights)}") from None
    return model_from_state(config, state)


def weights_sha256(directory: str | os.PathLike[str]) -> str:
    """The sha256 of a model directory's weights: the one config.json records (which
    :func:`load_model` checks the file against), else the file's own."""
    return read_model_config(directory)[1].get("weights_sha256") or sha256_file(Path(directory) / WEIGHTS_FILE)


# ---------------------------------------------------------------------------------------------
# The tokenizer


def save_tokenizer(tokenizer: Tokenizer, model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy what rebuilds ``tokenizer`` into ``<model_dir>/tokenizer/``; return its description."""
    out = Path(model_dir) / TOKENIZER_DIR
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, GPT2Tokenizer):
        for name in GPT2_FILES:
            files.write_bytes(out / name, (tokenizer.bpe_dir / name).read_bytes())
    elif isinstance(tokenizer, WordTokenizer):
        tokenizer.save(out / "vocab.json")
    else:
        raise TypeError(f"cannot save a {type(tokenizer).__name__}")
    return tokenizer.describe()


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer saved in a model directory by :func:`save_tokenizer`, once its files match
    the manifest and the model's vocabulary covers it."""
    config, _ = read_model_config(model_dir)  # checks the tokenizer files against the manifest
    folder = Path(model_dir) / TOKENIZER_DIR
    tokenizer: Tokenizer
    if (folder / "vocab.json").is_file():
        tokenizer = WordTokenizer.load(folder / "vocab.json")
    elif (folder / "encoder.json").is_file():
        tokenizer = GPT2Tokenizer(folder)
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer files (encoder.json + vocab.bpe, or vocab.json)")
    check_vocab(Path(model_dir) / CONFIG_FILE, config, tokenizer.vocab_size)
    return tokenizer
