"""Safe file I/O: atomic writes of files and folders, and checksums.

A write goes to a temporary file (or staging folder) beside the target, then is renamed into
place: a reader sees either the old version or the complete new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from scratchgpt.errors import PipelineError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file
_DIR_MODE = 0o777 & ~_UMASK


_digests: dict[tuple[int, int, int, int], str] = {}


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """An open descriptor holding the exclusive lock of ``path`` (created if missing), or None
    when another process holds it. The lock lasts until the descriptor is closed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks. Remembered for the process while the file's
    inode, size and modification time stay the same, so a large model read twice in one run
    (its fingerprint, then its check on loading) is hashed once."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def tree_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over the relative names and sha256 of every file under ``path`` (or of the file
    itself): equal exactly when the content is."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()


def json_digest(*parts: Any) -> str:
    """A stable sha256 of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class HashingWriter:
    """A binary file that computes its sha256 while it is written (nothing read back)."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def temp_path(path: Path) -> Path:
    """A fresh temporary file name next to ``path`` (same folder, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; renamed into place it should look like any file
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file name beside ``path``, for writers that take a file name (safetensors,
    matplotlib); on success the file is renamed to ``path``, on failure it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary temporary file; on success it is flushed, fsynced and renamed to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


class NonFiniteValue(PipelineError, ValueError):
    """A NaN or infinite number about to be written to a JSON file."""


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON; a NaN or infinity is an error (JSON has none), and
    nothing is written."""
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise NonFiniteValue(f"{path}: not written, a value is NaN or infinite ({e})") from None
    write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it replaces ``path`` whole.

    On failure the staging folder is removed and ``path`` is left as it was. Staging folders
    left by a killed process (``.<name>.partial-*``) are removed on the next call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    staging.chmod(_DIR_MODE)  # mkdtemp makes 0700; renamed into place it should look like any folder
    try:
        yield staging
        if path.is_dir():
            old = staging.with_name(staging.name + ".old")
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists():
                path.unlink()
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
