"""The init stage: the model both finetuning stages start from, written to ``models/base/``.

Sources (params ``init.source``):

- ``pretrained``: our own ``models/pretrained`` (the default; works offline);
- ``gpt2-124M``, ``gpt2-355M``, ``gpt2-774M``, ``gpt2-1558M``: OpenAI's GPT-2, downloaded once into
  ``$SCRATCHGPT_CACHE/gpt2/<size>/`` (default ``~/.cache/scratchgpt``) and converted;
- a folder: an OpenAI TensorFlow checkpoint or a Hugging Face GPT-2 directory.

``init.drop_rate`` sets the dropout the finetuning stages train with (the book uses 0.0).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from . import paths
from .config import InitParams, OPENAI_SOURCES
from .download import HttpClient, mirror_from_env
from .errors import PipelineError
from .files import atomic_dir, write_json
from .model import CONFIG_FILE, load_model, read_model_config

log = logging.getLogger(__name__)


def build_base(params: InitParams, out_dir: Path = paths.BASE, client: HttpClient | None = None) -> dict[str, Any]:
    """Write the base model directory for ``params.source``; return a summary for the metrics."""
    from . import weights

    source = params.source
    with atomic_dir(out_dir) as staging:
        if source == "pretrained":
            if not (paths.PRETRAINED / CONFIG_FILE).is_file():
                raise PipelineError(f"{paths.PRETRAINED} not found: run `dvc repro pretrain` first")
            shutil.copytree(paths.PRETRAINED, staging, dirs_exist_ok=True)
        elif source in OPENAI_SOURCES:
            size = OPENAI_SOURCES[source]
            folder = paths.cache_dir() / "gpt2" / size
            log.info("OpenAI GPT-2 %s: checkpoint files in %s", size, folder)
            weights.download_openai(size, folder, client=client, mirror=mirror_from_env())
            weights.convert(folder, staging)
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise PipelineError(f"init.source: {source!r} is not a folder (nor one of the known sources)")
            weights.convert(folder, staging)
        config, _ = read_model_config(staging)
        if params.drop_rate is not None and params.drop_rate != config.drop_rate:
            data = json.loads((staging / CONFIG_FILE).read_text(encoding="utf-8"))
            data["model"]["drop_rate"] = params.drop_rate
            write_json(staging / CONFIG_FILE, data)
    model = load_model(out_dir)  # also checks the copied or converted weights against their sha256
    config, parameters = model.config, model.num_parameters()
    summary = {
        "source": source,
        "parameters": parameters,
        "context_length": config.context_length,
        "emb_dim": config.emb_dim,
        "n_layers": config.n_layers,
        "drop_rate": config.drop_rate,
    }
    log.info("%s: %s parameters from %s", out_dir, f"{parameters:,}", source)
    return summary
