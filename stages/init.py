"""Stage init (chapter 5): the model both finetuning stages start from → models/base/, and its
parameter count → metrics/init.json.

Sources (params ``init.source``):

- ``pretrained``: our own ``models/pretrained`` (the default; works offline);
- ``gpt2-124M``, ``gpt2-355M``, ``gpt2-774M``, ``gpt2-1558M``: OpenAI's GPT-2, downloaded once into
  ``$SCRATCHGPT_CACHE/gpt2/<size>/`` (default ``~/.cache/scratchgpt``) and converted;
- ``hf:<owner>/<name>`` (e.g. ``hf:openai-community/gpt2``) at commit ``init.revision``: the
  model's safetensors from the Hugging Face Hub, through huggingface_hub's cache, and converted;
- a folder: an OpenAI TensorFlow checkpoint or a Hugging Face GPT-2 directory.

``init.drop_rate`` sets the dropout the finetuning stages train with (the book uses 0.0).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir, write_json
from scratchgpt.formats.convert import convert
from scratchgpt.formats.hub import import_hub
from scratchgpt.formats.modeldir import CONFIG_FILE, load_model, read_model_config, rewrite_config
from scratchgpt.formats.openai_download import download_openai
from scratchgpt.plumbing import paths, stage
from scratchgpt.plumbing.download import mirror_from_env
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DownloadParams, HttpParams
from scratchgpt.plumbing.sections.init import HUB_PREFIX, OPENAI_SOURCES, InitParams

log = logging.getLogger("init")


def build_base(
    params: InitParams, out_dir: Path = paths.BASE, client: HttpClient | None = None, http: HttpParams | None = None
) -> dict[str, Any]:
    """Write the base model directory for ``params.source``; return a summary for the metrics.
    ``http`` (``download.http``: timeouts, retries, the total deadline) bounds downloaded weights."""
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
            download_openai(size, folder, client=client or HttpClient(http), mirror=mirror_from_env())
            convert(folder, staging)
        elif source.startswith(HUB_PREFIX):
            assert params.revision is not None  # params: required with a Hub source
            log.info("Hugging Face Hub: %s at %s", source[len(HUB_PREFIX) :], params.revision)
            import_hub(source[len(HUB_PREFIX) :], params.revision, staging, http=http, allow_http=params.allow_http)
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise PipelineError(f"init.source: {source!r} is not a folder (nor one of the known sources)")
            convert(folder, staging)
        config, _ = read_model_config(staging)
        if params.drop_rate is not None and params.drop_rate != config.drop_rate:
            data = json.loads((staging / CONFIG_FILE).read_text(encoding="utf-8"))
            data["model"]["drop_rate"] = params.drop_rate
            rewrite_config(staging, data)
    model = load_model(out_dir)  # also checks the copied or converted weights against their sha256
    # Measured only: the source and the model's shape are params (`dvc params diff` shows them).
    return {"parameters": model.num_parameters()}


def main(st: stage.Stage) -> dict[str, Any]:
    summary = build_base(st.params.init, st.out(paths.BASE), http=st.params.download.http)
    log.info("%s: %s parameters from %s", paths.BASE, f"{summary['parameters']:,}", st.params.init.source)
    write_json(st.out(paths.METRICS / "init.json"), summary)
    return summary


if __name__ == "__main__":
    stage.run(main, InitParams, DownloadParams)
