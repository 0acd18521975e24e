"""What a downloaded dataset must hold: each file's size and sha256 as params.yaml gives them, or a
dump's shards as its manifest lists them. Readers of data/raw check it here; nothing of HTTP or
of the download sources, so a change to those reruns only the download stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from scratchgpt.errors import PipelineError
from scratchgpt.files import sha256_file
from scratchgpt.plumbing.sections.download import DatasetParams, FileParams


class DataCorrupt(PipelineError, ValueError):
    """A downloaded file that is missing or no longer matches its sha256; the message says what to run."""


def verify(path: Path, spec: FileParams) -> str | None:
    """None when ``path`` has the expected size and sha256 (those that ``spec`` gives), else what is wrong."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"size mismatch: expected {spec.size} bytes, got {size}"
    if spec.sha256 is not None:
        digest = sha256_file(path)
        if digest != spec.sha256:
            return f"sha256 mismatch: expected {spec.sha256}, got {digest}"
    return None


def file_dest(out_dir: Path, spec: FileParams) -> Path:
    """A dataset's files sit flat in its folder under their base names."""
    return out_dir / PurePosixPath(spec.name).name


def verify_dataset(name: str, dataset: DatasetParams, folder: str | os.PathLike[str]) -> None:
    """Check that every file of a downloaded dataset is still there and matches params.yaml.

    DVC reruns a stage when a dependency changes, but it would happily feed it a file that was
    edited or damaged in place; readers of data/raw call this first."""
    folder = Path(folder)
    hint = f"run `dvc repro -f download@{name}`"
    if dataset.source == "dump":  # shards listed, with their sha256, in the folder's manifest.json
        manifest = folder / "manifest.json"
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8"))["shards"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DataCorrupt(f"{manifest} is missing or unreadable: {hint}") from None
        for shard in listed:
            path = folder / shard["file"]
            if not path.is_file() or sha256_file(path) != shard["sha256"]:
                raise DataCorrupt(f"{path}: missing or changed since it was extracted; {hint}")
    for spec in dataset.files if dataset.source == "files" else []:
        path = file_dest(folder, spec)
        if not path.is_file():
            raise DataCorrupt(f"{path} not found: {hint}")
        problem = verify(path, spec)
        if problem:
            raise DataCorrupt(f"{path}: {problem} (corrupt or changed since it was downloaded); {hint}")
