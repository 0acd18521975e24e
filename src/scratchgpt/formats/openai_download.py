"""OpenAI's GPT-2 TensorFlow checkpoints (chapter 5) downloaded: the seven files of a model size
(primary, backup, then the mirror; sizes and hashes checked; broken transfers resumed) into a
folder that :mod:`scratchgpt.formats.openai` converts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch

from scratchgpt.book.model import PRESETS, GPTModel
from scratchgpt.formats.gpt2 import PathLike, WeightsError
from scratchgpt.plumbing.datasets import file_dest
from scratchgpt.plumbing.download import fetch_file
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import FileParams

log = logging.getLogger(__name__)

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
