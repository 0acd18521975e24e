"""The training loop's settings (chapter 5, appendix D): declared once, here, with their bounds.

params.yaml's training sections take their keys and bounds from :class:`TrainConfig`
(scratchgpt.plumbing.params); this module imports no torch, so validating params needs none. The
defaults are the book's chapter 5 settings, for code that builds a TrainConfig itself; the
pipeline states every value in params.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le

# Bounds of a GPT's shape that hold whatever the machine (scratchgpt.book.model.GPTConfig and
# params' model section take them from here): a context beyond a million positions or a vocabulary
# beyond four million ids is a typo, not a model. What else cannot fit is the memory estimate's
# to say (GPTConfig.memory_estimate).
MAX_CONTEXT_LENGTH = 1 << 20
MAX_VOCAB_SIZE = 1 << 22


@dataclass(frozen=True)
class TrainConfig:
    """The loop's settings: the one declaration, which params' training sections take their keys
    and bounds from (scratchgpt.plumbing.params)."""

    epochs: Annotated[int, Ge(1)]
    batch_size: Annotated[int, Ge(1)]
    lr: Annotated[float, Gt(0)]  # AdamW's peak learning rate
    weight_decay: Annotated[float, Ge(0)] = 0.1
    warmup_steps: Annotated[int, Ge(0)] = 0  # linear warm-up from initial_lr (appendix D)
    initial_lr: Annotated[float, Ge(0)] = 0.0
    cosine: bool = False  # cosine decay to min_lr after the warm-up
    min_lr: Annotated[float, Ge(0)] = 0.0
    grad_clip: Annotated[float, Ge(0)] = 0.0  # max gradient norm after the warm-up (0: off)
    grad_accum: Annotated[int, Ge(1)] = 1  # micro-batches per optimizer step
    eval_freq: Annotated[int, Ge(1)] = 5  # evaluate after every eval_freq-th optimizer step
    eval_iter: Annotated[int, Ge(1)] = 5  # batches per evaluation
    checkpoint_every: Annotated[int, Ge(0)] = 0  # steps between checkpoints (also at each epoch's end)
    checkpoint_share: Annotated[float, Gt(0), Le(1)] = 1.0  # most of the run's time checkpoints take (1: no bound)
    max_steps: Annotated[int, Ge(0)] = 0  # stop early (0: every epoch to its end)
    seed: int = 123

    @classmethod
    def from_params(cls, section: Any) -> TrainConfig:
        """The settings from any object with these attributes (a params section)."""
        return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls)})
