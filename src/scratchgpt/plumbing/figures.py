"""The report's own figures, drawn to be read at the size the report shows them: an attention
map of a short prompt and chapter 5's overlay of our loss curves on the book's printed points.

Each ``*_figure`` function returns the matplotlib figure (the tests read its artists);
:func:`scratchgpt.plumbing.plots.save` writes it as PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def token_label(token: str) -> str:
    """A token as a tick label: its leading space dropped, newlines and tabs shown as escapes,
    and a token of spaces alone shown as ``␣``."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return text.strip(" ") or "␣"


def attention_figure(weights: np.ndarray, tokens: Sequence[str], title: str) -> Figure:
    """One heat map of causal attention weights (tokens, tokens): row i is how token i spreads
    its attention over the tokens up to it. Cells above the diagonal (masked) are left blank and
    every cell shows its weight when the map is small enough to read them."""
    weights = np.asarray(weights, dtype=float)
    n = len(tokens)
    if weights.shape != (n, n):
        raise ValueError(f"attention weights of shape {weights.shape} for {n} tokens")
    labels = [token_label(t) for t in tokens]
    side = min(9.0, max(4.2, 0.62 * n + 2.2))
    fig, ax = plt.subplots(figsize=(side + 1.4, side), layout="constrained")
    masked = np.ma.masked_array(weights, mask=np.triu(np.ones((n, n), dtype=bool), k=1))
    image = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0)
    ticks = 12 if n <= 12 else 9
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=ticks)
    ax.set_yticks(range(n), labels, fontsize=ticks)
    ax.set_xlabel("attends to (key)", fontsize=12)
    ax.set_ylabel("token (query)", fontsize=12)
    if n <= 12:
        for i in range(n):
            for j in range(i + 1):
                value = weights[i, j]
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="black" if value > 0.6 else "white",
                )
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("attention weight", fontsize=12)
    bar.ax.tick_params(labelsize=11)
    ax.set_title(title, fontsize=12)
    return fig


def book_overlay_figure(
    ours: dict[str, Sequence[tuple[float, float]]],
    tokens_seen: Sequence[tuple[float, float]],
    book: Sequence[tuple[int, float, float]],
    title: str,
    others: dict[str, dict[str, Sequence[tuple[float, float]]]] | None = None,
) -> Figure:
    """Our training and validation loss (``ours``: {"train_loss"|"val_loss": [(step, loss)]})
    against tokens seen, as lines, and the book's printed evaluation points ``book`` ((step,
    train, val)) as markers at the tokens seen of the same step (``tokens_seen``: [(step,
    tokens)] of our run, interpolated between logged steps). ``others`` ({name: curves like
    ``ours``}, the same steps) adds thinner lines of other runs, e.g. the same run in bf16. The
    legend sits below the axes, where it covers no curve."""
    if not tokens_seen:
        raise ValueError("no tokens_seen points: the figure's x axis needs them")
    steps, tokens = zip(*sorted(tokens_seen))

    def at_tokens(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
        xs = np.array([p[0] for p in points], dtype=float)
        return np.interp(xs, steps, tokens), np.array([p[1] for p in points], dtype=float)

    fig, ax = plt.subplots(figsize=(7.0, 4.6), layout="constrained")
    for key, label, style in (("train_loss", "ours: training loss", "-"), ("val_loss", "ours: validation loss", "-.")):
        if not ours.get(key):
            raise ValueError(f"no {key} points in our run")
        ax.plot(*at_tokens(sorted(ours[key])), linestyle=style, linewidth=2, label=label)
    for name, curves in (others or {}).items():
        for key, what, style in (("train_loss", "training", "-"), ("val_loss", "validation", "-.")):
            if curves.get(key):
                ax.plot(*at_tokens(sorted(curves[key])), linestyle=style, linewidth=1, label=f"{name}: {what} loss")
    book_train = at_tokens([(s, t) for s, t, _ in book])
    book_val = at_tokens([(s, v) for s, _, v in book])
    ax.plot(*book_train, "o", color="black", markersize=5, label="the book: training loss")
    ax.plot(*book_val, "x", color="black", markersize=6, markeredgewidth=1.5, label="the book: validation loss")
    ax.set_xlabel("Tokens seen", fontsize=11)
    ax.set_ylabel("Loss", fontsize=11)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    fig.legend(loc="outside lower center", ncols=2, fontsize=10, frameon=False)
    return fig
