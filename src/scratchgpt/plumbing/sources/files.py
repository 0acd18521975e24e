"""The ``files`` source: each file of the dataset from its URLs, then the mirror, sha256-checked
(:func:`scratchgpt.plumbing.download.fetch_dataset`)."""

from __future__ import annotations

from pathlib import Path

from scratchgpt.plumbing.download import fetch_dataset
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DatasetParams


def fetch(
    name: str, dataset: DatasetParams, out: Path, client: HttpClient, mirror: str | None, reuse: Path
) -> dict[str, str]:
    """data/raw/<name>/ from its files (those already in ``reuse`` and verified are copied)."""
    return fetch_dataset(name, dataset, out, client, mirror, reuse=reuse)
