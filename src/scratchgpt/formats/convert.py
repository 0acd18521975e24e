"""Any GPT-2 checkpoint we can read into a model directory: :func:`detect` tells an OpenAI
TensorFlow checkpoint from a Hugging Face folder, :func:`convert` converts either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.formats.gpt2 import PathLike, WeightsError, read_json
from scratchgpt.formats.hf import import_hf
from scratchgpt.formats.modeldir import MODEL_FORMAT
from scratchgpt.formats.openai import convert_tf_checkpoint

# ---------------------------------------------------------------------------------------------
# Either source


def detect(src: PathLike) -> str:
    """ "tf" for an OpenAI TensorFlow checkpoint folder, "hf" for a Hugging Face one."""
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
