"""Finetuned model directories: LoRA adapters saved alone beside a reference to their base model
(appendix E), and the merged or adapters-only result of a finetuning stage. Apart from
:mod:`scratchgpt.formats.modeldir`, so that LoRA, which only the finetuning stages run, is no dep
of the stages that make or read plain models (the classifier's head: :mod:`.classifier`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from scratchgpt.book.lora import apply_lora, merge_lora
from scratchgpt.book.model import GPTModel
from scratchgpt.errors import PipelineError
from scratchgpt.files import sha256_file, write_json
from scratchgpt.formats.modeldir import (
    ADAPTERS_FILE,
    CONFIG_FILE,
    MODEL_FORMAT,
    WEIGHTS_FILE,
    load_model,
    read_model_config,
    save_model,
    weights_sha256,
    write_manifest,
    write_safetensors,
)

# ---------------------------------------------------------------------------------------------
# LoRA adapters saved alone (appendix E)


def save_adapters(
    model: nn.Module,
    directory: str | os.PathLike[str],
    base_dir: str | os.PathLike[str],
    settings: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    lands_at: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the adapters, and every weight the base model lacks (a new head), beside a
    reference to ``base_dir`` and its weights' sha256; :func:`load_adapted` rebuilds the model.
    The reference is relative to ``lands_at``, where ``directory`` will be moved (default: itself)."""
    directory, base_dir = Path(directory), Path(base_dir)
    base_config, _ = read_model_config(base_dir)
    state = {}
    for name, tensor in model.state_dict().items():
        is_adapter = name.endswith((".A", ".B"))
        is_new_head = name.startswith("out_head") and model.config.n_classes != base_config.n_classes
        if is_adapter or is_new_head:
            state[name] = tensor.detach().contiguous().cpu()
    directory.mkdir(parents=True, exist_ok=True)
    digest = write_safetensors(directory / ADAPTERS_FILE, state)
    base = {"path": os.path.relpath(base_dir, lands_at or directory), "weights_sha256": weights_sha256(base_dir)}
    config = {
        "format": MODEL_FORMAT,
        "model": model.config.to_dict(),
        **(metadata or {}),
        "lora": {**settings, "adapters_sha256": digest, "base": base},
    }
    write_json(directory / CONFIG_FILE, config)
    write_manifest(directory, known={ADAPTERS_FILE: digest})
    return directory


def load_adapted(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The model of an adapters-only directory: its base, the new head if any, the adapters
    applied and merged. The base must be the very one the adapters were trained on."""
    directory = Path(directory)
    config, extra = read_model_config(directory)
    info = extra["lora"]
    base_dir = (directory / info["base"]["path"]).resolve()
    adapters = directory / ADAPTERS_FILE
    if not adapters.is_file() or sha256_file(adapters) != info["adapters_sha256"]:
        raise PipelineError(f"{adapters} is missing or does not match its sha256 in config.json")
    if sha256_file(base_dir / WEIGHTS_FILE) != info["base"]["weights_sha256"]:
        raise PipelineError(f"{directory}: its base model {base_dir} has changed since the adapters were trained")
    base = load_model(base_dir, device=device, verify=False)  # its file was just checked
    model = GPTModel(config) if base.config != config else base
    if model is not base:
        state = {k: v for k, v in base.state_dict().items() if not k.startswith("out_head")}
        model.load_state_dict(state, strict=False)
        model.to(device)
    apply_lora(model, info["rank"], info["alpha"], 0.0, info["targets"])
    missing, unexpected = model.load_state_dict(load_file(str(adapters), device=str(device)), strict=False)
    if unexpected or any(k.endswith((".A", ".B")) for k in missing):
        raise PipelineError(f"{adapters} does not fit {directory}'s model (unexpected {unexpected[:3]})")
    return merge_lora(model).eval()


def load_finetuned(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> GPTModel:
    """The model of any model directory: its own weights (:func:`~scratchgpt.formats.modeldir.load_model`),
    or LoRA adapters merged into their base (:func:`load_adapted`)."""
    if not (Path(directory) / WEIGHTS_FILE).is_file() and "lora" in read_model_config(directory)[1]:
        return load_adapted(directory, device)  # adapters saved alone, beside a base model
    return load_model(directory, device=device)


def save_finetuned(
    model: nn.Module,
    directory: Path,
    section: Any,
    base_dir: Path,
    metadata: dict[str, Any],
    lands_at: Path | None = None,
) -> None:
    """Merged weights (a plain model), or for ``lora.save: adapters`` the adapters alone (see
    :func:`save_adapters` for ``lands_at``)."""
    if section.method == "lora" and section.lora.save == "adapters":
        lo = section.lora
        settings = {"rank": lo.rank, "alpha": lo.alpha, "targets": list(lo.targets)}
        save_adapters(model, directory, base_dir, settings, metadata, lands_at)
        return
    save_model(merge_lora(model), directory, metadata)
