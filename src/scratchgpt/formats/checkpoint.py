"""Resume checkpoints: the training loop's whole state (model, optimizer, data position, RNG
states, logged history) in one file that a reader only ever finds complete and verified.

A folder holds ``checkpoint-<sha>.pt`` and ``checkpoint.json`` pointing at it with its full
sha256; :class:`Checkpoints` ties a folder to one run's fingerprint, so a checkpoint of other
params, data or code is never resumed from. Where the folders live is
:mod:`scratchgpt.plumbing.resume`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from scratchgpt.files import HashingWriter, sha256_file, temp_path, write_json

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINT_POINTER = "checkpoint.json"


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``folder`` so that a reader only ever finds a complete, verified one.

    The file's sha256 is computed while it is written; it is fsynced and renamed into place as
    ``checkpoint-<sha>.pt``, then ``checkpoint.json`` (written atomically) points at it with the
    full digest; older checkpoint files go last. A crash at any point leaves the previous
    pointer and its file. The bytes depend only on ``payload`` (no file name inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".checkpoint.pt.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    tmp = temp_path(folder / "checkpoint.pt")
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            torch.save(payload, writer)
            f.flush()
            os.fsync(f.fileno())
        digest = writer.sha256.hexdigest()
        final = folder / f"checkpoint-{digest[:16]}.pt"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(folder / CHECKPOINT_POINTER, {"format": CHECKPOINT_FORMAT, "file": final.name, "sha256": digest})
    for old in folder.glob("checkpoint-*.pt"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The checkpoint :func:`save_checkpoint` last completed in ``folder``, or None when there is
    none or it fails its sha256 (then it is never loaded: training starts afresh)."""
    pointer = folder / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
        path = folder / info["file"]
        expected = info["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        log.warning("ignoring %s: unreadable (%s)", pointer, e)
        return None
    if not path.is_file() or sha256_file(path) != expected:
        log.warning("ignoring checkpoint %s: missing or not matching its sha256 (corrupt); starting afresh", path)
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file that passed its checksum but cannot be read: still never trusted
        log.warning("ignoring unreadable checkpoint %s (%s)", path, e)
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring checkpoint %s: unknown format", path)
        return None
    return payload


class Checkpoints:
    """The checkpoints of one run: ``folder`` and the run's ``fingerprint``, which every saved
    state carries and :meth:`load` requires (:class:`scratchgpt.plumbing.checkpointing.CheckpointStore`)."""

    def __init__(self, folder: str | os.PathLike[str], fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def __str__(self) -> str:
        return str(self.folder)

    def load(self) -> dict[str, Any] | None:
        saved = load_checkpoint(self.folder)
        if saved is not None and saved.get("fingerprint") != self.fingerprint:
            log.info("ignoring the checkpoint in %s: it belongs to other params, data or code", self.folder)
            return None
        return saved

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.folder, {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state})
