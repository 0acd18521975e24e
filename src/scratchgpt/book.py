"""What the book reports, for comparison with our runs (README and report).

Chapter 5's pretraining log (GPT_CONFIG_124M with context 256 on the-verdict, 10 epochs, batch 2,
AdamW lr 4e-4, weight decay 0.1, eval_freq 5, eval_iter 5, seed 123), run on a CPU.
"""

from __future__ import annotations

# (optimizer step, train loss, validation loss) as printed by train_model_simple
CH05_LOSSES: list[tuple[int, float, float]] = [
    (0, 9.781, 9.933), (5, 8.111, 8.339), (10, 6.661, 7.048), (15, 5.961, 6.616),
    (20, 5.726, 6.600), (25, 5.201, 6.348), (30, 4.417, 6.278), (35, 4.069, 6.226),
    (40, 3.732, 6.160), (45, 2.850, 6.179), (50, 2.427, 6.141), (55, 2.104, 6.134),
    (60, 1.882, 6.233), (65, 1.320, 6.238), (70, 0.985, 6.242), (75, 0.717, 6.293),
    (80, 0.541, 6.393), (85, 0.391, 6.452),
]  # fmt: skip

# The greedy 50-token sample after each epoch starts like this (first epochs)
CH05_SAMPLES: dict[int, str] = {
    1: "Every effort moves you,,,,,,,,,,,,.",
    2: "Every effort moves you, and, and, and, and, and, and, and, and, and, and, and,",
    3: "Every effort moves you, and I had been.",
    10: 'Every effort moves you know," was one of the axioms he laid down across the Sevres and silver of an'
    " exquisitely appointed luncheon-table, when, on a later day, I had again run over from Monte Carlo;",
}


def compare_ch05(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Our evaluation points beside the book's, matched by step."""
    ours = {int(p["step"]): p for p in history}
    return [
        {"step": step, "book_train": bt, "book_val": bv,
         "train": ours[step]["train_loss"], "val": ours[step]["val_loss"]}
        for step, bt, bv in CH05_LOSSES if step in ours
    ]  # fmt: skip
