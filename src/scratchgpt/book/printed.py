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

# The book's runs those numbers come from, in words (the report's like-for-like column).
CH05_RUN = "GPT-2 124M configuration (context 256, head untied), the-verdict alone, 10 epochs of batch 2 (90 steps)"

# Chapter 6: the spam classifier's accuracy (train, validation, test) after 5 epochs.
CH06_ACCURACY: tuple[float, float, float] = (0.9721, 0.9732, 0.9567)
CH06_RUN = "GPT-2 small (124M) from OpenAI, last block + final norm + head trained, lr 5e-5, 5 epochs"

# Chapter 7: (train, validation) loss before finetuning and after its 2 epochs.
CH07_LOSSES_BEFORE: tuple[float, float] = (3.826, 3.762)
CH07_LOSSES_AFTER: tuple[float, float] = (0.299, 0.657)
CH07_RUN = "GPT-2 medium (355M) from OpenAI, 2 epochs of batch 8, lr 5e-5"
CH07_JUDGE = "about 50 (GPT-2 medium judged by Llama 3 8B)"

# Chapter 7's DPO bonus: (train loss, validation loss, train reward margin, validation reward
# margin) at the first evaluation, after one optimizer step. Before it the policy is the
# reference: loss ln 2 = 0.693, margins 0.
CH07_DPO_FIRST_STEP: tuple[float, float, float, float] = (0.692, 0.693, 0.014, 0.006)
CH07_DPO_RUN = "GPT-2 medium (355M) after chapter 7's finetuning, DPO beta 0.1, 1 epoch of batch 8, lr 5e-6"
