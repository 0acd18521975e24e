"""Book-style figures, written as PNG with matplotlib (DVC draws the per-step TSV curves itself)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .files import temp_path  # noqa: E402


def _save(fig, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=150)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_losses(
    history: Sequence[dict[str, float]],
    path: str | os.PathLike[str],
    title: str | None = None,
    reference: dict[str, Sequence[float]] | None = None,
) -> None:
    """Training and validation loss against epochs, with tokens seen on a second x axis
    (chapter 5's figure). ``reference`` may add curves keyed by label, on the same points."""
    epochs = [p["epoch"] for p in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.6))
    ax1.plot(epochs, [p["train_loss"] for p in history], label="Training loss")
    ax1.plot(epochs, [p["val_loss"] for p in history], linestyle="-.", label="Validation loss")
    for label, values in (reference or {}).items():
        ax1.plot(epochs[: len(values)], values, linestyle=":", marker=".", label=label)
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()
    ax2.plot([p["tokens_seen"] for p in history], [p["train_loss"] for p in history], alpha=0)
    ax2.set_xlabel("Tokens seen")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
