"""Book-style figures, written as PNG with matplotlib (DVC draws the per-step TSV curves itself)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from scratchgpt.files import atomic_path


def save(fig, path: str | os.PathLike[str]) -> None:
    """``fig`` as PNG at ``path`` (replaced atomically), then closed."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=150)
    finally:
        plt.close(fig)


LABELS = {
    "train_loss": "Training loss",
    "val_loss": "Validation loss",
    "train_accuracy": "Training accuracy",
    "val_accuracy": "Validation accuracy",
    "train_reward_margin": "Training reward margins",
    "val_reward_margin": "Validation reward margins",
}


def plot_curves(
    points: Sequence[dict[str, float]],
    keys: Sequence[str],
    path: str | os.PathLike[str],
    *,
    ylabel: str,
    second_axis: tuple[str, str] | None = None,
    title: str | None = None,
) -> None:
    """``keys`` of ``points`` against their "epoch", the book's way: the first curve solid, the
    next dash-dotted, and an optional second x axis (e.g. tokens seen) on top."""
    epochs = [p["epoch"] for p in points]
    fig, ax1 = plt.subplots(figsize=(6, 3.6))
    for i, key in enumerate(keys):
        ax1.plot(epochs, [p[key] for p in points], linestyle="-" if i == 0 else "-.", label=LABELS.get(key, key))
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(ylabel)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(loc="best")
    if second_axis and points:
        key, label = second_axis
        ax2 = ax1.twiny()
        ax2.plot([p[key] for p in points], [p[keys[0]] for p in points], alpha=0)
        ax2.set_xlabel(label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def plot_losses(
    history: Sequence[dict[str, float]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> None:
    """Training and validation loss against epochs, with tokens seen on a second x axis
    (chapter 5's figure)."""
    plot_curves(
        history,
        ["train_loss", "val_loss"],
        path,
        ylabel="Loss",
        second_axis=("tokens_seen", "Tokens seen"),
        title=title,
    )
