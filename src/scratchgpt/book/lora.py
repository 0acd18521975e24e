"""LoRA: low-rank adaptation (the book's appendix E).

Each chosen linear layer ``y = x Wᵀ + b`` keeps W and b frozen and learns a low-rank update:
``y = x Wᵀ + b + (alpha / rank) · dropout(x) A B`` with A (in, rank) initialised like the book
(Kaiming-uniform) and B (rank, out) at zero, so that an adapted model starts exactly as its
base. Our fused query/key/value projection gets three adapters, one per part, as the book's
three separate layers would; with rank 16 on every linear layer of GPT-2 124M's blocks and a
2-class head that is the book's 2,666,528 trainable parameters.

A finetuned model is saved either merged (W + (alpha / rank) · (A B)ᵀ folded into plain weights:
every consumer loads an ordinary model) or as its adapters alone beside a reference to the base
model directory; both load to the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

TARGETS = ("attention", "feed_forward", "head")
ADAPTERS_FILE = "adapters.safetensors"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus low-rank adapters; ``parts`` splits the output features into
    equal parts with an adapter each (3 for the fused query/key/value projection)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, parts: int = 1):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if base.out_features % parts:
            raise ValueError(f"{base.out_features} output features do not split into {parts} parts")
        self.base = base
        for p in base.parameters():
            p.requires_grad = False
        self.rank, self.alpha, self.parts = rank, alpha, parts
        self.scale = alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.A = nn.Parameter(torch.empty(parts, base.in_features, rank, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(parts, rank, base.out_features // parts, device=device, dtype=dtype))
        for i in range(parts):  # the book: torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.A.data[i], a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        return torch.cat([h @ self.A[i] @ self.B[i] for i in range(self.parts)], dim=-1) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding W + scale · (A B)ᵀ (per part)."""
        update = torch.cat([self.A[i] @ self.B[i] for i in range(self.parts)], dim=-1).t() * self.scale
        out = nn.utils.skip_init(
            nn.Linear,
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
        )
        with torch.no_grad():
            out.weight.copy_(self.base.weight + update)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _places(model: nn.Module, targets: Iterable[str]) -> list[tuple[nn.Module, str, int]]:
    """(parent module, attribute, parts) of every linear layer an adapter goes on."""
    targets = set(targets)
    unknown = targets - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; expected some of {', '.join(TARGETS)}")
    places: list[tuple[nn.Module, str, int]] = []
    for block in model.trf_blocks:
        if "attention" in targets:
            places += [(block.att, "qkv", 3), (block.att, "out_proj", 1)]
        if "feed_forward" in targets:
            places += [(block.ff, "fc", 1), (block.ff, "proj", 1)]
    if "head" in targets:
        places.append((model, "out_head", 1))
    return places


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: Iterable[str] = TARGETS,
    train_head: bool = False,
) -> nn.Module:
    """Freeze every weight of ``model`` and add adapters to the ``targets`` layers (in place).
    ``train_head`` also trains the output head's own weights."""
    for p in model.parameters():
        p.requires_grad = False
    for parent, name, parts in _places(model, targets):
        layer = getattr(parent, name)
        if isinstance(layer, LoRALinear):
            raise ValueError(f"{name} already has adapters")
        setattr(parent, name, LoRALinear(layer, rank, alpha, dropout, parts))
    if train_head:
        head = model.out_head.base if isinstance(model.out_head, LoRALinear) else model.out_head
        for p in head.parameters():
            p.requires_grad = True
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer (in place): the model becomes a plain one again."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return model


def lora_parameters(model: nn.Module) -> int:
    return sum(m.A.numel() + m.B.numel() for m in model.modules() if isinstance(m, LoRALinear))


# ---------------------------------------------------------------------------------------------
# What the finetuning stages share


def setup(model: nn.Module, section: Any) -> None:
    """For ``method: lora`` freeze the model and add the adapters params ask for (no-op for full)."""
    if section.method == "lora":
        lo = section.lora
        apply_lora(model, lo.rank, lo.alpha, lo.dropout, lo.targets, lo.train_head)
