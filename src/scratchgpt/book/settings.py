"""The model's shape (chapter 4) and the training loop's settings (chapter 5, appendix D):
declared once, here, with their bounds.

params.yaml's model section takes its keys and bounds from :class:`GPTConfig`, the training
sections theirs from :class:`TrainConfig` (scratchgpt.plumbing.sections); this module imports no
torch, so validating params needs none. The defaults are the book's (GPT_CONFIG_124M, chapter 5's
training), for code that builds a config itself; the pipeline states every value in params.yaml.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt

# fp32, or bf16: autocast with fp32 master weights (training), bf16 weights (decoding); scratchgpt.device
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

# Bounds of a GPT's shape that hold whatever the machine (GPTConfig below and
# params' model section take them from here): a context beyond a million positions or a vocabulary
# beyond four million ids is a typo, not a model. What else cannot fit is the memory estimate's
# to say (GPTConfig.memory_estimate).
MAX_CONTEXT_LENGTH = 1 << 20
MAX_VOCAB_SIZE = 1 << 22


def heads_problem(emb_dim: int, n_heads: int, where: str = "") -> str | None:
    """The one rule across a GPT's fields (each head gets an equal slice of the embedding), or
    None; ``where`` prefixes the name n_heads (e.g. ``model.``)."""
    return None if emb_dim % n_heads == 0 else f"must be divisible by {where}n_heads ({n_heads}), got {emb_dim}"


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, type, dict[str, Any]], ...]:
    """Each field of dataclass ``cls``: its name, type and Ge/Gt/Le/Lt bounds by kind."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple(
        (f.name, getattr(hints[f.name], "__origin__", hints[f.name]), _bounds(hints[f.name]))
        for f in dataclasses.fields(cls)
    )


def _bounds(hint: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mark in getattr(hint, "__metadata__", ()):
        for kind in ("ge", "gt", "le", "lt"):
            if hasattr(mark, kind):
                found[kind] = getattr(mark, kind)
    return found


def _within(value: float, bounds: dict[str, Any]) -> bool:
    return bounds["ge"] <= value < bounds["lt"]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of chapter 4's GPT: the one declaration, which params' model section takes its
    keys and bounds from. Checked when built, so a bad config.json is named before any tensor is."""

    vocab_size: Annotated[int, Ge(1), Le(MAX_VOCAB_SIZE)] = 50257
    context_length: Annotated[int, Ge(1), Le(MAX_CONTEXT_LENGTH)] = 1024
    emb_dim: Annotated[int, Ge(1)] = 768
    n_heads: Annotated[int, Ge(1)] = 12
    n_layers: Annotated[int, Ge(1)] = 12
    drop_rate: Annotated[float, Ge(0), Lt(1)] = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False
    n_classes: Annotated[int, Ge(0)] = 0  # 0: a language-model head over the vocabulary; >0: a classification head

    def __post_init__(self) -> None:
        problems = []
        for name, kind, bounds in _fields(type(self)):
            value = getattr(self, name)
            if kind is bool:
                if not isinstance(value, bool):
                    problems.append(f"{name} must be true or false, got {value!r}")
            elif kind is int:
                low = bounds["ge"]
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    what = "a positive integer" if low == 1 else f"an integer >= {low}"
                    problems.append(f"{name} must be {what}, got {value!r}")
                elif "le" in bounds and value > bounds["le"]:
                    problems.append(f"{name} must be <= {bounds['le']}, got {value!r}")
            elif (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not bounds["ge"] <= value < bounds["lt"]
            ):
                problems.append(f"{name} must be in [{bounds['ge']}, {bounds['lt']}), got {value!r}")
        if not problems and self.n_classes and self.tie_weights:
            problems.append("tie_weights needs the language-model head (n_classes 0)")
        if not problems and heads_problem(self.emb_dim, self.n_heads):
            problems.append(f"emb_dim {heads_problem(self.emb_dim, self.n_heads)}")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def num_parameters(self) -> int:
        """The parameters :class:`GPTModel` of this config holds (a tied head counts once),
        by arithmetic: nothing is allocated."""
        d, v = self.emb_dim, self.vocab_size
        block = (
            2 * d  # norm1
            + 3 * d * d
            + (3 * d if self.qkv_bias else 0)  # qkv
            + d * d
            + d  # out_proj
            + 2 * d  # norm2
            + 4 * d * d
            + 4 * d  # ff.fc
            + 4 * d * d
            + d  # ff.proj
        )
        if self.n_classes:
            head = d * self.n_classes + self.n_classes
        else:
            head = 0 if self.tie_weights else d * v
        return v * d + self.context_length * d + self.n_layers * block + 2 * d + head

    def memory_estimate(self, batch_size: int = 0, seq_len: int = 0) -> int:
        """Bytes this model needs in fp32, roughly: the weights alone (``batch_size`` 0), or to
        train on batches of ``batch_size`` × ``seq_len`` tokens: weights, gradients and AdamW's two
        moments (16 bytes a parameter) plus the activations kept for the backward pass (about 16
        values of emb_dim per token and layer, and the logits twice)."""
        params = self.num_parameters()
        if not batch_size:
            return 4 * params
        tokens = batch_size * max(seq_len, 1)
        width = self.n_classes or self.vocab_size
        activations = tokens * (16 * self.emb_dim * self.n_layers + 2 * width)
        return 16 * params + 4 * activations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown GPTConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> GPTConfig:
        return dataclasses.replace(self, **changes)


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
    precision: Precision = "fp32"  # bf16: autocast with fp32 master weights (scratchgpt.device)

    @classmethod
    def from_params(cls, section: Any) -> TrainConfig:
        """The settings from any object with these attributes (a params section)."""
        return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls)})
