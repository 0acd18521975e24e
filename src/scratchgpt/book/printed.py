"""What the book reports, for comparison with our runs (the report).

Chapter 5's pretraining log (GPT_CONFIG_124M with context 256 on the-verdict, 10 epochs, batch 2,
AdamW lr 4e-4, weight decay 0.1, eval_freq 5, eval_iter 5, seed 123), run on a CPU.
"""

from __future__ import annotations

# (optimizer step, train loss, validation loss) as printed by train_model_simple
CH05_LOSSES: list[tuple[int, float, float]] = [
    (0, 9.781, 9.933),
    (5, 8.111, 8.339),
    (10, 6.661, 7.048),
    (15, 5.961, 6.616),
    (20, 5.726, 6.600),
    (25, 5.201, 6.348),
    (30, 4.417, 6.278),
    (35, 4.069, 6.226),
    (40, 3.732, 6.160),
    (45, 2.850, 6.179),
    (50, 2.427, 6.141),
    (55, 2.104, 6.134),
    (60, 1.882, 6.233),
    (65, 1.320, 6.238),
    (70, 0.985, 6.242),
    (75, 0.717, 6.293),
    (80, 0.541, 6.393),
    (85, 0.391, 6.452),
]
